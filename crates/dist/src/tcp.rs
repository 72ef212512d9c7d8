//! The TCP backend: ranks are processes. Rank 0 listens; the others connect and introduce
//! themselves with their rank, the world size and a fingerprint of the job (the recipe's
//! hash), which rank 0 checks. At a collective every rank sends its contribution to rank
//! 0, which combines them in rank order and sends each rank its reply: a star, simple and
//! deterministic, meant for CPU runs and tests (GPUs use NCCL). A rank that dies or stalls
//! makes the others fail within the timeout, naming it.
//!
//! # What the transport protects, and what it does not
//!
//! Every rank holds the job's secret ([`JobSecret`]); each connection starts with a
//! challenge and response both ways (N0, Nr: fresh 32-byte nonces of rank 0 and the rank):
//!
//! 1. rank 0 → rank: `DVDIST02` N0;
//! 2. rank → rank 0: a frame header (kind `I`, len ≤ 4 KiB), Nr and the introduction
//!    `DVDIST02 <rank> <world> <fingerprint>`, then HMAC(secret, "intro" N0 Nr introduction);
//! 3. rank 0 → rank: HMAC(secret, "welcome" Nr N0), then a welcome or an error frame.
//!
//! From then on every frame (header: kind u8, root u32, len u64; the data; a tag) carries
//! HMAC(session key, direction u8, sequence u64, header, data) with the session key
//! HMAC(secret, "session" N0 Nr), checked before its data is used.
//!
//! So: only a process that knows the secret joins (a recorded introduction does not
//! answer a fresh challenge), a rank knows it talks to the job's rank 0, and a frame that
//! is altered, replayed, reordered or dropped on the way fails the collective with
//! [`DistError::Integrity`] instead of changing the gradients. Stray connections (port
//! scans, garbage, silence, forged lengths) are dropped with a warning: each handshake
//! runs on its own thread within min(timeout, 10 s), and nothing is allocated from a
//! length before the bytes arrive.
//!
//! Not protected: the payloads are NOT encrypted, so anyone on the network path can read
//! the gradients, parameters and fingerprints; run on a trusted network or through a
//! tunnel (SSH, WireGuard). Denial of service (flooding the port, cutting connections) is
//! not prevented: the job then fails within its timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::Mac;

use crate::collective::{combine, Collective, Membership, Op};
use crate::error::{io, DistError, Result};
use crate::rendezvous::JobSecret;
use crate::wire::{self, Deadline, FrameError, Link, ERROR_FRAME, KIND_INTRO, KIND_WELCOME, MAGIC};

/// A handshake takes at most this long (or the timeout, if shorter): a silent connection
/// costs a thread for this long, never the rendezvous.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; connections beyond are dropped (a flood).
const MAX_HANDSHAKES: usize = 256;

pub struct TcpRank {
    member: Membership,
    /// Rank 0: a link per other rank (index = rank - 1). Others: the link to rank 0.
    links: Mutex<Vec<Link>>,
    /// How long a read waits before the rank it waits for is reported.
    timeout: Duration,
}

/// What a failed read means: a timeout, or a rank gone.
fn lost(rank: usize, timeout: Duration, what: &str, e: std::io::Error) -> DistError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            DistError::Timeout { seconds: timeout.as_secs(), ranks: vec![rank], what: what.into() }
        }
        _ => DistError::Rank {
            rank,
            message: format!("connection lost during {what} ({e}); the process probably died"),
        },
    }
}

/// What a failed frame to or from `rank` means.
fn failed(rank: usize, timeout: Duration, what: &str, e: FrameError) -> DistError {
    match e {
        FrameError::Io(e) => lost(rank, timeout, what, e),
        FrameError::TooLarge(len) => {
            DistError::Integrity { rank, what: format!("{what}: a frame header claims {len} bytes") }
        }
        FrameError::BadTag => DistError::Integrity {
            rank,
            what: format!("{what}: a frame's authentication tag does not match"),
        },
        FrameError::Broken => DistError::Rank {
            rank,
            message: format!("its connection failed at an earlier collective, so {what} cannot run"),
        },
    }
}

/// Why a stray connection's handshake failed, for the warning.
fn reason(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "it closed the connection".into(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            "it sent no introduction within the handshake's deadline".into()
        }
        _ => e.to_string(),
    }
}

/// A connection that proved it knows the job secret, and its introduction.
struct Arrival {
    link: Link,
    peer: SocketAddr,
    text: String,
}

