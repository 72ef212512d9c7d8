//! Who this process is in the job, from the variables torchrun and SLURM set, the secret
//! the job's ranks share, and the connection to the others.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use sha2::{Digest, Sha256};

use crate::collective::{Collective, Local};
use crate::error::{io, DistError, Result};
use crate::tcp::TcpRank;
use crate::wire;

/// This process's place in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    /// `MASTER_ADDR:MASTER_PORT`, where rank 0 listens.
    pub master: String,
}

impl LaunchEnv {
    /// Reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (torchrun, `davinci launch`) or else
    /// `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, plus `MASTER_ADDR` and
    /// `MASTER_PORT` (default 29500). Under SLURM, so that a bare `srun davinci train`
    /// works, they default to the first host of the step's node list and a port drawn from
    /// the job id (two jobs sharing a node then rarely collide). `None` when nothing names
    /// a world: a single process.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let pick = |torchrun: &str, slurm: &str| var(torchrun).or_else(|| var(slurm));
        let Some(world) = pick("WORLD_SIZE", "SLURM_NTASKS") else { return Ok(None) };
        let number = |name: &str, value: Option<String>, default: Option<usize>| -> Result<usize> {
            match value {
                Some(v) => {
                    v.trim().parse().map_err(|_| DistError::Config(format!("{name}={v} is not a number")))
                }
                None => default.ok_or_else(|| DistError::Config(format!("{name} is not set"))),
            }
        };
        let world = number("WORLD_SIZE", Some(world), None)?;
        let rank = number("RANK", pick("RANK", "SLURM_PROCID"), None)?;
        let local_rank = number("LOCAL_RANK", pick("LOCAL_RANK", "SLURM_LOCALID"), Some(0))?;
        if world == 0 || rank >= world {
            return Err(DistError::Config(format!("RANK={rank} is not below WORLD_SIZE={world}")));
        }
        // SLURM's defaults are read only where the script set nothing.
        let addr = match var("MASTER_ADDR") {
            Some(addr) => addr,
            None => match ["SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"]
                .into_iter()
                .find_map(|name| var(name).map(|list| (name, list)))
            {
                Some((name, list)) => first_host(&list)
                    .ok_or_else(|| DistError::Config(format!("{name}={list} names no host")))?,
                None if world > 1 => {
                    return Err(DistError::Config(
                        "MASTER_ADDR is not set: give the address of rank 0's host".into(),
                    ))
                }
                None => "127.0.0.1".into(),
            },
        };
        let port = match (var("MASTER_PORT"), var("SLURM_JOB_ID")) {
            (Some(port), _) => number("MASTER_PORT", Some(port), None)?,
            (None, Some(job)) => 20_000 + number("SLURM_JOB_ID", Some(job), None)? % 20_000,
            (None, None) => 29500,
        };
        Ok(Some(Self { rank, world, local_rank, master: format!("{addr}:{port}") }))
    }
}

/// The secret every rank of a job shares: only a process that knows it joins the group,
/// and it keys the tags that make a tampered frame fail (see [`crate::tcp`]). Equality is
/// for tests; the handshake compares tags in constant time instead.
#[derive(Clone, PartialEq, Eq)]
pub struct JobSecret([u8; 32]);

/// Never the bytes: a secret in a log is a secret lost.
impl std::fmt::Debug for JobSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobSecret(..)")
    }
}

