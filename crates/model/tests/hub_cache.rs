//! A Hub name resolves to its snapshot in the local Hugging Face cache, with no network.
//! (Its own test binary: it sets `HF_HOME` for the whole process.)

mod common;

use candle_core::Device;
use common::{flat, load_fixture_model, model_fixture};
use davinci_model::{load_checkpoint, resolve_model_dir, ModelError};

#[test]
fn hub_name_resolves_from_the_local_cache() {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--davinci-test--tiny-tied");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(model_fixture("tied").join(file), snapshot.join(file)).unwrap();
    }
    // SAFETY: this test binary has a single test, so no other thread reads the environment.
    unsafe { std::env::set_var("HF_HOME", home.path()) };

    let dir = resolve_model_dir("davinci-test/tiny-tied").unwrap();
    assert_eq!(dir, snapshot);
    let model = load_checkpoint(&dir, &Device::Cpu, None).unwrap();
    let reference = load_fixture_model("tied");
    assert_eq!(flat(&model.head_weight().clone()), flat(reference.head_weight()));

    // A local directory wins over the cache; a path that is neither is an error naming it.
    assert_eq!(resolve_model_dir(model_fixture("tied").to_str().unwrap()).unwrap(), model_fixture("tied"));
    let err = resolve_model_dir("./missing/dir/here").unwrap_err();
    assert!(
        matches!(err, ModelError::ModelNotFound(_)) && err.to_string().contains("./missing/dir/here"),
        "{err}"
    );
}
