//! What the tests of several files share: TCP ranks on localhost.

use std::time::Duration;

use davinci_dist::tcp::TcpRank;
use davinci_dist::JobSecret;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `world` ranks meeting on a free local port, each connecting on a thread of its own
/// with its fingerprint (rank r's is `fingerprints[r]`).
pub fn tcp_group(
    world: usize,
    fingerprints: Vec<String>,
    timeout: Duration,
) -> Vec<std::thread::JoinHandle<davinci_dist::Result<TcpRank>>> {
    let addr = format!("127.0.0.1:{}", free_port());
    let secret = JobSecret::random().unwrap();
    (0..world)
        .map(|rank| {
            let (addr, fp, secret) = (addr.clone(), fingerprints[rank].clone(), secret.clone());
            std::thread::spawn(move || TcpRank::connect(&addr, rank, world, &fp, &secret, timeout))
        })
        .collect()
}
