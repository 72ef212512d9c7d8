//! The TCP backend: ranks are processes. Rank 0 listens; the others connect and introduce
//! themselves with their rank, the world size and a fingerprint of the job (the recipe's
//! hash), which rank 0 checks. At a collective every rank sends its contribution to rank
//! 0, which combines them in rank order and sends each rank its reply: a star, simple and
//! deterministic, meant for CPU runs and tests (GPUs use NCCL). A rank that dies or stalls
//! makes the others fail within the timeout, naming it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::collective::{combine, Collective, Membership, Op};
use crate::error::{DistError, Result};

/// Opens every introduction, so that a stray connection is told apart from a rank.
const MAGIC: &str = "DVDIST01";
/// Frame kinds besides the ops' codes.
const ERROR_FRAME: u8 = 0xEE;

pub struct TcpRank {
    member: Membership,
    /// Rank 0: a stream per other rank (index = rank - 1). Others: the stream to rank 0.
    streams: Mutex<Vec<TcpStream>>,
    /// How long a read waits before the rank it waits for is reported.
    timeout: Duration,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DistError {
    let what = what.into();
    move |source| DistError::Io { what, source }
}

fn write_frame(stream: &mut TcpStream, kind: u8, root: u32, data: &[u8]) -> std::io::Result<()> {
    let mut header = [0u8; 13];
    header[0] = kind;
    header[1..5].copy_from_slice(&root.to_le_bytes());
    header[5..13].copy_from_slice(&(data.len() as u64).to_le_bytes());
    stream.write_all(&header)?;
    stream.write_all(data)?;
    stream.flush()
}

/// Frames larger than this are refused rather than allocated (a stray peer's garbage).
const MAX_FRAME: u64 = 1 << 36;

fn read_frame(stream: &mut TcpStream) -> std::io::Result<(u8, u32, Vec<u8>)> {
    let mut header = [0u8; 13];
    stream.read_exact(&mut header)?;
    let root = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[5..13]);
    let len = u64::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a frame of {len} bytes")));
    }
    let mut data = vec![0u8; len as usize];
    stream.read_exact(&mut data)?;
    Ok((header[0], root, data))
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

impl TcpRank {
    /// Joins the group at `addr` (rank 0 binds it). `fingerprint` must be the same on every
    /// rank; `timeout` bounds the rendezvous and every wait at a collective.
    pub fn connect(
        addr: &str,
        rank: usize,
        world: usize,
        fingerprint: &str,
        timeout: Duration,
    ) -> Result<Self> {
        if world == 0 || rank >= world {
            return Err(DistError::Config(format!("rank {rank} is not in a world of {world}")));
        }
        let hello = format!("{MAGIC} {rank} {world} {fingerprint}");
        let streams = if rank == 0 {
            Self::accept_all(addr, world, &hello, timeout)?
        } else {
            vec![Self::connect_to_root(addr, rank, &hello, timeout)?]
        };
        for s in &streams {
            s.set_read_timeout(Some(timeout)).map_err(io("setting a timeout"))?;
            s.set_nodelay(true).map_err(io("setting TCP_NODELAY"))?;
        }
        Ok(Self { member: Membership::new(rank, world), streams: Mutex::new(streams), timeout })
    }

