//! Giving memory back to the system after a burst.
//!
//! glibc's allocator returns freed heap to the system only from the top of
//! the heap; what a flood of connections or announces freed in the middle
//! stays mapped, so an idle daemon would keep the flood's size for good.
//! After a burst has passed, [`give_back`] asks the allocator to release
//! every free page it holds.

/// Releases the allocator's free pages to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn give_back() {
    // SAFETY: malloc_trim has no preconditions: it takes the allocator's
    // own locks, walks its free lists and only hands pages of free chunks
    // back (madvise); no memory in use is touched.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(
        released = released != 0,
        "gave free heap back to the system"
    );
}

/// Other allocators return memory by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn give_back() {}

/// When a burst has passed: many connections or events came since the
/// last give-back and few in the last beat, or a flood of announced peers
/// expired.
#[derive(Debug, Default)]
pub(crate) struct Bursts {
    connections: Count,
    events: Count,
}

/// A running total, as it stood at the last give-back and the last beat.
#[derive(Debug, Default)]
struct Count {
    at_give_back: u64,
    at_last_beat: u64,
}

impl Count {
    /// Whether `burst` came since the last give-back and fewer than
    /// `quiet` in the beat that just ended.
    fn passed(&mut self, now: u64, burst: u64, quiet: u64) -> bool {
        let was_quiet = now - self.at_last_beat < quiet;
        self.at_last_beat = now;
        was_quiet && now - self.at_give_back >= burst
    }
}

/// Connections since the last give-back that make a burst, and fewer than
/// this in one beat mean it has passed.
const BURST: u64 = 64;
const QUIET: u64 = 8;
/// Events likewise: a flood of lines leaves its buffers (the links', the
/// store's batches, SQLite's) freed but mapped. A few hundred in a beat
/// is still a busy chat, not a flood.
const EVENT_BURST: u64 = 4096;
const EVENT_QUIET: u64 = 256;

impl Bursts {
    /// Counting from `events` appended already (a history goes on from
    /// its last life's cursor): a restart is no flood.
    pub(crate) fn from(events: u64) -> Self {
        let count = Count {
            at_give_back: events,
            at_last_beat: events,
        };
        Self {
            connections: Count::default(),
            events: count,
        }
    }

    /// Called on every beat with the connections accepted and events
    /// appended so far and whether the peer table shrank; true when memory
    /// should go back now.
    pub(crate) fn beat(&mut self, accepted: u64, events: u64, table_shrank: bool) -> bool {
        let connections = self.connections.passed(accepted, BURST, QUIET);
        let lines = self.events.passed(events, EVENT_BURST, EVENT_QUIET);
        if !(table_shrank || connections || lines) {
            return false;
        }
        self.connections.at_give_back = accepted;
        self.events.at_give_back = events;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_goes_back_once_a_burst_has_passed() {
        let mut b = Bursts::default();
        assert!(!b.beat(3, 0, false), "a few connections are no burst");
        assert!(!b.beat(300, 0, false), "a burst still coming in");
        assert!(!b.beat(500, 0, false));
        assert!(b.beat(503, 0, false), "quiet again: give back");
        assert!(!b.beat(505, 0, false), "once per burst");
        assert!(b.beat(505, 0, true), "an expired flood of announces");
        give_back();
    }

    #[test]
    fn memory_goes_back_after_a_flood_of_lines() {
        let mut b = Bursts::default();
        assert!(!b.beat(0, 100, false), "a chat is no flood");
        assert!(!b.beat(0, 300, false));
        assert!(!b.beat(0, 10_000, false), "a flood still coming in");
        assert!(!b.beat(0, 20_000, false));
        assert!(b.beat(0, 20_010, false), "quiet again: give back");
        assert!(!b.beat(0, 20_050, false), "once per flood");
        // A busy chat, long enough to add up to a flood's count, is not
        // one: no beat of it is quiet... until it calms.
        let mut at = 20_050;
        for _ in 0..20 {
            at += 300;
            assert!(!b.beat(0, at, false));
        }
        assert!(b.beat(0, at + 10, false));
    }

    #[test]
    fn a_restart_is_no_flood() {
        let mut b = Bursts::from(5_000_000);
        assert!(!b.beat(0, 5_000_010, false));
        assert!(!b.beat(0, 5_000_020, false));
    }
}
