//! FSDP's prefetch: the step announces each unit before it asks for it, the sharded model
//! issues that unit's all-gather early and then uses it (one gather per unit and pass, no
//! more), and the gradients are those of the whole model, as is their norm over ranks.

mod common;

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use common::{collect_grads, collect_grads_with, model_fixture as fixture};
use davinci_dist::collective::{Membership, Op};
use davinci_dist::threads::thread_group;
use davinci_dist::{Collective, Local};
use davinci_model::checkpoint::load_slices;
use davinci_model::layerwise::{loss_and_grads, Activations, Unit, WeightSource};
use davinci_model::{load_checkpoint, Config, DecoderLayer, PackedLayout, Qwen2};
use davinci_train::optimizer::AdamWConfig;
use davinci_train::sharded::{owned_range, ShardedModel};
use davinci_train::TrainError;

/// Logs what the step asks of a whole model.
struct Recording<'a> {
    model: &'a Qwen2,
    log: RefCell<Vec<String>>,
}

impl WeightSource for Recording<'_> {
    type Error = TrainError;
    fn config(&self) -> &Config {
        self.model.config()
    }
    fn device(&self) -> &Device {
        self.model.device()
    }
    fn embed_weight(&self) -> davinci_train::Result<Tensor> {
        self.log.borrow_mut().push("get Embed".into());
        Ok(WeightSource::embed_weight(self.model)?)
    }
    fn layer(&self, index: usize) -> davinci_train::Result<DecoderLayer> {
        self.log.borrow_mut().push(format!("get Layer({index})"));
        Ok(WeightSource::layer(self.model, index)?)
    }
    fn head(&self) -> davinci_train::Result<(Tensor, Tensor)> {
        self.log.borrow_mut().push("get Head".into());
        Ok(WeightSource::head(self.model)?)
    }
    fn prefetch(&self, next: Unit) -> davinci_train::Result<()> {
        self.log.borrow_mut().push(format!("prefetch {next:?}"));
        Ok(())
    }
}

/// What one step asks of `model`, in order.
fn requests(
    model: &Qwen2,
    (ids, labels, layout): (&[u32], &[i64], &PackedLayout),
    activations: Activations,
) -> Vec<String> {
    let recording = Recording { model, log: RefCell::new(Vec::new()) };
    collect_grads_with(&recording, ids, labels, layout, activations).unwrap();
    recording.log.into_inner()
}

/// The embedding asked for, then each of `units` announced and asked for.
fn announced(units: impl IntoIterator<Item = Unit>) -> Vec<String> {
    let mut expected = vec!["get Embed".to_string()];
    for unit in units {
        expected.extend([format!("prefetch {unit:?}"), format!("get {unit:?}")]);
    }
    expected
}

/// A group of one that counts the all-gathers of tensors it is asked for.
#[derive(Default)]
struct Counting {
    gathers: AtomicUsize,
}

impl Collective for Counting {
    fn membership(&self) -> &Membership {
        Local.membership()
    }
    fn transfer(&self, op: Op, contribution: Vec<u8>) -> davinci_dist::Result<Vec<u8>> {
        Local.transfer(op, contribution)
    }
    fn all_gather_tensor(&self, shard: &Tensor) -> davinci_dist::Result<Tensor> {
        self.gathers.fetch_add(1, Ordering::SeqCst);
        Ok(shard.clone())
    }
}

