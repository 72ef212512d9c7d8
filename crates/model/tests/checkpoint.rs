//! Saving and loading Hugging Face checkpoints: bit-exact round trips (single file,
//! shards, bf16), and errors that name the tensor and the file.

mod common;

use std::fs;

use candle_core::{DType, Device};
use common::{flat, load_fixture_model, model_fixture, MODEL_FIXTURES};
use davinci_model::checkpoint::checksums::CHECKSUMS_FILE;
use davinci_model::checkpoint::{WeightsWriter, INDEX_FILE, SINGLE_FILE};
use davinci_model::{load_checkpoint, save_checkpoint, save_tensors, ModelError, Qwen2, SaveOptions};

fn bits(model: &Qwen2) -> Vec<(String, Vec<usize>, DType, Vec<u32>)> {
    model
        .named_tensors()
        .into_iter()
        .map(|(name, t)| {
            let raw: Vec<u32> = flat(&t).into_iter().map(f32::to_bits).collect();
            (name, t.dims().to_vec(), t.dtype(), raw)
        })
        .collect()
}

#[test]
fn save_then_load_is_bit_exact_single_file_and_sharded() {
    let tmp = tempfile::tempdir().unwrap();
    for name in MODEL_FIXTURES {
        let model = load_fixture_model(name);
        let single = tmp.path().join(format!("{name}-single"));
        save_checkpoint(&model, &single, &SaveOptions::default()).unwrap();
        assert!(single.join(SINGLE_FILE).is_file() && !single.join(INDEX_FILE).exists());
        let reloaded = load_checkpoint(&single, &Device::Cpu, None).unwrap();
        assert_eq!(bits(&reloaded), bits(&model), "{name}: single-file round trip");
        assert_eq!(reloaded.config(), model.config());

        let sharded = tmp.path().join(format!("{name}-sharded"));
        let options = SaveOptions { max_shard_bytes: 64 * 1024, ..SaveOptions::default() };
        save_checkpoint(&model, &sharded, &options).unwrap();
        let shards: Vec<_> = fs::read_dir(&sharded)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| f.starts_with("model-") && f.ends_with(".safetensors"))
            .collect();
        assert!(shards.len() > 2, "{name}: expected several shards, got {shards:?}");
        let index: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(sharded.join(INDEX_FILE)).unwrap()).unwrap();
        assert_eq!(index["weight_map"].as_object().unwrap().len(), model.named_tensors().len());
        let reloaded = load_checkpoint(&sharded, &Device::Cpu, None).unwrap();
        assert_eq!(bits(&reloaded), bits(&model), "{name}: sharded round trip");
    }
}

#[test]
fn bf16_checkpoint_round_trips_and_records_its_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let model = load_fixture_model("tied");
    let dir = tmp.path().join("bf16");
    save_checkpoint(&model, &dir, &SaveOptions { dtype: Some(DType::BF16), ..SaveOptions::default() })
        .unwrap();
    let stored = load_checkpoint(&dir, &Device::Cpu, None).unwrap();
    assert_eq!(stored.config().torch_dtype, "bfloat16");
    assert!(stored.named_tensors().iter().all(|(_, t)| t.dtype() == DType::BF16));
    let again = tmp.path().join("bf16-again");
    save_checkpoint(&stored, &again, &SaveOptions::default()).unwrap();
    assert_eq!(fs::read(dir.join(SINGLE_FILE)).unwrap(), fs::read(again.join(SINGLE_FILE)).unwrap());
    // bf16 keeps 8 bits of mantissa: every weight within 2^-8 relative of the f32 one.
    let as_f32 = load_checkpoint(&dir, &Device::Cpu, Some(DType::F32)).unwrap();
    for ((name, a), (_, b)) in as_f32.named_tensors().iter().zip(model.named_tensors().iter()) {
        for (x, y) in flat(a).iter().zip(flat(b)) {
            assert!((x - y).abs() <= y.abs() / 256.0, "{name}: {x} vs {y}");
        }
    }
}

