//! `davinci data prepare` on the bundled tiny recipe, as a user runs it from a fresh clone.

use std::path::Path;
use std::process::Command;

use davinci_data::dataset::Dataset;
use davinci_data::tokenize::TextTokenizer;

/// Runs davinci from the repository root with `--data-dir DIR` appended.
fn davinci_in_root(args: &[&str], data_dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_davinci"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .current_dir(root())
        .output()
        .unwrap()
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn tiny_recipe_prepares_every_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let run = davinci_in_root(&["data", "prepare", "recipes/tiny.toml"], tmp.path());
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("removed, decontamination: n-gram overlap: 1"), "{stdout}");
    assert!(stdout.contains("removed, decontamination: excluded repository: 2"), "{stdout}");
    // The old top-level spelling still works.
    let run = davinci_in_root(&["prepare", "recipes/tiny.toml", "--only", "plain-text"], tmp.path());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    let tokenizer = TextTokenizer::from_file(&root().join("recipes/tokenizer/tokenizer.json")).unwrap();
    let open = |name: &str| {
        let dataset = Dataset::open(&tmp.path().join(name)).unwrap();
        dataset.verify().unwrap();
        assert_eq!(dataset.manifest.tokenizer_sha256, tokenizer.hash());
        dataset
    };
    for name in ["general-prs", "python-prs", "plain-text"] {
        let d = open(name);
        assert!(
            d.manifest.docs > 0 && d.manifest.loss_tokens == d.manifest.tokens,
            "{name}: loss on every token"
        );
    }
    let sft = open("sft-pass");
    assert!(sft.manifest.loss_tokens < sft.manifest.tokens / 2, "SFT masks everything but the assistant");

    // The trajectory whose tool output contains <|im_end|> still has one <|im_end|> per turn.
    let env = open("env-trajectories");
    let im_end = tokenizer.special_id("<|im_end|>").unwrap();
    let im_start = tokenizer.special_id("<|im_start|>").unwrap();
    let mut checked = 0;
    for shard in &env.shards {
        for d in 0..shard.num_docs() {
            let ids = &shard.tokens()[shard.doc_range(d)];
            let starts = ids.iter().filter(|&&t| t == im_start).count();
            let ends = ids.iter().filter(|&&t| t == im_end).count();
            assert_eq!(starts, ends, "document {d}: balanced turns");
            let text = tokenizer.decode(ids).unwrap();
            if text.contains("llama") && text.matches("<|im_end|>").count() > ends {
                checked += 1;
            }
        }
    }
    assert!(checked >= 1, "the forged <|im_end|> appears as text, not as a token");

    // The stages' plan, from the shard indexes.
    let run =
        davinci_in_root(&["data", "stats", "recipes/tiny.toml", "--world-size", "2", "--verify"], tmp.path());
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    for needle in [
        "stage mt1 (seq_len 1024)",
        "stage mt2",
        "env-trajectories         upsample    3",
        "stage sft",
        "padding",
    ] {
        assert!(stdout.contains(needle), "`{needle}` in:\n{stdout}");
    }

    // A flipped byte in a shard is caught by --verify, and named.
    let shard = tmp.path().join("sft-pass/shard-00000.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 1;
    std::fs::write(&shard, bytes).unwrap();
    let run =
        davinci_in_root(&["data", "stats", "recipes/tiny.toml", "--stage", "sft", "--verify"], tmp.path());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("sft-pass/shard-00000.bin") && stderr.contains("checksum"),
        "{stderr}"
    );
}

#[test]
fn preparing_a_large_record_stays_within_ten_times_its_size() {
    let tmp = tempfile::tempdir().unwrap();
    // One record of about 8 MB of the bundled texts, and the small ones after it.
    let bundled = std::fs::read_to_string(root().join("recipes/data/plain-text.jsonl")).unwrap();
    let texts: Vec<String> = bundled
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    let mut big = String::new();
    for text in texts.iter().cycle() {
        if big.len() > 8 << 20 {
            break;
        }
        big.push_str(text);
        big.push('\n');
    }
    let record = serde_json::json!({"id": "big", "text": big}).to_string();
    std::fs::write(tmp.path().join("big.jsonl"), format!("{record}\n{bundled}")).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_davinci"))
        .args(["data", "prepare", "--template", "text", "--source"])
        .arg(tmp.path().join("big.jsonl"))
        .arg("--tokenizer")
        .arg(root().join("recipes/tokenizer/tokenizer.json"))
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let peak = stdout.lines().find_map(|l| l.trim().strip_prefix("peak heap: ")).unwrap();
    let mib: f64 = match peak.split_once(' ') {
        Some((n, "MiB")) => n.parse().unwrap(),
        Some((n, "KiB")) => n.parse::<f64>().unwrap() / 1024.0,
        Some((n, "GiB")) => n.parse::<f64>().unwrap() * 1024.0,
        _ => panic!("peak heap: {peak}"),
    };
    let record_mib = record.len() as f64 / (1 << 20) as f64;
    // Ten times the record, plus a constant for the tokenizer and the shard writer.
    assert!(mib < 10.0 * record_mib + 64.0, "peak heap {mib:.0} MiB for a {record_mib:.1} MiB record");
    eprintln!("peak heap {mib:.0} MiB for a {record_mib:.1} MiB record ({:.1}x)", mib / record_mib);
}
