//! Context parallelism in the trainer: a rank's place in the data x context grid, its
//! group's collectives as the model's [`KeyValueExchange`], and its share of each row.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use davinci_data::loader::Batch;
use davinci_dist::Collective;
use davinci_model::{ContextSplit, KeyValueExchange, ModelError, PackedLayout};

use crate::error::{Result, TrainError};

/// The context group's collectives, as the model asks for them.
struct GroupExchange(Arc<dyn Collective>);

fn exchange_error(e: impl std::fmt::Display) -> ModelError {
    ModelError::Exchange(e.to_string())
}

impl KeyValueExchange for GroupExchange {
    fn ranks(&self) -> usize {
        self.0.world()
    }

    fn all_gather(&self, local: &Tensor) -> davinci_model::Result<Tensor> {
        let (rows, width) = local.dims2()?;
        let gathered = self.0.all_gather_tensor(&local.flatten_all()?).map_err(exchange_error)?;
        Ok(gathered.reshape((self.ranks() * rows, width))?)
    }

    fn reduce_scatter(&self, blocks: &Tensor) -> davinci_model::Result<Tensor> {
        let (rows, width) = blocks.dims2()?;
        let flat = blocks.to_dtype(DType::F32)?.flatten_all()?;
        let mine = self.0.reduce_scatter_tensor(&flat).map_err(exchange_error)?;
        Ok(mine.reshape((rows / self.ranks(), width))?.to_dtype(blocks.dtype())?)
    }
}

/// This rank's place in a stage's data x context grid: `size` consecutive ranks share
/// each row; the loader deals rows to the `data_ranks` groups.
#[derive(Clone)]
pub struct ContextGroup {
    pub size: usize,
    /// This rank within its group.
    pub rank: usize,
    /// This rank's group: the loader's rank.
    pub data_rank: usize,
    pub data_ranks: usize,
    exchange: Option<Arc<dyn KeyValueExchange>>,
}

/// One micro-batch as this rank runs it: its tokens, their labels and the layout.
pub struct Share {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
    pub layout: PackedLayout,
}

impl ContextGroup {
    /// The groups of `size` consecutive ranks of `world`; every rank of the world calls
    /// this at the same point (a backend may build a communicator for the group).
    pub fn new(world: &Arc<dyn Collective>, size: usize) -> Result<Self> {
        let (rank, ranks) = (world.rank(), world.world());
        if size == 0 || !ranks.is_multiple_of(size) {
            return Err(TrainError::Invalid(format!(
                "context_parallel = {size} must divide the world size ({ranks} ranks)"
            )));
        }
        let exchange: Option<Arc<dyn KeyValueExchange>> =
            if size > 1 { Some(Arc::new(GroupExchange(davinci_dist::subgroup(world, size)?))) } else { None };
        Ok(Self { size, rank: rank % size, data_rank: rank / size, data_ranks: ranks / size, exchange })
    }

    /// Whether this rank speaks for its group in counts that each group reports once (the
    /// batch's tokens and FLOPs).
    pub fn leads(&self) -> bool {
        self.rank == 0
    }

    /// This rank's share of a micro-batch (a packed row, or rows flattened into one).
    pub fn share(&self, micro: &Batch) -> Result<Share> {
        let Some(exchange) = &self.exchange else {
            let layout = PackedLayout::new(micro.cu_seqlens.clone())?;
            return Ok(Share { input_ids: micro.input_ids.clone(), labels: micro.labels.clone(), layout });
        };
        let split = ContextSplit::new(&micro.cu_seqlens, self.size);
        let layout = PackedLayout::context_share(&split, self.rank, exchange.clone())?;
        let rows = layout.row_indices();
        Ok(Share {
            input_ids: rows.iter().map(|&t| micro.input_ids[t as usize]).collect(),
            labels: rows.iter().map(|&t| micro.labels[t as usize]).collect(),
            layout,
        })
    }
}
