//! The GPUs davinci plans for: one table, read by the planner and by the trainer's MFU.
//!
//! Sources (vendors' data sheets and system guides):
//! - H100 SXM5: NVIDIA H100 Tensor Core GPU datasheet (80 GB HBM3, 3.35 TB/s, 989 TFLOP/s
//!   dense BF16, NVLink 900 GB/s); DGX H100 user guide (8 x ConnectX-7 400 Gb/s NDR, one
//!   per GPU).
//! - H200 SXM: NVIDIA H200 Tensor Core GPU datasheet (141 GB HBM3e, 4.8 TB/s, 989 TFLOP/s
//!   dense BF16, NVLink 900 GB/s); DGX H200 (8 x 400 Gb/s NDR).
//! - A100 SXM4 80 GB / 40 GB: NVIDIA A100 Tensor Core GPU datasheet (2,039 / 1,555 GB/s,
//!   312 TFLOP/s dense BF16, NVLink 600 GB/s); DGX A100 user guide (8 x 200 Gb/s HDR).
//!
//! NVLink is quoted by NVIDIA as the sum of both directions; a ring collective moves data
//! one way at a time, so the table keeps half. Memory is what `nvidia-smi` reports as
//! total (in MiB), not the marketing GB.

/// One GPU model's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    /// The name `--gpu` takes.
    pub key: &'static str,
    pub name: &'static str,
    pub memory_bytes: u64,
    /// Dense bf16 tensor-core peak, TFLOP/s.
    pub peak_tflops: f64,
    pub hbm_gbps: f64,
    /// NVLink bandwidth per GPU and direction, GB/s (within a node).
    pub nvlink_gbps: f64,
    /// InfiniBand bandwidth per GPU, GB/s (across nodes).
    pub infiniband_gbps: f64,
}

const MIB: u64 = 1 << 20;

/// Every GPU of the table.
pub const GPUS: [Gpu; 4] = [
    Gpu {
        key: "h100",
        name: "H100 SXM 80GB",
        memory_bytes: 81_559 * MIB,
        peak_tflops: 989.0,
        hbm_gbps: 3_350.0,
        nvlink_gbps: 450.0,
        infiniband_gbps: 50.0,
    },
    Gpu {
        key: "h200",
        name: "H200 SXM 141GB",
        memory_bytes: 143_771 * MIB,
        peak_tflops: 989.0,
        hbm_gbps: 4_800.0,
        nvlink_gbps: 450.0,
        infiniband_gbps: 50.0,
    },
    Gpu {
        key: "a100-80",
        name: "A100 SXM4 80GB",
        memory_bytes: 81_920 * MIB,
        peak_tflops: 312.0,
        hbm_gbps: 2_039.0,
        nvlink_gbps: 300.0,
        infiniband_gbps: 25.0,
    },
    Gpu {
        key: "a100-40",
        name: "A100 SXM4 40GB",
        memory_bytes: 40_960 * MIB,
        peak_tflops: 312.0,
        hbm_gbps: 1_555.0,
        nvlink_gbps: 300.0,
        infiniband_gbps: 25.0,
    },
];

/// A GPU of the table by its `--gpu` name.
pub fn gpu(key: &str) -> Option<&'static Gpu> {
    GPUS.iter().find(|g| g.key.eq_ignore_ascii_case(key))
}

/// The table's GPU a CUDA device reports, by compute capability and name (`None` for one
/// not in the table). The H100 PCIe has its own, lower peak (756 TFLOP/s, its datasheet).
pub fn detect(capability: (i32, i32), name: &str) -> Option<Gpu> {
    let key = match capability {
        (8, 0) if name.contains("40GB") => "a100-40",
        (8, 0) => "a100-80",
        (9, 0) if name.contains("PCIe") => {
            return gpu("h100").map(|g| Gpu { name: "H100 PCIe", peak_tflops: 756.0, ..g.clone() })
        }
        (9, 0) if name.contains("H200") => "h200",
        (9, 0) => "h100",
        _ => return None,
    };
    gpu(key).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_are_found_by_name_and_by_what_the_device_reports() {
        assert_eq!(gpu("H100").map(|g| g.peak_tflops), Some(989.0));
        assert!(gpu("v100").is_none());
        assert_eq!(detect((9, 0), "NVIDIA H100 80GB HBM3").map(|g| g.key), Some("h100"));
        assert_eq!(detect((9, 0), "NVIDIA H100 PCIe").map(|g| g.peak_tflops), Some(756.0));
        assert_eq!(detect((9, 0), "NVIDIA H200").map(|g| g.key), Some("h200"));
        assert_eq!(detect((8, 0), "NVIDIA A100-SXM4-40GB").map(|g| g.key), Some("a100-40"));
        assert!(detect((7, 5), "Tesla T4").is_none());
    }
}
