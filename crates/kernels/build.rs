//! Compiles every `kernels/*.cu` as host C++ with the CUDA execution model emulated
//! (`kernels/emu`), so the kernels' arithmetic runs in tests on machines without a GPU.
//! The device build (nvcc, sm_80 and sm_90a) is `scripts/check_kernels.sh`.

use std::path::Path;

fn main() {
    let kernels = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
    println!("cargo:rerun-if-changed={}", kernels.display());
    let mut sources: Vec<_> = std::fs::read_dir(&kernels)
        .expect("the kernels directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .define("DAVINCI_EMULATE", None)
        .include(&kernels)
        .flag("-x")
        .flag("c++")
        .flag("-pthread")
        .warnings(true)
        .opt_level(2);
    for source in &sources {
        build.file(source);
    }
    build.compile("davinci_kernels_emulated");
    println!("cargo:rustc-link-lib=pthread");
}
