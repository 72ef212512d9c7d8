//! What the launch check refuses, on the device and under the emulation alike: launches
//! the device would refuse or fault on. And the emulation runs exactly the launches the
//! ops describe: the kernel, grid, block and shared memory the device would get.

use davinci_kernels::emulated::{
    flash_attention_bwd, flash_attention_fwd, kernel_names, launches_ran, rms_norm_fwd, without_running,
    AttentionGrads, AttentionShape, Host, Kernels, Segments,
};
use davinci_kernels::launch::{Arg, Buffer, Executor, Launch};

use common::Placed;

#[allow(unused_imports)]
mod common;

fn refusal(launch: &Launch) -> String {
    launch.check().unwrap_err().to_string()
}

#[test]
fn a_block_of_more_than_1024_threads_is_refused() {
    let launch = Launch::new("swiglu", "swiglu_fwd_f32", 1, 1056);
    assert!(refusal(&launch).contains("1056 threads"), "{}", refusal(&launch));
    assert!(Launch::new("swiglu", "swiglu_fwd_f32", 1, 1024).check().is_ok());
}

#[test]
fn shared_memory_past_48_kb_needs_the_opt_in_and_stays_under_the_limit() {
    let mut launch = Launch::new("flash_attention", "flash_attention_fwd_d128", 1, 128).shared(87_040);
    assert!(launch.opt_in_shared && launch.check().is_ok(), "the builder opts in past 48 KB");
    launch.opt_in_shared = false;
    assert!(refusal(&launch).contains("without raising"), "{}", refusal(&launch));
    let too_much = Launch::new("flash_attention", "flash_attention_fwd_d128", 1, 128).shared(200 * 1024);
    assert!(refusal(&too_much).contains("architectures allow 166912"), "{}", refusal(&too_much));
    // A kernel built for sm_90a alone may take Hopper's 227 KB, and no more.
    let hopper = Launch::new("flash_attention_sm90", "flash_attention_fwd_sm90_d128", 1, 384).hopper();
    assert!(hopper.clone().shared(200 * 1024).check().is_ok());
    let past = hopper.shared(228 * 1024);
    assert!(refusal(&past).contains("architectures allow 232448"), "{}", refusal(&past));
}

/// Hopper's attention kernels run on compute capability 9.0 alone: sm_90a code runs on no
/// other, earlier or later.
#[test]
fn the_attention_kernels_are_chosen_by_compute_capability() {
    assert_eq!(Kernels::for_capability(9, 0), Kernels::Hopper);
    for (major, minor) in [(8, 0), (8, 6), (8, 9), (9, 1), (10, 0), (12, 0)] {
        assert_eq!(Kernels::for_capability(major, minor), Kernels::MmaSync, "{major}.{minor}");
    }
}

#[test]
fn a_buffer_smaller_than_the_kernels_reach_or_misaligned_is_refused() {
    let data = vec![0u128; 4];
    let whole = Buffer::host(&data);
    let short = Launch::new("swiglu", "swiglu_fwd_f32", 1, 32).buffer("gate", whole, 65, 4);
    assert!(
        refusal(&short).contains("gate holds 64 bytes where the kernel reaches 65"),
        "{}",
        refusal(&short)
    );
    let off = Buffer { addr: whole.addr + 4, bytes: 60 };
    let misaligned = Launch::new("swiglu", "swiglu_fwd_f32", 1, 32).buffer("q", off, 32, 16);
    assert!(refusal(&misaligned).contains("not aligned to the 16 bytes"), "{}", refusal(&misaligned));
}

#[test]
fn the_emulation_names_a_kernel_it_does_not_have() {
    let err =
        Host::default().run(&Launch::new("swiglu", "swiglu_fwd_f64", 1, 32).arg(Arg::U64(0))).unwrap_err();
    assert!(err.to_string().contains("no emulated kernel swiglu_fwd_f64"), "{err}");
}

/// RMSNorm's forward over 5 rows of 700 f32, 16-byte aligned: the vector kernel, 64
/// threads a row (16 columns a thread), 4 rows a block, so 2 blocks, the second with a row;
/// 128 bytes of scratch, the arguments in the kernel's order.
#[test]
fn the_emulation_runs_the_geometry_the_device_gets() {
    let (rows, cols) = (5, 700);
    let (x, w) = (Placed::new(&vec![1.0f32; rows * cols], 0), Placed::new(&vec![1.0f32; cols], 0));
    let mut y = Placed::new(&vec![f32::NAN; rows * cols], 0);
    launches_ran();
    rms_norm_fwd(x.get(), None, w.get(), y.get_mut(), 1e-6).unwrap();
    assert!(y.get().iter().all(|&v| (v - 1.0).abs() < 1e-6));
    let mut expected = Launch::new("rms_norm", "rms_norm_fwd_f32", 2, 64)
        .shared(128)
        .buffer("x", Buffer::host(x.get()), rows * cols * 4, 16)
        .arg(Arg::Null)
        .buffer("w", Buffer::host(w.get()), cols * 4, 16)
        .arg(Arg::Null)
        .buffer("y", Buffer::host_mut(y.get_mut()), rows * cols * 4, 16)
        .arg(Arg::I32(rows as i32))
        .arg(Arg::I32(cols as i32))
        .arg(Arg::F32(1e-6));
    expected.block[1] = 4;
    assert_eq!(launches_ran(), vec![expected]);
    assert!(kernel_names("rms_norm").contains(&"rms_norm_bwd_dw_sum_bf16".to_string()));
}