impl TcpRank {
    /// Joins the group at `addr` (rank 0 binds it). `fingerprint` must be the same on every
    /// rank, and `secret` too (see [`JobSecret::from_vars`]); `timeout` bounds the
    /// rendezvous and every wait at a collective.
    pub fn connect(
        addr: &str,
        rank: usize,
        world: usize,
        fingerprint: &str,
        secret: &JobSecret,
        timeout: Duration,
    ) -> Result<Self> {
        if world == 0 || rank >= world {
            return Err(DistError::Config(format!("rank {rank} is not in a world of {world}")));
        }
        let hello = format!("{MAGIC} {rank} {world} {fingerprint}");
        let links = if rank == 0 {
            Self::accept_all(addr, world, &hello, secret, timeout)?
        } else {
            vec![Self::connect_to_root(addr, rank, &hello, secret, timeout)?]
        };
        for link in &links {
            link.stream().set_read_timeout(Some(timeout)).map_err(io("setting a timeout"))?;
        }
        Ok(Self { member: Membership::new(rank, world), links: Mutex::new(links), timeout })
    }

    fn accept_all(
        addr: &str,
        world: usize,
        hello: &str,
        secret: &JobSecret,
        timeout: Duration,
    ) -> Result<Vec<Link>> {
        let listener = TcpListener::bind(addr).map_err(io(format!("rank 0 listening on {addr}")))?;
        listener.set_nonblocking(true).map_err(io("listening"))?;
        let deadline = Instant::now() + timeout;
        let (arrived, arrivals) = mpsc::channel();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut slots: Vec<Option<Link>> = (1..world).map(|_| None).collect();
        while slots.iter().any(Option::is_none) {
            let mut idle = true;
            match listener.accept() {
                Ok((stream, peer)) => {
                    idle = false;
                    let until = Instant::now() + timeout.min(HANDSHAKE);
                    Self::greet_on_a_thread(stream, peer, secret, until, &arrived, &in_flight);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // A connection reset before it was accepted, or a signal: not the listener's end.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(io("accepting a rank")(e)),
            }
            while let Ok(arrival) = arrivals.try_recv() {
                idle = false;
                Self::admit(arrival, world, hello, &mut slots)?;
            }
            if slots.iter().all(Option::is_some) {
                break;
            }
            if Instant::now() > deadline {
                let missing = (1..world).filter(|&r| slots[r - 1].is_none()).collect();
                return Err(DistError::Timeout {
                    seconds: timeout.as_secs(),
                    ranks: missing,
                    what: "rendezvous".into(),
                });
            }
            if idle {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(slots.into_iter().flatten().collect())
    }

    /// Runs [`TcpRank::greet`] on its own thread, so that a silent or slow connection holds
    /// up nobody; a connection that fails it is dropped with a warning.
    fn greet_on_a_thread(
        stream: TcpStream,
        peer: SocketAddr,
        secret: &JobSecret,
        until: Instant,
        arrived: &mpsc::Sender<Arrival>,
        in_flight: &Arc<AtomicUsize>,
    ) {
        if in_flight.load(Ordering::SeqCst) >= MAX_HANDSHAKES {
            tracing::warn!(
                "rendezvous: dropped a connection from {peer}: {MAX_HANDSHAKES} handshakes in progress"
            );
            return;
        }
        let (secret, arrived, count) = (secret.clone(), arrived.clone(), Arc::clone(in_flight));
        count.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("rendezvous-handshake".into())
            .stack_size(256 << 10)
            .spawn(move || {
                match Self::greet(stream, &secret, until) {
                    // Fails only once the rendezvous is over: the connection is closed.
                    Ok((link, text)) => drop(arrived.send(Arrival { link, peer, text })),
                    Err(why) => tracing::warn!("rendezvous: dropped a connection from {peer}: {why}"),
                }
                count.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("rendezvous: dropped a connection from {peer}: no thread for its handshake ({e})");
        }
    }

    /// Rank 0's side of the handshake (steps 1 to 3 but the last frame): challenges the
    /// connection, checks its introduction's tag and proves the secret in return.
    fn greet(
        stream: TcpStream,
        secret: &JobSecret,
        until: Instant,
    ) -> std::result::Result<(Link, String), String> {
        // Where an accepted socket inherits the listener's non-blocking mode, undo it.
        stream.set_nonblocking(false).and_then(|()| stream.set_nodelay(true)).map_err(|e| e.to_string())?;
        let root_nonce = wire::nonce().map_err(|e| e.to_string())?;
        (&stream)
            .write_all(&[MAGIC.as_bytes(), &root_nonce].concat())
            .map_err(|e| format!("sending the challenge: {}", reason(e)))?;
        let mut input = Deadline { stream: &stream, until };
        let mut header = [0u8; wire::HEADER];
        input.read_exact(&mut header).map_err(reason)?;
        let (kind, _, len) = wire::parse_header(&header);
        if kind != KIND_INTRO {
            return Err(format!(
                "not a davinci rank of this version (a frame of kind {kind} for an introduction)"
            ));
        }
        if !(wire::NONCE as u64..=wire::MAX_INTRO).contains(&len) {
            return Err(format!("an introduction of {len} bytes (at most {})", wire::MAX_INTRO));
        }
        // Bounded by MAX_INTRO above.
        let mut data = vec![0u8; len as usize];
        input.read_exact(&mut data).map_err(reason)?;
        let mut tag = [0u8; wire::TAG];
        input.read_exact(&mut tag).map_err(reason)?;
        let (peer_nonce, text) = data.split_at(wire::NONCE);
        wire::intro_mac(secret.bytes(), &root_nonce, peer_nonce, text).verify_slice(&tag).map_err(|_| {
            "it failed authentication (a different job secret, or a replayed introduction)".to_string()
        })?;
        let welcome = wire::digest(wire::welcome_mac(secret.bytes(), peer_nonce, &root_nonce));
        (&stream).write_all(&welcome).map_err(|e| format!("welcoming it: {}", reason(e)))?;
        let key = wire::session_key(secret.bytes(), &root_nonce, peer_nonce);
        Ok((Link::new(stream, &key, true), String::from_utf8_lossy(text).into_owned()))
    }

    /// Checks an authenticated rank's introduction against rank 0's and seats it. A
    /// different world, job or a rank taken is the job's misconfiguration: it fails the
    /// rendezvous, and the rank is told why.
    fn admit(arrival: Arrival, world: usize, hello: &str, slots: &mut [Option<Link>]) -> Result<()> {
        let Arrival { mut link, peer, text } = arrival;
        let theirs: Vec<&str> = text.splitn(4, ' ').collect();
        let mine: Vec<&str> = hello.splitn(4, ' ').collect();
        let their_rank: usize = theirs.get(1).and_then(|r| r.parse().ok()).unwrap_or(usize::MAX);
        let problem = if theirs.first() != Some(&MAGIC) || theirs.len() != 4 {
            Some("a malformed introduction (a different davinci version?)".to_string())
        } else if theirs.get(2) != mine.get(2) {
            Some(format!("world size {} (rank 0 has {})", theirs.get(2).unwrap_or(&"?"), world))
        } else if theirs.get(3) != mine.get(3) {
            Some("a different job fingerprint (recipe or checkpoint) than rank 0".into())
        } else if their_rank == 0 || their_rank >= world || slots[their_rank - 1].is_some() {
            Some(format!("rank {their_rank}, which is taken or out of range"))
        } else {
            None
        };
        if let Some(problem) = problem {
            let rank = theirs.get(1).filter(|_| their_rank != usize::MAX).unwrap_or(&"?");
            let message = format!("rank {rank} (at {peer}) has {problem}");
            let _ = link.send(ERROR_FRAME, 0, message.as_bytes());
            return Err(DistError::Mismatch(message));
        }
        link.send(KIND_WELCOME, 0, MAGIC.as_bytes())
            .map_err(|e| failed(their_rank, HANDSHAKE, "the rendezvous", e))?;
        slots[their_rank - 1] = Some(link);
        Ok(())
    }

    fn connect_to_root(
        addr: &str,
        rank: usize,
        hello: &str,
        secret: &JobSecret,
        timeout: Duration,
    ) -> Result<Link> {
        let deadline = Instant::now() + timeout;
        let limit = timeout.min(HANDSHAKE);
        let during = |step: &str| {
            let what = format!("the rendezvous at {addr} ({step})");
            move |e| lost(0, limit, &what, e)
        };
        // Rank 0 drops connections while too many handshakes are in progress (a flood):
        // one closed before its challenge is tried again until the deadline.
        let (stream, challenge) = loop {
            let stream = Self::reach(addr, deadline, timeout)?;
            stream.set_nodelay(true).map_err(io("setting TCP_NODELAY"))?;
            let mut input = Deadline { stream: &stream, until: Instant::now() + limit };
            let mut challenge = [0u8; wire::CHALLENGE];
            match input.read_exact(&mut challenge) {
                Ok(()) => break (stream, challenge),
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(
                        "rank 0 at {addr} closed the connection before its challenge ({e}); trying again"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(during("rank 0's challenge")(e)),
            }
        };
        let mut input = Deadline { stream: &stream, until: Instant::now() + limit };
        let (magic, root_nonce) = challenge.split_at(MAGIC.len());
        if magic != MAGIC.as_bytes() {
            return Err(DistError::Config(format!(
                "the process listening at {addr} is not a davinci rank 0 of this version"
            )));
        }
        let peer_nonce = wire::nonce().map_err(io("drawing a nonce"))?;
        let tag = wire::digest(wire::intro_mac(secret.bytes(), root_nonce, &peer_nonce, hello.as_bytes()));
        let header = wire::header(KIND_INTRO, rank as u32, (wire::NONCE + hello.len()) as u64);
        (&stream)
            .write_all(&[&header[..], &peer_nonce, hello.as_bytes(), &tag].concat())
            .map_err(io("introducing this rank"))?;
        let mut welcome = [0u8; wire::TAG];
        if let Err(e) = input.read_exact(&mut welcome) {
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                return Err(during("rank 0's welcome")(e));
            }
            return Err(DistError::Rank {
                rank: 0,
                message: format!(
                    "rank 0 at {addr} refused rank {rank}'s authentication: every rank needs the same job \
                     secret (the same DAVINCI_JOB_SECRET, or the same key file on a shared home)"
                ),
            });
        }
        if wire::welcome_mac(secret.bytes(), &peer_nonce, root_nonce).verify_slice(&welcome).is_err() {
            return Err(DistError::Integrity {
                rank: 0,
                what: format!("the welcome from {addr} does not prove the job secret"),
            });
        }
        stream.set_read_timeout(Some(limit)).map_err(io("setting a timeout"))?;
        let mut link = Link::new(stream, &wire::session_key(secret.bytes(), root_nonce, &peer_nonce), false);
        match link.recv().map_err(|e| failed(0, limit, "the rendezvous", e))? {
            (KIND_WELCOME, _, _) => Ok(link),
            (ERROR_FRAME, _, data) => Err(DistError::Mismatch(String::from_utf8_lossy(&data).into_owned())),
            (kind, _, _) => Err(DistError::Mismatch(format!("rank 0 answered with a frame of kind {kind}"))),
        }
    }

    /// Connects to rank 0's address, trying again until `deadline`.
    fn reach(addr: &str, deadline: Instant, timeout: Duration) -> Result<TcpStream> {
        loop {
            let attempt = addr
                .to_socket_addrs()
                .map_err(io(format!("resolving {addr}")))?
                .next()
                .ok_or_else(|| DistError::Config(format!("{addr} resolves to no address")))
                .and_then(|a| {
                    TcpStream::connect_timeout(&a, Duration::from_secs(1)).map_err(io("connecting"))
                });
            match attempt {
                Ok(stream) => return Ok(stream),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => {
                    return Err(DistError::Timeout {
                        seconds: timeout.as_secs(),
                        ranks: vec![0],
                        what: format!("rendezvous at {addr}"),
                    })
                }
            }
        }
    }
}

impl TcpRank {
    /// How long a wait at a collective lasts before the ranks not arrived are reported.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Collective for TcpRank {
    fn membership(&self) -> &Membership {
        &self.member
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    fn transfer(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>> {
        let rank = self.rank();
        let mut links = self
            .links
            .lock()
            .map_err(|_| DistError::Rank { rank, message: "a collective panicked".into() })?;
        let (kind, root) = op.code();
        let what = format!("{op:?}");
        if rank != 0 {
            let link = &mut links[0];
            link.send(kind, root, &contribution).map_err(|e| failed(0, self.timeout, &what, e))?;
            let (reply_kind, _, data) = link.recv().map_err(|e| failed(0, self.timeout, &what, e))?;
            if reply_kind == ERROR_FRAME {
                return Err(DistError::Mismatch(String::from_utf8_lossy(&data).into_owned()));
            }
            return Ok(data);
        }
        let mut contributions = vec![contribution];
        let mut failure = None;
        for (i, link) in links.iter_mut().enumerate() {
            match link.recv() {
                Ok((k, r, data)) if (k, r) == (kind, root) => contributions.push(data),
                Ok((k, r, _)) => {
                    let theirs =
                        Op::from_code(k, r).map(|o| format!("{o:?}")).unwrap_or_else(|| format!("frame {k}"));
                    failure = Some(DistError::Mismatch(format!(
                        "rank {} called {theirs} while rank 0 called {what}",
                        i + 1
                    )));
                    break;
                }
                Err(e) => {
                    failure = Some(failed(i + 1, self.timeout, &what, e));
                    break;
                }
            }
        }
        let replies = match failure {
            None => combine(op, &contributions),
            Some(e) => Err(e),
        };
        match replies {
            Ok(mut replies) => {
                for (i, link) in links.iter_mut().enumerate() {
                    link.send(kind, root, &replies[i + 1])
                        .map_err(|e| failed(i + 1, self.timeout, &what, e))?;
                }
                Ok(replies.swap_remove(0))
            }
            Err(e) => {
                let message = e.to_string();
                for link in links.iter_mut() {
                    let _ = link.send(ERROR_FRAME, 0, message.as_bytes());
                }
                Err(e)
            }
        }
    }
}
