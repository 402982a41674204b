//! Two daemons, A and B: the latency of one line and the throughput of a
//! flood, as a client on each end sees them.

use std::time::{Duration, Instant};

use testkit::noise;
use testkit::raw::{Raw, contains, say_line};
use testkit::{Daemon, TestNet, wait_full_mesh};
use tokio::io::AsyncWriteExt;

use crate::Counts;
use crate::drive::{count, flood, link_drops, percentile};

const SETUP_WAIT: Duration = Duration::from_secs(10);

/// Latency p50 and p99 in µs: `say` written on A's socket until the event
/// is read from B's.
pub(crate) async fn latency(c: &Counts) -> (f64, f64) {
    let net = TestNet::new().quiet();
    let a = net.daemon("a").await;
    let b = net.daemon("b").await;
    wait_full_mesh(&[&a, &b], SETUP_WAIT).await;
    let samples = latency_samples(&a, &b, c.warmup, c.latency).await;
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// `n` latencies in µs, sorted, after `warmup` lines: `say` written on
/// A's socket until the event is read from B's.
pub(crate) async fn latency_samples(a: &Daemon, b: &Daemon, warmup: usize, n: usize) -> Vec<f64> {
    let mut sub = Raw::subscribe(&b.socket, None).await;
    let Raw {
        lines: mut answers,
        mut w,
    } = Raw::connect(&a.socket).await;
    // Answers from A are drained aside; only B's events are timed.
    let drain = tokio::spawn(async move {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        while answers.next(far).await.is_some() {}
    });
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let line = say_line(i as u64, &format!("lat {i}"));
        let t0 = Instant::now();
        w.write_all(&line).await.expect("say");
        let deadline = tokio::time::Instant::now() + SETUP_WAIT;
        loop {
            let l = sub.line(deadline).await.expect("the event");
            if contains(l, b"\"kind\":\"message\"") {
                break;
            }
        }
        if i >= warmup {
            samples.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    drain.abort();
    samples.sort_by(f64::total_cmp);
    samples
}

/// Messages per second A -> B, and how many were lost (an encrypted link,
/// as between any two p2pchatd peers).
pub(crate) async fn throughput(c: &Counts) -> (f64, usize) {
    throughput_over(c, Link::Encrypted).await
}

/// The link of a throughput run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Encrypted,
    /// As it was before links were encrypted (a hidden daemon flag).
    Plaintext,
}

async fn throughput_over(c: &Counts, link: Link) -> (f64, usize) {
    let net = TestNet::new().quiet();
    let plain = ["--insecure-plaintext-links"];
    let flags: &[&str] = if link == Link::Plaintext { &plain } else { &[] };
    // A holds every event of the run, so a dropped link would show.
    let held = (c.throughput + 1000).to_string();
    let a = net
        .daemon_with("a", &[&["--history", held.as_str()], flags].concat())
        .await;
    let b = net
        .daemon_with("b", &[&["--history", "1000"], flags].concat())
        .await;
    wait_full_mesh(&[&a, &b], SETUP_WAIT).await;
    let encrypted = a.peers().await.iter().all(|p| p.encrypted);
    assert_eq!(
        encrypted,
        link == Link::Encrypted,
        "the link is not {link:?}"
    );
    let mut sub = Raw::subscribe(&b.socket, None).await;
    let n = c.throughput;
    let started = Instant::now();
    let (sent_in, got) = tokio::join!(
        flood(&a.socket, "tp", n),
        count(&mut sub, b"\"text\":\"tp ", n, Duration::from_secs(3)),
    );
    let secs = got.last.duration_since(started).as_secs_f64();
    // If anything was lost, say where: a gap is this process reading too
    // slowly; a leave is the link dropped as not reading.
    eprintln!(
        "  throughput: {n} sent in {:.0} ms, {} received in {:.0} ms, {} subscriber gaps, {} link drops",
        sent_in.as_secs_f64() * 1e3,
        got.n,
        secs * 1e3,
        got.gaps,
        link_drops(&a)
    );
    (got.n as f64 / secs, n - got.n)
}

/// What encryption costs: throughput runs, encrypted and plaintext in
/// turn (so the machine's drift touches both alike), and the ratio of
/// their medians, encrypted over plaintext.
pub(crate) async fn encrypted_throughput_ratio(c: &Counts) -> f64 {
    let (mut encrypted, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        encrypted.push(throughput_over(c, Link::Encrypted).await.0);
        plain.push(throughput_over(c, Link::Plaintext).await.0);
    }
    encrypted.sort_by(f64::total_cmp);
    plain.sort_by(f64::total_cmp);
    let (e, p) = (percentile(&encrypted, 0.5), percentile(&plain, 0.5));
    eprintln!("  encrypted {e:.0} msg/s, plaintext {p:.0} msg/s (medians of 3)");
    e / p
}

/// One Noise handshake with a daemon, p50 in ms: TCP connect to both
/// hellos verified, as a dialing peer sees it.
pub(crate) async fn handshake_ms(c: &Counts) -> f64 {
    let net = TestNet::new().quiet();
    let a = net.daemon_with("a", &["--no-discovery"]).await;
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], a.status().await.port));
    let mut samples = Vec::with_capacity(c.handshakes);
    for i in 0..c.handshakes {
        let secret: [u8; 32] = std::array::from_fn(|_| fastrand::u8(..));
        let t0 = Instant::now();
        let link = noise::dial(to, secret, &format!("hs{i}"), None)
            .await
            .expect("a handshake");
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
        drop(link);
    }
    samples.sort_by(f64::total_cmp);
    percentile(&samples, 0.5)
}
