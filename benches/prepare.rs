//! Prepare throughput against pure tokenization, in one run.
//!
//! Generates Python PR records, then times (a) the baseline: the `tokenizers` crate's own
//! `encode_batch_fast` over the already-rendered text of the same records, and (b)
//! `prepare_dataset` end to end (read, parse, filter, render, tokenize, write shards).
//! Prints tokens/s of each and prepare's cost as a multiple of the baseline (goal: 1.3x).
//!
//! `cargo bench -p davinci-benches --bench prepare [-- RECORDS]`

use std::path::Path;

use davinci_benches::{best_of, python_source, Lcg};
use davinci_data::filter::FilterConfig;
use davinci_data::prepare::{prepare_dataset, DatasetSpec, PrepareOptions};
use davinci_data::records::PullRequest;
use davinci_data::render::{render_pr_python, Template};
use davinci_data::rendered::END_OF_TEXT;
use davinci_data::tokenize::TextTokenizer;

fn record(rng: &mut Lcg, number: u64) -> serde_json::Value {
    let before = python_source(rng, 60);
    let mut lines: Vec<String> = before.lines().map(|l| format!("{l}\n")).collect();
    let at = 10 + (rng.next_u64() as usize % 40);
    let old_line = lines[at].clone();
    lines[at] = format!("    changed_{number} = {}\n", rng.next_u64() % 97);
    let (start, ctx_before) = (at.saturating_sub(3), at - at.saturating_sub(3));
    let end = (at + 4).min(lines.len());
    let old_hunk: Vec<&str> = before.lines().collect();
    let mut patch = format!("@@ -{},{} +{},{} @@\n", start + 1, end - start, start + 1, end - start);
    for (i, line) in old_hunk[start..end].iter().enumerate() {
        if i == ctx_before {
            patch.push_str(&format!("-{}", old_line));
            patch.push_str(&format!("+{}", lines[at]));
        } else {
            patch.push_str(&format!(" {line}\n"));
        }
    }
    serde_json::json!({
        "repo": "bench/repo", "number": number, "title": format!("Update computation {number}"), "merged": true,
        "state": "closed", "user": {"login": "dev"},
        "body": "This change adjusts one computation and explains why it is needed in some detail.",
        "linked_issues": [{"number": number + 100000, "title": "Wrong value", "body": "The value is wrong when the input is empty."}],
        "files": [{"filename": "pkg/module.py", "status": "modified", "content_before": before, "patch": patch}],
        "commits": [{"sha": format!("{number:040}"), "message": "Fix the computation"}]
    })
}

fn main() {
    let records: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tokenizer_path = root.join("recipes/tokenizer/tokenizer.json");
    let tokenizer = TextTokenizer::from_file(&tokenizer_path).expect("the bundled tokenizer");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = Lcg(7);
    let values: Vec<serde_json::Value> = (0..records as u64).map(|n| record(&mut rng, n)).collect();
    let jsonl: String = values.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(dir.path().join("prs.jsonl"), &jsonl).expect("write records");

    // Baseline: the same samples' text, already rendered, through the tokenizers crate.
    let texts: Vec<String> = values
        .iter()
        .map(|v| {
            let pr: PullRequest = serde_json::from_value(v.clone()).expect("record");
            render_pr_python(&pr).expect("render") + END_OF_TEXT
        })
        .collect();
    let raw = tokenizers::Tokenizer::from_file(&tokenizer_path).expect("tokenizer");
    let (baseline, tokens) = best_of(3, || {
        raw.encode_batch_fast(texts.clone(), false).expect("encode").iter().map(|e| e.len()).sum::<usize>()
    });

    let spec = DatasetSpec {
        name: "bench".into(),
        sources: vec!["prs.jsonl".into()],
        template: Template::PrPython,
        chatml: Default::default(),
        filters: FilterConfig { dedup: true, ..FilterConfig::default() },
    };
    let options = PrepareOptions { progress: false, ..PrepareOptions::default() };
    let out = dir.path().join("out");
    let (prepare, report) =
        best_of(3, || prepare_dataset(&spec, dir.path(), &tokenizer, &out, &options).expect("prepare").1);
    assert_eq!(report.kept as usize, records, "every generated record is kept");

    let rate = |tokens: u64, d: std::time::Duration| tokens as f64 / d.as_secs_f64();
    println!("records: {records}, {} MB of JSONL, {} threads", jsonl.len() >> 20, rayon_threads());
    println!(
        "baseline  tokenizers encode_batch_fast: {:>12.0} tokens/s ({tokens} tokens, {:?})",
        rate(tokens as u64, baseline),
        baseline
    );
    println!(
        "prepare   end to end:                   {:>12.0} tokens/s ({} tokens, {:?})",
        rate(report.tokens, prepare),
        report.tokens,
        prepare
    );
    println!(
        "prepare cost / baseline cost: {:.2}x (goal: at most 1.3x)",
        prepare.as_secs_f64() / baseline.as_secs_f64()
    );
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
