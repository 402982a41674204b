//! Everything the adversarial probe found, at once, against a daemon with
//! a user service's 1,024 open files: 10,000 forged announces with fresh
//! ids and 1,000 hostile connections. What it costs the daemon, and what
//! it costs a new peer and a client.

use std::time::{Duration, Instant};

use testkit::lan::{announce_flood, hostile_crowd};
use testkit::procfs::{rss_anon_kib, rss_kib};
use testkit::{ApiProbe, TestNet, wait_until};

use crate::Counts;

/// The open files a user service gets by default.
const FILE_LIMIT: u32 = 1024;
/// How long a newcomer may take before it counts as locked out.
const JOIN_WAIT: Duration = Duration::from_secs(30);
/// Announced peers are forgotten 30 s after their last announce; a sweep
/// runs on every announce (4 s).
const EXPIRY: Duration = Duration::from_secs(36);

pub(crate) struct Hostile {
    pub(crate) join_ms: f64,
    pub(crate) api_worst_ms: f64,
    pub(crate) rss_growth_kib: i64,
    /// Left over once the announces expired; `None` in a quick run.
    pub(crate) rss_after_kib: Option<i64>,
    pub(crate) connections: usize,
    pub(crate) announces: usize,
}

pub(crate) async fn flood(c: &Counts) -> Hostile {
    let net = TestNet::new().quiet();
    let zed = net.daemon_with_file_limit("zed", FILE_LIMIT).await;
    let pid = u32::try_from(zed.pid().as_raw()).unwrap_or(0);
    let before = rss_kib(pid).unwrap_or(0);
    let anon_before = rss_anon_kib(pid).unwrap_or(0);
    let to = ([127, 0, 0, 1], zed.status().await.port).into();
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let hole = blackhole.local_addr().expect("its port").port();
    let probe = ApiProbe::start(&zed.socket);
    let announces = 10_000;
    let ((), held) = tokio::join!(
        announce_flood(net.group, announces, hole),
        hostile_crowd(to, 1000)
    );
    let started = Instant::now();
    let amy = net.daemon("amy").await;
    let amy_id = amy.status().await.peer_id;
    wait_until("the newcomer to link", JOIN_WAIT, || async {
        let p = zed.try_peers().await.ok()?;
        p.iter()
            .any(|p| p.peer_id == amy_id && p.connected)
            .then_some(())
    })
    .await;
    let join_ms = started.elapsed().as_secs_f64() * 1e3;
    let peak = rss_kib(pid).unwrap_or(0);
    let api_worst_ms = probe.finish().as_secs_f64() * 1e3;
    let connections = held.len();
    drop(held);
    drop(amy);
    let rss_after_kib = if c.quick {
        None
    } else {
        tokio::time::sleep(EXPIRY).await;
        Some(delta(rss_kib(pid).unwrap_or(0), before))
    };
    let anon_after = delta(rss_anon_kib(pid).unwrap_or(0), anon_before);
    drop(blackhole);
    eprintln!(
        "  {connections} connections and {announces} announces: a newcomer linked in {join_ms:.1} ms, \\
         the slowest API answer {api_worst_ms:.1} ms, RSS {before} -> {peak} KiB{} ({anon_after:+} KiB of it heap)",
        rss_after_kib.map_or(String::new(), |a| format!(", {a:+} KiB once they expired"))
    );
    Hostile {
        join_ms,
        api_worst_ms,
        rss_growth_kib: delta(peak, before),
        rss_after_kib,
        connections,
        announces,
    }
}

fn delta(now: u64, then: u64) -> i64 {
    i64::try_from(now).unwrap_or(i64::MAX) - i64::try_from(then).unwrap_or(0)
}
