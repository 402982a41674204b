//! Two daemons, A and B: the latency of one line and the throughput of a
//! flood, as a client on each end sees them.

use std::time::{Duration, Instant};

use testkit::raw::{Raw, contains, say_line};
use testkit::{TestNet, wait_full_mesh};
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
    let mut samples = Vec::with_capacity(c.latency);
    for i in 0..c.warmup + c.latency {
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
        if i >= c.warmup {
            samples.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    drain.abort();
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// Messages per second A -> B, and how many were lost.
pub(crate) async fn throughput(c: &Counts) -> (f64, usize) {
    let net = TestNet::new().quiet();
    // A holds every event of the run, so a dropped link would show.
    let a = net
        .daemon_with("a", &["--history", &(c.throughput + 1000).to_string()])
        .await;
    let b = net.daemon_with("b", &["--history", "1000"]).await;
    wait_full_mesh(&[&a, &b], SETUP_WAIT).await;
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
