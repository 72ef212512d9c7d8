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

/// The bundled tiny recipe with `context_parallel = 2` in every stage, written into `dir`
/// with its paths made absolute.
fn tiny_recipe_with_context_2(dir: &Path) -> PathBuf {
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let text = std::fs::read_to_string(recipes.join("tiny.toml")).unwrap();
    let absolute = |folder: &str| format!("\"{}/{folder}/", recipes.display());
    let text = text
        .replace("\"data/", &absolute("data"))
        .replace("\"tokenizer/", &absolute("tokenizer"))
        .replace("[[stages]]\n", "[[stages]]\ncontext_parallel = 2\n");
    assert_eq!(text.matches("context_parallel = 2").count(), 3);
    let path = dir.join("tiny-context-2.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_tiny_recipe_at_context_2_under_two_and_four_processes_matches_one_process_step_by_step() {
    let root = tempfile::tempdir().unwrap();
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let run = |recipe: &Path, nproc: usize, name: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_davinci"));
        if nproc > 1 {
            command.args(["launch", "--nproc", &nproc.to_string(), "--"]);
        }
        command.arg("train").arg(recipe).arg("--no-progress");
        command.arg("--output-dir").arg(root.path().join(name).join("run"));
        command.arg("--data-dir").arg(root.path().join("data"));
        check(command.output().unwrap());
    };
    run(&recipes.join("tiny.toml"), 1, "one");
    let context = tiny_recipe_with_context_2(root.path());
    for nproc in [2, 4] {
        let name = format!("{nproc}-processes");
        run(&context, nproc, &name);
        let (reference, theirs) = (losses(&root.path().join("one")), losses(&root.path().join(&name)));
        assert_eq!(reference.len(), 61, "the tiny recipe's steps");
        assert_eq!(reference.len(), theirs.len(), "{nproc} processes: steps taken");
        for (step, (x, y)) in reference.iter().zip(&theirs).enumerate() {
            assert!((x - y).abs() <= 1e-5 * x.abs(), "{nproc} processes, step {}: loss {y} vs {x}", step + 1);
        }
    }
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
            // The job's secret derives from a key file only this user can read (both ranks
            // race to create it here).
            .env("DAVINCI_KEY_FILE", tmp.path().join("home/rendezvous.key"))
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

/// Waits until the run under `root` has logged a step; its `metrics.jsonl`.
fn wait_for_a_step(root: &Path) -> PathBuf {
    let log = root.join("run").join(METRICS_FILE);
    let started = Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 1 {
        assert!(started.elapsed() < Duration::from_secs(120), "the job never took a step");
        std::thread::sleep(Duration::from_millis(5));
    }
    log
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
                ("DAVINCI_JOB_SECRET", "a secret both ranks were given"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (root, mut other) = (spawn("0"), spawn("1"));
    // Kill rank 1 once the job has taken a step.
    wait_for_a_step(tmp.path());
    other.kill().unwrap();
    other.wait().unwrap();
    let killed_at = Instant::now();
    let output = root.wait_with_output().unwrap();
    assert!(killed_at.elapsed() < Duration::from_secs(30), "rank 0 did not notice within the timeout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("rank 1"), "{stderr}");
}

/// `davinci launch --nproc 2` of the two-stage recipe into `root`.
fn launch_two(root: &Path) -> Command {
    let mut launch = Command::new(env!("CARGO_BIN_EXE_davinci"));
    launch.args(["launch", "--nproc", "2", "--"]).args(train(root).get_args());
    launch
}

/// [`launch_two`] with steps slowed to 300 ms, so that a signal sent after the first step
/// lands mid-run on any machine.
fn slow_launch_two(root: &Path) -> Command {
    let mut launch = launch_two(root);
    launch.env("DAVINCI_TEST_STEP_SLEEP_MS", "300");
    launch
}

#[test]
fn sigterm_to_every_process_of_a_two_rank_launch_checkpoints_that_step_and_the_resume_is_bit_identical() {
    let whole = tempfile::tempdir().unwrap();
    check(launch_two(whole.path()).output().unwrap());

    let stopped = tempfile::tempdir().unwrap();
    let child =
        slow_launch_two(stopped.path()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let log = wait_for_a_step(stopped.path());
    // What SLURM does before preemption: SIGTERM to every process of the step, the
    // launcher and each rank, so a rank gets it twice (once passed on by the launcher).
    let everyone = processes_mentioning(&stopped.path().join("run").display().to_string());
    assert_eq!(everyone.len(), 3, "the launcher and two ranks: {everyone:?}");
    for pid in everyone {
        assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    }
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(75), "{stdout}\n{stderr}");
    assert!(stdout.contains("stopped by SIGTERM with a checkpoint"), "{stdout}\n{stderr}");
    let steps = read_metrics(&log).unwrap().len() as u64;
    assert!(steps < 7, "the run stopped early ({steps} steps)");
    let (stage, step) = if steps <= 4 { ("mt", steps) } else { ("sft", steps - 4) };
    let (_, _, state) = load(&latest(&stopped.path().join("run"), stage).unwrap(), 0, 1).unwrap();
    assert_eq!(state.step, step, "the checkpoint is of the step the signal stopped at");

    let stdout = check(launch_two(stopped.path()).output().unwrap());
    assert!(stdout.contains("resumed from"), "{stdout}");
    assert_eq!(masters(stopped.path()), masters(whole.path()), "bit-identical weights and moments");
    let bits = |root: &Path| losses(root).iter().map(|l| l.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(stopped.path()), bits(whole.path()));

    // The final checkpoint verifies; a flipped byte is named.
    let last = latest(&stopped.path().join("run"), "sft").unwrap();
    let info = |dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_davinci")).arg("info").arg(dir).arg("--verify").output().unwrap()
    };
    assert!(check(info(&last)).contains("match their checksums"));
    let weights = last.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&weights, bytes).unwrap();
    let refused = info(&last);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("model.safetensors") && stderr.contains("corrupt"),
        "{stderr}"
    );
}

/// The pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let entries = std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok());
    entries
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
        })
        .collect()
}

#[test]
fn ranks_of_a_launcher_killed_with_sigkill_stop_with_a_checkpoint_instead_of_training_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut launcher =
        slow_launch_two(tmp.path()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let log = wait_for_a_step(tmp.path());
    launcher.kill().unwrap(); // SIGKILL: it cannot pass anything on.
    launcher.wait().unwrap();
    let needle = tmp.path().join("run").display().to_string();
    let killed_at = Instant::now();
    while !processes_mentioning(&needle).is_empty() {
        assert!(killed_at.elapsed() < Duration::from_secs(60), "the ranks outlived their launcher");
        std::thread::sleep(Duration::from_millis(20));
    }
    let steps = read_metrics(&log).unwrap().len() as u64;
    assert!(steps < 7, "the ranks stopped early ({steps} steps)");
    let (stage, step) = if steps <= 4 { ("mt", steps) } else { ("sft", steps - 4) };
    let (_, _, state) = load(&latest(&tmp.path().join("run"), stage).unwrap(), 0, 1).unwrap();
    assert_eq!(state.step, step, "they stopped gracefully, with a checkpoint of their last step");
}
