//! FSDP on the CPU: the two-stage recipe at world size 1, 2 and 4 (ranks as threads)
//! gives the same loss at every step and the same final weights, to f32 reduction-order
//! tolerance; a run resumes at world size 2 from a checkpoint written at world size 4.
//! With context parallelism (groups of 2 ranks sharing each row) likewise, and a run
//! resumes at context degree 1 from a checkpoint written at degree 2.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::two_stage_recipe;
use davinci_dist::threads::thread_group;
use davinci_dist::Collective;
use davinci_train::checkpoint::{latest, load};
use davinci_train::metrics::{read_metrics, StepMetrics, METRICS_FILE};
use davinci_train::{train, Recipe, RunSummary, TrainOptions};

fn recipe(root: &Path) -> Recipe {
    two_stage_recipe(root, |t| t)
}

/// Runs the recipe on `world` threads, each a rank.
fn run(root: &Path, world: usize, stop_after: Option<u64>) {
    run_recipe(&recipe(root), world, stop_after)
}

fn run_recipe(recipe: &Recipe, world: usize, stop_after: Option<u64>) {
    let options = |_rank: usize| TrainOptions { stop_after, progress: false, ..TrainOptions::default() };
    for summary in run_ranks(recipe, world, Duration::from_secs(120), options) {
        summary.unwrap();
    }
}

/// Trains `recipe` on `world` threads, each a rank whose collectives wait `timeout`, with
/// the options `options(rank)` gives (its collective filled in); every rank's outcome.
fn run_ranks(
    recipe: &Recipe,
    world: usize,
    timeout: Duration,
    options: impl Fn(usize) -> TrainOptions + Sync,
) -> Vec<davinci_train::Result<RunSummary>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = thread_group(world, timeout)
            .into_iter()
            .map(|rank| {
                let base = options(rank.rank());
                let options = TrainOptions { collective: Arc::new(rank), ..base };
                scope.spawn(move || train(recipe, &options))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn metrics(root: &Path) -> Vec<StepMetrics> {
    read_metrics(&root.join("run").join(METRICS_FILE)).unwrap()
}

fn final_masters(root: &Path) -> Vec<f32> {
    let dir: PathBuf = latest(&root.join("run"), "sft").unwrap();
    let (_, optimizer, state) = load(&dir, 0, 1).unwrap();
    assert_eq!(state.step, 3);
    optimizer.params.iter().flat_map(|p| p.master.iter().copied()).collect()
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

fn relative_norm(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let norm: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

fn assert_same_run(reference: &Path, other: &Path, what: &str) {
    let (a, b) = (metrics(reference), metrics(other));
    assert_eq!(a.len(), 7, "{what}");
    assert_eq!(b.len(), 7, "{what}");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.stage, x.step, x.tokens, x.loss_tokens), (&y.stage, y.step, y.tokens, y.loss_tokens));
        assert!(
            relative(x.loss.unwrap(), y.loss.unwrap()) < 1e-5,
            "{what}: {} step {}: loss {} vs {}",
            x.stage,
            x.step,
            x.loss.unwrap(),
            y.loss.unwrap()
        );
        assert!(
            relative(x.grad_norm, y.grad_norm) < 1e-4,
            "{what}: grad norm {} vs {}",
            x.grad_norm,
            y.grad_norm
        );
    }
    let worst = a.iter().zip(&b).map(|(x, y)| relative(x.loss.unwrap(), y.loss.unwrap())).fold(0.0, f64::max);
    let error = relative_norm(&final_masters(reference), &final_masters(other));
    eprintln!("{what}: losses within {worst:e}, final weights within {error:e} (relative)");
    assert!(error < 1e-5, "{what}: final weights differ by {error:e} (relative norm)");
}

#[test]
fn world_sizes_1_2_and_4_train_the_same_model() {
    let one = tempfile::tempdir().unwrap();
    run(one.path(), 1, None);
    for world in [2, 4] {
        let sharded = tempfile::tempdir().unwrap();
        run(sharded.path(), world, None);
        assert_same_run(one.path(), sharded.path(), &format!("world size {world}"));
    }
}

#[test]
fn a_checkpoint_written_at_world_size_4_resumes_at_2() {
    let one = tempfile::tempdir().unwrap();
    run(one.path(), 1, None);
    let resharded = tempfile::tempdir().unwrap();
    run(resharded.path(), 4, Some(3));
    let dir = latest(&resharded.path().join("run"), "mt").unwrap();
    assert!(dir.join("optimizer-00003-of-00004.safetensors").is_file());
    run(resharded.path(), 2, None);
    assert_same_run(one.path(), resharded.path(), "4 ranks, then 2");
}

/// The two-stage recipe with `context_parallel = 2` in every stage.
fn context_recipe(root: &Path) -> Recipe {
    two_stage_recipe(root, |t| t.replace("[[stages]]\n", "[[stages]]\ncontext_parallel = 2\n"))
}

#[test]
fn context_parallel_2_at_world_sizes_2_and_4_trains_the_same_model_as_one_rank() {
    let one = tempfile::tempdir().unwrap();
    run(one.path(), 1, None);
    for world in [2, 4] {
        let grouped = tempfile::tempdir().unwrap();
        run_recipe(&context_recipe(grouped.path()), world, None);
        assert_same_run(one.path(), grouped.path(), &format!("context 2 at world size {world}"));
    }
}

#[test]
fn a_checkpoint_written_by_4_ranks_at_context_2_resumes_on_2_ranks_at_context_1() {
    let one = tempfile::tempdir().unwrap();
    run(one.path(), 1, None);
    let moved = tempfile::tempdir().unwrap();
    run_recipe(&context_recipe(moved.path()), 4, Some(3));
    assert!(latest(&moved.path().join("run"), "mt")
        .unwrap()
        .join("optimizer-00003-of-00004.safetensors")
        .is_file());
    run(moved.path(), 2, None);
    assert_same_run(one.path(), moved.path(), "4 ranks at context 2, then 2 ranks at context 1");
}

#[test]
fn a_context_degree_that_does_not_divide_the_world_is_refused_naming_the_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = context_recipe(tmp.path());
    let options = |_rank: usize| TrainOptions { progress: false, ..TrainOptions::default() };
    let error = run_ranks(&recipe, 3, Duration::from_secs(60), options).remove(0).err().unwrap().to_string();
    assert!(error.contains("stage `mt`") && error.contains("context_parallel = 2 must divide"), "{error}");
}

