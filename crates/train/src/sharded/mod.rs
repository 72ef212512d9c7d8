//! FSDP: every rank holds 1/world of each unit's parameters (the embedding, each layer,
//! the final norm with the head) as fp32 masters with their AdamW moments and gradient
//! shards, on the training device. The step gathers a unit's weights (in the compute
//! dtype) just before it runs and drops them after, and the next unit's gather is issued
//! before this one computes (on NCCL's own stream, so the two overlap on a GPU); a unit's
//! gradients are reduce-scattered into this rank's fp32 shard as soon as its backward
//! ends; the optimizer steps on the local shards only. At world size 1 the same code runs
//! with collectives that copy.

pub mod flat_unit;
mod unit_shard;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use davinci_dist::Collective;
use davinci_model::names::{layer_prefix, parameter_shapes, EMBED, FINAL_NORM, LAYER_TENSORS, LM_HEAD};
use davinci_model::{Config, DecoderLayer};

use crate::error::{Result, TrainError};
use crate::optimizer::{clip_factor, AdamW, AdamWConfig, ParamState};
use davinci_model::{Unit, WeightSource};
use flat_unit::FlatUnit;
use unit_shard::UnitShard;

/// The units of a model, in the order the step visits them: embedding, layers, head.
pub fn units(config: &Config, world: usize) -> Vec<FlatUnit> {
    let shapes: HashMap<String, usize> =
        parameter_shapes(config).into_iter().map(|(n, s)| (n, s.iter().product())).collect();
    let unit = |names: Vec<String>| {
        FlatUnit::new(names.into_iter().filter_map(|n| shapes.get(&n).map(|&len| (n, len))).collect(), world)
    };
    let mut all = vec![unit(vec![EMBED.to_string()])];
    for layer in 0..config.num_hidden_layers {
        all.push(unit(LAYER_TENSORS.iter().map(|s| format!("{}{s}", layer_prefix(layer))).collect()));
    }
    all.push(unit(vec![FINAL_NORM.to_string(), LM_HEAD.to_string()]));
    all
}

/// The elements of a parameter this rank holds, by name and length: what to read of a
/// checkpoint or to initialise.
pub fn owned_range(world: usize, rank: usize) -> impl Fn(&str, usize) -> std::ops::Range<usize> {
    move |_, numel| flat_unit::owned(numel, world, rank)
}

/// This rank's slices of fresh weights (`Qwen2::init`'s values, computed slice by slice).
pub fn fresh_slices(config: &Config, seed: u64, world: usize, rank: usize) -> Vec<(String, Vec<f32>)> {
    let range = owned_range(world, rank);
    parameter_shapes(config)
        .into_iter()
        .map(|(name, shape)| {
            let owned = range(&name, shape.iter().product());
            let values = davinci_model::init::init_values(config, seed, &name, owned);
            (name, values)
        })
        .collect()
}

/// This rank's part of the model and its optimizer state, on the training device.
pub struct ShardedModel {
    config: Config,
    shards: Vec<UnitShard>,
    /// Parameter name -> its unit.
    unit_of: HashMap<String, usize>,
    shapes: HashMap<String, Vec<usize>>,
    adam: AdamWConfig,
    /// Optimizer steps taken (bias correction uses it).
    steps: u64,
    collective: Arc<dyn Collective>,
    dtype: DType,
    device: Device,
    /// Per unit, this rank's gradient shard over the step so far; behind a cell because
    /// the step's sink adds to it while the step borrows the model as its weight source.
    grads: RefCell<Vec<GradShard>>,
    /// A unit whose all-gather was issued ahead of its use ([`WeightSource::prefetch`]).
    prefetched: RefCell<Option<(usize, Tensor)>>,
}

impl ShardedModel {
    /// Around this rank's slices of every parameter (`owned`: unpadded, as
    /// [`owned_range`] cuts them), with fresh moments.
    pub fn from_owned(
        config: &Config,
        owned: Vec<(String, Vec<f32>)>,
        adam: AdamWConfig,
        collective: Arc<dyn Collective>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut by_name: HashMap<String, Vec<f32>> = owned.into_iter().collect();
        let rank = collective.rank();
        let mut params = Vec::new();
        for unit in units(config, collective.world()) {
            for (p, (name, _)) in unit.params.iter().enumerate() {
                let mut slice =
                    by_name.remove(name).filter(|v| v.len() == unit.owned(p, rank).len()).ok_or_else(
                        || TrainError::Invalid(format!("no slice of the right length for `{name}`")),
                    )?;
                slice.resize(unit.slice_len(p), 0.0);
                params.push(ParamState::new(name, slice));
            }
        }
        Self::from_shards(config, AdamW::new(adam, params), collective, dtype, device)
    }

