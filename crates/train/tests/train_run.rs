//! Whole runs of a two-stage recipe on the CPU: stopping and resuming anywhere (mid-stage,
//! exactly at a stage boundary, just after one) gives bit-identical losses and weights,
//! and a resume refuses a recipe whose data changed.

mod common;

use std::path::Path;

use common::two_stage_recipe as recipe;

use davinci_train::checkpoint::{latest, load};
use davinci_train::lock::RunLock;
use davinci_train::metrics::{read_metrics, METRICS_FILE};
use davinci_train::tensorboard::EVENTS_FILE;
use davinci_train::{train, TrainOptions};

fn options(stop_after: Option<u64>) -> TrainOptions {
    TrainOptions { stop_after, progress: false, ..TrainOptions::default() }
}

#[test]
fn stopping_and_resuming_anywhere_is_bit_identical() {
    let whole = tempfile::tempdir().unwrap();
    let summary = train(&recipe(whole.path(), |t| t), &options(None)).unwrap();
    assert!(!summary.stopped_early && summary.resumed_from.is_none());
    assert_eq!(summary.stages.iter().map(|s| s.steps_run).collect::<Vec<_>>(), [4, 3]);

    // 3 steps (mid-stage), 1 (ends exactly at the boundary), 1 (first SFT step), the rest.
    let pieces = tempfile::tempdir().unwrap();
    let r = recipe(pieces.path(), |t| t);
    for (i, stop) in [Some(3), Some(1), Some(1), None].into_iter().enumerate() {
        let summary = train(&r, &options(stop)).unwrap();
        assert_eq!(summary.stopped_early, stop.is_some(), "invocation {i}");
        assert_eq!(summary.resumed_from.is_some(), i > 0, "invocation {i}");
    }

    let a = read_metrics(&whole.path().join("run").join(METRICS_FILE)).unwrap();
    let b = read_metrics(&pieces.path().join("run").join(METRICS_FILE)).unwrap();
    assert_eq!(a.len(), 7);
    assert_eq!(b.len(), 7, "no step is logged twice or lost across resumes");
    // The TensorBoard file, rewritten from the kept steps at each resume, has each step once.
    let event_steps = |dir: &Path| common::event_steps(&dir.join("run").join(EVENTS_FILE));
    let steps: Vec<i64> = a.iter().map(|m| m.step as i64).collect();
    assert_eq!(event_steps(whole.path()), steps);
    assert_eq!(event_steps(pieces.path()), steps, "no step is written twice or lost across resumes");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.stage, x.step), (&y.stage, y.step));
        assert_eq!(x.loss.map(f64::to_bits), y.loss.map(f64::to_bits), "loss of {} step {}", x.stage, x.step);
        assert_eq!(x.grad_norm.to_bits(), y.grad_norm.to_bits());
        assert_eq!(x.lr.to_bits(), y.lr.to_bits());
        assert_eq!((x.tokens, x.loss_tokens), (y.tokens, y.loss_tokens));
    }
    for stage in ["mt", "sft"] {
        let (_, opt_a, state_a) = load(&latest(&whole.path().join("run"), stage).unwrap(), 0, 1).unwrap();
        let (_, opt_b, state_b) = load(&latest(&pieces.path().join("run"), stage).unwrap(), 0, 1).unwrap();
        assert_eq!(opt_a, opt_b, "{stage}: masters and moments are bit-identical");
        assert_eq!(
            (state_a.step, state_a.loader, state_a.tokens_seen),
            (state_b.step, state_b.loader, state_b.tokens_seen)
        );
    }
}

#[test]
fn the_loss_falls_and_sft_trains_on_assistant_tokens_only() {
    let tmp = tempfile::tempdir().unwrap();
    let longer = |t: String| t.replace("steps = 4", "steps = 12").replace("steps = 3", "steps = 6");
    train(&recipe(tmp.path(), longer), &options(None)).unwrap();
    let metrics = read_metrics(&tmp.path().join("run").join(METRICS_FILE)).unwrap();
    for stage in ["mt", "sft"] {
        let losses: Vec<f64> = metrics.iter().filter(|m| m.stage == stage).map(|m| m.loss.unwrap()).collect();
        let n = losses.len();
        let (head, tail) = (losses[..2].iter().sum::<f64>() / 2.0, losses[n - 2..].iter().sum::<f64>() / 2.0);
        assert!(tail < head, "{stage}: loss {losses:?} does not fall");
    }
    for m in &metrics {
        assert!(m.loss_tokens > 0 && m.loss_tokens <= m.tokens);
        if m.stage == "sft" {
            assert!(m.loss_tokens < m.tokens, "SFT leaves user and tool turns out of the loss");
        }
    }
    // Keep-last: one checkpoint of `mt` (its final), two of `sft`.
    let count = |stage: &str| std::fs::read_dir(tmp.path().join("run").join(stage)).unwrap().count();
    assert_eq!((count("mt"), count("sft")), (1, 2));
}

