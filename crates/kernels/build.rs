//! Compiles every `kernels/*.cu` twice over:
//! - with the `emulation` feature, as host C++ with the CUDA execution model emulated
//!   (`kernels/emu`), so the kernels run in tests on machines without a GPU; each source's
//!   kernel table (`DV_EMULATION_TABLE`) is declared to Rust in `$OUT_DIR/emulation_tables.rs`;
//! - with the `cuda` feature, with nvcc into one fatbin per source holding cubins for sm_80
//!   and sm_90a and PTX for compute_80 (loaded by newer GPUs through the driver's JIT).
//!   The fatbins are embedded in the library (`$OUT_DIR/fatbins.rs`).
//!
//! The resource report (registers, spills) is `scripts/check_kernels.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // The manifest directory as cargo gives it to this run, not as it was when this script
    // was compiled: two checkouts sharing a target directory share the compiled script.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let kernels = Path::new(&manifest).join("../../kernels");
    // Relative to the package, so the check follows the checkout being built.
    println!("cargo:rerun-if-changed=../../kernels");
    let mut sources: Vec<_> = std::fs::read_dir(&kernels)
        .expect("the kernels directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    if std::env::var_os("CARGO_FEATURE_EMULATION").is_some() {
        compile_emulated(&kernels, &sources);
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_fatbins(&kernels, &sources);
    }
}

fn compile_emulated(kernels: &Path, sources: &[PathBuf]) {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .define("DAVINCI_EMULATE", None)
        .include(kernels)
        .flag("-x")
        .flag("c++")
        .flag("-pthread")
        .flag("-ffp-contract=off")
        // `#pragma unroll` is for nvcc.
        .flag("-Wno-unknown-pragmas")
        // GCC notes that passing a 64-byte aligned type by value (a tensor map) changed ABI
        // in GCC 4.6; every caller here is built by the same compiler.
        .flag_if_supported("-Wno-psabi")
        .warnings(true)
        .opt_level(2);
    for source in sources {
        build.file(source);
    }
    build.compile("davinci_kernels_emulated");
    println!("cargo:rustc-link-lib=pthread");

    let mut declarations = String::from("extern \"C\" {\n");
    let mut table = String::from(
        "/// Each kernel source's table of emulated kernels, by the source's file stem.\n\
         #[allow(clippy::type_complexity)]\n\
         const TABLES: &[(&str, unsafe extern \"C\" fn(*mut usize) -> *const Entry)] = &[\n",
    );
    for source in sources {
        let text = std::fs::read_to_string(source).expect("reading a kernel source");
        if !text.contains("DV_EMULATION_TABLE(") {
            continue;
        }
        let stem = source.file_stem().and_then(|s| s.to_str()).expect("a UTF-8 kernel file name");
        declarations.push_str(&format!("    fn emu_kernels_{stem}(count: *mut usize) -> *const Entry;\n"));
        table.push_str(&format!("    ({stem:?}, emu_kernels_{stem}),\n"));
    }
    declarations.push_str("}\n");
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("emulation_tables.rs"), declarations + &table)
        .expect("writing emulation_tables.rs");
}

/// The architectures every kernel is built for: real code for A100 and H100/H200, and PTX
/// that the driver can compile for later GPUs.
const GENCODE: &[&str] =
    &["arch=compute_80,code=sm_80", "arch=compute_90a,code=sm_90a", "arch=compute_80,code=compute_80"];
/// Sources whose stem ends in `_sm90` use what only Hopper has (wgmma, TMA): real code for
/// sm_90a alone (the `a` features run on no other architecture, so no PTX either).
const GENCODE_SM90: &[&str] = &["arch=compute_90a,code=sm_90a"];

fn compile_fatbins(kernels: &Path, sources: &[PathBuf]) {
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=PATH");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    // The CUDA version the build targets (cudarc's bindings and the toolkit's PTX): the
    // oldest driver that runs it supports this version. `davinci doctor` compares.
    println!("cargo:rerun-if-env-changed=CUDARC_CUDA_VERSION");
    let target = std::env::var("CUDARC_CUDA_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| nvcc_version(&nvcc));
    println!("cargo:rustc-env=DAVINCI_CUDA_TARGET_VERSION={target}");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let mut table = String::from("/// Each kernel source's fatbin, by the source's file stem.\npub const FATBINS: &[(&str, &[u8])] = &[\n");
    for source in sources {
        let stem = source.file_stem().and_then(|s| s.to_str()).expect("a UTF-8 kernel file name");
        let fatbin = out.join(format!("{stem}.fatbin"));
        let mut command = Command::new(&nvcc);
        command.args(["-std=c++17", "-O3", "-fatbin", "-I"]).arg(kernels);
        let gencodes = if stem.ends_with("_sm90") { GENCODE_SM90 } else { GENCODE };
        for gencode in gencodes {
            command.arg("-gencode").arg(gencode);
        }
        command.arg("-o").arg(&fatbin).arg(source);
        let status = command.status().unwrap_or_else(|e| {
            panic!(
                "the cuda feature needs nvcc ({nvcc}: {e}); install it with \
                 `eval \"$(scripts/cuda_toolchain.sh)\"` or set NVCC"
            )
        });
        assert!(status.success(), "nvcc failed on {}", source.display());
        table.push_str(&format!("    ({stem:?}, include_bytes!({:?})),\n", fatbin.display().to_string()));
    }
    table.push_str("];\n");
    std::fs::write(out.join("fatbins.rs"), table).expect("writing fatbins.rs");
}

/// nvcc's CUDA version as the driver API writes it (13000 for "release 13.0"), for a build
/// that does not set `CUDARC_CUDA_VERSION`.
fn nvcc_version(nvcc: &str) -> String {
    let output =
        Command::new(nvcc).arg("--version").output().unwrap_or_else(|e| panic!("{nvcc} --version: {e}"));
    let text = String::from_utf8_lossy(&output.stdout);
    let release = text
        .split("release ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no release in `{nvcc} --version`: {text}"));
    let mut parts = release.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major * 1000 + minor * 10).to_string()
}
