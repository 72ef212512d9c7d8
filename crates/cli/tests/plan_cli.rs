//! `davinci plan --model` against `davinci bench step`: the predicted peak heap per rank
//! of one training step, within 15% of the measured one, over sequence lengths, depths,
//! world sizes (threads) and context degrees.

use std::process::Command;

use davinci_model::Config;

fn json_of(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_davinci")).args(args).output().expect("davinci runs");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// A model whose layers, not its head, dominate a step's memory: a small vocabulary and
/// a wide MLP (the presets' 152K vocabulary would make every shape a test of the loss).
fn wide_model(dir: &std::path::Path) -> String {
    let mut config = Config::preset("tiny").unwrap();
    config.vocab_size = 512;
    config.hidden_size = 256;
    config.intermediate_size = 1024;
    config.num_attention_heads = 8;
    config.num_key_value_heads = 2;
    std::fs::write(dir.join("config.json"), config.to_json()).unwrap();
    dir.to_string_lossy().into_owned()
}

#[test]
fn the_predicted_peak_heap_per_rank_is_within_15_percent_of_bench_step() {
    let dir = tempfile::tempdir().unwrap();
    let wide = wide_model(dir.path());
    let shapes: [(&str, &str, &str, &str, &str); 6] = [
        ("tiny", "1024", "2", "1", "1"),
        ("tiny", "4096", "2", "1", "1"),
        (&wide, "1024", "8", "1", "1"),
        (&wide, "4096", "2", "1", "1"),
        (&wide, "2048", "2", "2", "1"),
        (&wide, "4096", "2", "2", "2"),
    ];
    let mut report = Vec::new();
    for (model, seq, layers, world, context) in shapes {
        let shape =
            ["--model", model, "--seq-len", seq, "--layers", layers, "--world", world, "--context", context];
        let mut plan = vec!["plan", "--json"];
        plan.extend(shape);
        let mut bench = vec!["bench", "step", "--json", "--steps", "1"];
        bench.extend(shape);
        let predicted = json_of(&plan)["stages"][0]["per_rank_peak_bytes"].as_f64().unwrap();
        let measured = json_of(&bench)["peak_bytes"].as_f64().unwrap();
        let ratio = predicted / measured;
        let name = if model == "tiny" { "tiny" } else { "wide" };
        report.push(format!(
            "{name} seq {seq} layers {layers} world {world} context {context}: predicted {:.1} MiB, measured {:.1} MiB ({ratio:.2}x)",
            predicted / 1048576.0,
            measured / 1048576.0
        ));
    }
    let text = report.join("\n");
    println!("{text}");
    for line in &report {
        let ratio: f64 = line.rsplit('(').next().unwrap().trim_end_matches("x)").parse().unwrap();
        assert!((0.85..=1.15).contains(&ratio), "{text}");
    }
}
