//! The data section of recipe files: the bundled tiny recipe parses, and a typo is an
//! error that names the key and the line.

use std::path::Path;

use davinci_data::recipe::DataRecipe;
use davinci_data::render::{LossScope, Template};

#[test]
fn the_tiny_recipe_names_its_datasets() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/tiny.toml");
    let recipe = DataRecipe::from_file(&path).unwrap();
    let names: Vec<&str> = recipe.datasets.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["general-prs", "python-prs", "env-trajectories", "sft-pass", "plain-text"]);
    assert_eq!(recipe.datasets[1].template, Template::PrPython);
    assert_eq!(recipe.datasets[1].filters.max_files, Some(5));
    assert_eq!(recipe.datasets[3].chatml.loss, LossScope::AssistantOnly);
    assert!(recipe.tokenizer_source().ends_with("recipes/tokenizer/tokenizer.json"));
}

#[test]
fn a_typo_names_the_key_and_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.toml");
    let text = "tokenizer = \"t.json\"\n\n[[datasets]]\nname = \"a\"\nsources = [\"x.jsonl\"]\ntemplate = \"chatml\"\n[datasets.filters]\nmax_tokenz = 5\n";
    std::fs::write(&path, text).unwrap();
    let err = DataRecipe::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("r.toml:") && err.contains("max_tokenz"), "{err}");
    let line: usize = err.split(':').nth(1).unwrap().trim().parse().unwrap();
    assert!((7..=8).contains(&line), "line {line}: {err}");

    std::fs::write(&path, text.replace("max_tokenz = 5", "max_tokens = 5").replace("chatml", "chat-ml"))
        .unwrap();
    let err = DataRecipe::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("chat-ml"), "{err}");
}
