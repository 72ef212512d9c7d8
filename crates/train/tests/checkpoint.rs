//! Training checkpoints round-trip exactly, load as Hugging Face weights, and a crash
//! mid-write (a leftover temporary directory) never counts as a checkpoint.

use std::sync::Arc;

use candle_core::{DType, Device};
use davinci_data::loader::LoaderState;
use davinci_dist::Local;
use davinci_model::{load_checkpoint, Config, Qwen2};
use davinci_train::checkpoint::{checkpoint_dir, latest, load, prune, save, TrainerState};
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
    let config = Config::preset("tiny").unwrap();
    let model = Qwen2::init(config.clone(), 3, &Device::Cpu).unwrap();
    let opt = optimizer(&model);
    assert_eq!(latest(tmp.path(), "mt1"), None);
    for step in [5, 10, 15] {
        let dir = checkpoint_dir(tmp.path(), "mt1", step);
        save(&dir, &config, &sharded(&config, &opt), &state(step), DType::BF16).unwrap();
    }
    // What a crash mid-write leaves: a hidden temporary directory, and a step directory
    // without its state file.
    std::fs::create_dir_all(tmp.path().join("mt1/.step-00000020.tmp-999")).unwrap();
    std::fs::create_dir_all(tmp.path().join("mt1/step-00000025")).unwrap();
    assert_eq!(latest(tmp.path(), "mt1"), Some(checkpoint_dir(tmp.path(), "mt1", 15)));
    prune(tmp.path(), "mt1", 2).unwrap();
    assert!(!checkpoint_dir(tmp.path(), "mt1", 5).exists());
    assert!(checkpoint_dir(tmp.path(), "mt1", 10).exists() && checkpoint_dir(tmp.path(), "mt1", 15).exists());
    let err = load(&tmp.path().join("mt1/step-00000025"), 0, 1).err().unwrap().to_string();
    assert!(err.contains("step-00000025"), "{err}");
}
