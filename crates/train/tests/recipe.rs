//! Recipe files: the bundled ones parse and check; typos and inconsistent settings are
//! errors that say where.

use std::path::Path;

use davinci_data::render::{LossScope, Template};
use davinci_train::Recipe;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

#[test]
fn bundled_recipes_parse_and_check() {
    // At the world sizes their comments plan for.
    for (name, world) in [("tiny", 1), ("davinci-dev-32b", 64), ("davinci-dev-72b", 64), ("sft-pass", 1)] {
        let path = repo(&format!("recipes/{name}.toml"));
        let recipe = Recipe::from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        recipe.check_trainable(world).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!recipe.stages.is_empty(), "{name}");
    }
}

#[test]
fn the_tiny_recipe_names_its_datasets() {
    let recipe = Recipe::from_file(&repo("recipes/tiny.toml")).unwrap();
    let names: Vec<&str> = recipe.datasets.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["general-prs", "python-prs", "env-trajectories", "sft-pass", "plain-text"]);
    assert_eq!(recipe.datasets[1].template, Template::PrPython);
    assert_eq!(recipe.datasets[1].filters.max_files, Some(5));
    assert_eq!(recipe.datasets[3].chatml.loss, LossScope::AssistantOnly);
    assert!(recipe.tokenizer_source().ends_with("recipes/tokenizer/tokenizer.json"));
}

fn error_of(text: &str) -> String {
    Recipe::parse(text, Path::new("/r/recipe.toml"))
        .and_then(|r| r.check_trainable(1).map(|_| ()))
        .unwrap_err()
        .to_string()
}

const BASE: &str = r#"tokenizer = "tok.json"

[model]
preset = "tiny"

[[datasets]]
name = "d"
sources = ["x.jsonl"]
template = "text"

[[stages]]
name = "s"
seq_len = 128
mixture = [{ dataset = "d" }]
tokens_per_step = 512
steps = 3
lr = { peak = 1e-3 }
"#;

#[test]
fn a_well_formed_recipe_checks() {
    let recipe = Recipe::parse(BASE, Path::new("/r/recipe.toml")).unwrap();
    recipe.check_trainable(1).unwrap();
    assert_eq!(recipe.stages[0].global_rows(), 4);
    assert_eq!(recipe.output_dir, Path::new("/checkpoints/recipe"));
    recipe.check_trainable(4).unwrap();
    assert!(recipe.check_trainable(3).is_err(), "4 rows do not split over 3 ranks");
}

#[test]
fn a_typo_names_the_key_and_its_line() {
    let err = error_of(&BASE.replace("steps = 3", "step = 3"));
    assert!(err.contains("/r/recipe.toml:16") && err.contains("unknown field `step`"), "{err}");
    let err = error_of(&BASE.replace("lr = { peak = 1e-3 }", "lr = { peak = 1e-3, warmpu = 0.1 }"));
    assert!(err.contains(":17") && err.contains("warmpu"), "{err}");
    let err = error_of(&BASE.replace("preset = \"tiny\"", "preset = \"tiny\"\nlayers = 4"));
    assert!(err.contains(":5") && err.contains("layers"), "{err}");
    let err = error_of(
        &BASE.replace("template = \"text\"", "template = \"text\"\n[datasets.filters]\nmax_tokenz = 5"),
    );
    assert!((err.contains(":10:") || err.contains(":11:")) && err.contains("max_tokenz"), "{err}");
    let err = error_of(&BASE.replace("template = \"text\"", "template = \"chat-ml\""));
    assert!(err.contains("chat-ml"), "{err}");
}

#[test]
fn inconsistent_settings_are_refused() {
    let cases = [
        ("tokens_per_step = 512", "tokens_per_step = 500", "multiple of seq_len"),
        ("steps = 3", "steps = 3\nepochs = 1.0", "exactly one of `steps` or `epochs`"),
        ("steps = 3", "", "exactly one of `steps` or `epochs`"),
        (
            "lr = { peak = 1e-3 }",
            "lr = { peak = 1e-3, min = 1e-2 }",
            "`lr.min` = 0.01 must be in [0, lr.peak]",
        ),
        ("steps = 3", "steps = 3\nloss = \"assistant-only\"", "`d` is not"),
        ("steps = 3", "steps = 3\nmicro_batch = 3", "micro-batches of 3"),
        ("mixture = [{ dataset = \"d\" }]", "mixture = [{ dataset = \"e\" }]", "does not define"),
        ("preset = \"tiny\"", "preset = \"tiny\"\ninit_from = \"x\"", "exactly one of `preset`"),
    ];
    assert_each_refused(&cases, "");
}

