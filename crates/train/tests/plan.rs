//! The planner on the bundled recipes and on made-up GPUs: what fits, what is refused,
//! and what it suggests.

use davinci_model::Config;
use davinci_train::plan::{hardware, plan_stage, refuse_unless_fits, Cluster, Gpu};
use davinci_train::Recipe;

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn plans(recipe: &str, preset: &str, gpu: Gpu, gpus: usize) -> Vec<davinci_train::plan::Plan> {
    let recipe = Recipe::from_file(&repo(&format!("recipes/{recipe}.toml"))).unwrap();
    recipe.check_trainable(gpus).unwrap();
    let config = Config::preset(preset).unwrap();
    let cluster = Cluster { gpu, gpus, gpus_per_node: 8 };
    recipe.stages.iter().map(|s| plan_stage(&config, s, &cluster, 2)).collect()
}

#[test]
fn every_stage_of_the_32b_and_72b_recipes_fits_64_h100s() {
    let h100 = hardware::gpu("h100").unwrap().clone();
    for (recipe, preset) in [("davinci-dev-32b", "qwen2.5-32b"), ("davinci-dev-72b", "qwen2.5-72b")] {
        for plan in plans(recipe, preset, h100.clone(), 64) {
            assert!(plan.fits(), "{recipe}:\n{}", plan.table());
            let time = plan.time.as_ref().unwrap();
            assert!(time.mfu > 0.0 && time.mfu < 0.7, "{recipe} {}: MFU {}", plan.name, time.mfu);
        }
    }
}

#[test]
fn a_stage_over_a_small_gpu_is_refused_with_its_table_and_a_change_that_fits() {
    let small = Gpu { memory_bytes: 40 << 30, ..hardware::gpu("h100").unwrap().clone() };
    let plans = plans("davinci-dev-32b", "qwen2.5-32b", small, 64);
    let mt1 = plans.iter().find(|p| p.name == "mt1").unwrap();
    assert!(!mt1.fits());
    let advice = mt1.advice.as_deref().unwrap();
    assert!(advice.starts_with("context_parallel = "), "{advice}");
    let err = refuse_unless_fits(&plans, false).unwrap_err().to_string();
    assert!(err.contains("stage mt1") && err.contains("DOES NOT FIT") && err.contains("--force"), "{err}");
    refuse_unless_fits(&plans, true).unwrap();
}

#[test]
fn the_peak_json_matches_the_table_total() {
    let h200 = hardware::gpu("h200").unwrap().clone();
    for plan in plans("davinci-dev-72b", "qwen2.5-72b", h200, 64) {
        let json = plan.json();
        assert_eq!(json["per_rank_peak_bytes"].as_u64(), Some(plan.memory.total()));
        assert_eq!(json["fits"].as_bool(), Some(true));
    }
}
