//! Collectives on both backends (host buffers and tensors) against a plain computation,
//! flat sharding's ownership, and failures that name the rank: a rank that never arrives, a different job, a rank
//! that dies.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use common::tcp_group;
use davinci_dist::collective::Collective;
use davinci_dist::rendezvous::first_host;
use davinci_dist::threads::thread_group;
use davinci_dist::{DistError, LaunchEnv};

/// Rank r's data: awkward values, so that a wrong order of summation would show.
fn data(rank: usize, len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 31 + rank * 17) % 97) as f32 * 0.013 - 0.5 + rank as f32 * 1e-3).collect()
}

/// What every rank computes, checked against the definition.
fn exercise(c: &dyn Collective) -> (Vec<f32>, Vec<f32>, Vec<f64>, Vec<u8>) {
    let (rank, world) = (c.rank(), c.world());
    let mut gathered = vec![0.0; 5 * world];
    c.all_gather(&data(rank, 5), &mut gathered).unwrap();
    let mut reduced = vec![0.0; 3];
    c.reduce_scatter(&data(rank, 3 * world), &mut reduced).unwrap();
    // The tensor forms FSDP uses: the same values, in the tensor's dtype, on its device.
    let shard = Tensor::new(data(rank, 5), &Device::Cpu).unwrap();
    let as_tensor = c.all_gather_tensor(&shard).unwrap();
    assert_eq!(as_tensor.to_vec1::<f32>().unwrap(), gathered);
    let in_bf16 = c.all_gather_tensor(&shard.to_dtype(DType::BF16).unwrap()).unwrap();
    assert_eq!(in_bf16.dtype(), DType::BF16);
    let rounded: Vec<f32> = gathered.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();
    assert_eq!(in_bf16.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(), rounded);
    let blocks = Tensor::new(data(rank, 3 * world), &Device::Cpu).unwrap();
    assert_eq!(c.reduce_scatter_tensor(&blocks).unwrap().to_vec1::<f32>().unwrap(), reduced);
    let mut sums = vec![rank as f64, 1.0];
    c.all_reduce(&mut sums).unwrap();
    // The tensor all-reduce keeps the shape and dtype; it sums what the host form sums.
    for dtype in [DType::F32, DType::F64] {
        let values = Tensor::new(data(rank, 6), &Device::Cpu).unwrap().reshape((2, 3)).unwrap();
        let summed = c.all_reduce_tensor(&values.to_dtype(dtype).unwrap()).unwrap();
        assert_eq!((summed.dims(), summed.dtype()), (&[2, 3][..], dtype));
        let mut host: Vec<f64> = data(rank, 6).iter().map(|&x| x as f64).collect();
        c.all_reduce(&mut host).unwrap();
        let got = summed.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let want: Vec<f64> =
            host.iter().map(|&x| if dtype == DType::F32 { x as f32 as f64 } else { x }).collect();
        assert_eq!(got, want);
    }
    let refused = c.all_reduce_tensor(&Tensor::zeros(2, DType::BF16, &Device::Cpu).unwrap());
    assert!(matches!(refused, Err(DistError::Mismatch(m)) if m.contains("BF16")));
    let message = c.broadcast(if rank == 1 { b"from one".to_vec() } else { Vec::new() }, 1).unwrap();
    c.barrier().unwrap();
    (gathered, reduced, sums, message)
}

fn check(
    world: usize,
    rank: usize,
    (gathered, reduced, sums, message): &(Vec<f32>, Vec<f32>, Vec<f64>, Vec<u8>),
) {
    let expected: Vec<f32> = (0..world).flat_map(|r| data(r, 5)).collect();
    assert_eq!(gathered, &expected);
    let mut sum = data(0, 3 * world)[rank * 3..rank * 3 + 3].to_vec();
    for r in 1..world {
        sum.iter_mut().zip(&data(r, 3 * world)[rank * 3..rank * 3 + 3]).for_each(|(s, x)| *s += x);
    }
    assert_eq!(reduced, &sum, "summed in rank order, bit for bit");
    assert_eq!(sums, &vec![(0..world).sum::<usize>() as f64, world as f64]);
    assert_eq!(message, b"from one");
}

/// Runs `exercise` on every rank, a thread each, and checks each rank's results.
fn exercise_all<C: Collective + 'static>(world: usize, ranks: Vec<Box<dyn FnOnce() -> C + Send>>) {
    let handles: Vec<_> =
        ranks.into_iter().map(|make| std::thread::spawn(move || exercise(&make()))).collect();
    for (rank, handle) in handles.into_iter().enumerate() {
        check(world, rank, &handle.join().unwrap());
    }
}

#[test]
fn thread_and_tcp_backends_agree_with_the_definitions() {
    for world in [2, 3] {
        let threads = thread_group(world, Duration::from_secs(20));
        exercise_all(
            world,
            threads.into_iter().map(|r| Box::new(move || r) as Box<dyn FnOnce() -> _ + Send>).collect(),
        );
        let tcp = tcp_group(world, vec!["job".into(); world], Duration::from_secs(20));
        exercise_all(
            world,
            tcp.into_iter()
                .map(|h| Box::new(move || h.join().unwrap().unwrap()) as Box<dyn FnOnce() -> _ + Send>)
                .collect(),
        );
    }
}