#[test]
fn saving_over_a_checkpoint_replaces_weights_and_keeps_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let model = load_fixture_model("gqa-untied");
    save_checkpoint(&model, &dir, &SaveOptions { max_shard_bytes: 64 * 1024, ..SaveOptions::default() })
        .unwrap();
    fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    save_checkpoint(&model, &dir, &SaveOptions::default()).unwrap();
    let names: Vec<String> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.contains(&"tokenizer.json".to_string()));
    assert!(!names.iter().any(|n| n.starts_with("model-")), "stale shards removed: {names:?}");
    let leftovers: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary directories left: {leftovers:?}");
}

/// The streaming writer a trainer feeds unit by unit: each file is on disk as soon as its
/// last tensor arrives, the result loads like any checkpoint, and a tensor out of the
/// announced order or one never written is named.
#[test]
fn weights_stream_into_their_files_as_they_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let model = load_fixture_model("gqa-untied");
    let tensors = model.named_tensors();
    let layout: Vec<_> = tensors.iter().map(|(n, t)| (n.clone(), t.dims().to_vec(), t.dtype())).collect();
    let options = SaveOptions { max_shard_bytes: 64 * 1024, ..SaveOptions::default() };
    let dir = tmp.path().join("streamed");
    fs::create_dir_all(&dir).unwrap();
    let mut writer = WeightsWriter::new(&dir, model.config(), &layout, &options).unwrap();
    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join(INDEX_FILE)).unwrap()).unwrap();
    let first_file = index["weight_map"][&tensors[0].0].as_str().unwrap().to_string();
    let in_first = tensors.iter().filter(|(n, _)| index["weight_map"][n] == first_file.as_str()).count();
    assert!(in_first < tensors.len(), "the model spans several files");
    for (i, (name, tensor)) in tensors.iter().enumerate() {
        assert_eq!(dir.join(&first_file).exists(), i >= in_first, "{first_file} before tensor {i}");
        writer.push(name, tensor).unwrap();
    }
    writer.finish().unwrap();
    let reloaded = load_checkpoint(&dir, &Device::Cpu, None).unwrap();
    assert_eq!(bits(&reloaded), bits(&model));

    let other = tmp.path().join("out-of-order");
    fs::create_dir_all(&other).unwrap();
    let mut writer = WeightsWriter::new(&other, model.config(), &layout, &options).unwrap();
    let err = writer.push(&tensors[1].0, &tensors[1].1).unwrap_err().to_string();
    assert!(
        err.contains(&tensors[1].0) && err.contains(&format!("`{}` was announced next", tensors[0].0)),
        "{err}"
    );
    writer.push(&tensors[0].0, &tensors[0].1).unwrap();
    let err = writer.finish().unwrap_err().to_string();
    assert!(err.contains(&tensors[1].0), "{err}");
}

fn copy_fixture(name: &str, to: &std::path::Path) {
    fs::create_dir_all(to).unwrap();
    for file in ["config.json", SINGLE_FILE] {
        fs::copy(model_fixture(name).join(file), to.join(file)).unwrap();
    }
}

#[test]
fn missing_tensor_is_named_with_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = load_fixture_model("gqa-untied");
    let dir = tmp.path().join("missing");
    let dropped = "model.layers.1.self_attn.k_proj.bias";
    let kept: Vec<_> = model.named_tensors().into_iter().filter(|(n, _)| n != dropped).collect();
    save_tensors(model.config(), &kept, &dir, &SaveOptions::default()).unwrap();
    let err = load_checkpoint(&dir, &Device::Cpu, None).unwrap_err();
    assert!(matches!(err, ModelError::MissingTensor { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(dropped) && message.contains(SINGLE_FILE), "{message}");
}

#[test]
fn wrong_shape_is_named_with_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shape");
    copy_fixture("gqa-untied", &dir);
    let config_path = dir.join("config.json");
    let text = fs::read_to_string(&config_path)
        .unwrap()
        .replace("\"intermediate_size\": 96", "\"intermediate_size\": 100");
    fs::write(&config_path, text).unwrap();
    let err = load_checkpoint(&dir, &Device::Cpu, None).unwrap_err().to_string();
    assert!(
        err.contains("model.layers.0.mlp.gate_proj.weight")
            && err.contains("[96, 64]")
            && err.contains(SINGLE_FILE),
        "{err}"
    );
}