    /// Around an optimizer that already holds this rank's shards (a resumed checkpoint);
    /// they move to `device`.
    pub fn from_shards(
        config: &Config,
        optimizer: AdamW,
        collective: Arc<dyn Collective>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut params = optimizer.params.into_iter();
        let mut shards = Vec::new();
        let mut unit_of = HashMap::new();
        for (u, unit) in units(config, collective.world()).into_iter().enumerate() {
            let mine: Vec<ParamState> = params.by_ref().take(unit.params.len()).collect();
            for (p, (name, _)) in unit.params.iter().enumerate() {
                let matches =
                    mine.get(p).is_some_and(|s| &s.name == name && s.master.len() == unit.slice_len(p));
                if !matches {
                    return Err(TrainError::Invalid(format!(
                        "optimizer state does not match the shard layout at `{name}`"
                    )));
                }
                unit_of.insert(name.clone(), u);
            }
            shards.push(UnitShard::upload(unit, &mine, device)?);
        }
        if let Some(extra) = params.next() {
            return Err(TrainError::Invalid(format!(
                "optimizer state has an extra parameter `{}`",
                extra.name
            )));
        }
        Ok(Self {
            config: config.clone(),
            grads: RefCell::new(vec![GradShard::default(); shards.len()]),
            shards,
            unit_of,
            shapes: parameter_shapes(config).into_iter().collect(),
            adam: optimizer.config,
            steps: optimizer.steps,
            collective,
            dtype,
            device: device.clone(),
            prefetched: RefCell::new(None),
        })
    }

    /// The dtype the weights are gathered and computed in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn collective(&self) -> &Arc<dyn Collective> {
        &self.collective
    }

    /// This rank's optimizer state on the host (for a checkpoint).
    pub fn host_state(&self) -> Result<AdamW> {
        let mut params = Vec::new();
        for shard in &self.shards {
            params.extend(shard.download()?);
        }
        Ok(AdamW { config: self.adam, steps: self.steps, params })
    }

    /// This rank's shards of the weights with fresh moments: the next stage's start.
    pub fn into_weights(self) -> Result<Vec<ParamState>> {
        let state = self.host_state()?;
        Ok(state.params.into_iter().map(|p| ParamState::new(&p.name, p.master)).collect())
    }

    /// Starts unit `u`'s all-gather in `dtype` (asynchronous on NCCL's stream). The shard
    /// handed over is a temporary: the backend keeps it until the gather is done, or
    /// freeing it would make the compute stream wait for the gather.
    fn start_gather(&self, u: usize, dtype: DType) -> Result<Tensor> {
        Ok(self.collective.all_gather_tensor(&self.shards[u].weights(dtype)?)?)
    }

    /// Unit `u`'s full fp32 master weights (all ranks call this together): what a
    /// checkpoint writes. Units are numbered as [`units`] lists them.
    pub fn gather_masters(&self, u: usize) -> Result<Vec<(String, Tensor)>> {
        let gathered = self.start_gather(u, DType::F32)?;
        self.shards[u].unpack(&gathered, &self.shapes)
    }

    /// Unit `u`'s full weights: the prefetched gather when it is this unit's, else a new one.
    fn gather_tensors(&self, u: usize) -> Result<HashMap<String, Tensor>> {
        let gathered = match self.prefetched.borrow_mut().take() {
            Some((pending, gathered)) if pending == u => gathered,
            _ => self.start_gather(u, self.dtype)?,
        };
        Ok(self.shards[u].unpack(&gathered, &self.shapes)?.into_iter().collect())
    }

    fn unit_index(&self, unit: Unit) -> usize {
        match unit {
            Unit::Embed => 0,
            Unit::Layer(index) => index + 1,
            Unit::Head => self.shards.len() - 1,
        }
    }

    /// Forgets the step's gradients.
    pub fn zero_grads(&self) {
        self.grads.borrow_mut().iter_mut().for_each(|g| *g = GradShard::default());
    }

    /// Reduce-scatters gradients (full tensors, named as in checkpoints) into this rank's
    /// gradient shards, adding to what the step already holds. Every rank hands the same
    /// units in the same order.
    pub fn reduce_scatter(&self, grads: Vec<(String, Tensor)>) -> Result<()> {
        let mut by_unit: Vec<HashMap<String, Tensor>> = vec![HashMap::new(); self.shards.len()];
        for (name, grad) in grads {
            let &u = self
                .unit_of
                .get(&name)
                .ok_or_else(|| TrainError::Invalid(format!("a gradient for unknown `{name}`")))?;
            by_unit[u].insert(name, grad);
        }
        for (u, mut grads) in by_unit.into_iter().enumerate().filter(|(_, g)| !g.is_empty()) {
            let blocks = self.shards[u].blocks(&mut grads, &self.device)?;
            // `blocks`, a temporary too, is kept by the backend until the reduce-scatter is done.
            let mine = self.collective.reduce_scatter_tensor(&blocks)?;
            self.grads.borrow_mut()[u].add(mine)?;
        }
        Ok(())
    }

    /// The norm, over all ranks, of the step's gradients. The sum of squares stays on the
    /// device (in f64) through the all-reduce: one read per step.
    pub fn grad_norm(&self) -> Result<f64> {
        let mut squares = Tensor::zeros(1, DType::F64, &self.device)?;
        for grad in self.grads.borrow_mut().iter_mut() {
            if let Some(grad) = grad.total()? {
                squares = (squares + davinci_kernels::ops::sum_of_squares(&grad)?)?;
            }
        }
        let total = self.collective.all_reduce_tensor(&squares)?.to_vec1::<f64>()?;
        // The read returns what the all-reduce left, also when it (or a reduce-scatter
        // before it) was aborted halfway: the optimizer must not step with that.
        self.collective.confirm_outputs()?;
        Ok(total.first().copied().unwrap_or(0.0).sqrt())
    }

    /// One optimizer update from gradients of a loss *sum* over `count` tokens whose norm
    /// (over all ranks) is `sum_norm`: divides by `count`, clips the mean's norm to `clip`
    /// (when given) and steps every shard. Returns the mean's norm before clipping;
    /// refuses a non-finite one, leaving the weights as they were.
    pub fn apply(&mut self, sum_norm: f64, count: usize, clip: Option<f64>, lr: f64) -> Result<f64> {
        let norm = sum_norm / count.max(1) as f64;
        if !norm.is_finite() {
            return Err(TrainError::Invalid(format!("the gradient norm is {norm}")));
        }
        let scale = (clip_factor(norm, clip) / count.max(1) as f64) as f32;
        self.steps += 1;
        let scalars = self.adam.scalars(self.steps, lr);
        let grads =
            std::mem::replace(&mut *self.grads.borrow_mut(), vec![GradShard::default(); self.shards.len()]);
        for (shard, mut grad) in self.shards.iter().zip(grads) {
            shard.step(grad.total()?, scale, scalars)?;
        }
        Ok(norm)
    }
}

