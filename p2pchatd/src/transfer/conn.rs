//! A fetch connection's messages (PROTOCOL-p2pchatd §10) over its Noise
//! frames, blocking: each transfer runs on a thread of its own, so its
//! sealing, hashing and disk work never hold up the chat's runtime.

use std::io::{self, Write};
use std::net::TcpStream;
use std::time::Duration;

use shared::transfer::fetch::{ERROR, HEAD, MAX_CONTROL, head};

use crate::mesh::secure::{Established, Opener, Sealer};

/// A peer that sends or takes nothing this long is gone.
pub(super) const IDLE: Duration = Duration::from_secs(60);
/// How long an end that gives up reads on, so its reason arrives.
const LINGER: Duration = Duration::from_secs(2);

/// Why a transfer stopped before its end.
#[derive(Debug)]
pub(super) enum Stop {
    /// The connection broke (or a frame did not open): the recipient
    /// comes back for the rest.
    Cut(String),
    /// It cannot go on: said to the other end, shown to the user.
    Fatal(String),
    /// The other end said it cannot go on (why, in its words).
    Theirs(String),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        // A message over its kind's bound is the other end's fault, not
        // the network's: trying again would not help.
        if e.kind() == io::ErrorKind::InvalidInput {
            Self::Fatal(e.to_string())
        } else {
            Self::Cut(e.to_string())
        }
    }
}

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
        stream.set_write_timeout(Some(IDLE))?;
        let conn = Self {
            stream,
            opener: est.opener,
            sealer: est.sealer,
            plain: Vec::new(),
            at: 0,
            out: Vec::new(),
            received: 0,
        };
        conn.idle(IDLE)?;
        Ok(conn)
    }

    /// How long a read may wait.
    pub(super) fn idle(&self, wait: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(wait))
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

    /// Says why we stop, then closes our side and reads what still comes
    /// for a moment: closing with unread bytes would reset the connection,
    /// and the other end could lose the reason with them.
    pub(super) fn fail(&mut self, why: &str) {
        if self.send(ERROR, why.as_bytes()).is_err() {
            return;
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let _ = self.idle(LINGER);
        let mut sink = vec![0u8; 64 * 1024];
        let until = std::time::Instant::now() + LINGER;
        while std::time::Instant::now() < until {
            match io::Read::read(&mut self.stream, &mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// The other end's `ERROR`, if one came while we were sending (read
    /// without waiting). While we send, it says nothing else: any other
    /// message stops the transfer, and at most one `ERROR`'s bytes are
    /// held, so a peer cannot make us buffer what it sends.
    pub(super) fn stopped(&mut self) -> Result<(), Stop> {
        let unread = |c: &Self| c.plain.len() - c.at;
        if unread(self) == 0 && !self.opener.holds_bytes() && !readable_now(&self.stream)? {
            return Ok(());
        }
        self.stream.set_nonblocking(true)?;
        // An ERROR is two frames (its head, its reason): open what came.
        let mut opened = Ok(true);
        for _ in 0..8 {
            if unread(self) >= HEAD + MAX_CONTROL {
                break;
            }
            let before = self.plain.len();
            opened = self.opener.open_next(&mut self.stream, &mut self.plain);
            self.received += (self.plain.len() - before) as u64;
            if !matches!(opened, Ok(true)) {
                break;
            }
        }
        self.stream.set_nonblocking(false)?;
        match opened {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
            Ok(false) => return Err(Stop::Cut("the other end closed the connection".into())),
            Ok(true) => {}
        }
        let rest = &self.plain[self.at..];
        let Some((kind, len)) = parse_head(rest) else {
            return Ok(());
        };
        if kind != ERROR {
            return Err(Stop::Fatal(format!(
                "an unexpected message ({kind}) while a file was sent"
            )));
        }
        let len = len.min(MAX_CONTROL);
        if rest.len() >= HEAD + len {
            return Err(Stop::Theirs(said(&rest[HEAD..HEAD + len])));
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
        let Some((kind, len)) = parse_head(&self.plain[self.at..]) else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        let max = if kind == ERROR {
            MAX_CONTROL
        } else {
            limit(kind)
        };
        if len > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
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

    /// The next message, which must be of kind `want` (at most `limit`
    /// bytes); the other end's `ERROR`, an end of stream or another kind
    /// stop the transfer.
    pub(super) fn expect(&mut self, want: u8, limit: usize) -> Result<&[u8], Stop> {
        match self.recv(|k| if k == want { limit } else { 0 })? {
            None => Err(Stop::Cut("the other end closed the connection".into())),
            Some((ERROR, body)) => Err(Stop::Theirs(said(body))),
            Some((k, body)) if k == want => Ok(body),
            Some((k, _)) => Err(Stop::Fatal(format!("an unexpected message ({k})"))),
        }
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

/// The kind and length a message's head says, once the head is there.
fn parse_head(bytes: &[u8]) -> Option<(u8, usize)> {
    let h: [u8; HEAD] = bytes.get(..HEAD)?.try_into().ok()?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    Some((h[0], usize::try_from(len).unwrap_or(usize::MAX)))
}

/// Whether bytes wait on `stream`, without waiting for them.
fn readable_now(stream: &TcpStream) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO)?;
    Ok(fds[0].revents().is_some_and(|r| !r.is_empty()))
}

/// What the other end says in an `ERROR`, safe to show.
pub(super) fn said(body: &[u8]) -> String {
    shared::text::sanitize_foreign_text(&String::from_utf8_lossy(body))
        .chars()
        .take(300)
        .collect()
}
