//! Giving memory back to the system after a burst.
//!
//! glibc's allocator returns freed heap to the system only from the top of
//! the heap; what a flood of connections or announces freed in the middle
//! stays mapped, so an idle daemon would keep the flood's size for good.
//! After a burst has passed, [`give_back`] asks the allocator to release
//! every free page it holds.
//!
//! The same goes for code. The kernel maps the daemon's own text as it is
//! run, 64 KiB around each page touched, and keeps it mapped: the code that
//! ran once at start (flags, config, the store's schema, the first
//! handshakes) would stay in an idle daemon's RSS for good — most of it, as
//! a 5 MB binary is nearly all paged in by then. [`give_back`], called once
//! start-up has passed and after each burst, also drops
//! the mappings of the executable's clean, read-only pages; they stay in
//! the page cache, and what runs again is mapped again at a minor fault.

/// Releases the allocator's free pages, and the mappings of our own code,
/// to the system.
pub(crate) fn give_back() {
    let released = trim_heap();
    let code = release_code().unwrap_or(0);
    tracing::debug!(
        released,
        code_kib = code / 1024,
        "gave free heap and idle code back to the system"
    );
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_heap() -> bool {
    // SAFETY: malloc_trim has no preconditions: it takes the allocator's
    // own locks, walks its free lists and only hands pages of free chunks
    // back (madvise); no memory in use is touched.
    unsafe { libc::malloc_trim(0) != 0 }
}

/// Other allocators return memory by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() -> bool {
    false
}

/// Drops this process's mappings of its own executable that hold only the
/// file's pages: its code and read-only data, never a page it wrote (the
/// relocated and the writable data have copies of their own, in memory or
/// in swap, and are left alone). Returns how many bytes were resident.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn release_code() -> Option<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let maps: Vec<Mapping<'_>> = mappings(&smaps).collect();
    let ours = own_executable(&maps)?;
    let mut released = 0;
    for m in &maps {
        if m.file != ours || !m.clean_file_pages() {
            continue;
        }
        // SAFETY: the range is a whole private mapping of our executable's
        // file (by device and inode), never writable, with no page of its
        // own in memory or in swap: all it maps is the file's pages.
        // MADV_DONTNEED only unmaps them; the next access maps the file's
        // pages again from the page cache, as after the kernel reclaimed
        // them, so nothing any thread reads or runs there changes. (The
        // kernel refuses writes to a file being run; a file replaced by a
        // rename stays ours, by its inode.)
        let done =
            unsafe { libc::madvise(m.start as *mut libc::c_void, m.len, libc::MADV_DONTNEED) };
        if done == 0 {
            released += m.rss_kib * 1024;
        }
    }
    Some(released)
}

#[cfg(not(target_os = "linux"))]
fn release_code() -> Option<usize> {
    None
}

/// The file (device, inode) our own code is mapped from, among `maps`.
#[cfg(target_os = "linux")]
fn own_executable<'a>(maps: &[Mapping<'a>]) -> Option<(&'a str, u64)> {
    let here = own_executable as fn(&[Mapping<'a>]) -> Option<(&'a str, u64)> as usize;
    maps.iter()
        .find(|m| (m.start..m.start + m.len).contains(&here))
        .map(|m| m.file)
        .filter(|&(_, inode)| inode != 0)
}

/// One mapping, as `/proc/self/smaps` describes it.
#[cfg(target_os = "linux")]
#[derive(Debug, PartialEq)]
struct Mapping<'a> {
    start: usize,
    len: usize,
    perms: &'a str,
    /// Device and inode; inode 0 for anonymous memory.
    file: (&'a str, u64),
    rss_kib: usize,
    /// Pages of its own: written (copied on write), in memory and swapped
    /// out. Unknown (absent) counts as some.
    anonymous_kib: usize,
    swap_kib: usize,
}

#[cfg(target_os = "linux")]
impl Mapping<'_> {
    /// A private mapping of a file that is not writable and holds none of
    /// its own pages, in memory or in swap: all it maps is the file.
    fn clean_file_pages(&self) -> bool {
        self.file.1 != 0
            && self.perms.starts_with('r')
            && !self.perms.contains('w')
            && self.perms.ends_with('p')
            && self.anonymous_kib == 0
            && self.swap_kib == 0
    }
}

