//! A raw API client: pre-encoded request lines out, lines in, no parsing
//! on the way. The bench drives daemons with it at full speed; tests send
//! it what the typed client never would.

use std::path::Path;
use std::time::Duration;

use shared::api::{Call, SayParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 64 * 1024;
/// How long a daemon may take to answer `subscribe`.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// A connection to a daemon's API socket.
pub struct Raw {
    pub lines: RawLines,
    pub w: OwnedWriteHalf,
}

/// The reading half: newline-cut lines.
pub struct RawLines {
    r: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
}

impl Raw {
    pub async fn connect(socket: &Path) -> Self {
        let (r, w) = UnixStream::connect(socket)
            .await
            .expect("connect to the API socket")
            .into_split();
        Self {
            lines: RawLines {
                r,
                buf: Vec::with_capacity(1 << 20),
                start: 0,
            },
            w,
        }
    }

    pub async fn send(&mut self, line: &[u8]) {
        self.w.write_all(line).await.expect("write a request");
    }

    /// The next line, or `None` at `deadline` or end of stream.
    pub async fn line(&mut self, deadline: tokio::time::Instant) -> Option<&[u8]> {
        self.lines.next(deadline).await
    }

    /// Subscribes (live, or after `since`) and returns once answered.
    pub async fn subscribe(socket: &Path, since: Option<u64>) -> Self {
        let mut c = Self::connect(socket).await;
        let params = since.map_or(String::new(), |s| format!(",\"params\":{{\"since\":{s}}}"));
        c.send(
            format!("{{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"subscribe\"{params}}}\n")
                .as_bytes(),
        )
        .await;
        let l = c
            .line(tokio::time::Instant::now() + ANSWER_WAIT)
            .await
            .expect("subscribe answer");
        assert!(contains(l, b"\"result\""), "{}", String::from_utf8_lossy(l));
        c
    }
}

impl RawLines {
    /// The next line, or `None` at `deadline` or end of stream. Lines are
    /// cut where they lie in the buffer the socket was read into (no copy),
    /// and the buffer is compacted only when its free end runs short: a
    /// bench counter reads hundreds of thousands of lines, and what it
    /// spends is taken from the daemons it measures.
    pub async fn next(&mut self, deadline: tokio::time::Instant) -> Option<&[u8]> {
        let mut scanned = self.start;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[scanned..]) {
                let s = self.start;
                let end = scanned + i;
                self.start = end + 1;
                return Some(&self.buf[s..end]);
            }
            scanned = self.buf.len();
            if self.buf.capacity() - self.buf.len() < READ_CHUNK {
                self.buf.drain(..self.start);
                scanned -= self.start;
                self.start = 0;
                self.buf.reserve(READ_CHUNK);
            }
            let n = tokio::time::timeout_at(deadline, self.r.read_buf(&mut self.buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }
}

/// True when `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// A `say` request line with `id`, newline included.
pub fn say_line(id: u64, text: &str) -> Vec<u8> {
    say_line_in(id, text, None)
}

/// A `say` request for a line in `room` (`#general` without one).
pub fn say_line_in(id: u64, text: &str, room: Option<&str>) -> Vec<u8> {
    Call::Say(SayParams {
        text: text.into(),
        action: false,
        room: room.map(str::to_owned),
        ..Default::default()
    })
    .encode_request(id)
}
