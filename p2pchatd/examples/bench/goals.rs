//! DESIGN's goals, each written once as data: the table, `report.json`'s
//! `goals` and the verdicts all come from [`GOALS`].

use serde_json::{Value, json};

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
    const fn at_most(
        key: &'static str,
        figure: &'static str,
        unit: &'static str,
        goal: f64,
    ) -> Self {
        Self {
            key,
            figure,
            unit,
            cmp: Cmp::AtMost,
            goal,
        }
    }

    const fn at_least(
        key: &'static str,
        figure: &'static str,
        unit: &'static str,
        goal: f64,
    ) -> Self {
        Self {
            key,
            figure,
            unit,
            cmp: Cmp::AtLeast,
            goal,
        }
    }

    pub(crate) fn met(&self, v: f64) -> bool {
        match self.cmp {
            Cmp::AtMost => v <= self.goal,
            Cmp::AtLeast => v >= self.goal,
        }
    }

    fn goal_text(&self) -> String {
        let op = match self.cmp {
            Cmp::AtMost => "<=",
            Cmp::AtLeast => ">=",
        };
        format!("{op} {} {}", number(self.goal), self.unit)
    }
}

/// DESIGN §6.
pub(crate) const GOALS: &[Goal] = &[
    Goal::at_most(
        "latency_p50_us",
        "latency p50 (say on A -> event on B)",
        "us",
        100.0,
    ),
    Goal::at_most("latency_p99_us", "latency p99", "us", 300.0),
    Goal::at_least(
        "throughput_msgs_per_s",
        "throughput A -> B",
        "msg/s",
        100_000.0,
    ),
    Goal::at_most("throughput_lost", "throughput lost", "msgs", 0.0),
    Goal::at_least(
        "fanout_msgs_per_s",
        "fan-out, every message to all",
        "msg/s",
        20_000.0,
    ),
    Goal::at_most("fanout_lost", "fan-out lost", "msgs", 0.0),
    Goal::at_most("join_ms", "a new peer fully linked", "ms", 300.0),
    Goal::at_most("idle_rss_kib", "idle RSS", "KiB", 4096.0),
    Goal::at_most("rss_10k_kib", "RSS with 10,000 held", "KiB", 12288.0),
    Goal::at_most("idle_cpu_pct", "idle CPU", "%", 0.02),
    Goal::at_most(
        "idle_wakeups_per_s",
        "idle wakeups (a few per s)",
        "/s",
        5.0,
    ),
    Goal::at_most(
        "tui_first_frame_ms",
        "TUI attach, 1,000 held -> frame",
        "ms",
        50.0,
    ),
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
                "cmp": match g.cmp { Cmp::AtMost => "at_most", Cmp::AtLeast => "at_least" },
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
