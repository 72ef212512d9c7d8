//! What the integration tests of several crates share: where the repository's committed
//! fixtures are, and how two tensors are compared. A dev-dependency only; nothing here
//! ships in a library.

use std::path::{Path, PathBuf};

use candle_core::Tensor;

/// A path relative to the repository's root.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

/// One of the checkpoints that `scripts/make_fixtures.py` made with transformers, with
/// transformers' outputs beside it (`expected.safetensors`).
pub fn model_fixture(name: &str) -> PathBuf {
    repo_path("crates/model/tests/fixtures").join(name)
}

/// The names of those checkpoints: grouped-query attention with an untied head, and a
/// tied head.
pub const MODEL_FIXTURES: [&str; 2] = ["gqa-untied", "tied"];

/// `max |a - b| / max |b|`, the largest difference relative to the reference's scale.
pub fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "compared tensors differ in shape");
    let largest = |t: &Tensor| -> f32 {
        t.abs().and_then(|t| t.max_all()).and_then(|t| t.to_scalar()).expect("an f32 tensor")
    };
    let diff = (a - b).expect("same shapes subtract");
    largest(&diff) / largest(b).max(f32::MIN_POSITIVE)
}
