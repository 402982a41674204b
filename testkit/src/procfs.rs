//! What `/proc` says about a process or the machine: memory, CPU time,
//! wakeups, open files and TCP connections. Readings, not assertions.

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&s, "VmRSS:")
}

/// The anonymous part of the resident set (heap, stacks): what tables and
/// buffers take, without the program's text.
pub fn rss_anon_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&s, "RssAnon:")
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time and context switches of a process, over all its threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSample {
    /// Nanoseconds on a CPU.
    pub cpu_ns: u64,
    /// Voluntary and involuntary context switches: each is a wakeup.
    pub switches: u64,
}

impl std::ops::Sub for CpuSample {
    type Output = Self;

    fn sub(self, earlier: Self) -> Self {
        Self {
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }
}

/// Clock ticks (`stat`'s unit) in nanoseconds, at the usual USER_HZ.
const NS_PER_TICK: u64 = 10_000_000;

/// CPU time and context switches of `pid` now.
pub fn cpu_sample(pid: u32) -> CpuSample {
    let mut out = CpuSample::default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let p = t.path();
        // schedstat: ns on CPU; finer than stat's clock ticks.
        if let Ok(s) = std::fs::read_to_string(p.join("schedstat")) {
            out.cpu_ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        } else if let Ok(s) = std::fs::read_to_string(p.join("stat")) {
            let f: Vec<&str> = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            out.cpu_ns += (field(11) + field(12)) * NS_PER_TICK;
        }
        if let Ok(s) = std::fs::read_to_string(p.join("status")) {
            out.switches += status_field(&s, "voluntary_ctxt_switches:").unwrap_or(0)
                + status_field(&s, "nonvoluntary_ctxt_switches:").unwrap_or(0);
        }
    }
    out
}

/// Open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Established TCP connections whose local port is `port` (links a daemon
/// accepted), read from /proc/net/tcp.
pub fn established_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3
                && cols[3] == "01"
                && cols[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}