#[test]
fn truncated_file_is_reported_as_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("truncated");
    copy_fixture("tied", &dir);
    let path = dir.join(SINGLE_FILE);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let err = load_checkpoint(&dir, &Device::Cpu, None).unwrap_err();
    assert!(matches!(err, ModelError::CorruptFile { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn config_errors_name_the_file_and_place() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("config");
    copy_fixture("tied", &dir);
    let config_path = dir.join("config.json");
    fs::write(&config_path, "{\n  \"hidden_size\": 48,\n  \"vocab_size\": oops\n}").unwrap();
    let err = load_checkpoint(&dir, &Device::Cpu, None).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("line 3"), "{err}");
    fs::write(
        &config_path,
        fs::read_to_string(model_fixture("tied").join("config.json"))
            .unwrap()
            .replace("\"num_key_value_heads\": 4", "\"num_key_value_heads\": 3"),
    )
    .unwrap();
    let err = load_checkpoint(&dir, &Device::Cpu, None).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("num_key_value_heads"), "{err}");
}

#[test]
fn presets_carry_the_public_qwen25_shapes() {
    use davinci_model::Config;
    let expect = [
        ("qwen2.5-0.5b", 494_032_768usize),
        ("qwen2.5-7b", 7_615_616_512),
        ("qwen2.5-32b", 32_763_876_352),
        ("qwen2.5-72b", 72_706_203_648),
    ];
    for (name, params) in expect {
        let config = Config::preset(name).unwrap();
        assert_eq!(config.num_parameters(), params, "{name}");
    }
    assert_eq!(Config::preset("qwen2.5-72b").unwrap().rms_norm_eps, 1e-5);
    assert!(Config::preset("qwen2.5-9b").unwrap_err().to_string().contains("qwen2.5-7b"));
}