/// A unit's gradient shard over the step: the sum so far, and the last reduce-scatter's
/// output, added when the unit's next one lands or when the step reads the sum. Added at
/// once, it would make the compute stream wait for that reduce-scatter, with the next
/// unit's backward queued behind the wait; by the next micro-batch it is long done.
#[derive(Clone, Default)]
struct GradShard {
    sum: Option<Tensor>,
    landing: Option<Tensor>,
}

impl GradShard {
    fn add(&mut self, mine: Tensor) -> Result<()> {
        match self.landing.replace(mine) {
            Some(earlier) => self.fold(earlier),
            None => Ok(()),
        }
    }

    /// The whole sum (`None` before the unit's first gradient).
    fn total(&mut self) -> Result<Option<Tensor>> {
        if let Some(last) = self.landing.take() {
            self.fold(last)?;
        }
        Ok(self.sum.clone())
    }

    fn fold(&mut self, grad: Tensor) -> Result<()> {
        self.sum = Some(match self.sum.take() {
            Some(sum) => (sum + grad)?,
            None => grad,
        });
        Ok(())
    }
}

impl WeightSource for ShardedModel {
    type Error = TrainError;
    fn config(&self) -> &Config {
        &self.config
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn embed_weight(&self) -> Result<Tensor> {
        self.gather_tensors(0)?
            .remove(EMBED)
            .ok_or_else(|| TrainError::Invalid("the embedding unit has no embedding".into()))
    }
    fn layer(&self, index: usize) -> Result<DecoderLayer> {
        let prefix = layer_prefix(index);
        let tensors = self
            .gather_tensors(index + 1)?
            .into_iter()
            .map(|(name, t)| (name.strip_prefix(&prefix).unwrap_or(&name).to_string(), t))
            .collect();
        Ok(DecoderLayer::from_tensors(&self.config, tensors)?)
    }
    fn head(&self) -> Result<(Tensor, Tensor)> {
        let mut tensors = self.gather_tensors(self.shards.len() - 1)?;
        let norm = tensors.remove(FINAL_NORM).ok_or_else(|| TrainError::Invalid("no final norm".into()))?;
        let head = match tensors.remove(LM_HEAD) {
            Some(head) => head,
            None => self.embed_weight()?,
        };
        Ok((norm, head))
    }
    fn prefetch(&self, next: Unit) -> Result<()> {
        let u = self.unit_index(next);
        let gathered = self.start_gather(u, self.dtype)?;
        *self.prefetched.borrow_mut() = Some((u, gathered));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use davinci_dist::collective::{Membership, Op};
    use davinci_dist::{DistError, Local};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A group of one whose all-reduce is aborted while it runs, as NCCL's watchdog aborts
    /// a hung one: its output can still be read (partial, on a GPU), and only a check after
    /// the read tells.
    #[derive(Default)]
    struct AbortedDuringAllReduce {
        aborted: AtomicBool,
    }

    impl Collective for AbortedDuringAllReduce {
        fn membership(&self) -> &Membership {
            Local.membership()
        }
        fn transfer(&self, op: Op, contribution: Vec<u8>) -> davinci_dist::Result<Vec<u8>> {
            Local.transfer(op, contribution)
        }
        fn all_reduce_tensor(&self, values: &Tensor) -> davinci_dist::Result<Tensor> {
            self.aborted.store(true, Ordering::SeqCst);
            Ok(values.clone())
        }
        fn confirm_outputs(&self) -> davinci_dist::Result<()> {
            if self.aborted.load(Ordering::SeqCst) {
                return Err(DistError::Aborted("NCCL all-reduce did not complete within 0.1 s".into()));
            }
            Ok(())
        }
    }

    fn tiny(collective: Arc<dyn Collective>) -> (Config, ShardedModel) {
        let config = Config::preset("tiny").unwrap();
        let owned = fresh_slices(&config, 7, 1, 0);
        let model = ShardedModel::from_owned(
            &config,
            owned,
            AdamWConfig::default(),
            collective,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        (config, model)
    }

    /// The embedding's gradient, every element `value`.
    fn embed_grad(config: &Config, value: f32) -> Vec<(String, Tensor)> {
        let shape = parameter_shapes(config).into_iter().find(|(name, _)| name == EMBED).unwrap().1;
        vec![(EMBED.to_string(), Tensor::full(value, shape, &Device::Cpu).unwrap())]
    }

    fn masters(model: &ShardedModel) -> Vec<f32> {
        model.host_state().unwrap().params.into_iter().flat_map(|p| p.master).collect()
    }

    #[test]
    fn a_gradient_norm_read_after_an_abort_fails_the_step() {
        let (config, model) = tiny(Arc::new(AbortedDuringAllReduce::default()));
        model.reduce_scatter(embed_grad(&config, 1.0)).unwrap();
        let err = model.grad_norm().unwrap_err();
        assert!(matches!(err, TrainError::Collective(DistError::Aborted(_))), "{err}");
    }

    /// Each reduce-scatter's output is added to the unit's sum only when the next one
    /// lands (or when the step reads the sum): the norm and the update still see every
    /// micro-batch's gradient.
    #[test]
    fn gradients_of_every_micro_batch_count_though_the_last_is_added_late() {
        let (config, mut late) = tiny(Arc::new(Local));
        for value in [1.0, 2.0, 4.0] {
            late.reduce_scatter(embed_grad(&config, value)).unwrap();
        }
        let numel = (config.vocab_size * config.hidden_size) as f64;
        let norm = late.grad_norm().unwrap();
        assert!((norm - 7.0 * numel.sqrt()).abs() < 1e-9 * norm, "{norm}");
        assert_eq!(late.grad_norm().unwrap(), norm, "a second read sees the same sum");

        let (_, mut whole) = tiny(Arc::new(Local));
        whole.reduce_scatter(embed_grad(&config, 7.0)).unwrap();
        assert_eq!(whole.grad_norm().unwrap(), norm);
        late.apply(norm, 1, None, 1e-2).unwrap();
        whole.apply(norm, 1, None, 1e-2).unwrap();
        assert_eq!(masters(&late), masters(&whole), "the update steps with the whole sum");

        late.reduce_scatter(embed_grad(&config, 3.0)).unwrap();
        late.zero_grads();
        assert_eq!(late.grad_norm().unwrap(), 0.0, "zeroed, the gradient still landing too");
    }
}
