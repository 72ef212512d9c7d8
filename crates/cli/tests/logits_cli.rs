//! `davinci logits` and `davinci convert` run as a user runs them: parity with the
//! transformers fixtures from outside the library, and clear errors on bad input.

use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use davinci_testing::{max_rel, model_fixture as fixture};

fn davinci(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_davinci")).args(args).output().expect("davinci runs")
}

/// Runs davinci and fails the test, with its stderr, unless it succeeds.
fn davinci_ok(args: &[&str]) {
    let run = davinci(args);
    assert!(run.status.success(), "davinci {args:?}: {}", String::from_utf8_lossy(&run.stderr));
}

fn load(path: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// Writes the fixture's sequences as a token file and returns how many there are.
fn write_fixture_tokens(expected: &std::collections::HashMap<String, Tensor>, path: &Path) -> usize {
    let mut text = String::new();
    let mut n = 0;
    while let Some(ids) = expected.get(&format!("input_ids.{n}")) {
        let labels: Vec<i64> = expected[&format!("labels.{n}")].to_vec1().unwrap();
        let ids: Vec<i64> = ids.to_vec1().unwrap();
        text.push_str(&serde_json::json!({ "input_ids": ids, "labels": labels }).to_string());
        text.push('\n');
        n += 1;
    }
    std::fs::write(path, text).unwrap();
    n
}

#[test]
fn logits_command_matches_transformers_and_survives_convert() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["gqa-untied", "tied"] {
        let expected = load(&fixture(name).join("expected.safetensors"));
        let tokens = tmp.path().join(format!("{name}.jsonl"));
        let count = write_fixture_tokens(&expected, &tokens);
        let out = tmp.path().join(format!("{name}-logits.safetensors"));
        davinci_ok(&[
            "logits",
            "--model",
            fixture(name).to_str().unwrap(),
            "--tokens",
            tokens.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let ours = load(&out);
        for n in 0..count {
            let rel = max_rel(&ours[&format!("logits.{n}")], &expected[&format!("logits.{n}")]);
            assert!(rel <= 1e-4, "{name} logits.{n}: {rel:e}");
            let (a, b): (f32, f32) = (
                ours[&format!("loss.{n}")].to_scalar().unwrap(),
                expected[&format!("loss.{n}")].to_scalar().unwrap(),
            );
            assert!((a - b).abs() <= 1e-5 * b.max(1.0), "{name} loss.{n}: {a} vs {b}");
        }

        // A sharded copy written by `convert` gives bit-identical logits.
        let converted = tmp.path().join(format!("{name}-sharded"));
        davinci_ok(&[
            "convert",
            "--model",
            fixture(name).to_str().unwrap(),
            "--out",
            converted.to_str().unwrap(),
            "--max-shard-bytes",
            "50000",
        ]);
        assert!(converted.join("model.safetensors.index.json").is_file());
        let out2 = tmp.path().join(format!("{name}-logits2.safetensors"));
        davinci_ok(&[
            "logits",
            "--model",
            converted.to_str().unwrap(),
            "--tokens",
            tokens.to_str().unwrap(),
            "--out",
            out2.to_str().unwrap(),
        ]);
        let again = load(&out2);
        for n in 0..count {
            let key = format!("logits.{n}");
            assert_eq!(
                ours[&key].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                again[&key].flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
    }
}

#[test]
fn bad_token_lines_are_reported_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("tied");
    let cases = [
        ("{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [1, 2\n", "line 2"),
        ("{\"input_ids\": [1, 2, 3], \"labels\": [2, 3]}\n", "2 labels for 3 input_ids"),
        ("{\"input_ids\": [1, 2, 999]}\n", "token id 999 at position 2"),
        ("{\"input_ids\": [1, 2], \"labels\": [5, 400]}\n", "label 400 at position 1"),
        ("{\"input_ids\": [1], \"lables\": [1]}\n", "unknown field `lables`"),
    ];
    for (i, (content, needle)) in cases.iter().enumerate() {
        let tokens = tmp.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&tokens, content).unwrap();
        let out = tmp.path().join("never.safetensors");
        let run = davinci(&[
            "logits",
            "--model",
            model.to_str().unwrap(),
            "--tokens",
            tokens.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "case {i} should fail");
        assert!(stderr.contains(needle) && stderr.contains(&format!("bad{i}.jsonl")), "case {i}: {stderr}");
        assert!(!out.exists(), "no output file on failure");
    }
    let run = davinci(&["logits", "--model", "no/such-model-here", "--tokens", "x", "--out", "y"]);
    assert!(!run.status.success());
}
