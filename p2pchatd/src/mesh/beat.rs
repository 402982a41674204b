//! One clock for every link: a beat on wall-clock boundaries (every 2 s by
//! default). On a beat each link sends a heartbeat if it has been silent
//! long enough and judges its peer's silence, and discovery announces.
//!
//! A timer per link woke an idle daemon once per link at scattered times.
//! Daemons whose clocks agree (NTP on a LAN) now beat at the same moment:
//! their heartbeats cross at once, and a daemon wakes a few times per beat
//! however many links it has.
//!
//! The beat is a kernel timer (timerfd) on the wall clock, not a tokio
//! sleep: tokio's timer wheel wakes for a deadline seconds away once at
//! its coarser slot (up to 64 ms early, more past 4 s) and again at the
//! deadline, which doubled an idle daemon's wakeups. The kernel timer
//! wakes once, at the boundary itself; when the wall clock is set, it
//! says so and is armed again on the new time.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::sleep;
use tracing::warn;

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

/// A timerfd, for tokio's reactor.
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Timer {
    /// A wall-clock timer that fires on every boundary of `period`.
    #[allow(unsafe_code)]
    fn new(period: Duration) -> io::Result<AsyncFd<Self>> {
        let timer = TimerFd::new(
            ClockId::CLOCK_REALTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        let timer = Self(timer);
        timer.arm(period)?;
        // SAFETY: the registered descriptor is the `OwnedFd` inside the
        // `TimerFd` this `Timer` owns and never replaces: it stays open and
        // the same for as long as the `AsyncFd` holds the `Timer`.
        unsafe { AsyncFd::register_with_interest(timer, Interest::READABLE) }
            .map_err(io::Error::from)
    }

    /// Arms the timer on the next boundary after now, then every period.
    fn arm(&self, period: Duration) -> nix::Result<()> {
        let now = SystemTime::now();
        let first = now + until_boundary(now, period);
        let first = first.duration_since(UNIX_EPOCH).unwrap_or_default();
        self.0.set(
            Expiration::IntervalDelayed(TimeSpec::from(first), TimeSpec::from(period)),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET,
        )
    }

    /// Takes the expirations the timer holds: `Ok(true)` when it fired,
    /// `Ok(false)` when it had not (a spurious wakeup); a clock that was
    /// set is re-armed and counts as a beat.
    fn take(&self, period: Duration) -> io::Result<bool> {
        let mut buf = [0u8; 8];
        match nix::unistd::read(self.0.as_fd(), &mut buf) {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN) => Ok(false),
            Err(Errno::ECANCELED) => {
                self.arm(period)?;
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Beats until the mesh stops.
pub(super) async fn run(mesh: Mesh) {
    let period = mesh.timing().beat();
    let cancel = mesh.cancel_token().clone();
    let mut timer = match Timer::new(period) {
        Ok(t) => Some(t),
        Err(e) => {
            warn!(error = %e, "no kernel timer for the beat; using tokio's");
            None
        }
    };
    loop {
        let fired = tokio::select! {
            () = cancel.cancelled() => break,
            fired = wait(timer.as_ref(), period) => fired,
        };
        match fired {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                warn!(error = %e, "the beat's kernel timer failed; using tokio's");
                timer = None;
                continue;
            }
        }
        let heartbeat = mesh.heartbeat();
        mesh.inner.beats.send_modify(|b| {
            b.n += 1;
            b.heartbeat = heartbeat;
        });
    }
}

/// Waits for the next beat: on the kernel timer when there is one.
async fn wait(timer: Option<&AsyncFd<Timer>>, period: Duration) -> io::Result<bool> {
    let Some(timer) = timer else {
        sleep(until_boundary(SystemTime::now(), period)).await;
        return Ok(true);
    };
    let mut ready = timer.readable().await?;
    // One read takes every expiration, so the timer is drained either way.
    let fired = ready.get_inner().take(period)?;
    ready.clear_ready();
    Ok(fired)
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

    fn since_boundary(period: Duration) -> Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Duration::from_nanos(u64::try_from(now.as_nanos() % period.as_nanos()).unwrap())
    }

    #[tokio::test]
    async fn the_kernel_timer_fires_once_per_boundary() {
        let period = Duration::from_millis(100);
        let timer = Timer::new(period).unwrap();
        // Not yet due: a wakeup without an expiration is no beat.
        assert!(!timer.get_ref().take(period).unwrap());
        let mut on_time = 0;
        for _ in 0..3 {
            assert!(wait(Some(&timer), period).await.unwrap());
            on_time += usize::from(since_boundary(period) < period / 2);
        }
        assert!(on_time >= 2, "{on_time} of 3 beats fell on a boundary");
        // Each fire was taken whole: nothing is left until the next one.
        assert!(!timer.get_ref().take(period).unwrap());
    }
}