/// The attention backward's three launches at Qwen2.5-32B's heads: the delta kernel a warp
/// per (token, head) row, dQ a block per query tile (of 128) and head, dK/dV a block per key tile
/// and kv head, with the shared memory each needs (opted in past 48 KB).
#[test]
fn the_attention_backward_launches_as_the_device_would() {
    let s = AttentionShape::packed(130, 40, 8, 128);
    let (q, kv) = (vec![0u16; 130 * 40 * 128], vec![0u16; 130 * 8 * 128]);
    let lse = vec![0.0f32; 40 * 130];
    let (mut dq, mut dk, mut dv) = (q.clone(), kv.clone(), kv.clone());
    let grads = AttentionGrads { dq: &mut dq, dk: &mut dk, dv: &mut dv };
    launches_ran();
    without_running(|| {
        flash_attention_bwd(
            Kernels::MmaSync,
            s,
            &q,
            &kv,
            &kv,
            &q,
            &q,
            &lse,
            Segments::packed(&[0, 130]),
            0.1,
            grads,
        )
    })
    .unwrap();
    let launches = launches_ran();
    let shapes: Vec<_> =
        launches.iter().map(|l| (l.kernel.as_str(), l.grid, l.block[0], l.shared_bytes)).collect();
    // Swizzled rows of 128 bf16, no padding; dQ's tiles of 128 queries with two buffers of
    // 32 keys each of K and V.
    let row = 128 * 2;
    assert_eq!(
        shapes,
        vec![
            ("flash_attention_delta", [650, 1, 1], 256, 0),
            ("flash_attention_dq_d128", [2, 40, 1], 128, (2 * 128 + 4 * 32) * row),
            ("flash_attention_dkdv_d128", [3, 8, 1], 128, (2 * 64 + 4 * 32) * row + 4 * 32 * 4),
        ]
    );
    assert!(launches[1].opt_in_shared && launches[2].opt_in_shared && !launches[0].opt_in_shared);
}

/// Hopper's attention at Qwen2.5-32B's heads: the forward a block of three warpgroups per
/// query tile (of 128) and head with 224 KB of shared memory, q, k and v by tensor map;
/// the backward D, the cleared dQ sum, a block per key tile (of 128) and kv head with
/// 145 KB, then dQ from its sum.
#[test]
fn the_hopper_attention_launches_as_the_device_would() {
    let s = AttentionShape::packed(130, 40, 8, 128);
    let (q, kv) = (vec![0u16; 130 * 40 * 128], vec![0u16; 130 * 8 * 128]);
    let (mut out, mut lse) = (q.clone(), vec![0.0f32; 40 * 130]);
    let (mut dq, mut dk, mut dv) = (q.clone(), kv.clone(), kv.clone());
    let cu = Segments::packed(&[0, 130]);
    launches_ran();
    without_running(|| {
        flash_attention_fwd(Kernels::Hopper, s, &q, &kv, &kv, cu, 0.1, &mut out, &mut lse)?;
        let grads = AttentionGrads { dq: &mut dq, dk: &mut dk, dv: &mut dv };
        flash_attention_bwd(Kernels::Hopper, s, &q, &kv, &kv, &q, &q, &lse, cu, 0.1, grads)
    })
    .unwrap();
    let launches = launches_ran();
    let shapes: Vec<_> =
        launches.iter().map(|l| (l.kernel.as_str(), l.grid, l.block[0], l.shared_bytes)).collect();
    let elements = (130 * 40 * 128_usize).div_ceil(256) as u32;
    assert_eq!(
        shapes,
        vec![
            ("flash_attention_fwd_sm90_d128", [2, 40, 1], 384, 229_456),
            ("flash_attention_delta", [650, 1, 1], 256, 0),
            ("flash_attention_clear_sm90", [elements.min(4096), 1, 1], 256, 0),
            ("flash_attention_bwd_sm90_d128", [2, 8, 1], 384, 148_520),
            ("flash_attention_dq_sm90", [elements.min(4096), 1, 1], 256, 0),
        ]
    );
    // Three tensor maps into the forward, four into the backward, 128 bytes each.
    let maps = |l: &Launch| l.args.iter().filter(|a| matches!(a, Arg::Struct(b) if b.len() == 128)).count();
    assert_eq!((maps(&launches[0]), maps(&launches[3])), (3, 4));
}