#[test]
fn ranks_read_only_their_slices_of_an_init_from_checkpoint() {
    // A checkpoint to start from: the end of a one-rank run.
    let base = tempfile::tempdir().unwrap();
    run(base.path(), 1, None);
    let start = latest(&base.path().join("run"), "mt").unwrap();
    let from =
        |t: String| t.replace("preset = \"tiny\"", &format!("init_from = {:?}", start.to_string_lossy()));
    let one = tempfile::tempdir().unwrap();
    run_recipe(&two_stage_recipe(one.path(), from), 1, None);
    let two = tempfile::tempdir().unwrap();
    run_recipe(&two_stage_recipe(two.path(), from), 2, None);
    assert_same_run(one.path(), two.path(), "init_from at 2 ranks");
    // The first loss is the trained checkpoint's, not a fresh model's.
    assert!(
        metrics(one.path())[0].loss < metrics(base.path())[0].loss && metrics(one.path())[0].loss.is_some()
    );
}

#[test]
fn a_signal_on_one_rank_stops_every_rank_after_the_same_step_and_the_resume_is_exact() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let whole = tempfile::tempdir().unwrap();
    run(whole.path(), 2, None);

    let stopped = tempfile::tempdir().unwrap();
    let r = recipe(stopped.path());
    let signal = Arc::new(AtomicUsize::new(0));
    let summaries = std::thread::scope(|scope| {
        // SIGUSR1 (10) reaches rank 1 alone once the first step is logged.
        let (signal_to_send, log) = (signal.clone(), stopped.path().join("run").join(METRICS_FILE));
        let watcher = scope.spawn(move || {
            while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 1 {
                std::thread::sleep(Duration::from_millis(5));
            }
            signal_to_send.store(10, Ordering::SeqCst);
        });
        let options = |rank: usize| TrainOptions {
            stop_signal: if rank == 1 { signal.clone() } else { Arc::new(AtomicUsize::new(0)) },
            progress: false,
            ..TrainOptions::default()
        };
        let summaries: Vec<RunSummary> =
            run_ranks(&r, 2, Duration::from_secs(120), options).into_iter().map(Result::unwrap).collect();
        watcher.join().unwrap();
        summaries
    });
    // Rank 1 names its signal; rank 0, which got none, stops as for SIGTERM.
    assert_eq!(summaries[0].stopped_by_signal, Some(15));
    assert_eq!(summaries[1].stopped_by_signal, Some(10));
    let steps = metrics(stopped.path()).len() as u64;
    assert!(steps < 7, "stopped before the end ({steps} steps)");
    let taken: Vec<u64> = summaries.iter().map(|s| s.stages.iter().map(|o| o.steps_run).sum()).collect();
    assert_eq!(taken, [steps, steps], "both ranks stopped after the same step");
    // The checkpoint of the step it stopped at.
    let stage = if steps <= 4 { "mt" } else { "sft" };
    let (_, _, state) = load(&latest(&stopped.path().join("run"), stage).unwrap(), 0, 2).unwrap();
    assert_eq!(state.step, if steps <= 4 { steps } else { steps - 4 });

    run(stopped.path(), 2, None);
    assert_eq!(final_masters(stopped.path()), final_masters(whole.path()), "bit-identical after the resume");
    let losses = |root: &Path| metrics(root).iter().map(|m| m.loss.map(f64::to_bits)).collect::<Vec<_>>();
    assert_eq!(losses(stopped.path()), losses(whole.path()));
}

