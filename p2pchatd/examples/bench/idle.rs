//! A linked pair at rest: memory, CPU and wakeups of an idle daemon, then
//! the memory of one holding 10,000 messages.

use std::time::{Duration, Instant};

use testkit::procfs::{cpu_sample, rss_kib};
use testkit::raw::Raw;
use testkit::{TestNet, wait_full_mesh};

use crate::Counts;
use crate::drive::{count, flood};

const SETUP_WAIT: Duration = Duration::from_secs(10);
/// Two beats and a margin. A daemon is idle once start-up has passed: on
/// its second beat it gives back the memory and code only start-up used,
/// which the next beats' first runs of their code map again. A flood's
/// memory goes back likewise on the first quiet beat after it.
pub(crate) const SETTLE: Duration = Duration::from_millis(4500);

pub(crate) struct Idle {
    pub rss_kib: u64,
    pub cpu_pct: f64,
    pub wakeups_per_s: f64,
    /// Right after the flood, while the store's writer still holds some
    /// of it.
    pub rss_10k_kib: u64,
    /// The same daemon two beats later, at rest: holding the 10,000, the
    /// flood written and its buffers given back (DESIGN's figure).
    pub rss_10k_rest_kib: u64,
}

pub(crate) async fn memory_and_idle(c: &Counts) -> Idle {
    let net = TestNet::new().quiet();
    let a = net.daemon("a").await;
    let b = net
        .daemon_with("b", &["--history", &c.history.to_string()])
        .await;
    wait_full_mesh(&[&a, &b], SETUP_WAIT).await;
    let pid = a.status().await.pid;
    tokio::time::sleep(SETTLE).await;
    let before = cpu_sample(pid);
    let t0 = Instant::now();
    tokio::time::sleep(c.idle).await;
    let secs = t0.elapsed().as_secs_f64();
    let used = cpu_sample(pid) - before;
    let rss = rss_kib(pid).unwrap_or(0);
    eprintln!(
        "  idle {secs:.0} s: {:.3} ms CPU, {} context switches",
        used.cpu_ns as f64 / 1e6,
        used.switches
    );

    // B holds 10,000 messages of ~100 bytes from A.
    let mut sub = Raw::subscribe(&b.socket, None).await;
    let tag = format!("mem {}", "x".repeat(90));
    let (_, got) = tokio::join!(
        flood(&a.socket, &tag, c.history),
        count(
            &mut sub,
            b"\"text\":\"mem ",
            c.history,
            Duration::from_secs(5)
        ),
    );
    assert_eq!(got.n, c.history);
    drop(sub);
    let b_pid = b.status().await.pid;
    let rss_10k_kib = rss_kib(b_pid).unwrap_or(0);
    tokio::time::sleep(SETTLE).await;
    Idle {
        rss_kib: rss,
        cpu_pct: used.cpu_ns as f64 / 1e9 / secs * 100.0,
        wakeups_per_s: used.switches as f64 / secs,
        rss_10k_kib,
        rss_10k_rest_kib: rss_kib(b_pid).unwrap_or(0),
    }
}

/// What one bare wakeup costs this machine, in CPU microseconds: a thread
/// that sleeps 50 ms twenty times, as an idle daemon does between beats.
/// Virtual machines charge far more than bare metal (cold caches after the
/// vCPU halted); the idle figures are read against it.
pub(crate) fn bare_wakeup_us() -> f64 {
    let cpu = || -> Option<u64> {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    std::thread::spawn(move || {
        let before = cpu()?;
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(50));
        }
        Some((cpu()? - before) as f64 / 1e3 / 20.0)
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or(f64::NAN)
}