/// Each edit `(from, to)` of the base recipe is refused with an error that holds `prefix`
/// and the case's expected words.
fn assert_each_refused(cases: &[(&str, &str, &str)], prefix: &str) {
    for (from, to, expected) in cases {
        let err = error_of(&BASE.replace(from, to));
        assert!(err.contains(prefix) && err.contains(expected), "{to}: {err}");
    }
}

#[test]
fn every_value_out_of_range_names_the_file_line_stage_and_key() {
    let cases = [
        ("steps = 3", "steps = 3\noptimizer = { beta1 = 1.5 }", "`optimizer.beta1` = 1.5 must be in [0, 1)"),
        ("steps = 3", "steps = 3\noptimizer = { beta2 = -0.1 }", "`optimizer.beta2`"),
        ("steps = 3", "steps = 3\noptimizer = { eps = -1.0 }", "`optimizer.eps` = -1 must be finite and > 0"),
        ("steps = 3", "steps = 3\noptimizer = { weight_decay = -5.0 }", "`optimizer.weight_decay` = -5"),
        ("steps = 3", "steps = 3\nclip_grad_norm = -1.0", "`clip_grad_norm` = -1"),
        ("steps = 3", "steps = 3\nkeep_last = 0", "`keep_last` must be at least 1"),
        ("steps = 3", "steps = 3\ncheckpoint_every = 0", "`checkpoint_every` must be at least 1"),
        ("lr = { peak = 1e-3 }", "lr = { peak = inf }", "`lr.peak` = inf must be finite"),
        ("lr = { peak = 1e-3 }", "lr = { peak = nan }", "`lr.peak` = NaN"),
        ("lr = { peak = 1e-3 }", "lr = { peak = 1e-3, warmup = 1.0 }", "`lr.warmup` = 1"),
        ("seq_len = 128", "seq_len = 2000000000", "`seq_len` = 2000000000 must be in 1..=1048576"),
        ("seq_len = 128", "seq_len = 0", "`seq_len` = 0"),
        ("steps = 3", "steps = 3\npack_window = 0", "`pack_window` must be at least 1"),
        ("mixture = [{ dataset = \"d\" }]", "mixture = []", "`mixture` is empty"),
        (
            "mixture = [{ dataset = \"d\" }]",
            "mixture = [{ dataset = \"d\", upsample = 0.0 }]",
            "would read nothing",
        ),
        (
            "mixture = [{ dataset = \"d\" }]",
            "mixture = [{ dataset = \"d\", upsample = -1.0 }]",
            "`upsample` of `d`",
        ),
        ("steps = 3", "steps = 0", "`steps` must be at least 1"),
        ("steps = 3", "epochs = -2.0", "`epochs` = -2"),
        ("steps = 3", "steps = 3\nmicro_batch = 0", "`micro_batch` = 0"),
    ];
    assert_each_refused(&cases, "/r/recipe.toml:11: stage `s`: ");
}

#[test]
fn stage_and_dataset_names_cannot_leave_their_directories() {
    for name in ["../../x", "/abs/path", "a/b", ".hidden", "", "sp ace"] {
        let err = error_of(&BASE.replace("name = \"s\"", &format!("name = {name:?}")));
        assert!(err.contains(":11:") && err.contains("letters, digits"), "{name}: {err}");
        let text = BASE
            .replace("name = \"d\"", &format!("name = {name:?}"))
            .replace("dataset = \"d\"", &format!("dataset = {name:?}"));
        let err = error_of(&text);
        assert!(err.contains(":6:") && err.contains("names a directory"), "{name}: {err}");
    }
    for name in ["mt1", "sft-pass", "stage_2.b"] {
        Recipe::parse(
            &BASE.replace("name = \"s\"", &format!("name = {name:?}")),
            Path::new("/r/recipe.toml"),
        )
        .unwrap();
    }
}