/// The mappings in `/proc/self/smaps` text: a header line
/// (`start-end perms offset dev inode [path]`) then `Key: value kB` lines.
#[cfg(target_os = "linux")]
fn mappings(smaps: &str) -> impl Iterator<Item = Mapping<'_>> {
    let mut lines = smaps.lines().peekable();
    std::iter::from_fn(move || {
        loop {
            let header = lines.next()?;
            let mut f = header.split_whitespace();
            let Some((start, end)) = f.next().and_then(|r| r.split_once('-')) else {
                continue;
            };
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                continue;
            };
            let perms = f.next().unwrap_or("");
            let dev = f.nth(1).unwrap_or("");
            let inode = f.next().and_then(|i| i.parse().ok()).unwrap_or(0);
            let mut m = Mapping {
                start,
                len: end.saturating_sub(start),
                perms,
                file: (dev, inode),
                rss_kib: 0,
                anonymous_kib: usize::MAX,
                swap_kib: usize::MAX,
            };
            while let Some(line) = lines.next_if(|l| !is_header(l)) {
                let mut kv = line.split_whitespace();
                let (Some(key), Some(value)) = (kv.next(), kv.next()) else {
                    continue;
                };
                let value = value.parse().unwrap_or(usize::MAX);
                match key {
                    "Rss:" => m.rss_kib = value,
                    "Anonymous:" => m.anonymous_kib = value,
                    "Swap:" => m.swap_kib = value,
                    _ => {}
                }
            }
            return Some(m);
        }
    })
}

/// Whether a smaps line starts a mapping (`start-end ...`) rather than
/// describing one (`Key: value`).
#[cfg(target_os = "linux")]
fn is_header(line: &str) -> bool {
    line.split_whitespace()
        .next()
        .is_some_and(|w| !w.ends_with(':') && w.contains('-'))
}

/// When a burst has passed: many connections or events came since the
/// last give-back and few in the last beat, or a flood of announced peers
/// expired.
#[derive(Debug, Default)]
pub(crate) struct Bursts {
    connections: Count,
    events: Count,
    /// Beats until start-up, a burst of its own, may have passed; none
    /// once its give-back is done.
    starting: Option<u8>,
}

/// Start-up is over by the second beat (2 to 4 s): the store open and its
/// statements ready, the first peers heard and linked. If that beat is
/// busy (a flood right after start), the first quiet one after it.
const START_BEATS: u8 = 2;

/// A running total, as it stood at the last give-back and the last beat.
#[derive(Debug, Default)]
struct Count {
    at_give_back: u64,
    at_last_beat: u64,
}

impl Count {
    /// Whether fewer than `quiet` came in the beat that just ended.
    fn quiet(&self, now: u64, quiet: u64) -> bool {
        now - self.at_last_beat < quiet
    }

