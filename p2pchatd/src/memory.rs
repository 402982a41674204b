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

/// When a burst has passed: many connections came since the last give-back
/// and few in the last beat, or a flood of announced peers expired.
#[derive(Debug, Default)]
pub(crate) struct Bursts {
    /// Connections accepted, as counted at the last give-back and at the
    /// last beat.
    at_give_back: u64,
    at_last_beat: u64,
}

/// Connections since the last give-back that make a burst.
const BURST: u64 = 64;
/// Fewer connections than this in one beat: the burst has passed.
const QUIET: u64 = 8;

impl Bursts {
    /// Called on every beat with the connections accepted so far and
    /// whether the peer table shrank; true when memory should go back now.
    pub(crate) fn beat(&mut self, accepted: u64, table_shrank: bool) -> bool {
        let quiet = accepted - self.at_last_beat < QUIET;
        self.at_last_beat = accepted;
        if table_shrank || (accepted - self.at_give_back >= BURST && quiet) {
            self.at_give_back = accepted;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_goes_back_once_a_burst_has_passed() {
        let mut b = Bursts::default();
        assert!(!b.beat(3, false), "a few connections are no burst");
        assert!(!b.beat(300, false), "a burst still coming in");
        assert!(!b.beat(500, false));
        assert!(b.beat(503, false), "quiet again: give back");
        assert!(!b.beat(505, false), "once per burst");
        assert!(b.beat(505, true), "an expired flood of announces");
        give_back();
    }
}
