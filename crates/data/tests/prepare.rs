//! `prepare` end to end on small record files: each filter counted, decontamination, caps,
//! malformed lines, compressed input, and shards that read back as the tokenizer wrote.

mod common;

use std::io::Write;
use std::path::Path;

use davinci_data::dataset::Dataset;
use davinci_data::filter::{FilterConfig, OverLength};
use davinci_data::prepare::{prepare_dataset, DatasetSpec, PrepareOptions};
use davinci_data::render::Template;
use serde_json::json;

fn pr(repo: &str, number: u64, merged: bool, login: &str, files: &[&str]) -> serde_json::Value {
    let files: Vec<_> = files
        .iter()
        .map(|f| json!({"filename": f, "status": "modified", "content_before": "x = 1\n", "patch": "@@ -1 +1 @@\n-x = 1\n+x = 2\n"}))
        .collect();
    json!({"repo": repo, "number": number, "title": format!("Change {number}"), "merged": merged, "state": "closed",
           "user": {"login": login}, "files": files, "commits": [{"sha": "abc", "message": "change x"}]})
}

fn write_jsonl(path: &Path, records: &[serde_json::Value], extra_lines: &[&str]) {
    let mut text: String = records.iter().map(|r| format!("{r}\n")).collect();
    for line in extra_lines {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn quiet() -> PrepareOptions {
    PrepareOptions { progress: false, batch_records: 3, ..PrepareOptions::default() }
}

#[test]
fn pr_filters_are_applied_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = common::tokenizer(tmp.path());
    let records = vec![
        pr("acme/a", 1, true, "alice", &["a.py"]),
        pr("acme/a", 2, false, "alice", &["a.py"]),
        pr("acme/a", 3, true, "dependabot[bot]", &["a.py"]),
        pr("django/django", 4, true, "alice", &["a.py"]),
        pr("acme/a", 5, true, "alice", &["a.py", "b.py", "c.py", "d.py", "e.py", "f.py"]),
        pr("acme/a", 6, true, "alice", &["README.md"]),
        pr("acme/a", 1, true, "alice", &["a.py"]),
        pr("acme/a", 7, true, "ci-helper", &["a.py"]),
    ];
    write_jsonl(&tmp.path().join("prs.jsonl"), &records, &["{not json", "{\"repo\": 5}"]);
    let filters = FilterConfig {
        language_extensions: vec!["py".into()],
        min_files: Some(1),
        max_files: Some(5),
        bot_logins: vec!["ci-helper".into()],
        ..FilterConfig::default()
    };
    let spec = DatasetSpec {
        name: "prs".into(),
        sources: vec!["prs.jsonl".into()],
        template: Template::PrPython,
        chatml: Default::default(),
        filters,
    };
    let out = tmp.path().join("out");
    let (manifest, report) = prepare_dataset(&spec, tmp.path(), &tok, &out, &quiet()).unwrap();
    let removed = |reason: &str| report.removed.0.get(reason).copied().unwrap_or(0);
    assert_eq!(report.records, 10);
    assert_eq!(report.malformed, 2);
    assert!(report.malformed_examples[0].contains("prs.jsonl:9:"), "{:?}", report.malformed_examples);
    assert_eq!(removed("not merged"), 1);
    assert_eq!(removed("bot author"), 2);
    assert_eq!(removed("decontamination: excluded repository"), 1);
    assert_eq!(removed("too many files of the language"), 1);
    assert_eq!(removed("too few files of the language"), 1);
    assert_eq!(removed("exact duplicate"), 1);
    assert_eq!(report.kept, 1);
    assert_eq!(manifest.docs, 1);

    let dataset = Dataset::open(&out).unwrap();
    dataset.verify().unwrap();
    let shard = &dataset.shards[0];
    let text = tok.decode(&shard.tokens()[shard.doc_range(0)]).unwrap();
    assert!(
        text.starts_with("# Repository Context\n\nRepository: acme/a") && text.ends_with("<|endoftext|>"),
        "{text}"
    );
    assert_eq!(manifest.tokenizer_sha256, tok.hash());
    assert_eq!(manifest.sources.len(), 1);

    let strict = PrepareOptions { strict: true, ..quiet() };
    let err = prepare_dataset(&spec, tmp.path(), &tok, &tmp.path().join("strict"), &strict)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prs.jsonl:9:"), "{err}");
    assert!(!tmp.path().join("strict/dataset.json").exists(), "a failed run leaves no manifest");
}

#[test]
fn trajectories_outcome_caps_ngrams_and_compressed_input() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = common::tokenizer(tmp.path());
    let traj = |id: &str, resolved: bool, reply: &str| json!({"instance_id": id, "resolved": resolved, "messages": [{"role": "user", "content": "Fix parse."}, {"role": "assistant", "content": reply}]});
    let long_reply = "return int(value) ".repeat(200);
    let leaked = "def below_zero(operations): detect if at any point the balance of account falls below zero and return True";
    let records = [
        traj("a__b-1", true, "done"),
        traj("a__b-2", false, "gave up"),
        traj("a__b-3", true, &long_reply),
        traj("a__b-4", true, leaked),
    ];
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(tmp.path().join("t.jsonl.gz")).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
    std::fs::write(tmp.path().join("ref.txt"), format!("first prompt text\n---\n{leaked}\n")).unwrap();

    let mut filters = FilterConfig {
        outcome: davinci_data::filter::Outcome::Pass,
        max_tokens: Some(120),
        ngram_references: vec![tmp.path().join("ref.txt")],
        ..FilterConfig::default()
    };
    let spec = |filters: FilterConfig| DatasetSpec {
        name: "t".into(),
        sources: vec!["*.jsonl.gz".into()],
        template: Template::Chatml,
        chatml: Default::default(),
        filters,
    };
    let (_, report) =
        prepare_dataset(&spec(filters.clone()), tmp.path(), &tok, &tmp.path().join("o1"), &quiet()).unwrap();
    assert_eq!(report.removed.0.get("failed trajectory"), Some(&1));
    assert_eq!(report.removed.0.get("decontamination: n-gram overlap"), Some(&1));
    assert_eq!(report.removed.0.get("over the token cap"), Some(&1));
    assert_eq!(report.kept, 1);

    filters.over_length = OverLength::Truncate;
    let (manifest, report) =
        prepare_dataset(&spec(filters), tmp.path(), &tok, &tmp.path().join("o2"), &quiet()).unwrap();
    assert_eq!((report.kept, report.truncated), (2, 1));
    let dataset = Dataset::open(&tmp.path().join("o2")).unwrap();
    let longest =
        (0..dataset.shards[0].num_docs()).map(|d| dataset.shards[0].doc_range(d).len()).max().unwrap();
    assert_eq!(longest, 120);
    assert_eq!(manifest.sources[0].bytes, std::fs::metadata(tmp.path().join("t.jsonl.gz")).unwrap().len());

    let missing = DatasetSpec { sources: vec!["nothing-*.jsonl".into()], ..spec(FilterConfig::default()) };
    let err = prepare_dataset(&missing, tmp.path(), &tok, &tmp.path().join("o3"), &quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing-*.jsonl") && err.contains("no file matches"), "{err}");
}

#[test]
fn swe_bench_repositories_are_dropped_under_former_names_any_case_and_as_declared_forks() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = common::tokenizer(tmp.path());
    let mut fork = pr("someone/requests", 3, true, "alice", &["a.py"]);
    fork["upstream"] = json!("psf/requests");
    let records = [
        pr("kennethreitz/requests", 1, true, "alice", &["a.py"]),
        pr("Pallets/Flask", 2, true, "alice", &["a.py"]),
        fork,
        pr("someone/requests", 4, true, "alice", &["a.py"]),
    ];
    write_jsonl(&tmp.path().join("prs.jsonl"), &records, &[]);
    let spec = DatasetSpec {
        name: "prs".into(),
        sources: vec!["prs.jsonl".into()],
        template: Template::PrGeneral,
        chatml: Default::default(),
        filters: FilterConfig::default(),
    };
    let (_, report) = prepare_dataset(&spec, tmp.path(), &tok, &tmp.path().join("out"), &quiet()).unwrap();
    let removed = |reason: &str| report.removed.0.get(reason).copied().unwrap_or(0);
    assert_eq!(removed("decontamination: excluded repository"), 2, "{report:?}");
    assert_eq!(removed("decontamination: fork of an excluded repository"), 1, "{report:?}");
    assert_eq!(report.kept, 1, "a fork that does not declare its upstream is kept");
}