    fn accept_all(addr: &str, world: usize, hello: &str, timeout: Duration) -> Result<Vec<TcpStream>> {
        let listener = TcpListener::bind(addr).map_err(io(format!("rank 0 listening on {addr}")))?;
        listener.set_nonblocking(true).map_err(io("listening"))?;
        let deadline = Instant::now() + timeout;
        let mut slots: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
        while slots.iter().any(Option::is_none) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).map_err(io("accepting"))?;
                    stream.set_read_timeout(Some(timeout)).map_err(io("accepting"))?;
                    let (_, _, data) =
                        read_frame(&mut stream).map_err(io("reading a rank's introduction"))?;
                    let text = String::from_utf8_lossy(&data).into_owned();
                    let theirs: Vec<&str> = text.splitn(4, ' ').collect();
                    let mine: Vec<&str> = hello.splitn(4, ' ').collect();
                    let their_rank: usize = theirs.get(1).and_then(|r| r.parse().ok()).unwrap_or(usize::MAX);
                    let problem = if theirs.first() != Some(&MAGIC) || theirs.len() != 4 {
                        Some("a malformed introduction (not a davinci rank?)".to_string())
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
                        let message = format!("rank {their_rank} has {problem}");
                        let _ = write_frame(&mut stream, ERROR_FRAME, 0, message.as_bytes());
                        return Err(DistError::Mismatch(message));
                    }
                    write_frame(&mut stream, 0, 0, MAGIC.as_bytes()).map_err(io("welcoming a rank"))?;
                    slots[their_rank - 1] = Some(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing = (1..world).filter(|&r| slots[r - 1].is_none()).collect();
                        return Err(DistError::Timeout {
                            seconds: timeout.as_secs(),
                            ranks: missing,
                            what: "rendezvous".into(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(io("accepting a rank")(e)),
            }
        }
        Ok(slots.into_iter().flatten().collect())
    }

    fn connect_to_root(addr: &str, rank: usize, hello: &str, timeout: Duration) -> Result<TcpStream> {
        let deadline = Instant::now() + timeout;
        let mut stream = loop {
            let attempt = addr
                .to_socket_addrs()
                .map_err(io(format!("resolving {addr}")))?
                .next()
                .ok_or_else(|| DistError::Config(format!("{addr} resolves to no address")))
                .and_then(|a| {
                    TcpStream::connect_timeout(&a, Duration::from_secs(1)).map_err(io("connecting"))
                });
            match attempt {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => {
                    return Err(DistError::Timeout {
                        seconds: timeout.as_secs(),
                        ranks: vec![0],
                        what: format!("rendezvous at {addr}"),
                    })
                }
            }
        };
        stream.set_read_timeout(Some(timeout)).map_err(io("connecting"))?;
        write_frame(&mut stream, 0, rank as u32, hello.as_bytes()).map_err(io("introducing this rank"))?;
        let (kind, _, data) = read_frame(&mut stream).map_err(|e| lost(0, timeout, "rendezvous", e))?;
        if kind == ERROR_FRAME {
            return Err(DistError::Mismatch(String::from_utf8_lossy(&data).into_owned()));
        }
        Ok(stream)
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

    fn transfer(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>> {
        let rank = self.rank();
        let mut streams = self
            .streams
            .lock()
            .map_err(|_| DistError::Rank { rank, message: "a collective panicked".into() })?;
        let (kind, root) = op.code();
        let what = format!("{op:?}");
        if rank != 0 {
            let stream = &mut streams[0];
            write_frame(stream, kind, root, &contribution).map_err(|e| lost(0, self.timeout, &what, e))?;
            let (reply_kind, _, data) = read_frame(stream).map_err(|e| lost(0, self.timeout, &what, e))?;
            if reply_kind == ERROR_FRAME {
                return Err(DistError::Mismatch(String::from_utf8_lossy(&data).into_owned()));
            }
            return Ok(data);
        }
        let mut contributions = vec![contribution];
        let mut failure = None;
        for (i, stream) in streams.iter_mut().enumerate() {
            match read_frame(stream) {
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
                    failure = Some(lost(i + 1, self.timeout, &what, e));
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
                for (i, stream) in streams.iter_mut().enumerate() {
                    write_frame(stream, kind, root, &replies[i + 1])
                        .map_err(|e| lost(i + 1, self.timeout, &what, e))?;
                }
                Ok(replies.swap_remove(0))
            }
            Err(e) => {
                let message = e.to_string();
                for stream in streams.iter_mut() {
                    let _ = write_frame(stream, ERROR_FRAME, 0, message.as_bytes());
                }
                Err(e)
            }
        }
    }
}
