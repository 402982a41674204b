//! Catch-up: how soon a peer that was away has what it missed.

use std::time::Duration;

use nix::sys::signal::Signal;
use shared::api::{ServerMessage, decode_server_message};
use shared::event::EventBody;
use testkit::raw::Raw;
use testkit::{TestNet, wait_full_mesh};

use crate::Counts;
use crate::drive::flood;

/// How long the bench waits for any one step.
const WAIT: Duration = Duration::from_secs(60);
/// A returning peer that hears nothing for this long has all it will get.
const QUIET: Duration = Duration::from_secs(10);

/// Alice says `c.missed` lines while Carol is stopped; Carol starts again:
/// milliseconds from her link to Alice until she holds every line (by her
/// own events' times), and how many she did not get.
pub(crate) async fn catch_up(c: &Counts) -> (f64, usize) {
    let net = TestNet::new().quiet();
    let a = net.daemon("alice").await;
    let mut carol = net.daemon("carol").await;
    wait_full_mesh(&[&a, &carol], WAIT).await;
    let before = carol.history(1).await.last().map_or(0, |e| e.cursor);
    carol.signal(Signal::SIGTERM);
    assert!(carol.exit_within(WAIT).await.success(), "carol stops");
    drop(carol);
    flood(&a.socket, "missed", c.missed).await;

    let carol = net.spawn("carol", &[]);
    carol.wait_ready().await;
    // Everything after what she had: her link to alice, then the lines.
    let mut events = Raw::subscribe(&carol.socket, Some(before)).await;
    let (mut linked, mut last, mut got) = (None, None, 0);
    while got < c.missed {
        let Some(l) = events.line(tokio::time::Instant::now() + QUIET).await else {
            break;
        };
        let Ok(ServerMessage::Event(e)) = decode_server_message(l) else {
            continue;
        };
        match e.body {
            EventBody::Join { .. } if linked.is_none() => linked = Some(e.ts),
            EventBody::Message { late: true, .. } => {
                got += 1;
                last = Some(e.ts);
            }
            _ => {}
        }
    }
    let ms = match (linked, last) {
        (Some(from), Some(to)) => (to - from).num_microseconds().unwrap_or(0) as f64 / 1e3,
        _ => f64::NAN,
    };
    eprintln!(
        "  {got} of {} missed lines caught up {ms:.1} ms after the link",
        c.missed
    );
    (ms, c.missed - got)
}
