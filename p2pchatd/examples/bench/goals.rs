//! DESIGN's goals, each written once as data: the table, `report.json`'s
//! `goals` and the verdicts all come from [`GOALS`].

use serde_json::{Value, json};

use Cmp::{AtLeast, AtMost};

/// Which side of the goal a figure must stay on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmp {
    AtMost,
    AtLeast,
}

/// One goal: the report key it judges, what it is, and the bound.
#[derive(Debug)]
pub(crate) struct Goal {
    pub key: &'static str,
    pub figure: &'static str,
    pub unit: &'static str,
    pub cmp: Cmp,
    pub goal: f64,
}

impl Goal {
    const fn new(
        key: &'static str,
        figure: &'static str,
        cmp: Cmp,
        goal: f64,
        unit: &'static str,
    ) -> Self {
        Self {
            key,
            figure,
            unit,
            cmp,
            goal,
        }
    }

    pub(crate) fn met(&self, v: f64) -> bool {
        match self.cmp {
            AtMost => v <= self.goal,
            AtLeast => v >= self.goal,
        }
    }

    fn goal_text(&self) -> String {
        let op = match self.cmp {
            AtMost => "<=",
            AtLeast => ">=",
        };
        format!("{op} {} {}", number(self.goal), self.unit)
    }
}

/// DESIGN §6.
#[rustfmt::skip]
pub(crate) const GOALS: &[Goal] = &[
    Goal::new("latency_p50_us", "latency p50 (say on A -> event on B)", AtMost, 100.0, "us"),
    Goal::new("latency_p99_us", "latency p99", AtMost, 300.0, "us"),
    Goal::new("throughput_msgs_per_s", "throughput A -> B", AtLeast, 100_000.0, "msg/s"),
    Goal::new("throughput_lost", "throughput lost", AtMost, 0.0, "msgs"),
    // DESIGN §8, issue 11: what encrypted links cost.
    Goal::new("encrypted_throughput_ratio", "throughput encrypted / plaintext", AtLeast, 0.8, "x"),
    Goal::new("handshake_ms", "one Noise handshake, p50", AtMost, 50.0, "ms"),
    Goal::new("fanout_msgs_per_s", "fan-out, every message to all", AtLeast, 20_000.0, "msg/s"),
    Goal::new("fanout_lost", "fan-out lost", AtMost, 0.0, "msgs"),
    Goal::new("join_ms", "a new peer fully linked", AtMost, 300.0, "ms"),
    // Issue 13: a room of 10 in the mesh of 20 costs the other 10 nothing.
    Goal::new("room_outsider_lines", "room of 10 in 20: lines the 10 others got", AtMost, 0.0, "msgs"),
    Goal::new("room_fanout_lost", "room fan-out lost", AtMost, 0.0, "msgs"),
    // DESIGN §8, issue 12: with the history store open (before it, 4 MiB).
    Goal::new("idle_rss_kib", "idle RSS, store open", AtMost, 6144.0, "KiB"),
    // Held: at rest after the flood that brought them (`rss_10k_kib`, read
    // right after it, also counts the writer's queue of it).
    Goal::new("rss_10k_rest_kib", "RSS with 10,000 held, at rest", AtMost, 12288.0, "KiB"),
    Goal::new("idle_cpu_pct", "idle CPU", AtMost, 0.02, "%"),
    Goal::new("idle_wakeups_per_s", "idle wakeups (a few per s)", AtMost, 5.0, "/s"),
    Goal::new("tui_first_frame_ms", "TUI attach, 1,000 held -> frame", AtMost, 50.0, "ms"),
    // Issue 10: idle cost in a mesh of 50 (full runs), per daemon.
    Goal::new("mesh50_idle_cpu_ms_per_10s", "50-mesh idle CPU per daemon, 10 s", AtMost, 5.0, "ms"),
    Goal::new("mesh50_idle_wakeups_per_s", "50-mesh idle wakeups per daemon", AtMost, 10.0, "/s"),
    // Issue 10: under 1,000 hostile connections and 10,000 forged announces.
    Goal::new("hostile_join_ms", "under attack: a new peer linked", AtMost, 5000.0, "ms"),
    Goal::new("hostile_api_worst_ms", "under attack: slowest API answer", AtMost, 1000.0, "ms"),
    Goal::new("hostile_rss_growth_kib", "under attack: RSS growth", AtMost, 8192.0, "KiB"),
    Goal::new("hostile_rss_after_kib", "under attack: RSS once expired", AtMost, 1024.0, "KiB"),
    // Issue 12: the history store.
    Goal::new("store_msgs_per_s", "store, sustained", AtLeast, 100_000.0, "msg/s"),
    Goal::new("store_lost", "store lost", AtMost, 0.0, "msgs"),
    Goal::new("restart_ready_ms", "restart with the store full -> API", AtMost, 300.0, "ms"),
    Goal::new("search_ms", "search over the store, p50", AtMost, 50.0, "ms"),
    Goal::new("catchup_10k_ms", "10,000 missed lines to a returning peer", AtMost, 1000.0, "ms"),
    Goal::new("catchup_lost", "catch-up lost", AtMost, 0.0, "msgs"),
    // Issue 15: file transfer, encrypted, on loopback (MB: 10^6 bytes).
    Goal::new("file_mb_per_s", "one 1 GiB file", AtLeast, 400.0, "MB/s"),
    Goal::new("small_files_mb_per_s", "1,000 files of 4 KiB", AtLeast, 25.0, "MB/s"),
    Goal::new("chat_p99_during_transfer_ratio", "chat p99 during a transfer / idle", AtMost, 2.0, "x"),
];

fn number(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Each goal with its measured figure and verdict, for `report.json`.
pub(crate) fn judge(report: &Value) -> Value {
    GOALS
        .iter()
        .map(|g| {
            let v = report[g.key].as_f64();
            json!({
                "key": g.key,
                "goal": g.goal,
                "cmp": match g.cmp { AtMost => "at_most", AtLeast => "at_least" },
                "measured": v,
                "met": v.map(|v| g.met(v)),
            })
        })
        .collect()
}

/// The table of goals; returns how many were measured and how many met.
pub(crate) fn print_table(report: &Value) -> (usize, usize) {
    let (mut measured, mut met) = (0, 0);
    println!("{:<40} {:>16} {:>16}  meets", "figure", "goal", "measured");
    for g in GOALS {
        let v = report[g.key].as_f64();
        let verdict = match v.map(|v| g.met(v)) {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        measured += usize::from(v.is_some());
        met += usize::from(v.is_some_and(|v| g.met(v)));
        let shown = v.map_or("-".into(), |v| format!("{} {}", number(v), g.unit));
        println!(
            "{:<40} {:>16} {:>16}  {verdict}",
            g.figure,
            g.goal_text(),
            shown
        );
    }
    (measured, met)
}