#[test]
fn a_dataset_that_keeps_nothing_or_is_mostly_malformed_fails_by_name_and_bad_utf8_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = common::tokenizer(tmp.path());
    let spec = |source: &str| DatasetSpec {
        name: "prs".into(),
        sources: vec![source.into()],
        template: Template::PrGeneral,
        chatml: Default::default(),
        filters: FilterConfig::default(),
    };
    // Every record removed: an error naming the dataset and why, and no manifest.
    write_jsonl(&tmp.path().join("swe.jsonl"), &[pr("django/django", 1, true, "alice", &["a.py"])], &[]);
    let out = tmp.path().join("empty");
    let err = prepare_dataset(&spec("swe.jsonl"), tmp.path(), &tok, &out, &quiet()).unwrap_err().to_string();
    assert!(err.contains("dataset `prs` kept no record") && err.contains("excluded repository: 1"), "{err}");
    assert!(!out.join("dataset.json").exists());
    let allowed = PrepareOptions { allow_empty: true, ..quiet() };
    assert_eq!(prepare_dataset(&spec("swe.jsonl"), tmp.path(), &tok, &out, &allowed).unwrap().1.kept, 0);

    // One good record, one line of invalid UTF-8 (counted and skipped), two of bad JSON.
    let good = format!("{}\n", pr("acme/a", 1, true, "alice", &["a.py"]));
    let mut bytes = good.into_bytes();
    bytes.extend(b"{\"repo\": \"acme/\xff\"}\n{not json\n{\"repo\": 5}\n");
    std::fs::write(tmp.path().join("bad.jsonl"), bytes).unwrap();
    let err = prepare_dataset(&spec("bad.jsonl"), tmp.path(), &tok, &tmp.path().join("bad"), &quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("too many malformed records") && err.contains("3 malformed (75%"), "{err}");
    assert!(err.contains("bad.jsonl:2: invalid UTF-8"), "{err}");
    let lenient = PrepareOptions { max_malformed_share: 0.8, ..quiet() };
    let (_, report) =
        prepare_dataset(&spec("bad.jsonl"), tmp.path(), &tok, &tmp.path().join("bad"), &lenient).unwrap();
    assert_eq!((report.records, report.malformed, report.kept), (4, 3, 1));
}
