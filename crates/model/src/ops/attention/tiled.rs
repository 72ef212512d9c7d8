//! CPU attention a block of queries at a time, with an explicit backward.
//!
//! For each segment and each block of its queries, the scores against the segment's keys
//! up to the block's diagonal are formed, masked causally, and reduced to the output and
//! the log-sum-exp of every query row. The backward recomputes the probabilities from
//! that log-sum-exp and forms dQ, dK and dV block by block (dK and dV summed over the
//! query heads of a group), with `D = rowsum(dO * O)`: the flash-attention recurrences,
//! on matrix multiplies. Memory is bounded by one block's scores, not a document's square.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Shape, Tensor, D};

use davinci_kernels::attention::SavedLse;

use super::Segments;
use crate::error::Result;

/// Bytes of f32 scores one block may hold: small enough to stay in cache, which measured
/// 3.6x faster than a 64 MiB budget on the tiny model at 2048 tokens (`davinci bench step`).
pub const BLOCK_SCORE_BYTES: usize = 8 << 20;

/// Attention as [`super::attention`] defines it, for f32 tensors on the CPU.
/// `max_block_rows` caps the queries of a block (the default follows an 8 MiB budget
/// for one block's scores); tests lower it to exercise many blocks on small inputs.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: &Segments,
    scale: f64,
    max_block_rows: Option<usize>,
) -> Result<Tensor> {
    let max_rows = max_block_rows.unwrap_or(usize::MAX);
    let op = TiledAttention { segments: segments.clone(), scale, max_rows, lse: SavedLse::default() };
    Ok(q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)?)
}

struct TiledAttention {
    segments: Segments,
    scale: f64,
    max_rows: usize,
    /// `[q_heads, tokens]` log-sum-exp of each query row, saved by the forward for the backward.
    lse: SavedLse,
}

/// One block of queries: rows `start..end` of a segment whose keys begin at `key_start`;
/// the block's first row sees the keys up to `key_start + diagonal`.
#[derive(Clone, Copy)]
struct Block {
    key_start: usize,
    diagonal: usize,
    start: usize,
    end: usize,
}

impl Block {
    fn rows(&self) -> usize {
        self.end - self.start
    }
    /// Keys the block can see: the segment's up to its last row's diagonal.
    fn keys(&self) -> usize {
        self.diagonal + self.rows()
    }
}

