//! Sub-groups of consecutive ranks on the thread and TCP backends: each group's collectives
//! stay within it while the groups run them at once with lengths of their own, the world's
//! collectives keep working between them, and a group's mistakes name its ranks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use common::tcp_group;
use davinci_dist::collective::{combine, Op};
use davinci_dist::threads::thread_group;
use davinci_dist::{subgroup, Collective, DistError, Local};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Rank r's data: awkward values, so that a wrong order of summation would show.
fn data(rank: usize, len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 29 + rank * 13) % 89) as f32 * 0.017 - 0.6 + rank as f32 * 1e-3).collect()
}

/// A world of `world` ranks on each backend, by the backend's name.
fn worlds(world: usize) -> Vec<(&'static str, Vec<Arc<dyn Collective>>)> {
    let threads = thread_group(world, TIMEOUT).into_iter().map(|r| Arc::new(r) as Arc<dyn Collective>);
    let tcp = tcp_group(world, vec!["job".into(); world], TIMEOUT)
        .into_iter()
        .map(|h| Arc::new(h.join().unwrap().unwrap()) as Arc<dyn Collective>);
    vec![("threads", threads.collect()), ("tcp", tcp.collect())]
}

/// Runs `f` on every rank, a thread each, with the rank's world and its group of `size`;
/// returns what each rank returns, in rank order.
fn on_every_rank<T: Send>(
    ranks: Vec<Arc<dyn Collective>>,
    size: usize,
    f: impl Fn(&Arc<dyn Collective>, &Arc<dyn Collective>) -> T + Sync,
) -> Vec<T> {
    std::thread::scope(|s| {
        let f = &f;
        let running: Vec<_> = ranks
            .into_iter()
            .map(|world| {
                s.spawn(move || {
                    let group = subgroup(&world, size).unwrap();
                    f(&world, &group)
                })
            })
            .collect();
        running.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The world ranks of `rank`'s group of `size`.
fn members(rank: usize, size: usize) -> std::ops::Range<usize> {
    let first = rank / size * size;
    first..first + size
}

/// The sum over `rank`'s group of each member's block `rank % size` of `len` values, in
/// rank order.
fn group_sum(rank: usize, size: usize, len: usize) -> Vec<f32> {
    let local = rank % size;
    let mut members =
        members(rank, size).map(|m| data(m, len * size)[local * len..(local + 1) * len].to_vec());
    let first = members.next().unwrap_or_default();
    members.fold(first, |mut sum, block| {
        sum.iter_mut().zip(&block).for_each(|(s, x)| *s += x);
        sum
    })
}

#[test]
fn each_group_gathers_and_sums_only_among_its_own_ranks_while_the_groups_use_different_lengths() {
    for (world, size) in [(4, 2), (4, 4), (4, 1)] {
        for (backend, ranks) in worlds(world) {
            on_every_rank(ranks, size, |world, group| {
                let rank = world.rank();
                let at = format!("{backend}, rank {rank}, groups of {size}");
                assert_eq!(
                    (group.rank(), group.world(), group.timeout()),
                    (rank % size, size, Some(TIMEOUT))
                );
                // Each group its own lengths: group g gathers 3 + g values a rank.
                let len = 3 + rank / size;
                let before = world.bytes_moved();
                let mut gathered = vec![0.0; len * size];
                group.all_gather(&data(rank, len), &mut gathered).unwrap();
                let expected: Vec<f32> = members(rank, size).flat_map(|m| data(m, len)).collect();
                assert_eq!(gathered, expected, "{at}");
                let mut reduced = vec![0.0; len - 1];
                group.reduce_scatter(&data(rank, (len - 1) * size), &mut reduced).unwrap();
                assert_eq!(
                    reduced,
                    group_sum(rank, size, len - 1),
                    "summed in rank order, bit for bit; {at}"
                );

                let shard = Tensor::new(data(rank, len), &Device::Cpu).unwrap();
                let as_tensor = group.all_gather_tensor(&shard).unwrap();
                assert_eq!(as_tensor.to_vec1::<f32>().unwrap(), gathered, "{at}");
                let in_bf16 = group.all_gather_tensor(&shard.to_dtype(DType::BF16).unwrap()).unwrap();
                let rounded: Vec<f32> = gathered.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();
                assert_eq!(in_bf16.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(), rounded, "{at}");
                let blocks = Tensor::new(data(rank, (len - 1) * size), &Device::Cpu).unwrap();
                let mine = group.reduce_scatter_tensor(&blocks).unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(mine, reduced, "{at}");

                let mut sums = [rank as f64, 1.0];
                group.all_reduce(&mut sums).unwrap();
                assert_eq!(sums, [members(rank, size).sum::<usize>() as f64, size as f64], "{at}");
                group.barrier().unwrap();
                if size == 1 {
                    assert_eq!(world.bytes_moved(), before, "a group of one does not communicate; {at}");
                }
            });
        }
    }
}

#[test]
fn the_worlds_collectives_work_between_the_groups_and_count_their_traffic() {
    for (backend, ranks) in worlds(4) {
        on_every_rank(ranks, 2, |world, group| {
            let rank = world.rank();
            let at = format!("{backend}, rank {rank}");
            let mut everyone = vec![0.0; 4 * 2];
            world.all_gather(&data(rank, 2), &mut everyone).unwrap();
            assert_eq!(everyone, (0..4).flat_map(|r| data(r, 2)).collect::<Vec<_>>(), "{at}");

            let before = (world.bytes_moved(), group.bytes_moved());
            let mut pair = vec![0.0; 2 * 5];
            group.all_gather(&data(rank, 5), &mut pair).unwrap();
            assert_eq!(pair, members(rank, 2).flat_map(|m| data(m, 5)).collect::<Vec<_>>(), "{at}");
            // The group's gather of 2 x 5 f32 is in the world's count, not in the group's own.
            assert_eq!((world.bytes_moved(), group.bytes_moved()), (before.0 + 2 * 5 * 4, before.1), "{at}");

            let mut sums = [rank as f64];
            world.all_reduce(&mut sums).unwrap();
            assert_eq!(sums, [6.0], "{at}");
            let mut reduced = vec![0.0; 3];
            group.reduce_scatter(&data(rank, 6), &mut reduced).unwrap();
            assert_eq!(reduced, group_sum(rank, 2, 3), "{at}");
            let said = world.broadcast(if rank == 2 { b"two".to_vec() } else { Vec::new() }, 2).unwrap();
            assert_eq!(said, b"two", "{at}");
            group.barrier().unwrap();
            world.barrier().unwrap();
        });
    }
}

#[test]
fn a_group_within_a_group_is_the_worlds_group_of_that_size() {
    for (backend, ranks) in worlds(8) {
        on_every_rank(ranks, 4, |world, half| {
            let rank = world.rank();
            let pair = subgroup(half, 2).unwrap();
            assert_eq!((pair.rank(), pair.world()), (rank % 2, 2), "{backend}, rank {rank}");
            let mut gathered = vec![0.0; 2 * 3];
            pair.all_gather(&data(rank, 3), &mut gathered).unwrap();
            let expected: Vec<f32> = members(rank, 2).flat_map(|m| data(m, 3)).collect();
            assert_eq!(gathered, expected, "{backend}, rank {rank}");
            assert!(Arc::ptr_eq(&subgroup(half, 4).unwrap(), half), "a group's group of its size is itself");
        });
    }
}

#[test]
fn a_length_mismatch_within_a_group_fails_on_every_rank_naming_the_group_and_its_ranks() {
    for (backend, ranks) in worlds(4) {
        // Group 0 gathers 3 values a rank and agrees; in group 1, rank 3 gives 4.
        let errors = on_every_rank(ranks, 2, |world, group| {
            let len = if world.rank() == 3 { 4 } else { 3 };
            let mut out = vec![0.0; len * 2];
            group.all_gather(&data(world.rank(), len), &mut out).unwrap_err().to_string()
        });
        for (rank, error) in errors.iter().enumerate() {
            assert!(
                error.contains("group 1 (ranks 2..=3)") && error.contains("rank 2 gives 12 bytes, rank 3 16"),
                "{backend}, rank {rank}: {error}"
            );
        }
    }
}

#[test]
fn a_rank_that_never_reaches_its_groups_collective_is_named_within_the_worlds_timeout() {
    // A group's collective is a round of the world's: rank 3's absence holds up group 0 too.
    let mut ranks: Vec<Arc<dyn Collective>> =
        thread_group(4, Duration::from_millis(300)).into_iter().map(|r| Arc::new(r) as _).collect();
    let _absent = ranks.pop();
    let started = std::time::Instant::now();
    let errors = on_every_rank(ranks, 2, |_, group| group.barrier().unwrap_err().to_string());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(errors.iter().all(|e| e.contains("rank(s) [3]")), "{errors:?}");
}

#[test]
fn a_group_size_that_does_not_divide_the_world_is_refused() {
    let world: Arc<dyn Collective> = Arc::new(thread_group(4, TIMEOUT).remove(0));
    for size in [0, 3, 8] {
        let error = subgroup(&world, size).err().unwrap();
        assert!(
            matches!(&error, DistError::Config(m) if m.contains(&format!("groups of {size} ranks")) && m.contains("world of 4")),
            "{error}"
        );
    }
    let alone: Arc<dyn Collective> = Arc::new(Local);
    assert!(subgroup(&alone, 2).is_err());
    assert_eq!(subgroup(&alone, 1).unwrap().world(), 1);
    // The grouped ops themselves, whatever asks for them.
    let error = combine(Op::GroupAllGather { size: 3 }, &vec![vec![0u8; 4]; 4]).unwrap_err();
    assert!(error.to_string().contains("groups of 3 ranks do not divide a world of 4"), "{error}");
}

#[test]
fn a_group_refuses_a_broadcast_without_waiting_for_the_others() {
    let world: Arc<dyn Collective> = Arc::new(thread_group(4, TIMEOUT).remove(0));
    let group = subgroup(&world, 2).unwrap();
    let error = group.broadcast(b"x".to_vec(), 0).unwrap_err();
    assert!(matches!(&error, DistError::Unsupported(m) if m.contains("Broadcast")), "{error}");
}

#[test]
fn every_op_comes_back_from_its_wire_code() {
    for op in [
        Op::AllGather,
        Op::ReduceScatter,
        Op::AllReduce,
        Op::Broadcast { root: 3 },
        Op::GroupAllGather { size: 2 },
        Op::GroupReduceScatter { size: 4 },
        Op::GroupAllReduce { size: 8 },
    ] {
        let (kind, parameter) = op.code();
        assert_eq!(Op::from_code(kind, parameter), Some(op));
    }
    assert_eq!(Op::from_code(0, 0), None);
}
