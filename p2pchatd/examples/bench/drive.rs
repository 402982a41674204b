//! Driving daemons through their API at full speed, and counting what
//! arrives: the moves every scenario is made of.

use std::path::Path;
use std::time::{Duration, Instant};

use testkit::Daemon;
use testkit::raw::{Raw, contains, say_line_in};
use tokio::io::AsyncWriteExt;

/// Requests are written in chunks of this many bytes.
const WRITE_CHUNK: usize = 64 * 1024;
/// The longest a flood may take to be answered.
const FLOOD_WAIT: Duration = Duration::from_secs(120);

/// What a subscriber counted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counted {
    pub n: usize,
    /// When the last counted event arrived.
    pub last: Instant,
    /// `gap` events: this subscriber read too slowly.
    pub gaps: usize,
}

/// Counts message events carrying `tag` until `want`, or until nothing
/// arrives for `quiet`.
pub(crate) async fn count(sub: &mut Raw, tag: &[u8], want: usize, quiet: Duration) -> Counted {
    let mut c = Counted {
        n: 0,
        last: Instant::now(),
        gaps: 0,
    };
    while c.n < want {
        let Some(l) = sub.line(tokio::time::Instant::now() + quiet).await else {
            break;
        };
        if contains(l, b"\"kind\":\"gap\"") {
            c.gaps += 1;
        } else if contains(l, tag) {
            c.n += 1;
            c.last = Instant::now();
        }
    }
    c
}

/// Writes `n` says (`"{tag} {i}"`) as fast as the daemon's API takes them
/// while reading their answers (a client that stops reading is stopped
/// being read); returns when all are answered.
pub(crate) async fn flood(socket: &Path, tag: &str, n: usize) -> Duration {
    flood_in(socket, tag, n, None).await
}

/// As [`flood`], in `room`.
pub(crate) async fn flood_in(socket: &Path, tag: &str, n: usize, room: Option<&str>) -> Duration {
    let mut all = Vec::with_capacity(n * 80);
    for i in 0..n {
        all.extend_from_slice(&say_line_in(i as u64, &format!("{tag} {i}"), room));
    }
    let Raw { mut lines, mut w } = Raw::connect(socket).await;
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for chunk in all.chunks(WRITE_CHUNK) {
            w.write_all(chunk).await.expect("write says");
        }
        w
    });
    let mut answered = 0;
    let deadline = tokio::time::Instant::now() + FLOOD_WAIT;
    while answered < n {
        let l = lines.next(deadline).await.expect("answers");
        if contains(l, b"\"result\"") {
            answered += 1;
        } else if contains(l, b"\"error\"") {
            panic!("say refused: {}", String::from_utf8_lossy(l));
        }
    }
    drop(writer.await);
    started.elapsed()
}

/// Links a sender dropped because their peer stopped reading (it logs a
/// warning for each; its history may no longer hold the leave).
pub(crate) fn link_drops(d: &Daemon) -> usize {
    std::fs::read_to_string(&d.log)
        .unwrap_or_default()
        .matches("peer stopped reading")
        .count()
}

/// The `p`-quantile of sorted samples.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}
