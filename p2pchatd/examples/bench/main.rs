//! `make bench`: the numbers of DESIGN §6, measured on real daemons, and a
//! scaling table of how they grow with the room.
//!
//! Every daemon is a release process on loopback with a multicast group and
//! port of this run's own, driven through its local API the way a client
//! would (pipelined JSON-RPC on the Unix socket). Prints the goals and the
//! scaling table and writes `target/bench/report.json`. `--quick`
//! (`make bench QUICK=1`) uses smaller counts. Nothing here is asserted:
//! figures are reported, and judged against the goals in [`goals`].
// A harness: a step that fails ends the run, and says which.
#![allow(clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]
// The report is one `json!` with many keys.
#![recursion_limit = "256"]

mod catchup;
mod drive;
mod files;
mod goals;
mod hostile;
mod idle;
mod pair;
mod scale;
mod store;
mod tui;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

/// How big each scenario is.
pub struct Counts {
    warmup: usize,
    latency: usize,
    throughput: usize,
    /// Noise handshakes timed.
    handshakes: usize,
    fanout: usize,
    idle: Duration,
    history: usize,
    tui_runs: usize,
    /// Lines flooded into one daemon's store, then held over a restart.
    stored: usize,
    /// Lines said while a peer was away, caught up when it is back.
    missed: usize,
    /// A quick run: smaller counts, no waiting out expiries.
    quick: bool,
    /// Mesh sizes of the scaling table; the one of DESIGN's fan-out and
    /// join goals (20) is among them.
    scale: &'static [usize],
}

/// The mesh size DESIGN's fan-out and join goals speak of.
const GOAL_MESH: usize = 20;
/// The mesh size of issue 10's idle goals (full runs only).
const BIG_MESH: usize = 50;

const FULL: Counts = Counts {
    warmup: 1_000,
    latency: 10_000,
    throughput: 200_000,
    handshakes: 200,
    fanout: 20_000,
    idle: Duration::from_secs(10),
    history: 10_000,
    tui_runs: 5,
    stored: 1_000_000,
    missed: 10_000,
    quick: false,
    scale: &[5, 10, GOAL_MESH, BIG_MESH],
};

const QUICK: Counts = Counts {
    warmup: 200,
    latency: 2_000,
    throughput: 30_000,
    handshakes: 50,
    fanout: 3_000,
    idle: Duration::from_secs(3),
    history: 10_000,
    tui_runs: 3,
    stored: 100_000,
    missed: 10_000,
    quick: true,
    scale: &[5, GOAL_MESH],
};

