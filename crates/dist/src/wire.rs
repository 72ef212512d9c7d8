//! The TCP backend's wire: frames that carry an authentication tag, the handshake's keyed
//! hashes, and reads that trust neither a peer's lengths nor its pace.
//!
//! A frame is a 13-byte header (kind u8, root u32 LE, len u64 LE), `len` bytes of data and
//! a 32-byte tag, HMAC-SHA256(session key, direction || sequence u64 LE || header || data).
//! The direction byte and the sequence number (counted per direction per connection) make
//! a replayed, reflected, reordered or dropped frame fail its tag like an altered one.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Opens rank 0's challenge and every introduction: another protocol (or an older davinci)
/// is told apart at once.
pub(crate) const MAGIC: &str = "DVDIST02";
pub(crate) const NONCE: usize = 32;
pub(crate) const TAG: usize = 32;
pub(crate) const HEADER: usize = 13;
/// The challenge: the magic, then rank 0's nonce.
pub(crate) const CHALLENGE: usize = MAGIC.len() + NONCE;
/// An introduction's data (nonce and text) is read before its sender is authenticated,
/// so it is small.
pub(crate) const MAX_INTRO: u64 = 4096;
/// Frames larger than this are refused: a corrupted or forged length.
pub(crate) const MAX_FRAME: u64 = 1 << 36;
/// Data is read, hashed and sent in pieces of this size: a piece stays in cache between
/// the socket and the hash, and the receiver checks one while the sender hashes the next.
const PIECE: usize = 64 << 10;

/// Frame kinds besides the ops' codes.
pub(crate) const KIND_INTRO: u8 = b'I';
pub(crate) const KIND_WELCOME: u8 = b'W';
pub(crate) const ERROR_FRAME: u8 = 0xEE;

/// Directions, the first byte a frame's tag covers.
const TO_ROOT: u8 = 0;
const FROM_ROOT: u8 = 1;

/// HMAC-SHA256 under `key` over the concatenation of `parts`, not yet finalized.
pub(crate) fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC hashes a long key and pads a short one: every length is valid.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    parts.iter().for_each(|p| mac.update(p));
    mac
}

pub(crate) fn digest(mac: HmacSha256) -> [u8; 32] {
    mac.finalize().into_bytes().into()
}

/// Fresh random bytes from the operating system.
pub(crate) fn nonce() -> io::Result<[u8; NONCE]> {
    let mut nonce = [0; NONCE];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(format!("no randomness from the OS: {e}")))?;
    Ok(nonce)
}

/// What a rank proves with its introduction: it knows `secret`, and answers this challenge.
pub(crate) fn intro_mac(secret: &[u8], root_nonce: &[u8], peer_nonce: &[u8], text: &[u8]) -> HmacSha256 {
    mac(secret, &[b"intro", root_nonce, peer_nonce, text])
}

/// What rank 0 proves with its welcome: it knows `secret`, and answers the rank's nonce.
pub(crate) fn welcome_mac(secret: &[u8], peer_nonce: &[u8], root_nonce: &[u8]) -> HmacSha256 {
    mac(secret, &[b"welcome", peer_nonce, root_nonce])
}

/// The key of one connection's frame tags: fresh for each connection, from both nonces.
pub(crate) fn session_key(secret: &[u8], root_nonce: &[u8], peer_nonce: &[u8]) -> [u8; 32] {
    digest(mac(secret, &[b"session", root_nonce, peer_nonce]))
}

pub(crate) fn header(kind: u8, root: u32, len: u64) -> [u8; HEADER] {
    let mut header = [0u8; HEADER];
    header[0] = kind;
    header[1..5].copy_from_slice(&root.to_le_bytes());
    header[5..13].copy_from_slice(&len.to_le_bytes());
    header
}

/// (kind, root, len)
pub(crate) fn parse_header(header: &[u8; HEADER]) -> (u8, u32, u64) {
    let [kind, r0, r1, r2, r3, l0, l1, l2, l3, l4, l5, l6, l7] = *header;
    (kind, u32::from_le_bytes([r0, r1, r2, r3]), u64::from_le_bytes([l0, l1, l2, l3, l4, l5, l6, l7]))
}

