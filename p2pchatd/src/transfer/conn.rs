//! A fetch connection's messages (PROTOCOL-p2pchatd §10) over its Noise
//! frames, blocking: each transfer runs on a thread of its own, so its
//! sealing, hashing and disk work never hold up the chat's runtime.

use std::io::{self, Write};
use std::net::TcpStream;
use std::time::Duration;

use shared::transfer::fetch::{HEAD, head};

use crate::mesh::secure::{Established, Opener, Sealer};

/// A peer that sends or takes nothing this long is gone.
const IDLE: Duration = Duration::from_secs(60);

/// One fetch connection, either end.
pub(super) struct Conn {
    stream: TcpStream,
    opener: Opener,
    sealer: Sealer,
    /// Opened bytes not taken yet, from `at`.
    plain: Vec<u8>,
    at: usize,
    out: Vec<u8>,
    /// Bytes opened so far (everything that came in).
    pub(super) received: u64,
}

impl Conn {
    /// Takes over a connection whose handshake is done; `stream` becomes
    /// blocking.
    pub(super) fn new(stream: tokio::net::TcpStream, est: Established) -> io::Result<Self> {
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(IDLE))?;
        stream.set_write_timeout(Some(IDLE))?;
        Ok(Self {
            stream,
            opener: est.opener,
            sealer: est.sealer,
            plain: Vec::new(),
            at: 0,
            out: Vec::new(),
            received: 0,
        })
    }

    /// A handle that ends the connection from another thread.
    pub(super) fn cutter(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// Sends one message.
    pub(super) fn send(&mut self, kind: u8, body: &[u8]) -> io::Result<()> {
        self.out.clear();
        self.sealer.seal(&head(kind, body.len()), &mut self.out)?;
        self.sealer.seal(body, &mut self.out)?;
        self.stream.write_all(&self.out)?;
        if self.out.capacity() > 4 * shared::transfer::CHUNK {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Receives one message: its kind and body. `limit` gives the most
    /// bytes a message of a kind may hold; a larger one is refused before
    /// its bytes are waited for. `Ok(None)` at end of stream.
    pub(super) fn recv(&mut self, limit: impl Fn(u8) -> usize) -> io::Result<Option<(u8, &[u8])>> {
        if !self.fill(HEAD)? {
            return Ok(None);
        }
        let h = &self.plain[self.at..self.at + HEAD];
        let kind = h[0];
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        let max = limit(kind);
        if len > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a message of kind {kind} and {len} bytes (at most {max} expected)"),
            ));
        }
        if !self.fill(HEAD + len)? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let start = self.at + HEAD;
        self.at = start + len;
        Ok(Some((kind, &self.plain[start..start + len])))
    }

    /// Opens frames until `n` bytes past `at` are there; false at the end
    /// of the stream with none of them.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.at > 0 && self.plain.len() - self.at < n {
            self.plain.drain(..self.at);
            self.at = 0;
        }
        while self.plain.len() - self.at < n {
            let before = self.plain.len();
            if !self.opener.open_next(&mut self.stream, &mut self.plain)? {
                if self.plain.len() == self.at {
                    return Ok(false);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.received += (self.plain.len() - before) as u64;
        }
        Ok(true)
    }
}
