//! One unit's part of this rank's FSDP state, on the training device: the fp32 master
//! weights and AdamW moments in one `[3, n]` tensor, which the optimizer steps in place
//! with one launch. On a GPU nothing here touches host
//! memory between checkpoints.

use std::collections::HashMap;

use super::flat_unit::FlatUnit;
use candle_core::{DType, Device, Tensor};
use davinci_kernels::adamw::Scalars;
use davinci_kernels::ops::adamw_step;

use crate::error::{Result, TrainError};
use crate::optimizer::ParamState;

pub(crate) struct UnitShard {
    pub unit: FlatUnit,
    /// `[3, shard_len]` f32: master weights, first moments, second moments.
    state: Tensor,
    /// `(slice length, decayed)` per parameter, in shard order: AdamW's segments.
    segments: Vec<(usize, bool)>,
}

impl UnitShard {
    /// From this rank's shards of the unit's parameters (in the unit's order, padded).
    pub fn upload(unit: FlatUnit, params: &[ParamState], device: &Device) -> Result<Self> {
        let n = unit.shard_len();
        let mut flat = Vec::with_capacity(3 * n);
        let kinds: [fn(&ParamState) -> &Vec<f32>; 3] = [|p| &p.master, |p| &p.m, |p| &p.v];
        for kind in kinds {
            params.iter().for_each(|p| flat.extend_from_slice(kind(p)));
        }
        if flat.len() != 3 * n {
            return Err(TrainError::Invalid(format!(
                "a unit's shards hold {} of {} values",
                flat.len(),
                3 * n
            )));
        }
        let state = Tensor::from_vec(flat, (3, n), &Device::Cpu)?.to_device(device)?;
        let segments = params.iter().map(|p| (p.master.len(), p.decay)).collect();
        Ok(Self { unit, state, segments })
    }

    /// The unit's shards on the host, for a checkpoint.
    pub fn download(&self) -> Result<Vec<ParamState>> {
        let rows = self.state.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        let mut at = 0;
        let mut params = Vec::with_capacity(self.segments.len());
        for ((name, _), &(len, decay)) in self.unit.params.iter().zip(&self.segments) {
            let take = |row: &Vec<f32>| row[at..at + len].to_vec();
            let (master, m, v) = (take(&rows[0]), take(&rows[1]), take(&rows[2]));
            params.push(ParamState { name: name.clone(), master, m, v, decay });
            at += len;
        }
        Ok(params)
    }

    /// This rank's shard of the weights in the compute dtype: what the all-gather sends.
    pub fn weights(&self, dtype: DType) -> Result<Tensor> {
        Ok(self.state.get(0)?.to_dtype(dtype)?)
    }

    /// The unit's full parameters from an all-gather's output (`world` shards in rank order).
    pub fn unpack(
        &self,
        gathered: &Tensor,
        shapes: &HashMap<String, Vec<usize>>,
    ) -> Result<Vec<(String, Tensor)>> {
        let by_rank = gathered.reshape((self.unit.world, self.unit.shard_len()))?;
        let mut tensors = Vec::with_capacity(self.unit.params.len());
        for (p, (name, numel)) in self.unit.params.iter().enumerate() {
            let within = self.unit.slice_in_shard(p);
            let full = by_rank.narrow(1, within.start, within.len())?.flatten_all()?.narrow(0, 0, *numel)?;
            let shape = shapes.get(name).cloned().unwrap_or_else(|| vec![*numel]);
            tensors.push((name.clone(), full.reshape(shape)?));
        }
        Ok(tensors)
    }

    /// The input of the reduce-scatter: each rank's block of the unit's gradients (full
    /// tensors by name; a missing one counts as zero), in rank order, f32.
    pub fn blocks(&self, grads: &mut HashMap<String, Tensor>, device: &Device) -> Result<Tensor> {
        let world = self.unit.world;
        let mut columns = Vec::with_capacity(self.unit.params.len());
        for (p, (name, numel)) in self.unit.params.iter().enumerate() {
            let width = self.unit.slice_len(p);
            let column = match grads.remove(name) {
                Some(g) => {
                    g.to_dtype(DType::F32)?.flatten_all()?.pad_with_zeros(0, 0, world * width - numel)?
                }
                None => Tensor::zeros(world * width, DType::F32, device)?,
            };
            columns.push(column.reshape((world, width))?);
        }
        Ok(Tensor::cat(&columns, 1)?.flatten_all()?)
    }

    /// One AdamW step with `grad` (this rank's gradient shard) times `scale`. A missing
    /// gradient is zero: the moments still decay and weight decay still applies.
    pub fn step(&self, grad: Option<Tensor>, scale: f32, scalars: Scalars) -> Result<()> {
        let grad = match grad {
            Some(g) => g.affine(f64::from(scale), 0.0)?,
            None => Tensor::zeros(self.unit.shard_len(), DType::F32, self.state.device())?,
        };
        Ok(adamw_step(&self.state, &grad, &self.segments, scalars)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout round trip at several world sizes: the reduce-scatter input holds, in
    /// rank order, each rank's slices (zero-padded) of full tensors, and unpacking that
    /// as an all-gather's output gives the full tensors back.
    #[test]
    fn blocks_and_unpack_invert_each_other_and_give_each_rank_its_slices() {
        let params = vec![("a".to_string(), 7), ("norm".to_string(), 1), ("b".to_string(), 12)];
        let shapes: HashMap<String, Vec<usize>> =
            [("a".to_string(), vec![7]), ("norm".to_string(), vec![1]), ("b".to_string(), vec![3, 4])].into();
        let full: Vec<Vec<f32>> = params
            .iter()
            .map(|(_, n)| (0..*n).map(|i| (i * 13 % 7) as f32 - 2.5 + *n as f32).collect())
            .collect();
        for world in [1, 2, 3, 4, 8] {
            let unit = FlatUnit::new(params.clone(), world);
            let states: Vec<ParamState> = params
                .iter()
                .enumerate()
                .map(|(p, (n, _))| ParamState::new(n, vec![0.0; unit.slice_len(p)]))
                .collect();
            let shard = UnitShard::upload(unit.clone(), &states, &Device::Cpu).unwrap();
            let mut grads: HashMap<String, Tensor> = params
                .iter()
                .zip(&full)
                .map(|((n, _), v)| {
                    (n.clone(), Tensor::from_slice(v, shapes[n].as_slice(), &Device::Cpu).unwrap())
                })
                .collect();
            let blocks = shard.blocks(&mut grads, &Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
            for r in 0..world {
                let block = &blocks[r * unit.shard_len()..(r + 1) * unit.shard_len()];
                for (p, values) in full.iter().enumerate() {
                    let slice = &block[unit.slice_in_shard(p)];
                    let owned = &values[unit.owned(p, r)];
                    assert_eq!(&slice[..owned.len()], owned, "world {world}, rank {r}, parameter {p}");
                    assert!(slice[owned.len()..].iter().all(|&x| x == 0.0), "padding is zero");
                }
            }
            let gathered = Tensor::new(blocks.as_slice(), &Device::Cpu).unwrap();
            let unpacked = shard.unpack(&gathered, &shapes).unwrap();
            for ((name, tensor), values) in unpacked.iter().zip(&full) {
                assert_eq!(tensor.dims(), shapes[name].as_slice());
                assert_eq!(
                    &tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    values,
                    "world {world}: {name}"
                );
            }
        }
    }
}