/// Reads `len` bytes as they arrive, a piece at a time, and feeds each piece to `mac`:
/// the buffer grows with the data received (to at most about twice it), so a forged
/// length allocates nothing up front.
fn read_data(r: &mut impl Read, len: u64, mac: &mut HmacSha256) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| io::Error::other(format!("a frame of {len} bytes")))?;
    let mut data = Vec::with_capacity(len.min(PIECE));
    while data.len() < len {
        let start = data.len();
        data.resize(start + (len - start).min(PIECE), 0);
        r.read_exact(&mut data[start..])?;
        mac.update(&data[start..]);
    }
    Ok(data)
}

/// Writes every slice, in as few calls as the kernel allows: the header and tag go out
/// with the data, and a large payload is never copied.
fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the connection took no bytes")),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Why a frame could not be read or sent.
#[derive(Debug)]
pub(crate) enum FrameError {
    Io(io::Error),
    /// A header claimed more than [`MAX_FRAME`] bytes.
    TooLarge(u64),
    /// The tag does not match: altered, replayed or reordered.
    BadTag,
    /// An earlier frame failed, so the stream is out of step.
    Broken,
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

pub(crate) type Frame = (u8, u32, Vec<u8>);

/// One authenticated connection between rank 0 and another rank.
pub(crate) struct Link {
    stream: TcpStream,
    /// Keyed with the session key; cloned per frame, which saves hashing the key again.
    mac: HmacSha256,
    outgoing: u8,
    sent: u64,
    received: u64,
    /// Set by a failed frame, one flag per direction: what follows can no longer be
    /// framed that way (rank 0 can still tell a rank whose frame failed why).
    broken_in: bool,
    broken_out: bool,
}

impl Link {
    pub(crate) fn new(stream: TcpStream, session_key: &[u8; 32], at_root: bool) -> Self {
        let outgoing = if at_root { FROM_ROOT } else { TO_ROOT };
        Self {
            stream,
            mac: mac(session_key, &[]),
            outgoing,
            sent: 0,
            received: 0,
            broken_in: false,
            broken_out: false,
        }
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn tag(&self, direction: u8, sequence: u64, header: &[u8; HEADER]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(&[direction]);
        mac.update(&sequence.to_le_bytes());
        mac.update(header);
        mac
    }

    pub(crate) fn send(&mut self, kind: u8, root: u32, data: &[u8]) -> Result<(), FrameError> {
        if self.broken_out {
            return Err(FrameError::Broken);
        }
        let header = header(kind, root, data.len() as u64);
        let mac = self.tag(self.outgoing, self.sent, &header);
        self.sent += 1;
        let written = Self::write_frame(&mut self.stream, &header, data, mac);
        written.map_err(|e| {
            self.broken_out = true;
            FrameError::Io(e)
        })
    }

    /// Hashes and sends the data a piece at a time; the tag follows the last piece.
    fn write_frame(
        stream: &mut TcpStream,
        header: &[u8],
        data: &[u8],
        mut mac: HmacSha256,
    ) -> io::Result<()> {
        let (mut head, mut rest) = (header, data);
        loop {
            let (piece, after) = rest.split_at(rest.len().min(PIECE));
            mac.update(piece);
            rest = after;
            if rest.is_empty() {
                let tag = digest(mac);
                let mut all = [IoSlice::new(head), IoSlice::new(piece), IoSlice::new(&tag)];
                return write_all_vectored(stream, &mut all);
            }
            write_all_vectored(stream, &mut [IoSlice::new(head), IoSlice::new(piece)])?;
            head = &[];
        }
    }

    /// The next frame, once its tag checks out.
    pub(crate) fn recv(&mut self) -> Result<Frame, FrameError> {
        if self.broken_in {
            return Err(FrameError::Broken);
        }
        let frame = self.read_frame();
        self.broken_in = frame.is_err();
        frame
    }

    fn read_frame(&mut self) -> Result<Frame, FrameError> {
        let mut header = [0u8; HEADER];
        self.stream.read_exact(&mut header)?;
        let (kind, root, len) = parse_header(&header);
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let incoming = if self.outgoing == FROM_ROOT { TO_ROOT } else { FROM_ROOT };
        let mut mac = self.tag(incoming, self.received, &header);
        let data = read_data(&mut self.stream, len, &mut mac)?;
        let mut tag = [0u8; TAG];
        self.stream.read_exact(&mut tag)?;
        mac.verify_slice(&tag).map_err(|_| FrameError::BadTag)?;
        self.received += 1;
        Ok((kind, root, data))
    }
}

/// Reads from a stream, failing once `until` has passed however slowly the peer trickles
/// its bytes: a handshake cannot be held open by sending one byte at a time.
pub(crate) struct Deadline<'a> {
    pub(crate) stream: &'a TcpStream,
    pub(crate) until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the handshake's deadline passed"));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair(key: &[u8; 32]) -> (Link, Link, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let raw = server.try_clone().unwrap();
        (Link::new(client, key, false), Link::new(server, key, true), raw)
    }