impl JobSecret {
    /// The job's secret, from the first of:
    ///
    /// - `DAVINCI_JOB_SECRET`: any non-empty string (`davinci launch` puts 64 random hex
    ///   characters there); the secret is its SHA-256.
    /// - a key file, `DAVINCI_KEY_FILE` or else `$HOME/.config/davinci/rendezvous.key`,
    ///   created with 32 random bytes (mode 0600) where missing; the secret is
    ///   HMAC-SHA256(key, job id), the job id being `SLURM_JOB_ID` or else
    ///   `MASTER_ADDR:MASTER_PORT` (defaults 127.0.0.1 and 29500, as [`LaunchEnv`]'s).
    ///
    /// So with the key file, every rank of the job must see the same file (a home shared
    /// by the nodes; a node with its own home makes its own key, and its ranks are
    /// refused), and it protects the job only because other users cannot read it: a file
    /// that group or others can read is refused.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        if let Some(secret) = var("DAVINCI_JOB_SECRET") {
            // The handshake travels in clear text: a short secret could be guessed offline
            // from one recorded introduction.
            if secret.len() < 16 {
                return Err(DistError::Config(format!(
                    "DAVINCI_JOB_SECRET has {} characters: give every rank the same random string of at \
                     least 16 (e.g. `openssl rand -hex 32`)",
                    secret.len()
                )));
            }
            return Ok(Self(Sha256::digest(secret.as_bytes()).into()));
        }
        let path = match (var("DAVINCI_KEY_FILE"), var("HOME")) {
            (Some(file), _) if !file.is_empty() => PathBuf::from(file),
            (_, Some(home)) if !home.is_empty() => Path::new(&home).join(".config/davinci/rendezvous.key"),
            _ => {
                return Err(DistError::Config(
                    "no job secret: set DAVINCI_JOB_SECRET, or DAVINCI_KEY_FILE (HOME is not set)".into(),
                ))
            }
        };
        let key = read_or_create_key(&path)?;
        let job = match var("SLURM_JOB_ID") {
            Some(id) => id,
            None => format!(
                "{}:{}",
                var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
                var("MASTER_PORT").unwrap_or_else(|| "29500".into())
            ),
        };
        Ok(Self(wire::digest(wire::mac(&key, &[job.as_bytes()]))))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh secret, for a launcher to hand its ranks (or a test).
    pub fn random() -> Result<Self> {
        Ok(Self(wire::nonce().map_err(io("drawing a job secret"))?))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The key in `path`, made first if there is none; refused if other users could read it.
fn read_or_create_key(path: &Path) -> Result<Vec<u8>> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(path)?,
        Err(e) => return Err(io(format!("reading the rendezvous key file {shown}"))(e)),
    }
    let metadata = std::fs::metadata(path).map_err(io(format!("reading the key file {shown}")))?;
    if !metadata.is_file() || !(16..=4096).contains(&metadata.len()) {
        return Err(DistError::Config(format!(
            "the rendezvous key file {shown} must be a regular file of 16 to 4096 bytes (davinci makes one \
             of 32 random bytes where none exists)"
        )));
    }
    let mode = permissions(&metadata);
    if mode & 0o077 != 0 {
        return Err(DistError::Config(format!(
            "other users can read or change the rendezvous key file {shown} (mode {mode:o}): \
             run `chmod 600 {shown}`"
        )));
    }
    std::fs::read(path).map_err(io(format!("reading the rendezvous key file {shown}")))
}

/// Writes 32 random bytes to a file of its own, then links it into place: of several
/// ranks that race on a shared home, one link wins and every rank reads the same key.
fn create_key(path: &Path) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let shown = path.display();
    private_dir(dir).map_err(io(format!("creating {}", dir.display())))?;
    let key = wire::nonce().map_err(io("drawing a key"))?;
    let suffix = wire::nonce().map_err(io("drawing a name"))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", hex::encode(&suffix[..8])));
    let written = private_file(&temp).and_then(|mut file| {
        file.write_all(&key)?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            tracing::info!("created the rendezvous key file {shown}");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(format!("creating the rendezvous key file {shown}"))(e)),
    }
}

#[cfg(unix)]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(unix)]
fn permissions(metadata: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

/// No modes to check off Unix.
#[cfg(not(unix))]
fn permissions(_: &std::fs::Metadata) -> u32 {
    0o600
}

/// The first host a SLURM node list names: `gpu[007-012,020],login1` gives `gpu007`
/// (zero padding kept), `rack[1-2]-n[5-6]` gives `rack1-n5`. `None` for an empty or
/// malformed list.
pub fn first_host(list: &str) -> Option<String> {
    let mut host = String::new();
    let mut chars = list.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            ',' => break,
            '[' => {
                // The first number of the bracket's first range.
                let (mut inner, mut closed) = (String::new(), false);
                for c in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    inner.push(c);
                }
                let digits: String = inner.chars().take_while(char::is_ascii_digit).collect();
                if digits.is_empty() || !closed {
                    return None;
                }
                host.push_str(&digits);
            }
            ']' => return None,
            c => host.push(c),
        }
    }
    (!host.is_empty()).then_some(host)
}

/// The group this process belongs to, for training on `device`: [`Local`] when started
/// alone; else, at `MASTER_ADDR:MASTER_PORT`, the TCP backend on the CPU, or on a GPU
/// (with the `nccl` feature) NCCL, whose unique id travels through the TCP rendezvous.
/// Every rank must pass the same `fingerprint` and see the same secret
/// ([`JobSecret::from_vars`]).
pub fn connect_from_env(
    fingerprint: &str,
    timeout: Duration,
    device: &Device,
) -> Result<Arc<dyn Collective>> {
    let env = match LaunchEnv::from_vars(|name| std::env::var(name).ok())? {
        Some(env) if env.world > 1 => env,
        _ => return Ok(Arc::new(Local)),
    };
    let supported = matches!(device, Device::Cpu) || (cfg!(feature = "nccl") && device.is_cuda());
    if !supported {
        return Err(DistError::Config(format!(
            "no collectives for {device:?} in this build (GPUs need davinci built with --features cuda)"
        )));
    }
    let secret = JobSecret::from_vars(|name| std::env::var(name).ok())?;
    tracing::info!("rank {} of {}: joining the group at {}", env.rank, env.world, env.master);
    let control = TcpRank::connect(&env.master, env.rank, env.world, fingerprint, &secret, timeout)?;
    match device {
        #[cfg(feature = "nccl")]
        Device::Cuda(cuda) => Ok(Arc::new(crate::nccl::NcclRank::over(control, cuda)?)),
        _ => Ok(Arc::new(control)),
    }
}
