//! One clock for every link: a beat on wall-clock boundaries (every 2 s by
//! default). On a beat each link sends a heartbeat if it has been silent
//! long enough and judges its peer's silence, and discovery announces.
//!
//! A timer per link woke an idle daemon once per link at scattered times.
//! Daemons whose clocks agree (NTP on a LAN) now beat at the same moment:
//! their heartbeats cross at once, and a daemon wakes a few times per beat
//! however many links it has.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::time::sleep;

use super::Mesh;

/// What each beat hands the links: its number, and the one heartbeat line
/// every link that needs one sends (built once, not once per link).
#[derive(Debug, Clone, Default)]
pub(crate) struct Beat {
    pub(crate) n: u64,
    pub(crate) heartbeat: Bytes,
}

/// Time from `now` to the next multiple of `period` since the epoch, at
/// least half a period away: a timer that wakes a little early (the
/// monotonic clock and a slewed wall clock disagree) does not beat twice.
fn until_boundary(now: SystemTime, period: Duration) -> Duration {
    let period_ns = period.as_nanos().max(1);
    let since_epoch = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut left = period_ns - since_epoch % period_ns;
    if left < period_ns / 2 {
        left += period_ns;
    }
    Duration::from_nanos(u64::try_from(left).unwrap_or(u64::MAX))
}

/// Beats until the mesh stops.
pub(super) async fn run(mesh: Mesh) {
    let period = mesh.timing().beat();
    let cancel = mesh.cancel_token().clone();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = sleep(until_boundary(SystemTime::now(), period)) => {}
        }
        let heartbeat = mesh.heartbeat();
        mesh.inner.beats.send_modify(|b| {
            b.n += 1;
            b.heartbeat = heartbeat;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_fall_on_wall_clock_boundaries() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let two = Duration::from_secs(2);
        assert_eq!(until_boundary(at(10_000), two), two);
        assert_eq!(until_boundary(at(10_001), two), Duration::from_millis(1999));
        // Just before a boundary (woken early): the one after it.
        assert_eq!(until_boundary(at(11_999), two), Duration::from_millis(2001));
        // Two daemons started apart beat together.
        let a = at(4_300) + until_boundary(at(4_300), two);
        let b = at(4_900) + until_boundary(at(4_900), two);
        assert_eq!(a, b);
    }
}