/// The fixture `name` as a sharded model in a group of one that counts its gathers.
fn counted_shards(name: &str, config: &Config) -> (Arc<Counting>, ShardedModel) {
    let counting = Arc::new(Counting::default());
    let owned = load_slices(&fixture(name), config, owned_range(1, 0)).unwrap();
    let sharded = ShardedModel::from_owned(
        config,
        owned,
        AdamWConfig::default(),
        counting.clone(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    (counting, sharded)
}

fn batch(vocab: u32) -> (Vec<u32>, Vec<i64>, PackedLayout) {
    let ids: Vec<u32> = (0..20u32).map(|i| (i * 29 + 3) % vocab).collect();
    let labels: Vec<i64> =
        (0..20).map(|i| if i % 5 == 0 { -100 } else { ((i * 7 + 1) % vocab as usize) as i64 }).collect();
    (ids, labels, PackedLayout::from_lengths(&[12, 8]).unwrap())
}

#[test]
fn each_unit_is_announced_then_gathered_once_per_pass() {
    for name in ["gqa-untied", "tied"] {
        let model = load_checkpoint(&fixture(name), &Device::Cpu, Some(DType::F32)).unwrap();
        let config = model.config().clone();
        let layers = config.num_hidden_layers;
        let (ids, labels, layout) = batch(config.vocab_size as u32);

        let log = requests(&model, (&ids, &labels, &layout), Activations::Recompute);
        let units =
            (0..layers).map(Unit::Layer).chain([Unit::Head]).chain((0..layers).rev().map(Unit::Layer));
        assert_eq!(log, announced(units), "{name}: the order the step asks in");

        // The sharded model (a group of one) gathers each announced unit once, early.
        let (counting, sharded) = counted_shards(name, &config);
        let (from_shards, sharded_grads) = collect_grads(&sharded, &ids, &labels, &layout).unwrap();
        // Embedding, each layer twice, the head (and a tied head's embedding once more).
        let tied = usize::from(config.tie_word_embeddings);
        assert_eq!(
            counting.gathers.load(Ordering::SeqCst),
            2 * layers + 2 + tied,
            "{name}: gathers per step"
        );

        let (whole, whole_grads) = collect_grads(&model, &ids, &labels, &layout).unwrap();
        assert_eq!(from_shards.loss_sum, whole.loss_sum, "{name}: the loss");
        for (param, grad) in &whole_grads {
            let diff: f32 = (grad - &sharded_grads[param])
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert_eq!(diff, 0.0, "{name} {param}: the same weights give the same gradient");
        }
    }
}

/// Keeping each layer's tape from the forward instead of recomputing it: the step asks
/// for each unit once (and announces no layer it will not ask for again), and the loss
/// and gradients are the recomputing step's, bit for bit, on a whole model and on shards.
#[test]
fn kept_activations_give_the_recomputed_gradients_and_gather_each_layer_once() {
    for name in ["gqa-untied", "tied"] {
        let model = load_checkpoint(&fixture(name), &Device::Cpu, Some(DType::F32)).unwrap();
        let config = model.config().clone();
        let layers = config.num_hidden_layers;
        let (ids, labels, layout) = batch(config.vocab_size as u32);

        let log = requests(&model, (&ids, &labels, &layout), Activations::Keep);
        assert_eq!(
            log,
            announced((0..layers).map(Unit::Layer).chain([Unit::Head])),
            "{name}: the order the step asks in"
        );

        let (counting, sharded) = counted_shards(name, &config);
        let (kept, kept_grads) =
            collect_grads_with(&sharded, &ids, &labels, &layout, Activations::Keep).unwrap();
        let tied = usize::from(config.tie_word_embeddings);
        assert_eq!(counting.gathers.load(Ordering::SeqCst), layers + 2 + tied, "{name}: gathers per step");

        let (recomputed, recomputed_grads) = collect_grads(&model, &ids, &labels, &layout).unwrap();
        assert_eq!(kept.loss_sum, recomputed.loss_sum, "{name}: the loss");
        assert_eq!(kept_grads.len(), recomputed_grads.len());
        for (param, grad) in &recomputed_grads {
            let (a, b) = (grad.flatten_all().unwrap(), kept_grads[param].flatten_all().unwrap());
            assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap(), "{name} {param}");
        }
    }
}

/// The norm the trainer clips with: every rank's reduce-scattered gradient shards, their
/// squares summed on the device and all-reduced. With `world` ranks on the same batch the
/// gradients are `world` times the whole model's, and so is the norm.
#[test]
fn the_gradient_norm_over_ranks_is_the_whole_models() {
    let model = load_checkpoint(&fixture("gqa-untied"), &Device::Cpu, Some(DType::F32)).unwrap();
    let config = model.config().clone();
    let (ids, labels, layout) = batch(config.vocab_size as u32);
    let (_, whole_grads) = collect_grads(&model, &ids, &labels, &layout).unwrap();
    let squares: f64 = whole_grads
        .values()
        .map(|g| {
            g.to_dtype(DType::F64).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
        })
        .sum();
    for world in [1, 2] {
        let norms: Vec<f64> = std::thread::scope(|scope| {
            let handles: Vec<_> = thread_group(world, std::time::Duration::from_secs(60))
                .into_iter()
                .map(|rank| {
                    let (config, ids, labels, layout) = (&config, &ids, &labels, &layout);
                    scope.spawn(move || {
                        let r = rank.rank();
                        let owned =
                            load_slices(&fixture("gqa-untied"), config, owned_range(world, r)).unwrap();
                        let sharded = ShardedModel::from_owned(
                            config,
                            owned,
                            AdamWConfig::default(),
                            Arc::new(rank),
                            DType::F32,
                            &Device::Cpu,
                        )
                        .unwrap();
                        loss_and_grads(&sharded, ids, labels, layout, &mut |unit| {
                            sharded.reduce_scatter(unit)
                        })
                        .unwrap();
                        sharded.grad_norm().unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let expected = world as f64 * squares.sqrt();
        for (r, norm) in norms.iter().enumerate() {
            let error = (norm - expected).abs() / expected;
            assert!(error < 1e-6, "world {world} rank {r}: norm {norm}, whole model {expected}");
        }
    }
}