#[test]
fn a_rank_that_never_arrives_is_named_within_the_timeout() {
    let mut ranks = thread_group(3, Duration::from_millis(300));
    let _absent = ranks.pop();
    let started = Instant::now();
    let errors: Vec<String> = ranks
        .into_iter()
        .map(|r| std::thread::spawn(move || r.barrier().unwrap_err().to_string()))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(errors.iter().any(|e| e.contains("rank(s) [2]")), "{errors:?}");
}

#[test]
fn a_different_job_or_a_dead_rank_fails_with_its_rank() {
    let ranks = tcp_group(2, vec!["recipe-a".into(), "recipe-b".into()], Duration::from_secs(10));
    let errors: Vec<String> =
        ranks.into_iter().map(|h| h.join().unwrap().err().unwrap().to_string()).collect();
    assert!(errors.iter().all(|e| e.contains("rank 1") && e.contains("fingerprint")), "{errors:?}");

    // Rank 1 connects, then goes away (its process died): rank 0's next collective fails
    // at once, naming it.
    let ranks = tcp_group(2, vec!["job".into(); 2], Duration::from_secs(30));
    let mut ranks = ranks.into_iter().map(|h| h.join().unwrap().unwrap());
    let (root, other) = (Arc::new(ranks.next().unwrap()), ranks.next().unwrap());
    drop(other);
    let started = Instant::now();
    let err = root.barrier().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, DistError::Rank { rank: 1, .. }), "{err}");
}

#[test]
fn launch_variables_of_torchrun_and_slurm() {
    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }
    assert_eq!(LaunchEnv::from_vars(vars(&[])).unwrap(), None);
    let torchrun = [
        ("RANK", "3"),
        ("WORLD_SIZE", "8"),
        ("LOCAL_RANK", "3"),
        ("MASTER_ADDR", "node1"),
        ("MASTER_PORT", "1234"),
    ];
    let env = LaunchEnv::from_vars(vars(&torchrun)).unwrap().unwrap();
    assert_eq!((env.rank, env.world, env.local_rank, env.master.as_str()), (3, 8, 3, "node1:1234"));
    let slurm =
        [("SLURM_PROCID", "9"), ("SLURM_NTASKS", "16"), ("SLURM_LOCALID", "1"), ("MASTER_ADDR", "n0")];
    let env = LaunchEnv::from_vars(vars(&slurm)).unwrap().unwrap();
    assert_eq!((env.rank, env.world, env.local_rank, env.master.as_str()), (9, 16, 1, "n0:29500"));
    let err =
        LaunchEnv::from_vars(vars(&[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "x")])).unwrap_err();
    assert!(err.to_string().contains("RANK=2"), "{err}");
    let err = LaunchEnv::from_vars(vars(&[("RANK", "0"), ("WORLD_SIZE", "2")])).unwrap_err();
    assert!(err.to_string().contains("MASTER_ADDR"), "{err}");
    // A bare `srun`: rank 0's host is the first of the step's nodes, the port the job's.
    let bare = [
        ("SLURM_PROCID", "5"),
        ("SLURM_NTASKS", "16"),
        ("SLURM_LOCALID", "5"),
        ("SLURM_JOB_ID", "4123987"),
        ("SLURM_JOB_NODELIST", "other[1-9]"),
        ("SLURM_STEP_NODELIST", "gpu[007-008,020],login1"),
    ];
    let env = LaunchEnv::from_vars(vars(&bare)).unwrap().unwrap();
    assert_eq!((env.rank, env.world, env.local_rank, env.master.as_str()), (5, 16, 5, "gpu007:23987"));
    // What the script sets wins, and SLURM's list and job id are then not read.
    let set = [
        &bare[..3],
        &[
            ("SLURM_STEP_NODELIST", "gpu["),
            ("SLURM_JOB_ID", "x"),
            ("MASTER_ADDR", "head"),
            ("MASTER_PORT", "777"),
        ],
    ]
    .concat();
    assert_eq!(LaunchEnv::from_vars(vars(&set)).unwrap().unwrap().master, "head:777");
    let broken = [&bare[..4], &[("SLURM_JOB_NODELIST", "gpu[007-008")]].concat();
    let err = LaunchEnv::from_vars(vars(&broken)).unwrap_err();
    assert!(err.to_string().contains("SLURM_JOB_NODELIST=gpu[007-008"), "{err}");
}

#[test]
fn the_first_host_of_slurm_node_lists() {
    for (list, first) in [
        ("node17", Some("node17")),
        ("node[01-04]", Some("node01")),
        ("gpu[007-012,020],login1", Some("gpu007")),
        ("a,b", Some("a")),
        ("rack[1-2]-n[05-06]", Some("rack1-n05")),
        ("n-[3,1]", Some("n-3")),
        ("", None),
        ("node[", None),
        ("node[-3]", None),
        ("node]", None),
    ] {
        assert_eq!(first_host(list).as_deref(), first, "{list}");
    }
}