#[test]
fn fresh_weights_are_reproducible_and_shaped_like_transformers_init() {
    use davinci_model::Config;
    let config = Config::preset("tiny").unwrap();
    let a = Qwen2::init(config.clone(), 7, &Device::Cpu).unwrap();
    let b = Qwen2::init(config.clone(), 7, &Device::Cpu).unwrap();
    let c = Qwen2::init(config, 8, &Device::Cpu).unwrap();
    assert_eq!(bits(&a), bits(&b));
    assert_ne!(bits(&a), bits(&c));
    for (name, t) in a.named_tensors() {
        let values = flat(&t);
        if name.ends_with("norm.weight") {
            assert!(values.iter().all(|&v| v == 1.0), "{name}");
        } else if name.ends_with(".bias") {
            assert!(values.iter().all(|&v| v == 0.0), "{name}");
        } else {
            let n = values.len() as f64;
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
            let std = (values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
            assert!(mean.abs() < 0.003 && (std - 0.02).abs() < 0.002, "{name}: mean {mean}, std {std}");
        }
    }
}

#[test]
fn slices_read_straight_from_the_files_equal_the_loaded_values() {
    let tmp = tempfile::tempdir().unwrap();
    for name in MODEL_FIXTURES {
        let model = load_fixture_model(name);
        for (dtype, sharded) in [(DType::F32, false), (DType::BF16, true), (DType::F16, false)] {
            let dir = tmp.path().join(format!("{name}-{dtype:?}"));
            let max_shard_bytes = if sharded { 64 * 1024 } else { SaveOptions::default().max_shard_bytes };
            save_checkpoint(&model, &dir, &SaveOptions { dtype: Some(dtype), max_shard_bytes }).unwrap();
            let full = load_checkpoint(&dir, &Device::Cpu, Some(DType::F32)).unwrap();
            let expected: std::collections::HashMap<String, Vec<f32>> =
                full.named_tensors().iter().map(|(n, t)| (n.clone(), flat(t))).collect();
            // Rank 1 of 3, as FSDP cuts it: an awkward middle slice of every parameter.
            let slices = davinci_model::checkpoint::load_slices(&dir, model.config(), |_, len| {
                let per = len.div_ceil(3);
                per.min(len)..(2 * per).min(len)
            })
            .unwrap();
            for (tensor, values) in slices {
                let all = &expected[&tensor];
                let per = all.len().div_ceil(3);
                assert_eq!(
                    values,
                    all[per.min(all.len())..(2 * per).min(all.len())],
                    "{name} {dtype:?} {tensor}"
                );
            }
        }
    }
}

#[test]
fn fresh_weights_can_be_computed_slice_by_slice() {
    let config = davinci_model::Config::preset("tiny").unwrap();
    let model = Qwen2::init(config.clone(), 11, &Device::Cpu).unwrap();
    for (name, tensor) in model.named_tensors() {
        let all = flat(&tensor);
        let cut = all.len() / 3 + 1;
        let mut pieces = davinci_model::init::init_values(&config, 11, &name, 0..cut);
        pieces.extend(davinci_model::init::init_values(&config, 11, &name, cut..all.len()));
        assert_eq!(pieces, all, "{name}");
    }
}

/// A sharded copy of a fixture, as a checkpoint from elsewhere would be: no checksums.
fn sharded_copy(to: &std::path::Path) -> Qwen2 {
    let model = load_fixture_model("gqa-untied");
    let options = SaveOptions { max_shard_bytes: 64 * 1024, ..SaveOptions::default() };
    save_checkpoint(&model, to, &options).unwrap();
    fs::remove_file(to.join(CHECKSUMS_FILE)).unwrap();
    model
}

#[test]
fn an_index_may_name_only_regular_files_of_its_own_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    sharded_copy(&dir);
    let index_path = dir.join(INDEX_FILE);
    let original = fs::read_to_string(&index_path).unwrap();
    let first = "model-00001-of-";
    for escape in ["../../../../etc/passwd", "../other/model.safetensors", "/etc/passwd"] {
        let text = original.replacen(&format!("\"{first}"), &format!("\"{escape}#"), 1);
        fs::write(&index_path, text).unwrap();
        let err = load_checkpoint(&dir, &Device::Cpu, None).unwrap_err().to_string();
        assert!(err.contains(INDEX_FILE) && err.contains("own directory"), "{escape}: {err}");
    }
    fs::write(&index_path, &original).unwrap();
    // A FIFO in a shard's place would block forever on open.
    let shard = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(first))
        .unwrap();
    fs::remove_file(&shard).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(&shard).status().unwrap().success());
    let err = load_checkpoint(&dir, &Device::Cpu, None).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn a_config_with_more_layers_than_the_weights_is_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    sharded_copy(&dir);
    let config_path = dir.join("config.json");
    let text = fs::read_to_string(&config_path).unwrap();
    let layers = |n: u64| {
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["num_hidden_layers"] = n.into();
        json.to_string()
    };
    fs::write(&config_path, layers(3)).unwrap();
    let err = load_checkpoint(&dir, &Device::Cpu, None).unwrap_err().to_string();
    assert!(err.contains("num_hidden_layers = 3") && err.contains("hold 2 layer"), "{err}");
    // 10^8 layers is refused by the config's own bounds, before any name is built.
    fs::write(&config_path, layers(100_000_000)).unwrap();
    let err = load_checkpoint(&dir, &Device::Cpu, None).unwrap_err().to_string();
    assert!(err.contains("num_hidden_layers = 100000000 is outside"), "{err}");
}

#[test]
fn a_write_that_fails_leaves_no_temporary_directory_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let result = davinci_model::checkpoint::write_dir_atomically(
        &dir,
        |_| false,
        |tmp_dir| {
            fs::write(tmp_dir.join("model.safetensors"), vec![0u8; 4096]).unwrap();
            Err(ModelError::InvalidConfig("the disk is full".into()))
        },
    );
    assert!(result.unwrap_err().to_string().contains("the disk is full"));
    let left: Vec<_> =
        fs::read_dir(tmp.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
}