fn main() {
    let c = if std::env::args().any(|a| a == "--quick") {
        &QUICK
    } else {
        &FULL
    };
    let quick = c.quick;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    eprintln!(
        "p2pchat bench ({}), daemons on loopback",
        if quick { "quick" } else { "full" }
    );
    let mut report = rt.block_on(async {
        eprintln!("latency: {} says after {} warm-up", c.latency, c.warmup);
        let (p50, p99) = pair::latency(c).await;
        eprintln!("throughput: {} says A -> B", c.throughput);
        let (tp, tp_lost) = pair::throughput(c).await;
        eprintln!("encryption: throughput encrypted and plaintext, 3 runs each; handshakes");
        let ratio = pair::encrypted_throughput_ratio(c).await;
        let handshake = pair::handshake_ms(c).await;
        eprintln!(
            "scale: meshes of {:?}, {} says fanned out in each",
            c.scale, c.fanout
        );
        let mut rows = Vec::new();
        for &peers in c.scale {
            rows.push(scale::mesh_of(c, peers).await);
        }
        eprintln!("memory and idle");
        let wakeup_us = idle::bare_wakeup_us();
        eprintln!("  a bare wakeup costs this machine {wakeup_us:.0} us of CPU");
        let idle = idle::memory_and_idle(c).await;
        eprintln!("tui attach");
        let tui = tui::first_frame(c).await;
        eprintln!("under attack (1,024 open files)");
        let hostile = hostile::flood(c).await;
        eprintln!(
            "store: {} says into one daemon's store, then a restart",
            c.stored
        );
        let stored = store::store(c).await;
        eprintln!("catch-up: {} lines said while a peer was away", c.missed);
        let (catchup_ms, catchup_lost) = catchup::catch_up(c).await;
        eprintln!(
            "files: one big file, {} small ones, chat during a transfer",
            1000
        );
        let files = files::files(c).await;
        let goal_mesh = rows.iter().find(|r| r.peers == GOAL_MESH);
        let big_mesh = rows.iter().find(|r| r.peers == BIG_MESH);
        let room = goal_mesh.and_then(|r| r.room.as_ref());
        json!({
            "latency_p50_us": p50,
            "latency_p99_us": p99,
            "throughput_msgs_per_s": tp,
            "throughput_lost": tp_lost,
            "encrypted_throughput_ratio": ratio,
            "handshake_ms": handshake,
            "fanout_peers": GOAL_MESH,
            "fanout_msgs_per_s": goal_mesh.map(|r| r.fanout_msgs_per_s),
            "fanout_lost": goal_mesh.map(|r| r.fanout_lost),
            "join_ms": goal_mesh.map(|r| r.join_ms),
            "mesh50_idle_cpu_ms_per_10s": big_mesh.map(|r| r.idle_cpu_pct_per_daemon * 100.0),
            "mesh50_idle_wakeups_per_s": big_mesh.map(|r| r.idle_wakeups_per_s),
            "idle_rss_kib": idle.rss_kib,
            "rss_10k_kib": idle.rss_10k_kib,
            "rss_10k_rest_kib": idle.rss_10k_rest_kib,
            "idle_cpu_pct": idle.cpu_pct,
            "idle_wakeups_per_s": idle.wakeups_per_s,
            "bare_wakeup_us": wakeup_us,
            "tui_first_frame_ms": tui,
            "hostile_connections": hostile.connections,
            "hostile_announces": hostile.announces,
            "hostile_join_ms": hostile.join_ms,
            "hostile_api_worst_ms": hostile.api_worst_ms,
            "hostile_rss_growth_kib": hostile.rss_growth_kib,
            "hostile_rss_after_kib": hostile.rss_after_kib,
            "store_msgs_per_s": stored.msgs_per_s,
            "store_lost": stored.lost,
            "stored": stored.stored,
            "restart_ready_ms": stored.restart_ready_ms,
            "search_ms": stored.search_ms,
            "catchup_10k_ms": catchup_ms,
            "catchup_lost": catchup_lost,
            "file_mb_per_s": files.mb_per_s,
            "file_disk_mb_per_s": files.disk_mb_per_s,
            "file_landed_in": files.landed_in,
            "file_bytes": files.big_bytes,
            "small_files_mb_per_s": files.small_mb_per_s,
            "chat_p99_idle_us": files.chat_p99_idle_us,
            "chat_p99_during_transfer_us": files.chat_p99_during_us,
            "chat_p99_during_transfer_ratio": files.chat_p99_during_us / files.chat_p99_idle_us,
            "chat_lines_during_transfer": files.chat_during_lines,
            "scale": rows.iter().map(scale::ScaleRow::to_json).collect::<Vec<_>>(),
            "room_members": room.map(|r| r.members),
            "room_fanout_msgs_per_s": room.map(|r| r.msgs_per_s),
            "room_fanout_lost": room.map(|r| r.lost),
            "room_outsider_lines": room.map(|r| r.outsider_lines),
            "room_outsider_link_lines": room.map(|r| r.outsider_link_lines),
            "room_member_link_lines": room.map(|r| r.member_link_lines),
            "room_outsider_cpu_ms": room.map(|r| r.outsider_cpu_ms),
            "room_member_cpu_ms": room.map(|r| r.member_cpu_ms),
            "quick": quick,
        })
    });
    report["goals"] = goals::judge(&report);
    println!();
    let (measured, met) = goals::print_table(&report);
    println!();
    print_scale(&report["scale"]);
    println!(
        "\n{met} of {measured} goals met; finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let path = dir.join("report.json");
    let text = serde_json::to_string_pretty(&report).expect("report") + "\n";
    std::fs::write(&path, text).expect("write the report");
    println!("report: {}", path.display());
}

fn print_scale(rows: &serde_json::Value) {
    println!(
        "{:>6} {:>10} {:>14} {:>18} {:>12} {:>14} {:>8}",
        "peers",
        "join ms",
        "RSS KiB/daemon",
        "idle CPU ms/10 s",
        "wakeups/s",
        "fan-out msg/s",
        "lost"
    );
    for r in rows.as_array().into_iter().flatten() {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:>6} {:>10.1} {:>14.0} {:>18.3} {:>12.1} {:>14.0} {:>8}",
            r["peers"].as_u64().unwrap_or(0),
            f("join_ms"),
            f("rss_kib_per_daemon"),
            // % of one CPU over 10 s, in ms: pct / 100 * 10_000 ms.
            f("idle_cpu_pct_per_daemon") * 100.0,
            f("idle_wakeups_per_s"),
            f("fanout_msgs_per_s"),
            r["fanout_lost"].as_u64().unwrap_or(0),
        );
    }
}

fn target_dir() -> PathBuf {
    // target/release/examples/bench -> target; built for an explicit
    // target (`make`'s static build), target/<triple>/release/... -> target.
    let exe = std::env::current_exe().expect("bench path");
    let Some(dir) = exe.ancestors().nth(3) else {
        return PathBuf::from("target");
    };
    match dir.parent() {
        Some(up) if up.join("CACHEDIR.TAG").exists() => up.to_path_buf(),
        _ => dir.to_path_buf(),
    }
}
