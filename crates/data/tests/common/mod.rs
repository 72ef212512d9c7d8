//! Helpers shared by the data tests: real patches from git and a small trained tokenizer.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use davinci_data::tokenize::TextTokenizer;
use davinci_data::train_tokenizer::train_bpe_tokenizer;

/// The hunks of `git diff --no-index old new`, as GitHub's API gives a file's `patch`.
pub fn git_patch(old: &str, new: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, old).unwrap();
    std::fs::write(&b, new).unwrap();
    let out = Command::new("git")
        .args(["diff", "--no-index", "--no-color", "-U3"])
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let start = text.find("\n@@").map(|i| i + 1).expect("git produced a hunk");
    text[start..].to_string()
}

/// A byte-level BPE tokenizer trained on a little code and prose, saved in `dir`.
pub fn tokenizer(dir: &Path) -> TextTokenizer {
    let corpus = dir.join("corpus.txt");
    let text = "def parse(value):\n    return int(value)\n\nFix the parser for empty values.\n".repeat(30);
    std::fs::write(&corpus, text).unwrap();
    let path = dir.join("tokenizer.json");
    train_bpe_tokenizer(&[corpus], 600, &path).unwrap();
    TextTokenizer::from_file(&path).unwrap()
}