#[test]
fn a_resume_refuses_a_changed_recipe_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    train(&recipe(tmp.path(), |t| t), &options(Some(1))).unwrap();

    let longer_rows = |t: String| t.replacen("seq_len = 256", "seq_len = 512", 1);
    let err = train(&recipe(tmp.path(), longer_rows), &options(Some(1))).unwrap_err().to_string();
    assert!(err.contains("stage `mt` data") && err.contains("--force"), "{err}");

    // The schedule may change: no refusal.
    let lower_lr = |t: String| t.replacen("peak = 3e-3", "peak = 2e-3", 1);
    let summary = train(&recipe(tmp.path(), lower_lr), &options(Some(1))).unwrap();
    assert!(summary.resumed_from.is_some());

    let forced = TrainOptions { force: true, ..options(Some(1)) };
    let summary = train(&recipe(tmp.path(), longer_rows), &forced).unwrap();
    assert!(summary.resumed_from.is_some());
}

#[test]
fn a_second_run_on_the_same_output_directory_is_refused_before_it_prepares_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), |t| t);
    let held = RunLock::acquire(&r.output_dir).unwrap();
    let err = train(&r, &options(Some(1))).unwrap_err().to_string();
    assert!(err.contains("in use by another davinci run") && err.contains("--output-dir"), "{err}");
    assert!(!tmp.path().join("data").exists(), "nothing was prepared");
    drop(held);
    train(&r, &options(Some(1))).unwrap();
}

#[test]
fn a_changed_source_or_a_renamed_stage_is_refused_before_anything_is_prepared_again() {
    let tmp = tempfile::tempdir().unwrap();
    // The sources copied where this test may change them.
    let sources = tmp.path().join("sources");
    std::fs::create_dir_all(&sources).unwrap();
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/data");
    for entry in std::fs::read_dir(&bundled).unwrap().filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".jsonl") {
            std::fs::copy(entry.path(), sources.join(&name)).unwrap();
        }
    }
    let here = format!("{}/", sources.display());
    let point = move |t: String| t.replace("../../../../recipes/data/", &here);
    train(&recipe(tmp.path(), &point), &options(Some(1))).unwrap();

    let renamed = |t: String| point(t).replace("name = \"mt\"", "name = \"mt-a\"");
    let err = train(&recipe(tmp.path(), renamed), &options(Some(1))).unwrap_err().to_string();
    assert!(err.contains("stage order") && err.contains("--force"), "{err}");
    let logged = read_metrics(&tmp.path().join("run").join(METRICS_FILE)).unwrap();
    assert_eq!(logged.len(), 1, "the refused run left metrics.jsonl as it was");

    // One more record in a source: refused, and the prepared dataset left as it was.
    let manifest = tmp.path().join("data/general-prs/dataset.json");
    let prepared = std::fs::read(&manifest).unwrap();
    let source = sources.join("prs-general.jsonl");
    let original = std::fs::read_to_string(&source).unwrap();
    let first = original.lines().next().unwrap().to_string();
    std::fs::write(&source, format!("{original}{first}\n")).unwrap();
    let err = train(&recipe(tmp.path(), &point), &options(Some(1))).unwrap_err().to_string();
    assert!(err.contains("dataset `general-prs`") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&manifest).unwrap(), prepared, "not prepared again before the refusal");

    // Put back, the run resumes where it was.
    std::fs::write(&source, original).unwrap();
    let summary = train(&recipe(tmp.path(), &point), &options(None)).unwrap();
    assert!(summary.resumed_from.is_some() && !summary.stopped_early);
}
