//! The static performance model's predictions (`scripts/perf_model.py`, which CI runs on the
//! SASS and checks against `kernels/perf-bands.toml`), embedded so that every measurement a
//! GPU ever gives is printed beside what the model predicted for it: the first GPU run
//! calibrates the model.

/// `kernels/perf-predicted.tsv`: kernel, architecture, predicted fraction.
const TABLE: &str = include_str!("../../../kernels/perf-predicted.tsv");

/// The share of the data sheet's HBM bandwidth a device copy reaches, as the model assumes
/// (`dram_efficiency` in `scripts/perf_model.py`): a memory kernel's prediction over it is
/// the prediction as a fraction of a device copy, which `bench kernels` measures.
pub const COPY_EFFICIENCY: f64 = 0.92;

/// A chip the model predicts for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chip {
    /// The model's architecture: `sm_80` or `sm_90a`.
    pub arch: &'static str,
    pub name: &'static str,
    /// Dense bf16 tensor-core peak, TFLOP/s (the SXM parts' data sheets).
    pub dense_bf16_tflops: f64,
}

/// The chip the model stands for at a compute capability: 8.0 is an A100, 9.0 an H100 (an
/// H200 has the same tensor cores). Others (8.6, 8.9, ...) have no prediction.
pub fn chip(major: i32, minor: i32) -> Option<Chip> {
    match (major, minor) {
        (8, 0) => Some(Chip { arch: "sm_80", name: "A100", dense_bf16_tflops: 312.0 }),
        (9, 0) => Some(Chip { arch: "sm_90a", name: "H100", dense_bf16_tflops: 989.0 }),
        _ => None,
    }
}

/// The predicted fraction of peak (tensor-core kernels and attention's sums) or of HBM
/// bandwidth (memory-bound kernels) of a kernel of the model on an architecture.
pub fn predicted(kernel: &str, arch: &str) -> Option<f64> {
    TABLE.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let mut fields = line.split('\t');
        let (k, a, value) = (fields.next()?, fields.next()?, fields.next()?);
        (k == kernel && a == arch).then(|| value.parse().ok()).flatten()
    })
}

/// The kernel of the model that runs for `kernel` on `chip`: on sm_90a attention runs
/// Hopper's kernels (`ops::flash_attention` picks them on compute capability 9.0), whose
/// names carry `_sm90`.
pub fn on_chip(kernel: &str, chip: &Chip) -> String {
    if chip.arch != "sm_90a" {
        return kernel.to_string();
    }
    for family in ["flash_attention_fwd", "attention"] {
        if let Some(head_dim) = kernel.strip_prefix(family).and_then(|rest| rest.strip_prefix("_d")) {
            return format!("{family}_sm90_d{head_dim}");
        }
    }
    kernel.to_string()
}

/// The model's kernel behind a `bench kernels` case, at a head size and element type (the
/// model covers the bf16 kernels training runs; the f32 ones have no prediction).
pub fn model_kernel(case: &str, head_dim: usize, bf16: bool) -> Option<String> {
    let typed = |name: &str| bf16.then(|| format!("{name}_bf16"));
    match case {
        "rms_norm fwd" => typed("rms_norm_fwd"),
        "rms_norm bwd" => typed("rms_norm_bwd_dx"),
        "swiglu fwd" => typed("swiglu_fwd"),
        "swiglu bwd" => typed("swiglu_bwd"),
        "rope fwd" => typed("rope_fwd"),
        "rope bwd" => typed("rope_bwd"),
        "cross-entropy rows" => bf16.then(|| "cross_entropy_bf16".into()),
        "attention fwd" => Some(format!("flash_attention_fwd_d{head_dim}")),
        "attention fwd+bwd" => Some(format!("attention_d{head_dim}")),
        "adamw" => Some("adamw_step".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels `kernels/perf-bands.toml` names, in its order.
    fn banded() -> Vec<String> {
        include_str!("../../../kernels/perf-bands.toml")
            .lines()
            .filter_map(|line| {
                let name = line.strip_prefix("[kernel.").or_else(|| line.strip_prefix("[combined."))?;
                Some(name.trim_end_matches(']').to_string())
            })
            .collect()
    }

    #[test]
    fn every_banded_kernel_has_a_prediction_for_its_architectures_within_zero_and_one() {
        let kernels = banded();
        assert!(kernels.len() >= 10, "{kernels:?}");
        for kernel in kernels {
            // Hopper's kernels are built for sm_90a alone.
            let archs: &[&str] = if kernel.contains("sm90") { &["sm_90a"] } else { &["sm_80", "sm_90a"] };
            for &arch in archs {
                let value =
                    predicted(&kernel, arch).unwrap_or_else(|| panic!("no prediction for {kernel} {arch}"));
                assert!(value > 0.0 && value <= 1.0, "{kernel} {arch}: {value}");
            }
        }
    }

    #[test]
    fn every_bf16_bench_case_but_the_fused_residual_maps_to_a_predicted_kernel() {
        let cases = [
            "rms_norm fwd",
            "rms_norm bwd",
            "swiglu fwd",
            "swiglu bwd",
            "rope fwd",
            "rope bwd",
            "cross-entropy rows",
            "attention fwd",
            "attention fwd+bwd",
            "adamw",
        ];
        let (a100, h100) = (chip(8, 0).expect("an A100"), chip(9, 0).expect("an H100"));
        for case in cases {
            for head_dim in [64, 128] {
                let kernel = model_kernel(case, head_dim, true).unwrap_or_else(|| panic!("{case}"));
                for on in [a100, h100] {
                    let kernel = on_chip(&kernel, &on);
                    assert!(predicted(&kernel, on.arch).is_some(), "{case} -> {kernel} on {}", on.name);
                }
            }
        }
        assert_eq!(on_chip("flash_attention_fwd_d128", &h100), "flash_attention_fwd_sm90_d128");
        assert_eq!(on_chip("attention_d64", &h100), "attention_sm90_d64");
        assert_eq!(on_chip("attention_d64", &a100), "attention_d64");
        assert_eq!(on_chip("rms_norm_fwd_bf16", &h100), "rms_norm_fwd_bf16");
        assert_eq!(model_kernel("add+rms_norm fwd", 128, true), None);
        assert_eq!(model_kernel("swiglu fwd", 128, false), None);
        assert_eq!(chip(8, 6), None);
        assert_eq!(chip(9, 0).map(|c| c.arch), Some("sm_90a"));
    }
}