    /// Whether `burst` came since the last give-back and fewer than
    /// `quiet` in the beat that just ended.
    fn passed(&mut self, now: u64, burst: u64, quiet: u64) -> bool {
        let was_quiet = self.quiet(now, quiet);
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
            starting: Some(START_BEATS),
        }
    }

    /// Called on every beat with the connections accepted and events
    /// appended so far and whether the peer table shrank; true when memory
    /// should go back now.
    pub(crate) fn beat(&mut self, accepted: u64, events: u64, table_shrank: bool) -> bool {
        let quiet =
            self.connections.quiet(accepted, QUIET) && self.events.quiet(events, EVENT_QUIET);
        let connections = self.connections.passed(accepted, BURST, QUIET);
        let lines = self.events.passed(events, EVENT_BURST, EVENT_QUIET);
        let started = match self.starting {
            Some(n) if n > 1 => {
                self.starting = Some(n - 1);
                false
            }
            Some(_) if quiet => {
                self.starting = None;
                true
            }
            _ => false,
        };
        if !(table_shrank || connections || lines || started) {
            return false;
        }
        self.connections.at_give_back = accepted;
        self.events.at_give_back = events;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Tests that give code back run one at a time: each reads what is
    /// mapped before and after.
    static CODE: Mutex<()> = Mutex::new(());

    #[test]
    fn memory_goes_back_once_a_burst_has_passed() {
        let mut b = Bursts::default();
        assert!(!b.beat(3, 0, false), "a few connections are no burst");
        assert!(!b.beat(300, 0, false), "a burst still coming in");
        assert!(!b.beat(500, 0, false));
        assert!(b.beat(503, 0, false), "quiet again: give back");
        assert!(!b.beat(505, 0, false), "once per burst");
        assert!(b.beat(505, 0, true), "an expired flood of announces");
        let _one = CODE.lock().unwrap_or_else(|p| p.into_inner());
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

    #[cfg(target_os = "linux")]
    const SMAPS: &str = "\
5555a000-5555b000 r--p 00000000 08:01 42  /usr/bin/p2pchatd
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
5555b000-5555f000 r-xp 00001000 08:01 42  /usr/bin/p2pchatd
Size:                 16 kB
Rss:                  12 kB
Anonymous:             0 kB
Swap:                  0 kB
VmFlags: rd ex mr mw me
5555f000-55560000 r--p 00005000 08:01 42  /usr/bin/p2pchatd
Rss:                   4 kB
Anonymous:             4 kB
Swap:                  0 kB
55560000-55561000 r--p 00006000 08:01 42  /usr/bin/p2pchatd
Rss:                   0 kB
Anonymous:             0 kB
Swap:                  4 kB
55561000-55562000 rw-p 00007000 08:01 42  /usr/bin/p2pchatd
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
55562000-55563000 r--p 00000000 08:01 43  /usr/lib/with space.so
Rss:                   4 kB
Anonymous:             0 kB
7f000000-7f001000 rw-p 00000000 00:00 0
Rss:                   4 kB
Anonymous:             4 kB
Swap:                  0 kB
";

    #[cfg(target_os = "linux")]
    #[test]
    fn only_clean_pages_of_files_count_as_code() {
        let maps: Vec<_> = mappings(SMAPS).collect();
        assert_eq!(maps.len(), 7);
        assert_eq!(
            maps[1],
            Mapping {
                start: 0x5555_b000,
                len: 0x4000,
                perms: "r-xp",
                file: ("08:01", 42),
                rss_kib: 12,
                anonymous_kib: 0,
                swap_kib: 0,
            }
        );
        let clean: Vec<bool> = maps.iter().map(Mapping::clean_file_pages).collect();
        // Read-only data and code; not the relocated data (written once,
        // whether in memory or swapped out), the writable data, a mapping
        // that does not say what it holds, or anonymous memory.
        assert_eq!(clean, [true, true, false, false, false, false, false]);
        assert_eq!(maps[5].file, ("08:01", 43), "a path with a space");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn idle_code_goes_back_and_runs_again() {
        let _one = CODE.lock().unwrap_or_else(|p| p.into_inner());
        let resident = || {
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
            let maps: Vec<Mapping<'_>> = mappings(&smaps).collect();
            let ours = own_executable(&maps);
            maps.iter()
                .filter(|m| Some(m.file) == ours && m.clean_file_pages())
                .map(|m| m.rss_kib)
                .sum::<usize>()
        };
        let before = resident();
        assert!(before > 0, "the test's own code is resident");
        let released = release_code().unwrap_or(0);
        assert!(released >= before * 1024 / 2, "{released} of {before} KiB");
        // What runs now is mapped again, and runs as before.
        assert!(resident() < before);
        let mut b = Bursts::default();
        assert!(!b.beat(1, 1, false));
    }

    #[test]
    fn a_restart_is_no_flood() {
        let mut b = Bursts::from(5_000_000);
        assert!(!b.beat(0, 5_000_010, false));
        assert!(b.beat(0, 5_000_020, false), "start-up has passed");
        assert!(!b.beat(0, 5_000_030, false));
        assert!(!b.beat(0, 5_000_040, false));
    }

    #[test]
    fn a_busy_start_gives_back_once_it_is_quiet() {
        let mut b = Bursts::from(0);
        assert!(!b.beat(0, 1_000, false));
        assert!(!b.beat(0, 2_000, false), "lines still pouring in");
        assert!(!b.beat(0, 3_000, false));
        assert!(
            b.beat(0, 3_010, false),
            "quiet: start-up (and its lines) passed"
        );
        assert!(!b.beat(0, 3_020, false));
    }
}
