//! `make bench`: the numbers of DESIGN §6, measured on real daemons.
//!
//! Every daemon is a release process on loopback with a multicast group and
//! port of this run's own, driven through its local API the way a client
//! would (pipelined JSON-RPC on the Unix socket). Prints a table and writes
//! `target/bench/report.json`. `--quick` (`make bench QUICK=1`) uses
//! smaller counts. Nothing here is asserted: figures are reported.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

#[path = "../tests/it/support.rs"]
#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use shared::api::{Call, SayParams};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

struct Counts {
    warmup: usize,
    latency: usize,
    throughput: usize,
    fanout: usize,
    fanout_peers: usize,
    idle: Duration,
    history: usize,
    tui_runs: usize,
}

const FULL: Counts = Counts {
    warmup: 1_000,
    latency: 10_000,
    throughput: 200_000,
    fanout: 20_000,
    fanout_peers: 20,
    idle: Duration::from_secs(10),
    history: 10_000,
    tui_runs: 5,
};

const QUICK: Counts = Counts {
    warmup: 200,
    latency: 2_000,
    throughput: 30_000,
    fanout: 3_000,
    fanout_peers: 10,
    idle: Duration::from_secs(3),
    history: 10_000,
    tui_runs: 3,
};

/// A raw API connection: writes pre-encoded requests, reads lines.
struct Raw {
    r: OwnedReadHalf,
    w: OwnedWriteHalf,
    buf: Vec<u8>,
    start: usize,
}

impl Raw {
    async fn connect(socket: &Path) -> Self {
        let (r, w) = UnixStream::connect(socket).await.unwrap().into_split();
        Self {
            r,
            w,
            buf: Vec::with_capacity(1 << 20),
            start: 0,
        }
    }

    async fn send(&mut self, line: &[u8]) {
        self.w.write_all(line).await.unwrap();
    }

