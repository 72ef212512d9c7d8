//! Training checkpoints round-trip exactly, load as Hugging Face weights, and a crash
//! mid-write (a leftover temporary directory) never counts as a checkpoint.

use std::sync::Arc;

use candle_core::{DType, Device};
use davinci_data::loader::LoaderState;
use davinci_dist::Local;
use davinci_model::checkpoint::checksums::{verify_dir, CHECKSUMS_FILE};
use davinci_model::{load_checkpoint, Config, Qwen2};
use davinci_train::checkpoint::{
    checkpoint_dir, clean_leftovers, latest, leftovers, load, optimizer_file, prune, prune_with, save,
    TrainerState,
};
use davinci_train::optimizer::{AdamW, AdamWConfig, ParamState};
use davinci_train::sharded::ShardedModel;

fn optimizer(model: &Qwen2) -> AdamW {
    let params = model
        .named_tensors()
        .iter()
        .map(|(n, t)| ParamState::new(n, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    let mut opt = AdamW::new(AdamWConfig::default(), params);
    // Moments of a step taken: awkward values that a lossy round trip would change.
    for p in &mut opt.params {
        p.m = p.master.iter().map(|w| w.sin() * 1e-3).collect();
        p.v = p.master.iter().map(|w| w.cos() * w.cos() * 1e-6).collect();
    }
    opt.steps = 1;
    opt
}

/// The optimizer as the trainer holds it: a sharded model of one rank.
fn sharded(config: &Config, opt: &AdamW) -> ShardedModel {
    ShardedModel::from_shards(config, opt.clone(), Arc::new(Local), DType::F32, &Device::Cpu).unwrap()
}

fn state(step: u64) -> TrainerState {
    TrainerState {
        stage: "mt1".into(),
        stage_index: 0,
        step,
        tokens_seen: step * 4096,
        loader: LoaderState { epoch: 0, window: 2, row: 5, batches: step },
        recipe: [("model".to_string(), "abc".to_string())].into(),
        elapsed_seconds: 1.5,
    }
}

/// Checkpoints of stage `mt1` after each of `steps` under `root`, of one tiny model's
/// optimizer (masters and moments), weights in `dtype`; the model's config and that state.
fn saved(root: &std::path::Path, steps: &[u64], dtype: DType) -> (Config, AdamW) {
    let config = Config::preset("tiny").unwrap();
    let opt = optimizer(&Qwen2::init(config.clone(), 3, &Device::Cpu).unwrap());
    for &step in steps {
        save(&checkpoint_dir(root, "mt1", step), &config, &sharded(&config, &opt), &state(step), dtype)
            .unwrap();
    }
    (config, opt)
}

/// Flips the bits of `mask` in the byte `from_end` bytes before the end of a file.
fn flip(path: &std::path::Path, from_end: usize, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() - from_end;
    bytes[at] ^= mask;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn checkpoints_round_trip_and_load_as_hf_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config::preset("tiny").unwrap();
    let model = Qwen2::init(config.clone(), 3, &Device::Cpu).unwrap();
    let opt = optimizer(&model);
    let dir = checkpoint_dir(tmp.path(), "mt1", 10);
    save(&dir, &config, &sharded(&config, &opt), &state(10), DType::F32).unwrap();

    let (loaded_config, loaded_opt, loaded_state) = load(&dir, 0, 1).unwrap();
    assert_eq!(loaded_opt, opt, "masters, moments and step count");
    assert_eq!(loaded_state, state(10));
    assert_eq!(loaded_config.hidden_size, config.hidden_size);

    let weights = load_checkpoint(&dir, &Device::Cpu, None).unwrap();
    for ((name, t), p) in weights.named_tensors().iter().zip(&opt.params) {
        assert_eq!(name, &p.name);
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            p.master,
            "{name}: the weights are the masters"
        );
    }
}

#[test]
fn latest_ignores_incomplete_writes_and_prune_keeps_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(latest(tmp.path(), "mt1"), None);
    saved(tmp.path(), &[5, 10, 15], DType::BF16);
    // What a crash mid-write leaves: a hidden temporary directory, and a step directory
    // without its state file.
    std::fs::create_dir_all(tmp.path().join("mt1/.step-00000020.tmp-999")).unwrap();
    std::fs::create_dir_all(tmp.path().join("mt1/step-00000025")).unwrap();
    assert_eq!(latest(tmp.path(), "mt1"), Some(checkpoint_dir(tmp.path(), "mt1", 15)));
    assert!(prune(tmp.path(), "mt1", 2).is_empty());
    assert!(leftovers(tmp.path(), "mt1").is_empty(), "the interrupted write's directory is gone");
    assert!(!checkpoint_dir(tmp.path(), "mt1", 5).exists());
    assert!(checkpoint_dir(tmp.path(), "mt1", 10).exists() && checkpoint_dir(tmp.path(), "mt1", 15).exists());
    let err = load(&tmp.path().join("mt1/step-00000025"), 0, 1).err().unwrap().to_string();
    assert!(err.contains("step-00000025"), "{err}");
}

