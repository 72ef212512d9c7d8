//! A micro-batch as the trainer takes it: packed rows with document boundaries.

use crate::dataset::Dataset;
use crate::loader::plan::RowPlan;

/// The "no loss" label, as in transformers.
pub const IGNORE: i64 = -100;

/// `rows` packed rows of `seq_len` tokens, flattened row after row. `labels[t]` is the
/// next token of the same document where that token carries loss, else -100 (at each
/// piece's last token and on padding); `position_ids` restart at 0 in each piece;
/// `cu_seqlens` bounds every piece and every stretch of padding across the whole batch, so
/// the model can run it as one packed sequence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub rows: usize,
    pub seq_len: usize,
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
    pub position_ids: Vec<u32>,
    pub cu_seqlens: Vec<u32>,
    /// Tokens that are not padding, per row.
    pub row_tokens: Vec<usize>,
}

impl Batch {
    /// Reads the rows' pieces out of the datasets (one per mixture entry). With
    /// `loss_mask`, only tokens the shards mark as loss-bearing get labels (assistant-only
    /// SFT); without it, every next token of a document does.
    pub fn build(
        plans: &[&RowPlan],
        datasets: &[&Dataset],
        seq_len: usize,
        pad_id: u32,
        loss_mask: bool,
    ) -> Self {
        let total = plans.len() * seq_len;
        let mut batch = Batch {
            rows: plans.len(),
            seq_len,
            input_ids: Vec::with_capacity(total),
            labels: Vec::with_capacity(total),
            position_ids: Vec::with_capacity(total),
            cu_seqlens: vec![0],
            row_tokens: Vec::with_capacity(plans.len()),
        };
        for plan in plans {
            for piece in &plan.pieces {
                let shard = &datasets[piece.source as usize].shards[piece.shard as usize];
                let doc = shard.doc_range(piece.doc as usize);
                let start = doc.start + piece.start as usize;
                let len = piece.len as usize;
                let tokens = &shard.tokens()[start..start + len];
                batch.input_ids.extend_from_slice(tokens);
                for t in 0..len {
                    let next = start + t + 1;
                    let label = if t + 1 < len && (!loss_mask || shard.loss(next)) {
                        tokens[t + 1] as i64
                    } else {
                        IGNORE
                    };
                    batch.labels.push(label);
                    batch.position_ids.push(t as u32);
                }
                batch.cu_seqlens.push(batch.input_ids.len() as u32);
            }
            batch.row_tokens.push(plan.tokens as usize);
            let padding = seq_len - plan.tokens as usize;
            if padding > 0 {
                batch.input_ids.extend(std::iter::repeat_n(pad_id, padding));
                batch.labels.extend(std::iter::repeat_n(IGNORE, padding));
                batch.position_ids.extend(0..padding as u32);
                batch.cu_seqlens.push(batch.input_ids.len() as u32);
            }
        }
        batch
    }
}

impl Batch {
    /// Rows `rows` of this batch as a batch of their own: the micro-batches of gradient
    /// accumulation. Document boundaries never cross rows, so `cu_seqlens` splits cleanly.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Batch {
        let (start, end) = (rows.start * self.seq_len, rows.end * self.seq_len);
        let cu_seqlens: Vec<u32> = self
            .cu_seqlens
            .iter()
            .filter(|&&b| (start..=end).contains(&(b as usize)))
            .map(|&b| b - start as u32)
            .collect();
        let input_ids = self.input_ids[start..end].to_vec();
        let labels = self.labels[start..end].to_vec();
        let position_ids = self.position_ids[start..end].to_vec();
        let row_tokens = self.row_tokens[rows.clone()].to_vec();
        Batch {
            rows: rows.len(),
            seq_len: self.seq_len,
            input_ids,
            labels,
            position_ids,
            cu_seqlens,
            row_tokens,
        }
    }

    /// Tokens that are not padding.
    pub fn real_tokens(&self) -> usize {
        self.row_tokens.iter().sum()
    }
}