    /// The next line, or `None` at `deadline` or end of stream.
    async fn line(&mut self, deadline: tokio::time::Instant) -> Option<&[u8]> {
        loop {
            if let Some(i) = memchr(b'\n', &self.buf[self.start..]) {
                let s = self.start;
                self.start += i + 1;
                return Some(&self.buf[s..s + i]);
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = tokio::time::timeout_at(deadline, self.r.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Subscribes (live) and returns once the response is read.
    async fn subscribe(socket: &Path) -> Self {
        let mut c = Self::connect(socket).await;
        c.send(b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"subscribe\"}\n")
            .await;
        let d = tokio::time::Instant::now() + Duration::from_secs(10);
        let l = c.line(d).await.expect("subscribe answer");
        assert!(contains(l, b"\"result\""));
        c
    }
}

fn memchr(b: u8, h: &[u8]) -> Option<usize> {
    h.iter().position(|&x| x == b)
}

fn contains(h: &[u8], needle: &[u8]) -> bool {
    h.windows(needle.len()).any(|w| w == needle)
}

fn say_line(id: u64, text: &str) -> Vec<u8> {
    Call::Say(SayParams {
        text: text.into(),
        action: false,
    })
    .encode_request(id)
}

/// Counts message events carrying `tag` until `want`, or until nothing
/// arrives for `quiet`. Returns (count, when the last one came, gaps).
async fn count(sub: &mut Raw, tag: &[u8], want: usize, quiet: Duration) -> (usize, Instant, usize) {
    let (mut n, mut gaps, mut last) = (0, 0, Instant::now());
    while n < want {
        let Some(l) = sub.line(tokio::time::Instant::now() + quiet).await else {
            break;
        };
        if contains(l, b"\"kind\":\"gap\"") {
            gaps += 1;
        } else if contains(l, tag) {
            n += 1;
            last = Instant::now();
        }
    }
    (n, last, gaps)
}

/// Writes `n` says as fast as the daemon's API takes them while reading
/// their answers (a client that stops reading is stopped being read);
/// returns when all are answered.
async fn flood(socket: &Path, tag: &str, n: usize) -> Duration {
    let mut all = Vec::with_capacity(n * 80);
    for i in 0..n {
        all.extend_from_slice(&say_line(i as u64, &format!("{tag} {i}")));
    }
    let Raw { r, mut w, .. } = Raw::connect(socket).await;
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for chunk in all.chunks(64 * 1024) {
            w.write_all(chunk).await.unwrap();
        }
        w
    });
    let mut answers = Raw {
        r,
        w: UnixStream::pair().unwrap().0.into_split().1,
        buf: Vec::new(),
        start: 0,
    };
    let mut answered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while answered < n {
        let l = answers.line(deadline).await.expect("answers");
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
async fn link_drops(d: &Daemon) -> usize {
    std::fs::read_to_string(&d.log)
        .unwrap_or_default()
        .matches("peer stopped reading")
        .count()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// (CPU time in ns over all threads, context switches).
fn cpu_and_switches(pid: u32) -> (u64, u64) {
    let (mut cpu, mut sw) = (0, 0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    for t in tasks.flatten() {
        let p = t.path();
        // schedstat: ns on CPU; finer than stat's clock ticks.
        if let Ok(s) = std::fs::read_to_string(p.join("schedstat")) {
            cpu += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        } else if let Ok(s) = std::fs::read_to_string(p.join("stat")) {
            let f: Vec<&str> = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
            cpu += ticks * 10_000_000;
        }
        if let Ok(s) = std::fs::read_to_string(p.join("status")) {
            for l in s.lines() {
                if l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
                {
                    sw += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    (cpu, sw)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn latency(c: &Counts) -> (f64, f64) {
    let net = TestNet::new().quiet();
    let a = net.daemon("a").await;
    let b = net.daemon("b").await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(10)).await;
    let mut sub = Raw::subscribe(&b.socket).await;
    let mut tx = Raw::connect(&a.socket).await;
    let Raw {
        r: answers,
        w: mut tx_w,
        ..
    } = tx;
    // Answers from alice are drained aside; only bob's events are timed.
    let drain = tokio::spawn(async move {
        let mut r = answers;
        let mut buf = [0u8; 65536];
        while r.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let mut samples = Vec::with_capacity(c.latency);
    for i in 0..c.warmup + c.latency {
        let line = say_line(i as u64, &format!("lat {i}"));
        let t0 = Instant::now();
        tx_w.write_all(&line).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
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
    tx = Raw::connect(&a.socket).await;
    drop(tx);
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

async fn throughput(c: &Counts) -> (f64, usize) {
    let net = TestNet::new().quiet();
    // a holds every event of the run, so a dropped link would show.
    let a = net
        .daemon_with("a", &["--history", &(c.throughput + 1000).to_string()])
        .await;
    let b = net.daemon_with("b", &["--history", "1000"]).await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(10)).await;
    let mut sub = Raw::subscribe(&b.socket).await;
    let n = c.throughput;
    let started = Instant::now();
    let (sent_in, (got, last, gaps)) = tokio::join!(
        flood(&a.socket, "tp", n),
        count(&mut sub, b"\"text\":\"tp ", n, Duration::from_secs(3)),
    );
    let secs = last.duration_since(started).as_secs_f64();
    // If anything was lost, say where: a gap is this process reading too
    // slowly; a leave is the link dropped as not reading.
    let drops = link_drops(&a).await;
    eprintln!(
        "  throughput: {n} sent in {:.0} ms, {got} received in {:.0} ms, {gaps} subscriber gaps, {drops} link drops",
        sent_in.as_secs_f64() * 1e3,
        secs * 1e3
    );
    (got as f64 / secs, n - got)
}

async fn fanout(c: &Counts) -> (usize, f64, usize, f64) {
    let net = TestNet::new().quiet();
    let mut daemons = Vec::new();
    for i in 0..c.fanout_peers {
        daemons.push(net.daemon(&format!("p{i:02}")).await);
    }
    let refs: Vec<&Daemon> = daemons.iter().collect();
    wait_full_mesh(&refs, Duration::from_secs(30)).await;

    // A newcomer: from its start to linked with all of them.
    let started = Instant::now();
    let newcomer = net.spawn("newcomer", &[]);
    let socket = newcomer.socket.clone();
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut joins = Raw::connect(&socket).await;
    joins
        .send(b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"subscribe\",\"params\":{\"since\":0}}\n")
        .await;
    let (n_joins, last_join, _) = count(
        &mut joins,
        b"\"kind\":\"join\"",
        c.fanout_peers,
        Duration::from_secs(5),
    )
    .await;
    let join_ms = last_join.duration_since(started).as_secs_f64() * 1e3;
    assert_eq!(
        n_joins, c.fanout_peers,
        "the newcomer linked with every peer"
    );
    drop(newcomer);
    // Wait for the others to see it go, so the fan-out has 19 receivers.
    let sender = &daemons[0];
    wait_until(
        "the newcomer to be gone",
        Duration::from_secs(10),
        || async {
            let p = sender.try_peers().await.ok()?;
            (p.iter().filter(|p| p.connected).count() == c.fanout_peers - 1).then_some(())
        },
    )
    .await;

    let n = c.fanout;
    let mut counters = Vec::new();
    for d in &daemons[1..] {
        let mut sub = Raw::subscribe(&d.socket).await;
        // Each receiver is read by a task of its own, all at once.
        counters.push(tokio::spawn(async move {
            count(&mut sub, b"\"text\":\"fan ", n, Duration::from_secs(5)).await
        }));
    }
    let t0 = Instant::now();
    flood(&sender.socket, "fan", n).await;
    let mut results = Vec::new();
    for h in counters {
        results.push(h.await.unwrap());
    }
    let last = results.iter().map(|r| r.1).max().unwrap_or(t0);
    let got: usize = results.iter().map(|r| r.0).sum();
    let gaps: usize = results.iter().map(|r| r.2).sum();
    let drops = link_drops(sender).await;
    let receivers = c.fanout_peers - 1;
    let rate = n as f64 / last.duration_since(t0).as_secs_f64();
    eprintln!(
        "  fan-out: {n} to {receivers} peers each, {got} of {} delivered, {gaps} subscriber gaps, {drops} link drops",
        n * receivers
    );
    (c.fanout_peers, rate, n * receivers - got, join_ms)
}

async fn memory_and_idle(c: &Counts) -> (u64, f64, f64, u64) {
    let net = TestNet::new().quiet();
    let a = net.daemon("a").await;
    let b = net
        .daemon_with("b", &["--history", &c.history.to_string()])
        .await;
    wait_full_mesh(&[&a, &b], Duration::from_secs(10)).await;
    let pid = a.status().await.pid;
    let (cpu0, sw0) = cpu_and_switches(pid);
    let t0 = Instant::now();
    tokio::time::sleep(c.idle).await;
    let secs = t0.elapsed().as_secs_f64();
    let (cpu1, sw1) = cpu_and_switches(pid);
    let idle_rss = rss_kib(pid).unwrap_or(0);
    let cpu_pct = (cpu1 - cpu0) as f64 / 1e9 / secs * 100.0;
    let wakeups = (sw1 - sw0) as f64 / secs;
    eprintln!(
        "  idle {:.0} s: {:.3} ms CPU, {} context switches",
        secs,
        (cpu1 - cpu0) as f64 / 1e6,
        sw1 - sw0
    );

    // b holds 10,000 messages of ~100 bytes from a.
    let mut sub = Raw::subscribe(&b.socket).await;
    let text = "x".repeat(90);
    let tag = format!("mem {text}");
    let (_, (got, _, _)) = tokio::join!(
        flood(&a.socket, &tag, c.history),
        count(
            &mut sub,
            b"\"text\":\"mem ",
            c.history,
            Duration::from_secs(5)
        ),
    );
    assert_eq!(got, c.history);
    drop(sub);
    let b_pid = b.status().await.pid;
    (idle_rss, cpu_pct, wakeups, rss_kib(b_pid).unwrap_or(0))
}

/// Attaching the real TUI in tmux to a daemon holding 1,000 messages; the
/// client reports the time from its start to the first frame with them.
async fn tui_first_frame(c: &Counts) -> Option<f64> {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("  tui: skipped, tmux is not installed");
        return None;
    }
    let net = TestNet::new().quiet();
    let a = net.daemon("a").await;
    let client = a.client().await;
    let mut waits = Vec::new();
    for i in 0..1000 {
        waits.push(
            client
                .send(&Call::Say(SayParams {
                    text: format!("held message {i} with some words in it"),
                    action: false,
                }))
                .await
                .unwrap(),
        );
    }
    for w in waits {
        w.wait::<shared::api::SayResult>().await.unwrap();
    }
    let p2pchat = daemon_bin().with_file_name("p2pchat");
    let server = format!("p2pchat-bench-{}", std::process::id());
    let mut times = Vec::new();
    for run in 0..c.tui_runs {
        let report = net.dir.path().join(format!("frame-{run}"));
        let cmd = format!(
            "{} --no-autostart --socket {} --first-frame-report {}",
            p2pchat.display(),
            a.socket.display(),
            report.display()
        );
        let start = || {
            Command::new("tmux")
                .args([
                    "-L",
                    &server,
                    "-f",
                    "/dev/null",
                    "new-session",
                    "-d",
                    "-x",
                    "120",
                    "-y",
                    "40",
                    &cmd,
                ])
                .output()
        };
        // A tmux server that just exited can refuse one start; try twice.
        let out = match start() {
            Ok(o) if o.status.success() => o,
            _ => start().unwrap(),
        };
        if !out.status.success() {
            eprintln!(
                "  tui: tmux failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        let t = Instant::now();
        while !report.exists()
            || std::fs::read_to_string(&report)
                .unwrap_or_default()
                .trim()
                .is_empty()
        {
            if t.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Ok(ms) = std::fs::read_to_string(&report)
            .unwrap_or_default()
            .trim()
            .parse::<f64>()
        {
            times.push(ms);
        }
        let _ = Command::new("tmux")
            .args(["-L", &server, "kill-server"])
            .status();
    }
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied()
}

struct Row {
    figure: &'static str,
    goal: &'static str,
    measured: String,
    ok: Option<bool>,
}

fn row(
    figure: &'static str,
    goal: &'static str,
    v: Option<f64>,
    unit: &str,
    ok: impl Fn(f64) -> bool,
) -> Row {
    Row {
        figure,
        goal,
        measured: v.map_or("-".into(), |v| {
            if v >= 100.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.3} {unit}")
            }
        }),
        ok: v.map(ok),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let c = if quick { &QUICK } else { &FULL };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    eprintln!(
        "p2pchat bench ({}), daemons on loopback",
        if quick { "quick" } else { "full" }
    );
    let report = rt.block_on(async {
        eprintln!("latency: {} says after {} warm-up", c.latency, c.warmup);
        let (p50, p99) = latency(c).await;
        eprintln!("throughput: {} says A -> B", c.throughput);
        let (tp, tp_lost) = throughput(c).await;
        eprintln!("fan-out and join: a mesh of {}", c.fanout_peers);
        let (peers, fan, fan_lost, join_ms) = fanout(c).await;
        eprintln!("memory and idle");
        let (idle_rss, idle_cpu, wakeups, rss_10k) = memory_and_idle(c).await;
        eprintln!("tui attach");
        let tui = tui_first_frame(c).await;
        json!({
            "latency_p50_us": p50,
            "latency_p99_us": p99,
            "throughput_msgs_per_s": tp,
            "throughput_lost": tp_lost,
            "fanout_peers": peers,
            "fanout_msgs_per_s": fan,
            "fanout_lost": fan_lost,
            "join_ms": join_ms,
            "idle_rss_kib": idle_rss,
            "rss_10k_kib": rss_10k,
            "idle_cpu_pct": idle_cpu,
            "idle_wakeups_per_s": wakeups,
            "tui_first_frame_ms": tui,
            "quick": quick,
        })
    });
    let f = |k: &str| report[k].as_f64();
    let rows = [
        row(
            "latency p50 (say on A -> event on B)",
            "<= 100 us",
            f("latency_p50_us"),
            "us",
            |v| v <= 100.0,
        ),
        row("latency p99", "<= 300 us", f("latency_p99_us"), "us", |v| {
            v <= 300.0
        }),
        row(
            "throughput A -> B",
            ">= 100000 msg/s",
            f("throughput_msgs_per_s"),
            "msg/s",
            |v| v >= 100_000.0,
        ),
        row("throughput lost", "0", f("throughput_lost"), "msgs", |v| {
            v == 0.0
        }),
        row(
            "fan-out, every message to all",
            ">= 20000 msg/s",
            f("fanout_msgs_per_s"),
            "msg/s",
            |v| v >= 20_000.0,
        ),
        row("fan-out lost", "0", f("fanout_lost"), "msgs", |v| v == 0.0),
        row(
            "a new peer fully linked",
            "<= 300 ms",
            f("join_ms"),
            "ms",
            |v| v <= 300.0,
        ),
        row("idle RSS", "<= 4096 KiB", f("idle_rss_kib"), "KiB", |v| {
            v <= 4096.0
        }),
        row(
            "RSS with 10,000 held",
            "<= 12288 KiB",
            f("rss_10k_kib"),
            "KiB",
            |v| v <= 12288.0,
        ),
        row("idle CPU", "<= 0.02 %", f("idle_cpu_pct"), "%", |v| {
            v <= 0.02
        }),
        row(
            "idle wakeups",
            "a few per s",
            f("idle_wakeups_per_s"),
            "/s",
            |v| v <= 5.0,
        ),
        row(
            "TUI attach, 1,000 held -> frame",
            "<= 50 ms",
            f("tui_first_frame_ms"),
            "ms",
            |v| v <= 50.0,
        ),
    ];
    println!();
    println!("{:<40} {:>16} {:>16}  meets", "figure", "goal", "measured");
    for r in &rows {
        let ok = match r.ok {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!("{:<40} {:>16} {:>16}  {ok}", r.figure, r.goal, r.measured);
    }
    println!(
        "fan-out mesh: {} peers; finished in {:.0} s",
        report["fanout_peers"],
        started.elapsed().as_secs_f64()
    );
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n").unwrap();
    println!("report: {}", path.display());
}

fn target_dir() -> PathBuf {
    // target/release/examples/bench -> target
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}
