//! Newline framing with a maximum length, for both the peer wire and the
//! local API.
//!
//! The splitter works on the caller's read buffer and never allocates a size
//! the other side chose: a line that grows past the limit is reported once
//! and then discarded up to its newline, so the buffer stays bounded.

use bytes::BytesMut;

/// A line grew past the limit. Its bytes have been discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {max} bytes")]
pub struct LineTooLong {
    pub max: usize,
}

/// Splits `\n`-terminated lines off a read buffer.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    /// Bytes at the front of the buffer already searched for `\n`.
    scanned: usize,
    /// Inside an over-long line: drop bytes until its newline.
    discarding: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            scanned: 0,
            discarding: false,
        }
    }

    /// The next complete line, without its `\n` (and without a `\r` before
    /// it). Empty lines are skipped. `None` means: read more.
    pub fn next_line(&mut self, buf: &mut BytesMut) -> Option<Result<BytesMut, LineTooLong>> {
        loop {
            match memchr::memchr(b'\n', &buf[self.scanned..]) {
                Some(pos) => {
                    let end = self.scanned + pos;
                    self.scanned = 0;
                    let mut line = buf.split_to(end + 1);
                    if std::mem::take(&mut self.discarding) {
                        continue;
                    }
                    line.truncate(end);
                    if line.last() == Some(&b'\r') {
                        line.truncate(end - 1);
                    }
                    if line.len() > self.max {
                        return Some(Err(LineTooLong { max: self.max }));
                    }
                    if line.is_empty() {
                        continue;
                    }
                    return Some(Ok(line));
                }
                None if self.discarding => {
                    buf.clear();
                    self.scanned = 0;
                    return None;
                }
                None if buf.len() > self.max => {
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Some(Err(LineTooLong { max: self.max }));
                }
                None => {
                    self.scanned = buf.len();
                    return None;
                }
            }
        }
    }
}

/// A read buffer that hands out whole lines: the one line reader of every
/// framed stream (peer links, API connections, the client). No I/O of its
/// own: the caller reads into [`LineReader::space`] and takes lines with
/// [`LineReader::next_line`].
#[derive(Debug)]
pub struct LineReader {
    buf: BytesMut,
    split: LineSplitter,
    chunk: usize,
}

impl LineReader {
    /// Lines of at most `max_line` bytes, read `chunk` bytes at a time.
    pub fn new(max_line: usize, chunk: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(chunk),
            split: LineSplitter::new(max_line),
            chunk,
        }
    }

    /// The next complete line in the buffer (see
    /// [`LineSplitter::next_line`]); `None`: read more.
    pub fn next_line(&mut self) -> Option<Result<BytesMut, LineTooLong>> {
        self.split.next_line(&mut self.buf)
    }

    /// A read of `n` bytes happened: one that filled its whole chunk
    /// doubles the next, up to `max`. A quiet connection keeps a small
    /// buffer; a busy one soon reads in big pieces.
    pub fn read(&mut self, n: usize, max: usize) {
        if n >= self.chunk {
            self.chunk = (self.chunk * 2).min(max.max(self.chunk));
        }
    }

    /// What was read but not yet taken as lines.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Takes what was read but not yet taken as lines (the connection
    /// turned out to speak something else).
    pub fn take_buffered(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }

    /// The buffer to read more into, with room for at least one chunk.
    pub fn space(&mut self) -> &mut BytesMut {
        self.buf.reserve(self.chunk);
        &mut self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: &mut LineSplitter, buf: &mut BytesMut) -> Vec<Result<String, LineTooLong>> {
        std::iter::from_fn(|| s.next_line(buf))
            .map(|r| r.map(|l| String::from_utf8(l.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn splits_across_reads() {
        let mut s = LineSplitter::new(16);
        let mut buf = BytesMut::from(&b"one\ntw"[..]);
        assert_eq!(all(&mut s, &mut buf), vec![Ok("one".to_owned())]);
        buf.extend_from_slice(b"o\r\n\n\nthree\n");
        assert_eq!(
            all(&mut s, &mut buf),
            vec![Ok("two".to_owned()), Ok("three".to_owned())]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn over_long_line_is_reported_once_and_skipped() {
        let mut s = LineSplitter::new(4);
        let mut buf = BytesMut::from(&b"ok\n0123456789"[..]);
        assert_eq!(
            all(&mut s, &mut buf),
            vec![Ok("ok".to_owned()), Err(LineTooLong { max: 4 })]
        );
        assert!(buf.is_empty(), "discarded bytes are not kept");
        buf.extend_from_slice(b"more garbage");
        assert_eq!(all(&mut s, &mut buf), vec![]);
        buf.extend_from_slice(b"tail\nnext\n");
        assert_eq!(all(&mut s, &mut buf), vec![Ok("next".to_owned())]);
        // A long line that arrives whole, newline included.
        buf.extend_from_slice(b"toolong\nfine\n");
        assert_eq!(
            all(&mut s, &mut buf),
            vec![Err(LineTooLong { max: 4 }), Ok("fine".to_owned())]
        );
    }

    #[test]
    fn the_reader_gives_lines_read_in_pieces() {
        let mut r = LineReader::new(8, 4);
        assert!(r.next_line().is_none());
        r.space().extend_from_slice(b"ab\ncd");
        assert!(r.space().capacity() >= 4 + 2);
        r.read(4, 16);
        assert!(r.space().capacity() - r.space().len() >= 8, "grown");
        assert_eq!(r.next_line(), Some(Ok(BytesMut::from(&b"ab"[..]))));
        assert!(r.next_line().is_none());
        r.space().extend_from_slice(b"\n0123456789\n");
        assert_eq!(r.next_line(), Some(Ok(BytesMut::from(&b"cd"[..]))));
        assert_eq!(r.next_line(), Some(Err(LineTooLong { max: 8 })));
        assert!(r.next_line().is_none());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_stays_bounded(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..32)) {
            let mut s = LineSplitter::new(32);
            let mut buf = BytesMut::new();
            for c in chunks {
                buf.extend_from_slice(&c);
                while let Some(r) = s.next_line(&mut buf) {
                    if let Ok(l) = r {
                        proptest::prop_assert!(l.len() <= 32 && !l.contains(&b'\n'));
                    }
                }
                proptest::prop_assert!(buf.len() <= 32 + 64);
            }
        }
    }
}
