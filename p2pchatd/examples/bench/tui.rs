//! The real TUI attaching in tmux to a daemon that holds 1,000 messages;
//! the client reports the time from its start to the first frame with them.

use std::time::{Duration, Instant};

use shared::api::{Call, SayParams, SayResult};
use testkit::{TestNet, Tmux, client_bin};

use crate::Counts;

/// The longest one attach may take before it counts as failed.
const FRAME_WAIT: Duration = Duration::from_secs(10);
/// How often the report file is looked at.
const POLL: Duration = Duration::from_millis(5);

/// The median time to the first frame in ms, or `None` without tmux.
pub(crate) async fn first_frame(c: &Counts) -> Option<f64> {
    Tmux::new()?;
    let net = TestNet::new().quiet();
    let a = net.daemon("a").await;
    let client = a.client().await;
    let mut waits = Vec::new();
    for i in 0..1000 {
        let say = Call::Say(SayParams {
            text: format!("held message {i} with some words in it"),
            action: false,
            ..Default::default()
        });
        waits.push(client.send(&say).await.expect("say"));
    }
    for w in waits {
        w.wait::<SayResult>().await.expect("said");
    }
    let mut times = Vec::new();
    for run in 0..c.tui_runs {
        let report = net.dir.path().join(format!("frame-{run}"));
        let cmd = format!(
            "{} --no-autostart --socket {} --first-frame-report {}",
            client_bin().display(),
            a.socket.display(),
            report.display()
        );
        // A tmux server of its own per run: a cold attach every time.
        let tmux = Tmux::new()?;
        tmux.start_sized("bench", &cmd, 120, 40);
        let t = Instant::now();
        let ms = loop {
            let said = std::fs::read_to_string(&report).unwrap_or_default();
            if let Ok(ms) = said.trim().parse::<f64>() {
                break Some(ms);
            }
            if t.elapsed() > FRAME_WAIT {
                eprintln!("  tui: no first frame within {FRAME_WAIT:?}");
                break None;
            }
            tokio::time::sleep(POLL).await;
        };
        times.extend(ms);
    }
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied()
}
