//! The TCP rendezvous and transport on a shared network: stray connections do not stop
//! the rendezvous, only holders of the job secret join, a recorded introduction does not
//! replay, a tampered frame fails the collective, and where the secret comes from.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use davinci_dist::collective::Collective;
use davinci_dist::tcp::TcpRank;
use davinci_dist::{DistError, JobSecret, Result};

fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

fn rank(addr: &str, rank: usize, world: usize, secret: &JobSecret) -> JoinHandle<Result<TcpRank>> {
    let (addr, secret) = (addr.to_string(), secret.clone());
    std::thread::spawn(move || TcpRank::connect(&addr, rank, world, "job", &secret, Duration::from_secs(20)))
}

/// Connects once rank 0 listens: the first success is itself a port scan's probe.
fn connect_when_listening(addr: &str) -> TcpStream {
    let started = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(stream) => return stream,
            Err(_) if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("rank 0 never listened at {addr}: {e}"),
        }
    }
}

/// Rank r's contribution to an all-reduce and to a reduce-scatter.
fn values(rank: usize, len: usize) -> Vec<f32> {
    (0..len).map(|i| (i % 13) as f32 * 0.25 + rank as f32).collect()
}

/// Each rank's all-reduce of [rank, 1], on a thread each.
fn all_reduce_on_each(ranks: Vec<TcpRank>) -> Vec<Result<Vec<f64>>> {
    let handles: Vec<_> = ranks
        .into_iter()
        .map(|r| {
            std::thread::spawn(move || {
                let mut sums = vec![r.rank() as f64, 1.0];
                r.all_reduce(&mut sums).map(|()| sums)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Each rank's reduce-scatter of `values(rank, 2 * len)`.
fn reduce_scatter_on_each(ranks: Vec<TcpRank>, len: usize) -> Vec<Result<Vec<f32>>> {
    let handles: Vec<_> = ranks
        .into_iter()
        .map(|r| {
            std::thread::spawn(move || {
                let mut out = vec![0.0; len];
                r.reduce_scatter(&values(r.rank(), 2 * len), &mut out).map(|()| out)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Waits for the peer to close `stream` (what rank 0 does to a connection it drops).
fn closed_by_the_peer(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = [0u8; 256];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn a_rendezvous_survives_a_port_scan_garbage_a_huge_length_and_a_silent_connection() {
    let (addr, secret) = (free_addr(), JobSecret::random().unwrap());
    let root = rank(&addr, 0, 2, &secret);
    drop(connect_when_listening(&addr));
    let mut garbage = TcpStream::connect(&addr).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: rank0\r\n\r\n").unwrap();
    // The 13 bytes that once made rank 0 allocate 64 GiB, after its challenge.
    let mut huge = TcpStream::connect(&addr).unwrap();
    let mut challenge = [0u8; 40];
    huge.read_exact(&mut challenge).unwrap();
    let mut header = vec![b'I', 1, 0, 0, 0];
    header.extend_from_slice(&(1u64 << 36).to_le_bytes());
    huge.write_all(&header).unwrap();
    let _silent = TcpStream::connect(&addr).unwrap();

    let started = Instant::now();
    let other = rank(&addr, 1, 2, &secret);
    let ranks = vec![root.join().unwrap().unwrap(), other.join().unwrap().unwrap()];
    for sums in all_reduce_on_each(ranks) {
        assert_eq!(sums.unwrap(), vec![1.0, 2.0]);
    }
    // The silent connection's handshake lasts 10 s; the ranks did not wait for it.
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    assert!(closed_by_the_peer(&mut garbage));
    assert!(closed_by_the_peer(&mut huge));
}

#[test]
fn a_replayed_introduction_neither_joins_nor_takes_the_slot() {
    let secret = JobSecret::random().unwrap();
    // This test plays rank 0 to record what a real rank 1 sends, then welcomes it wrongly.
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_addr = fake.local_addr().unwrap().to_string();
    let victim = rank(&fake_addr, 1, 2, &secret);
    let (mut stream, _) = fake.accept().unwrap();
    let mut challenge = b"DVDIST02".to_vec();
    challenge.extend_from_slice(&[7; 32]);
    stream.write_all(&challenge).unwrap();
    let mut recorded = vec![0u8; 13];
    stream.read_exact(&mut recorded).unwrap();
    let len = u64::from_le_bytes(recorded[5..13].try_into().unwrap()) as usize;
    recorded.resize(13 + len + 32, 0);
    stream.read_exact(&mut recorded[13..]).unwrap();
    stream.write_all(&[0; 32]).unwrap();
    let err = victim.join().unwrap().err().unwrap();
    assert!(matches!(err, DistError::Integrity { rank: 0, .. }), "a bad welcome: {err}");

    // The recording, played to the real rank 0 on a fresh connection, answers an old challenge.
    let addr = free_addr();
    let root = rank(&addr, 0, 2, &secret);
    let mut replay = connect_when_listening(&addr);
    replay.read_exact(&mut [0u8; 40]).unwrap();
    replay.write_all(&recorded).unwrap();
    assert!(closed_by_the_peer(&mut replay), "the replayed introduction was not dropped");
    let other = rank(&addr, 1, 2, &secret);
    let ranks = vec![root.join().unwrap().unwrap(), other.join().unwrap().unwrap()];
    for sums in all_reduce_on_each(ranks) {
        assert_eq!(sums.unwrap(), vec![1.0, 2.0]);
    }
}

#[test]
fn a_rank_with_another_secret_is_refused_while_rank_0_keeps_waiting() {
    let addr = free_addr();
    let secret = JobSecret::random().unwrap();
    let root = rank(&addr, 0, 2, &secret);
    drop(connect_when_listening(&addr));
    let started = Instant::now();
    let err = rank(&addr, 1, 2, &JobSecret::random().unwrap()).join().unwrap().err().unwrap();
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(err.to_string().contains("job secret"), "{err}");
    assert!(!root.is_finished(), "rank 0 gave up on an impostor");
    let other = rank(&addr, 1, 2, &secret);
    let ranks = vec![root.join().unwrap().unwrap(), other.join().unwrap().unwrap()];
    for sums in all_reduce_on_each(ranks) {
        assert_eq!(sums.unwrap(), vec![1.0, 2.0]);
    }
}

/// A proxy between rank 1 and rank 0 that flips one bit at a byte offset of the stream
/// upward (rank 1 to rank 0) or downward.
fn tampering_proxy(upstream: &str, flip_up: Option<u64>, flip_down: Option<u64>) -> String {
    proxy(upstream, 0, flip_up, flip_down)
}

/// A proxy to `upstream` that first closes `refused` connections at once (what rank 0 does
/// while a flood fills its handshakes), then carries one, flipping bits as asked.
fn proxy(upstream: &str, refused: usize, flip_up: Option<u64>, flip_down: Option<u64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let upstream = upstream.to_string();
    std::thread::spawn(move || {
        for _ in 0..refused {
            drop(listener.accept().unwrap());
        }
        let (client, _) = listener.accept().unwrap();
        let server = connect_when_listening(&upstream);
        let pump = |mut from: TcpStream, mut to: TcpStream, flip: Option<u64>| {
            std::thread::spawn(move || {
                let (mut buf, mut offset) = (vec![0u8; 1 << 16], 0u64);
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Some(at) = flip.filter(|at| (offset..offset + n as u64).contains(at)) {
                        buf[(at - offset) as usize] ^= 1;
                    }
                    offset += n as u64;
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(Shutdown::Write);
            })
        };
        pump(client.try_clone().unwrap(), server.try_clone().unwrap(), flip_up);
        pump(server, client, flip_down);
    });
    addr
}

#[test]
fn a_man_in_the_middle_who_flips_a_payload_bit_fails_the_collective_with_integrity() {
    // The handshake is a few hundred bytes; byte 2000 lies in the first collective's payload.
    let len = 4096;
    let expected: Vec<f32> = (0..len).map(|i| values(0, 2 * len)[i] + values(1, 2 * len)[i]).collect();
    for (up, down) in [(Some(2000), None), (None, Some(2000))] {
        let (addr, secret) = (free_addr(), JobSecret::random().unwrap());
        let root = rank(&addr, 0, 2, &secret);
        let other = rank(&tampering_proxy(&addr, up, down), 1, 2, &secret);
        let ranks = vec![root.join().unwrap().unwrap(), other.join().unwrap().unwrap()];
        let results = reduce_scatter_on_each(ranks, len);
        let receiver = if up.is_some() { 0 } else { 1 };
        let sender = 1 - receiver;
        assert!(
            matches!(&results[receiver], Err(DistError::Integrity { rank, .. }) if *rank == sender),
            "{:?}",
            results[receiver].as_ref().err()
        );
        assert!(results[receiver].as_ref().unwrap_err().to_string().contains("tampered"));
        // Nobody returns an altered sum: rank 0's own reply is untouched downward.
        match &results[sender] {
            Ok(out) => assert_eq!((sender, out), (0, &expected)),
            Err(e) => assert!(e.to_string().contains("tampered"), "{e}"),
        }
    }
}

/// A fresh directory of its own under the system's temporary one.
fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("davinci-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn the_job_secret_comes_from_the_variable_or_a_private_key_file_and_the_job() {
    use std::os::unix::fs::PermissionsExt;
    let home = temp_dir("home");
    let home_str = home.to_str().unwrap();
    let key_file = home.join(".config/davinci/rendezvous.key");
    let job = |id: &'static str| [("HOME", home_str), ("SLURM_JOB_ID", id)];

    // A missing key file is made, private, in a private directory.
    let first = JobSecret::from_vars(vars(&job("17"))).unwrap();
    assert_eq!((mode(&key_file), mode(key_file.parent().unwrap())), (0o600, 0o700));
    assert_eq!(std::fs::read(&key_file).unwrap().len(), 32);
    assert_eq!(JobSecret::from_vars(vars(&job("17"))).unwrap(), first);
    assert_ne!(JobSecret::from_vars(vars(&job("18"))).unwrap(), first);
    let torchrun = |port| [("HOME", home_str), ("MASTER_ADDR", "n1"), ("MASTER_PORT", port)];
    let by_address = JobSecret::from_vars(vars(&torchrun("1234"))).unwrap();
    assert_ne!(by_address, first);
    assert_eq!(JobSecret::from_vars(vars(&torchrun("1234"))).unwrap(), by_address);
    assert_ne!(JobSecret::from_vars(vars(&torchrun("1235"))).unwrap(), by_address);

    // A key file that others can read is refused, naming it; the variable wins over it.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = JobSecret::from_vars(vars(&job("17"))).unwrap_err().to_string();
    assert!(err.contains(key_file.to_str().unwrap()) && err.contains("chmod 600"), "{err}");
    let given = [("DAVINCI_JOB_SECRET", "a1b2c3d4e5f60718"), ("HOME", home_str), ("SLURM_JOB_ID", "17")];
    let hashed: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(b"a1b2c3d4e5f60718").into();
    assert_eq!(JobSecret::from_vars(vars(&given)).unwrap(), JobSecret::from_bytes(hashed));
    for short in ["", "a1b2"] {
        let err = JobSecret::from_vars(vars(&[("DAVINCI_JOB_SECRET", short)])).unwrap_err();
        assert!(err.to_string().contains("at least 16"), "{err}");
    }
    std::fs::remove_dir_all(&home).unwrap();
}

#[cfg(unix)]
#[test]
fn ranks_that_race_to_create_the_key_file_all_read_the_same_key() {
    let dir = temp_dir("race");
    let file = dir.join("keys/job.key");
    let file_str = file.to_str().unwrap().to_string();
    let secrets: Vec<JobSecret> = (0..8)
        .map(|_| {
            let file = file_str.clone();
            std::thread::spawn(move || {
                JobSecret::from_vars(vars(&[("DAVINCI_KEY_FILE", &file), ("SLURM_JOB_ID", "5")])).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(secrets.iter().all(|s| *s == secrets[0]));
    assert_eq!(mode(&file), 0o600);
    let left: Vec<_> =
        std::fs::read_dir(file.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("job.key")], "temporary files are removed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_secret_does_not_show_in_debug_output() {
    let secret = JobSecret::from_bytes([0xAB; 32]);
    let shown = format!("{secret:?}");
    assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab"), "{shown}");
}

#[test]
fn a_rank_that_rank_0_turns_away_during_a_flood_tries_again() {
    let (addr, secret) = (free_addr(), JobSecret::random().unwrap());
    let root = rank(&addr, 0, 2, &secret);
    drop(connect_when_listening(&addr));
    // Rank 1 reaches rank 0 through a door that shuts on its first two attempts.
    let door = proxy(&addr, 2, None, None);
    let other = rank(&door, 1, 2, &secret);
    let ranks = vec![root.join().unwrap().unwrap(), other.join().unwrap().unwrap()];
    for sums in all_reduce_on_each(ranks) {
        assert_eq!(sums.unwrap(), vec![1.0, 2.0]);
    }
}
