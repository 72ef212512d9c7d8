//! `davinci train` as a user runs it: a run killed (SIGKILL) while writing a checkpoint
//! resumes from the previous complete one and ends exactly where an uninterrupted run does;
//! ranks started by `davinci launch` or as a bare `srun` starts them train together, and a
//! dead rank ends the job.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use davinci_train::checkpoint::{latest, load};
use davinci_train::metrics::{read_metrics, METRICS_FILE};

fn recipe() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../train/tests/fixtures/two-stage.toml")
}

fn train(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_davinci"));
    command
        .arg("train")
        .arg(recipe())
        .arg("--output-dir")
        .arg(root.join("run"))
        .arg("--data-dir")
        .arg(root.join("data"))
        .arg("--no-progress");
    command
}

fn check(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// A hidden temporary directory of the checkpoint of `step` that already holds weights.
fn half_written(stage_dir: &Path, step: u64) -> bool {
    std::fs::read_dir(stage_dir).into_iter().flatten().filter_map(|e| e.ok()).any(|e| {
        e.file_name().to_string_lossy().starts_with(&format!(".step-{step:08}"))
            && std::fs::read_dir(e.path())
                .into_iter()
                .flatten()
                .any(|f| f.is_ok_and(|f| f.file_name().to_string_lossy().ends_with(".safetensors")))
    })
}

#[test]
fn a_run_killed_mid_checkpoint_resumes_from_the_previous_one() {
    let whole = tempfile::tempdir().unwrap();
    let stdout = check(train(whole.path()).output().unwrap());
    assert!(stdout.contains("stage mt: 4 steps") && stdout.contains("stage sft: 3 steps"), "{stdout}");

    // Checkpoints every 2 steps: step 2 completes, step 4 stalls half written and is killed.
    let killed = tempfile::tempdir().unwrap();
    let mut child = train(killed.path())
        .env("DAVINCI_TEST_STALL_CHECKPOINT", "mt:4")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stage_dir = killed.path().join("run/mt");
    let started = Instant::now();
    while !half_written(&stage_dir, 4) {
        assert!(started.elapsed() < Duration::from_secs(120), "the checkpoint of step 4 never started");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let previous = latest(&killed.path().join("run"), "mt").unwrap();
    assert!(previous.ends_with("step-00000002"), "{}", previous.display());

    let stdout = check(train(killed.path()).output().unwrap());
    assert!(stdout.contains("resumed from") && stdout.contains("step-00000002"), "{stdout}");
    assert!(stdout.contains("stage mt: 2 steps"), "{stdout}");
    assert!(!half_written(&stage_dir, 4), "the leftover of the killed write is cleaned up");
    for stage in ["mt", "sft"] {
        let (_, a, _) = load(&latest(&whole.path().join("run"), stage).unwrap(), 0, 1).unwrap();
        let (_, b, _) = load(&latest(&killed.path().join("run"), stage).unwrap(), 0, 1).unwrap();
        assert_eq!(a, b, "{stage}: the resumed run ends with the same weights and moments");
    }
}

/// The loss of every step, from `metrics.jsonl`.
fn losses(root: &Path) -> Vec<f64> {
    read_metrics(&root.join("run").join(METRICS_FILE)).unwrap().iter().map(|m| m.loss.unwrap()).collect()
}

fn masters(root: &Path) -> Vec<f32> {
    let (_, optimizer, _) = load(&latest(&root.join("run"), "sft").unwrap(), 0, 1).unwrap();
    optimizer.params.iter().flat_map(|p| p.master.iter().copied()).collect()
}

#[test]
fn two_and_four_processes_under_davinci_launch_train_the_same_model_as_one_and_plot_beside_it() {
    let one = tempfile::tempdir().unwrap();
    check(train(one.path()).output().unwrap());
    let a = masters(one.path());
    let norm: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    for world in [2usize, 4] {
        let many = tempfile::tempdir().unwrap();
        let mut launch = Command::new(env!("CARGO_BIN_EXE_davinci"));
        launch.args(["launch", "--nproc", &world.to_string(), "--"]).args(train(many.path()).get_args());
        let stdout = check(launch.output().unwrap());
        assert!(stdout.contains("stage sft: 3 steps"), "{world} processes: {stdout}");
        let (reference, theirs) = (losses(one.path()), losses(many.path()));
        assert_eq!(reference.len(), theirs.len(), "{world} processes: steps taken");
        for (step, (x, y)) in reference.iter().zip(&theirs).enumerate() {
            assert!((x - y).abs() <= 1e-5 * x.abs(), "{world} processes, step {}: loss {y} vs {x}", step + 1);
        }
        let b = masters(many.path());
        let diff: f64 = a.iter().zip(&b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
        assert!(diff / norm < 1e-5, "{world} processes: relative difference {}", diff / norm);
        let last_rank = format!("optimizer-{:05}-of-{world:05}.safetensors", world - 1);
        assert!(latest(&many.path().join("run"), "mt").unwrap().join(last_rank).is_file());
        // Every step reports its model TFLOP/s (no MFU: the CPU has no peak in the table), the
        // heap it held (the binary counts its allocations), and time waiting in collectives.
        let steps = read_metrics(&many.path().join("run").join(METRICS_FILE)).unwrap();
        assert!(steps.iter().all(|m| m.tflops.is_some_and(|t| t > 0.0) && m.mfu.is_none()), "{world}");
        assert!(steps.iter().all(|m| m.peak_memory_bytes.is_some_and(|b| b > 1 << 20)), "{world}");
        assert!(steps.iter().all(|m| m.collective_seconds.is_some_and(|s| s > 0.0)), "{world}");
        assert!(steps.iter().all(|m| m.data_wait_seconds.is_some()), "{world}");

        // The two runs' curves on one plot.
        let plot = many.path().join("both.svg");
        let out = Command::new(env!("CARGO_BIN_EXE_davinci"))
            .arg("plot")
            .arg(one.path().join("run"))
            .arg("--compare")
            .arg(many.path().join("run"))
            .arg("--out")
            .arg(&plot)
            .output()
            .unwrap();
        check(out);
        let svg = std::fs::read_to_string(&plot).unwrap();
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        assert!(svg.starts_with("<svg") && texts.contains(&"learning rate") && texts.contains(&"sft"));
        let run_names = [one.path(), many.path()].map(|p| p.join("run").display().to_string());
        assert!(run_names.iter().all(|name| svg.contains(name.as_str())), "a legend entry per run");
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_davinci"))
        .args(["plot", &one.path().join("run").display().to_string(), "--out", "x.png"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains(".svg"), "{stderr}");
}

/// What `srun` gives each task and nothing more: no `MASTER_ADDR`, no `MASTER_PORT`.
#[test]
fn two_ranks_started_as_a_bare_srun_starts_them_find_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    // The job id whose port (20000 + id mod 20000) is free here.
    let job_id = (0..20_000u16)
        .map(|i| (i + std::process::id() as u16 % 20_000) % 20_000)
        .find(|id| std::net::TcpListener::bind(("127.0.0.1", 20_000 + id)).is_ok())
        .unwrap()
        .to_string();
    let spawn = |rank: &str| {
        train(tmp.path())
            .args(["--timeout", "60"])
            .env_remove("MASTER_ADDR")
            .env_remove("MASTER_PORT")
            .env_remove("RANK")
            .env_remove("WORLD_SIZE")
            .env_remove("LOCAL_RANK")
            .envs([
                ("SLURM_PROCID", rank),
                ("SLURM_LOCALID", rank),
                ("SLURM_NTASKS", "2"),
                ("SLURM_JOB_ID", job_id.as_str()),
                ("SLURM_STEP_NODELIST", "localhost,otherhost"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (root, other) = (spawn("0"), spawn("1"));
    let (root, other) = (root.wait_with_output().unwrap(), other.wait_with_output().unwrap());
    check(other);
    let stdout = check(root);
    assert!(stdout.contains("stage sft: 3 steps"), "{stdout}");
    let last = latest(&tmp.path().join("run"), "sft").unwrap();
    assert!(last.join("optimizer-00001-of-00002.safetensors").is_file(), "{}", last.display());
}

#[test]
fn a_dead_rank_ends_the_job_with_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let spawn = |rank: &str| {
        train(tmp.path())
            .args(["--timeout", "30"])
            .envs([
                ("RANK", rank),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", port.as_str()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (root, mut other) = (spawn("0"), spawn("1"));
    // Kill rank 1 once the job has taken a step.
    let metrics = tmp.path().join("run/metrics.jsonl");
    let started = Instant::now();
    while std::fs::read_to_string(&metrics).map(|t| t.lines().count()).unwrap_or(0) < 1 {
        assert!(started.elapsed() < Duration::from_secs(120), "the job never took a step");
        std::thread::sleep(Duration::from_millis(20));
    }
    other.kill().unwrap();
    other.wait().unwrap();
    let killed_at = Instant::now();
    let output = root.wait_with_output().unwrap();
    assert!(killed_at.elapsed() < Duration::from_secs(30), "rank 0 did not notice within the timeout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("rank 1"), "{stderr}");
}
