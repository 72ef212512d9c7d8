//! FSDP: every rank holds 1/world of each unit's parameters (the embedding, each layer,
//! the final norm with the head) as fp32 masters with their AdamW moments and gradient
//! buffers. The step gathers a unit's weights just before it runs and drops them after;
//! a unit's gradients are reduce-scattered into this rank's fp32 shard as soon as its
//! backward ends; the optimizer steps on the local shards only. At world size 1 the same
//! code runs with collectives that copy.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use davinci_dist::{Collective, FlatUnit};
use davinci_model::names::{layer_prefix, parameter_shapes, EMBED, FINAL_NORM, LAYER_TENSORS, LM_HEAD};
use davinci_model::{Config, DecoderLayer};

use crate::error::{Result, TrainError};
use crate::grads::GradBuffers;
use crate::optimizer::{AdamW, AdamWConfig, ParamState};
use crate::step::WeightSource;

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
    move |_, numel| davinci_dist::shard::owned(numel, world, rank)
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

/// The full values of `unit` from every rank's shards, which `optimizer` holds for this
/// rank (all ranks call this together), in f32.
pub fn gather_unit(
    unit: &FlatUnit,
    optimizer: &AdamW,
    collective: &dyn Collective,
) -> Result<Vec<(String, Vec<f32>)>> {
    let mut shard = Vec::with_capacity(unit.shard_len());
    for (p, (name, _)) in unit.params.iter().enumerate() {
        let param = optimizer
            .params
            .iter()
            .find(|q| &q.name == name && q.master.len() == unit.slice_len(p))
            .ok_or_else(|| TrainError::Invalid(format!("no shard of `{name}` in the optimizer state")))?;
        shard.extend_from_slice(&param.master);
    }
    let mut gathered = vec![0.0; shard.len() * unit.world];
    collective.all_gather(&shard, &mut gathered)?;
    Ok(unit.params.iter().map(|(n, _)| n.clone()).zip(unit.unpack(&gathered)).collect())
}

/// This rank's part of the model and its optimizer state.
pub struct ShardedModel {
    config: Config,
    units: Vec<FlatUnit>,
    /// Parameter name -> (unit, index in `optimizer.params`).
    index: HashMap<String, (usize, usize)>,
    pub optimizer: AdamW,
    collective: Arc<dyn Collective>,
    dtype: DType,
    device: Device,
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
        let units = units(config, collective.world());
        let rank = collective.rank();
        let mut params = Vec::new();
        for unit in &units {
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

    /// Around an optimizer that already holds this rank's shards (a resumed checkpoint).
    pub fn from_shards(
        config: &Config,
        optimizer: AdamW,
        collective: Arc<dyn Collective>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let units = units(config, collective.world());
        let mut index = HashMap::new();
        let mut at = 0;
        for (u, unit) in units.iter().enumerate() {
            for (p, (name, _)) in unit.params.iter().enumerate() {
                let param = optimizer
                    .params
                    .get(at)
                    .filter(|param| &param.name == name && param.master.len() == unit.slice_len(p));
                if param.is_none() {
                    return Err(TrainError::Invalid(format!(
                        "optimizer state does not match the shard layout at `{name}`"
                    )));
                }
                index.insert(name.clone(), (u, at));
                at += 1;
            }
        }
        Ok(Self {
            config: config.clone(),
            units,
            index,
            optimizer,
            collective,
            dtype,
            device: device.clone(),
        })
    }

    pub fn collective(&self) -> &Arc<dyn Collective> {
        &self.collective
    }

    fn gather_tensors(&self, u: usize) -> Result<HashMap<String, Tensor>> {
        let shapes: HashMap<String, Vec<usize>> = parameter_shapes(&self.config).into_iter().collect();
        let mut tensors = HashMap::new();
        for (name, values) in gather_unit(&self.units[u], &self.optimizer, self.collective.as_ref())? {
            let shape = shapes.get(&name).cloned().unwrap_or_default();
            let tensor = Tensor::from_vec(values, shape, &Device::Cpu)?
                .to_dtype(self.dtype)?
                .to_device(&self.device)?;
            tensors.insert(name, tensor);
        }
        Ok(tensors)
    }

    /// Fresh gradient shards for this model.
    pub fn grad_shards(&self) -> GradBuffers {
        GradBuffers::for_params(&self.optimizer.params)
    }

    /// Reduce-scatters gradients (full tensors, named as in checkpoints) into this rank's
    /// gradient shards `into`. Every rank hands the same units in the same order.
    pub fn reduce_scatter(&self, grads: Vec<(String, Tensor)>, into: &mut GradBuffers) -> Result<()> {
        let mut by_unit: Vec<HashMap<String, Vec<f32>>> = vec![HashMap::new(); self.units.len()];
        for (name, grad) in grads {
            let &(u, _) = self
                .index
                .get(&name)
                .ok_or_else(|| TrainError::Invalid(format!("a gradient for unknown `{name}`")))?;
            by_unit[u].insert(name, grad.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        }
        for (u, mut grads) in by_unit.into_iter().enumerate().filter(|(_, g)| !g.is_empty()) {
            let unit = &self.units[u];
            let full: Vec<Vec<f32>> = unit
                .params
                .iter()
                .map(|(n, len)| grads.remove(n).unwrap_or_else(|| vec![0.0; *len]))
                .collect();
            let views: Vec<&[f32]> = full.iter().map(Vec::as_slice).collect();
            let mut mine = vec![0.0; unit.shard_len()];
            self.collective.reduce_scatter(&unit.blocks_of(&views), &mut mine)?;
            for (p, (name, _)) in unit.params.iter().enumerate() {
                into.add_slice(self.index[name].1, &mine[unit.slice_in_shard(p)])?;
            }
        }
        Ok(())
    }

    /// The norm, over all ranks, of the gradients whose shards `grads` holds.
    pub fn grad_norm(&self, grads: &GradBuffers) -> Result<f64> {
        let mut squares = [grads.sum_of_squares()];
        self.collective.all_reduce(&mut squares)?;
        Ok(squares[0].sqrt())
    }
}

impl WeightSource for ShardedModel {
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
        let mut tensors = self.gather_tensors(self.units.len() - 1)?;
        let norm = tensors.remove(FINAL_NORM).ok_or_else(|| TrainError::Invalid("no final norm".into()))?;
        let head = match tensors.remove(LM_HEAD) {
            Some(head) => head,
            None => self.embed_weight()?,
        };
        Ok((norm, head))
    }
}