/// The sizes of a call, and the per-block tensor plumbing.
struct Heads {
    tokens: usize,
    key_tokens: usize,
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Heads {
    fn of(q: &Tensor, k: &Tensor) -> Result<Self> {
        let (tokens, q_heads, head_dim) = q.dims3()?;
        Ok(Self { tokens, key_tokens: k.dim(0)?, q_heads, kv_heads: k.dim(1)?, head_dim })
    }

    fn group(&self) -> usize {
        self.q_heads / self.kv_heads
    }

    /// Rows `start..start + len` of `x` (`[tokens, heads, head_dim]`) as
    /// `[kv_heads, (heads / kv_heads) * len, head_dim]`: each key/value head with the rows
    /// of all the query heads it serves stacked.
    fn by_kv_head(&self, x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        let heads = x.dim(1)?;
        let rows = (heads / self.kv_heads) * len;
        Ok(x.narrow(0, start, len)?.transpose(0, 1)?.contiguous()?.reshape((
            self.kv_heads,
            rows,
            self.head_dim,
        ))?)
    }

    /// The inverse of [`Heads::by_kv_head`], as a flat token-major vector.
    fn token_major(&self, x: &Tensor, heads: usize, len: usize) -> Result<Vec<f32>> {
        Ok(x.reshape((heads, len, self.head_dim))?.transpose(0, 1)?.flatten_all()?.to_vec1()?)
    }

    fn blocks(&self, segments: &Segments, max_rows: usize) -> Vec<Block> {
        let mut blocks = Vec::new();
        for (queries, keys) in segments.iter().filter(|(q, _)| !q.is_empty()) {
            let rows =
                (BLOCK_SCORE_BYTES / (4 * self.q_heads * keys.len())).clamp(1, queries.len()).min(max_rows);
            let mut start = queries.start;
            while start < queries.end {
                let end = (start + rows).min(queries.end);
                let diagonal = start - queries.start + keys.len() - queries.len();
                blocks.push(Block { key_start: keys.start, diagonal, start, end });
                start = end;
            }
        }
        blocks
    }

    /// Scaled, causally masked scores of a block, `[kv_heads, group * rows, keys]`.
    fn scores(&self, q_block: &Tensor, k_ctx: &Tensor, block: Block, scale: f64) -> Result<Tensor> {
        let (rows, keys, group) = (block.rows(), block.keys(), self.group());
        let first = block.diagonal;
        let mask: Vec<f32> = (0..rows)
            .flat_map(|i| (0..keys).map(move |j| if j <= first + i { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let mask = Tensor::from_vec(mask, (rows, keys), q_block.device())?;
        Ok((q_block.matmul(&k_ctx.t()?)? * scale)?
            .reshape((self.kv_heads, group, rows, keys))?
            .broadcast_add(&mask)?
            .reshape((self.kv_heads, group * rows, keys))?)
    }

    /// `[kv_heads, group * rows, 1]` slice of the `[q_heads, tokens]` log-sum-exp.
    fn lse_block(&self, lse: &Tensor, block: Block) -> Result<Tensor> {
        Ok(lse.narrow(1, block.start, block.rows())?.reshape((
            self.kv_heads,
            self.group() * block.rows(),
            1,
        ))?)
    }
}

fn cpu_tensor(storage: &CpuStorage, layout: &Layout) -> candle_core::Result<Tensor> {
    let slice = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((from, to)) => Tensor::from_slice(&slice[from..to], layout.shape(), &Device::Cpu),
        None => candle_core::bail!("tiled attention needs contiguous inputs"),
    }
}

impl CustomOp3 for TiledAttention {
    fn name(&self) -> &'static str {
        "varlen-causal-attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (q, k, v) = (cpu_tensor(sq, lq)?, cpu_tensor(sk, lk)?, cpu_tensor(sv, lv)?);
        let heads = Heads::of(&q, &k).map_err(candle_core::Error::wrap)?;
        let width = heads.q_heads * heads.head_dim;
        let mut out = vec![0f32; heads.tokens * width];
        let mut lse = vec![0f32; heads.q_heads * heads.tokens];
        let run = |block: Block, out: &mut [f32], lse: &mut [f32]| -> Result<()> {
            let q_block = heads.by_kv_head(&q, block.start, block.rows())?;
            let k_ctx = heads.by_kv_head(&k, block.key_start, block.keys())?;
            let v_ctx = heads.by_kv_head(&v, block.key_start, block.keys())?;
            let scores = heads.scores(&q_block, &k_ctx, block, self.scale)?;
            // The diagonal is never masked, so every row maximum is finite.
            let max = scores.max_keepdim(D::Minus1)?;
            let probs = scores.broadcast_sub(&max)?.exp()?;
            let norm = probs.sum_keepdim(D::Minus1)?;
            let o = probs.matmul(&v_ctx)?.broadcast_div(&norm)?;
            let rows = heads.token_major(&o, heads.q_heads, block.rows())?;
            out[block.start * width..block.end * width].copy_from_slice(&rows);
            let block_lse: Vec<f32> = (max + norm.log()?)?.flatten_all()?.to_vec1()?;
            for (h, chunk) in block_lse.chunks(block.rows()).enumerate() {
                lse[h * heads.tokens + block.start..h * heads.tokens + block.end].copy_from_slice(chunk);
            }
            Ok(())
        };
        for block in heads.blocks(&self.segments, self.max_rows) {
            run(block, &mut out, &mut lse).map_err(candle_core::Error::wrap)?;
        }
        let lse = Tensor::from_vec(lse, (heads.q_heads, heads.tokens), &Device::Cpu)?;
        self.lse.store(lse)?;
        Ok((CpuStorage::F32(out), Shape::from((heads.tokens, heads.q_heads, heads.head_dim))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let lse = self.lse.get("attention")?;
        self.backward([q, k, v, out, grad_out], &lse).map_err(candle_core::Error::wrap)
    }
}

impl TiledAttention {
    /// dQ, dK, dV from `[q, k, v, out, grad_out]` and the forward's log-sum-exp.
    #[allow(clippy::type_complexity)]
    fn backward(
        &self,
        tensors: [&Tensor; 5],
        lse: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let f32_of = |t: &Tensor| -> Result<Tensor> { Ok(t.detach().to_dtype(DType::F32)?.contiguous()?) };
        let [q, k, v, out, grad_out] = tensors.map(f32_of);
        let (q, k, v, out, grad_out) = (q?, k?, v?, out?, grad_out?);
        let heads = Heads::of(&q, &k)?;
        let (q_width, kv_width) = (heads.q_heads * heads.head_dim, heads.kv_heads * heads.head_dim);
        let mut dq = vec![0f32; heads.tokens * q_width];
        let mut dk = vec![0f32; heads.key_tokens * kv_width];
        let mut dv = vec![0f32; heads.key_tokens * kv_width];
        for block in heads.blocks(&self.segments, self.max_rows) {
            let q_block = heads.by_kv_head(&q, block.start, block.rows())?;
            let o_block = heads.by_kv_head(&out, block.start, block.rows())?;
            let do_block = heads.by_kv_head(&grad_out, block.start, block.rows())?;
            let k_ctx = heads.by_kv_head(&k, block.key_start, block.keys())?;
            let v_ctx = heads.by_kv_head(&v, block.key_start, block.keys())?;
            let probs = heads
                .scores(&q_block, &k_ctx, block, self.scale)?
                .broadcast_sub(&heads.lse_block(lse, block)?)?
                .exp()?;
            let d_probs = do_block.matmul(&v_ctx.t()?)?;
            let delta = (&do_block * &o_block)?.sum_keepdim(D::Minus1)?;
            let d_scores = (&probs * d_probs.broadcast_sub(&delta)?)?;
            let dq_block = (d_scores.matmul(&k_ctx)? * self.scale)?;
            let dk_ctx = (d_scores.t()?.matmul(&q_block)? * self.scale)?;
            let dv_ctx = probs.t()?.matmul(&do_block)?;

            let rows = heads.token_major(&dq_block, heads.q_heads, block.rows())?;
            dq[block.start * q_width..block.end * q_width].copy_from_slice(&rows);
            let ctx = block.key_start * kv_width..(block.key_start + block.keys()) * kv_width;
            for (grad, part) in [(&mut dk, dk_ctx), (&mut dv, dv_ctx)] {
                let part = heads.token_major(&part, heads.kv_heads, block.keys())?;
                grad[ctx.clone()].iter_mut().zip(part).for_each(|(g, p)| *g += p);
            }
        }
        let shape_q = (heads.tokens, heads.q_heads, heads.head_dim);
        let shape_kv = (heads.key_tokens, heads.kv_heads, heads.head_dim);
        Ok((
            Some(Tensor::from_vec(dq, shape_q, &Device::Cpu)?),
            Some(Tensor::from_vec(dk, shape_kv, &Device::Cpu)?),
            Some(Tensor::from_vec(dv, shape_kv, &Device::Cpu)?),
        ))
    }
}