    #[test]
    fn a_frame_arrives_whole_and_tagged() {
        let (mut rank, mut root, _) = pair(&[7; 32]);
        // Large enough to fill the socket's buffers: the sides run on threads of their own.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for data in [&b""[..], b"small", &big] {
            std::thread::scope(|s| {
                s.spawn(|| rank.send(3, 9, data).unwrap());
                assert_eq!(root.recv().unwrap(), (3, 9, data.to_vec()));
            });
            std::thread::scope(|s| {
                s.spawn(|| root.send(4, 1, data).unwrap());
                assert_eq!(rank.recv().unwrap().2, data);
            });
        }
    }

    #[test]
    fn a_replayed_reordered_or_reflected_frame_fails_its_tag() {
        // Replay: the frame's bytes, taken off the wire before rank 0 reads them, twice.
        let (mut rank, mut root, mut raw) = pair(&[1; 32]);
        rank.send(1, 0, b"first").unwrap();
        let mut copy = vec![0u8; HEADER + 5 + TAG];
        raw.read_exact(&mut copy).unwrap();
        rank.stream.write_all(&copy).unwrap();
        rank.stream.write_all(&copy).unwrap();
        assert_eq!(root.recv().unwrap().2, b"first");
        assert!(matches!(root.recv(), Err(FrameError::BadTag)));
        assert!(matches!(root.recv(), Err(FrameError::Broken)), "a failed link stays failed");

        // Reordering: two frames swapped on the wire.
        let (mut rank, mut root, mut raw) = pair(&[1; 32]);
        rank.send(1, 0, b"a").unwrap();
        rank.send(1, 0, b"b").unwrap();
        let mut both = vec![0u8; 2 * (HEADER + 1 + TAG)];
        raw.read_exact(&mut both).unwrap();
        let (a, b) = both.split_at(HEADER + 1 + TAG);
        rank.stream.write_all(&[b, a].concat()).unwrap();
        assert!(matches!(root.recv(), Err(FrameError::BadTag)));

        // Reflection: rank 0's own frame sent back to it has the wrong direction.
        let (mut rank, mut root, _) = pair(&[1; 32]);
        root.send(1, 0, b"echo").unwrap();
        let mut echoed = vec![0u8; HEADER + 4 + TAG];
        rank.stream.read_exact(&mut echoed).unwrap();
        rank.stream.write_all(&echoed).unwrap();
        assert!(matches!(root.recv(), Err(FrameError::BadTag)));
    }

    #[test]
    fn a_forged_length_allocates_nothing_and_fails() {
        let mut stream = std::io::Cursor::new(vec![1u8; 100]);
        let mut m = mac(&[0; 32], &[]);
        let err = read_data(&mut stream, MAX_FRAME, &mut m).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let (mut rank, mut root, _) = pair(&[2; 32]);
        rank.stream.write_all(&header(1, 0, u64::MAX)).unwrap();
        assert!(matches!(root.recv(), Err(FrameError::TooLarge(u64::MAX))));
    }
}