#[test]
fn a_prune_that_fails_is_reported_and_keeps_going() {
    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path(), &[5, 10, 15], DType::BF16);
    std::fs::create_dir_all(tmp.path().join("mt1/.step-00000020.tmp-999")).unwrap();
    // The oldest checkpoint is held open elsewhere and cannot be removed.
    let held = checkpoint_dir(tmp.path(), "mt1", 5);
    let failed = prune_with(tmp.path(), "mt1", 1, |path| {
        if path == held {
            Err(std::io::Error::new(std::io::ErrorKind::ResourceBusy, "held by an evaluation job"))
        } else {
            std::fs::remove_dir_all(path)
        }
    });
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, held);
    // The rest of the prune still happened.
    assert!(!checkpoint_dir(tmp.path(), "mt1", 10).exists());
    assert!(leftovers(tmp.path(), "mt1").is_empty());
    assert_eq!(latest(tmp.path(), "mt1"), Some(checkpoint_dir(tmp.path(), "mt1", 15)));
}

#[test]
fn every_file_of_a_checkpoint_is_checksummed_and_a_flipped_bit_is_refused_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path(), &[10], DType::F32);
    let dir = checkpoint_dir(tmp.path(), "mt1", 10);
    let report = verify_dir(&dir).unwrap();
    let names: Vec<String> =
        report.verified.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for name in ["config.json", "model.safetensors", "trainer_state.json", &optimizer_file(0, 1)] {
        assert!(names.iter().any(|n| n == name), "{name} is not in {CHECKSUMS_FILE}: {names:?}");
    }
    assert!(report.unlisted.is_empty(), "{:?}", report.unlisted);
    // One bit flipped in the optimizer's moments, deep inside the file.
    flip(&dir.join(optimizer_file(0, 1)), 100, 1);
    let error = load(&dir, 0, 1).err().unwrap().to_string();
    assert!(error.contains(&optimizer_file(0, 1)) && error.contains("corrupt"), "{error}");
    // The weights as Hugging Face files are checked by their loader too.
    flip(&dir.join("model.safetensors"), 7, 0x10);
    let error = load_checkpoint(&dir, &Device::Cpu, None).err().unwrap().to_string();
    assert!(error.contains("model.safetensors") && error.contains("corrupt"), "{error}");
}

#[test]
fn a_checkpoint_moved_aside_by_an_interrupted_replacement_is_put_back() {
    let tmp = tempfile::tempdir().unwrap();
    saved(tmp.path(), &[5], DType::BF16);
    let dir = checkpoint_dir(tmp.path(), "mt1", 5);
    // A crash between moving the old copy aside and renaming the new one into place.
    let aside = tmp.path().join("mt1/.step-00000005.old-4242");
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::create_dir_all(tmp.path().join("mt1/.step-00000005.tmp-4242")).unwrap();
    assert_eq!(latest(tmp.path(), "mt1"), None);
    let failed = clean_leftovers(tmp.path(), "mt1", &|p: &std::path::Path| std::fs::remove_dir_all(p));
    assert!(failed.is_empty());
    assert_eq!(latest(tmp.path(), "mt1"), Some(dir.clone()), "the complete checkpoint is back");
    assert!(leftovers(tmp.path(), "mt1").is_empty());
    load(&dir, 0, 1).unwrap();
}