#[test]
fn the_other_ranks_wait_out_a_preparation_longer_than_the_collective_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    // The general PRs 300 times over (43 MB): a preparation of a few seconds.
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/data/prs-general.jsonl");
    let many = tmp.path().join("prs-general-300x.jsonl");
    std::fs::write(&many, std::fs::read_to_string(bundled).unwrap().repeat(300)).unwrap();
    let r = two_stage_recipe(tmp.path(), |t| {
        t.replace("../../../../recipes/data/prs-general.jsonl", &many.display().to_string())
    });
    let timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    // No step: only the start, whose preparation is the long part.
    let options =
        |_rank: usize| TrainOptions { stop_after: Some(0), progress: false, ..TrainOptions::default() };
    for outcome in run_ranks(&r, 2, timeout, options) {
        outcome.unwrap();
    }
    let took = started.elapsed();
    assert!(took > timeout * 3, "the preparation took {took:?}: too short to show anything");
    assert!(tmp.path().join("data/general-prs/dataset.json").is_file());
}

#[test]
fn a_signal_before_training_starts_stops_every_rank_with_nothing_written() {
    use std::sync::atomic::AtomicUsize;
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path());
    // Rank 0 got SIGTERM while it would prepare the data.
    let options = |rank: usize| TrainOptions {
        stop_signal: Arc::new(AtomicUsize::new(if rank == 0 { 15 } else { 0 })),
        progress: false,
        ..TrainOptions::default()
    };
    let summaries: Vec<RunSummary> =
        run_ranks(&r, 2, Duration::from_secs(60), options).into_iter().map(Result::unwrap).collect();
    for summary in &summaries {
        assert_eq!(summary.stopped_by_signal, Some(15));
        assert!(summary.stages.is_empty());
    }
    assert!(latest(&tmp.path().join("run"), "mt").is_none(), "no checkpoint");
}
