//! A tokenizer by Hub name comes from the local Hugging Face cache, with no network.
//! (Its own test binary: it sets `HF_HOME` for the whole process.)

use std::path::Path;

use davinci_data::tokenize::TextTokenizer;

#[test]
fn hub_name_resolves_from_the_local_cache() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--davinci-test--tiny");
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/tokenizer/tokenizer.json");
    std::fs::copy(&bundled, repo.join("snapshots").join(commit).join("tokenizer.json")).unwrap();
    // SAFETY: this test binary has a single test, so no other thread reads the environment.
    unsafe { std::env::set_var("HF_HOME", home.path()) };

    let from_hub = TextTokenizer::load("davinci-test/tiny").unwrap();
    let local = TextTokenizer::load(bundled.to_str().unwrap()).unwrap();
    assert_eq!(from_hub.hash(), local.hash());
    let err = TextTokenizer::load("./no/such/tokenizer.json").err().unwrap().to_string();
    assert!(err.contains("no/such/tokenizer.json"), "{err}");
}
