//! Flash attention as a candle op for bf16 tensors on a GPU (`kernels/flash_attention.cu`):
//! packed rows of documents (`cu_seqlens`), causal, grouped-query heads. The forward keeps
//! the log-sum-exp of every query row for the backward, which recomputes the probabilities
//! from it. On the CPU the model uses its own tiled attention (`davinci-model`), so this
//! op's CPU body only says so.

use crate::attention::SavedLse;

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

const NAME: &str = "flash-attention";

/// Causal attention within each document of a packed row: `q` `[tokens, q_heads, D]`,
/// `k` and `v` `[tokens, kv_heads, D]` (bf16, on a CUDA device, D 64 or 128). Rows past
/// `cu_seqlens`' last entry are padding and get zeros.
pub fn flash_attention(q: &Tensor, k: &Tensor, v: &Tensor, cu_seqlens: &[u32], scale: f64) -> Result<Tensor> {
    let op =
        FlashAttention { cu_seqlens: cu_seqlens.to_vec(), scale: scale as f32, lse: SavedLse::default() };
    aligned(q)?.apply_op3(&aligned(k)?, &aligned(v)?, op)
}

/// `t` contiguous and starting on a 16-byte boundary, as the kernels' 16-byte copies need
/// (a view into a larger tensor may start anywhere: it is copied then).
fn aligned(t: &Tensor) -> Result<Tensor> {
    let t = t.contiguous()?;
    if (t.layout().start_offset() * t.dtype().size_in_bytes()).is_multiple_of(16) {
        Ok(t)
    } else {
        t.copy()
    }
}

struct FlashAttention {
    cu_seqlens: Vec<u32>,
    scale: f32,
    /// `[q_heads, tokens]` f32, from the forward, for the backward.
    lse: SavedLse,
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bail!("{NAME} runs on CUDA bf16 tensors; on the CPU the model's tiled attention is the path")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (out, lse) = cuda::forward(&self.cu_seqlens, self.scale, (qs, ql), (ks, kl), (vs, vl))?;
        self.lse.store(lse)?;
        Ok((out, ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        d_out: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let lse = self.lse.get(NAME)?;
        #[cfg(feature = "cuda")]
        {
            let (dq, dk, dv) =
                cuda::backward(&self.cu_seqlens, self.scale, [q, k, v, out, &d_out.contiguous()?], &lse)?;
            Ok((Some(dq), Some(dk), Some(dv)))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (q, k, v, out, d_out, lse, &self.cu_seqlens, self.scale);
            bail!("{NAME}: built without the cuda feature")
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute_enum;
    use candle_core::cuda_backend::cudarc::driver::{CudaFunction, DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
    use candle_core::op::BackpropOp;
    use candle_core::{bail, DType, Layout, Result, Storage, Tensor};
    use half::bf16;

    use super::NAME;
    use crate::attention::{check_shapes, key_tiles, query_tiles, shared_bytes, Tile};
    use crate::cuda::{function, view, zeros};

    // SAFETY: #[repr(C)] plain data matching `fa::Tile`.
    unsafe impl DeviceRepr for Tile {}

    const LOG2E: f32 = std::f32::consts::LOG2_E;

    struct Shape {
        tokens: usize,
        q_heads: usize,
        kv_heads: usize,
        head_dim: usize,
    }

    fn shape(q: &Layout, k: &Layout, v: &Layout, cu_seqlens: &[u32]) -> Result<Shape> {
        let (&[tokens, q_heads, head_dim], &[k_tokens, kv_heads, k_dim]) = (q.dims(), k.dims()) else {
            bail!("{NAME}: q {:?} and k {:?} must be [tokens, heads, head_dim]", q.dims(), k.dims())
        };
        if k_tokens != tokens || k_dim != head_dim || v.dims() != k.dims() {
            bail!("{NAME}: q {:?}, k {:?}, v {:?} do not fit", q.dims(), k.dims(), v.dims())
        }
        check_shapes(tokens, q_heads, kv_heads, head_dim, cu_seqlens).map_err(candle_core::Error::Msg)?;
        Ok(Shape { tokens, q_heads, kv_heads, head_dim })
    }

    /// A kernel with its dynamic shared memory allowed past the default 48 KB.
    fn kernel(device: &CudaDevice, name: &str, shared: usize) -> Result<CudaFunction> {
        let func = function(device, "flash_attention", name)?;
        func.set_attribute(
            CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            shared as i32,
        )
        .w()?;
        Ok(func)
    }

    fn grid(blocks: usize, heads: usize, shared: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (blocks as u32, heads as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: shared as u32,
        }
    }

    fn cuda_storage(storage: &Storage) -> Result<&CudaStorage> {
        match storage {
            Storage::Cuda(s) => Ok(s),
            _ => bail!("{NAME}: a tensor that is not on the GPU"),
        }
    }

    pub(super) fn forward(
        cu_seqlens: &[u32],
        scale: f32,
        q: (&CudaStorage, &Layout),
        k: (&CudaStorage, &Layout),
        v: (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Tensor)> {
        let s = shape(q.1, k.1, v.1, cu_seqlens)?;
        let device = &q.0.device;
        let (qv, kv, vv) =
            (view::<bf16>(NAME, q.0, q.1)?, view::<bf16>(NAME, k.0, k.1)?, view::<bf16>(NAME, v.0, v.1)?);
        let mut out = zeros::<bf16>(device, qv.len())?;
        let mut lse = zeros::<f32>(device, s.q_heads * s.tokens)?;
        let tiles = query_tiles(cu_seqlens);
        if !tiles.is_empty() {
            let table = device.clone_htod(&tiles)?;
            let shared = shared_bytes(s.head_dim)[0];
            let func = kernel(device, &format!("flash_attention_fwd_d{}", s.head_dim), shared)?;
            let stream = device.cuda_stream();
            let (tokens, q_heads, kv_heads) = (s.tokens as i32, s.q_heads as i32, s.kv_heads as i32);
            let scale_log2 = scale * LOG2E;
            let mut launch = stream.launch_builder(&func);
            launch.arg(&qv).arg(&kv).arg(&vv).arg(&mut out).arg(&mut lse).arg(&table);
            launch.arg(&tokens).arg(&q_heads).arg(&kv_heads).arg(&scale_log2);
            // SAFETY: the shapes were checked, every tile lies inside the row, and the
            // outputs hold tokens x q_heads x head_dim values and q_heads x tokens.
            unsafe { launch.launch(grid(tiles.len(), s.q_heads, shared)) }.w()?;
        }
        let lse = CudaStorage::wrap_cuda_slice(lse, device.clone());
        let lse = Tensor::from_storage(Storage::Cuda(lse), (s.q_heads, s.tokens), BackpropOp::none(), false);
        Ok((CudaStorage::wrap_cuda_slice(out, device.clone()), lse))
    }

    /// dQ, dK, dV from `[q, k, v, out, d_out]` (contiguous and aligned, as the op's inputs
    /// and `aligned` give them) and the forward's lse.
    pub(super) fn backward(
        cu_seqlens: &[u32],
        scale: f32,
        tensors: [&Tensor; 5],
        lse: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let [q, k, v, out, d_out] = tensors;
        for t in tensors {
            if t.dtype() != DType::BF16 {
                bail!("{NAME}: the backward takes bf16 tensors, not {:?}", t.dtype())
            }
        }
        let guards = [q, k, v, out, d_out, lse].map(|t| t.storage_and_layout());
        let storages: Vec<&CudaStorage> =
            guards.iter().map(|(g, _)| cuda_storage(g)).collect::<Result<_>>()?;
        let layouts: Vec<&Layout> = guards.iter().map(|(_, l)| *l).collect();
        let s = shape(layouts[0], layouts[1], layouts[2], cu_seqlens)?;
        let device = &storages[0].device;
        let bf = |i: usize| view::<bf16>(NAME, storages[i], layouts[i]);
        let (qv, kv, vv, ov, dov) = (bf(0)?, bf(1)?, bf(2)?, bf(3)?, bf(4)?);
        let lse_view = view::<f32>(NAME, storages[5], layouts[5])?;
        let mut dq = zeros::<bf16>(device, qv.len())?;
        let mut dk = zeros::<bf16>(device, kv.len())?;
        let mut dv = zeros::<bf16>(device, vv.len())?;
        let (queries, keys) = (query_tiles(cu_seqlens), key_tiles(cu_seqlens));
        if !queries.is_empty() {
            let stream = device.cuda_stream();
            let (tokens, q_heads, kv_heads, head_dim) =
                (s.tokens as i32, s.q_heads as i32, s.kv_heads as i32, s.head_dim as i32);
            let scale_log2 = scale * LOG2E;
            let mut delta = zeros::<f32>(device, s.q_heads * s.tokens)?;
            let func = function(device, "flash_attention", "flash_attention_delta")?;
            let mut launch = stream.launch_builder(&func);
            launch.arg(&ov).arg(&dov).arg(&mut delta).arg(&tokens).arg(&q_heads).arg(&head_dim);
            let blocks = (s.tokens * s.q_heads).div_ceil(256).min(4096) as u32;
            let config =
                LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: a grid-stride loop over tokens x q_heads rows of out and d_out.
            unsafe { launch.launch(config) }.w()?;

            let [_, dq_shared, dkdv_shared] = shared_bytes(s.head_dim);
            let query_table = device.clone_htod(&queries)?;
            let func = kernel(device, &format!("flash_attention_dq_d{}", s.head_dim), dq_shared)?;
            let mut launch = stream.launch_builder(&func);
            launch
                .arg(&qv)
                .arg(&kv)
                .arg(&vv)
                .arg(&dov)
                .arg(&lse_view)
                .arg(&delta)
                .arg(&mut dq)
                .arg(&query_table);
            launch.arg(&tokens).arg(&q_heads).arg(&kv_heads).arg(&scale_log2).arg(&scale);
            // SAFETY: shapes checked; each block writes the dq rows of its own query tile.
            unsafe { launch.launch(grid(queries.len(), s.q_heads, dq_shared)) }.w()?;

            let key_table = device.clone_htod(&keys)?;
            let func = kernel(device, &format!("flash_attention_dkdv_d{}", s.head_dim), dkdv_shared)?;
            let mut launch = stream.launch_builder(&func);
            launch.arg(&qv).arg(&kv).arg(&vv).arg(&dov).arg(&lse_view).arg(&delta).arg(&mut dk).arg(&mut dv);
            launch.arg(&key_table).arg(&tokens).arg(&q_heads).arg(&kv_heads).arg(&scale_log2).arg(&scale);
            // SAFETY: shapes checked; each block writes the dk, dv rows of its own key tile.
            unsafe { launch.launch(grid(keys.len(), s.kv_heads, dkdv_shared)) }.w()?;
        }
        let wrap = |slice, dims: &[usize]| {
            let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, device.clone()));
            Tensor::from_storage(storage, dims, BackpropOp::none(), false)
        };
        Ok((wrap(dq, q.dims()), wrap(dk, k.dims()), wrap(dv, v.dims())))
    }
}
