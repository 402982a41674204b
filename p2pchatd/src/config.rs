//! The daemon's settings, checked and resolved from the command line.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

/// Everything the node needs to start; built by `cli` or by tests.
#[derive(Debug, Clone)]
pub struct Config {
    pub nick: String,
    pub listen: IpAddr,
    /// `None`: the first free port in 8080-8999, then any.
    pub port: Option<u16>,
    /// `None` with `--no-discovery`.
    pub discovery: Option<DiscoveryConfig>,
    /// `HOST:PORT` to dial without discovery.
    pub static_peers: Vec<String>,
    pub socket: PathBuf,
    /// The identity file (`--identity`); `None`: the default place.
    pub identity: Option<PathBuf>,
    /// Only holders of the key in this file link with us (`--network-key`).
    pub network_key: Option<PathBuf>,
    /// Refuse plaintext (Go) peers (`--require-encryption`; always so
    /// with a network key).
    pub require_encryption: bool,
    /// p2pchatd peers link in plaintext too (the bench's comparison run).
    pub plaintext_links: bool,
    /// Events held in history.
    pub history: usize,
    /// Where the history store lives (`None`: no store, for tests that
    /// start nodes in-process), and how much it keeps.
    pub state_dir: Option<PathBuf>,
    pub retention: crate::store::Retention,
    /// What counts as a mention, and what runs on one.
    pub notify: Notify,
    /// Where files land, and which offers are taken.
    pub files: Files,
    /// The settings file `/nick` writes the nick into (`None`: nowhere).
    pub config_file: Option<PathBuf>,
    pub timing: Timing,
}

/// Mentions of the user, and the program run on each (settings file,
/// `[notify]`).
#[derive(Debug, Clone, Default)]
pub struct Notify {
    /// Words besides the nick that make a mention.
    pub highlight: Vec<String>,
    /// Program and arguments; `{nick}`, `{room}`, `{text}` are replaced.
    pub command: Option<Vec<String>>,
}

/// File transfers (flags, and the settings file's `[files]`).
#[derive(Debug, Clone)]
pub struct Files {
    /// Where accepted files land (`None`: no home to put them in; then
    /// `accept` says so).
    pub download_dir: Option<PathBuf>,
    /// Bytes one offer may hold, at most; larger offers are refused.
    pub max_offer_bytes: u64,
    /// Offers from verified peers are accepted without asking.
    pub auto_accept_verified: bool,
}

/// `max_offer_size` when neither the flag nor the file says: 64 GiB.
pub const DEFAULT_MAX_OFFER: u64 = 64 << 30;

impl Default for Files {
    fn default() -> Self {
        Self {
            download_dir: None,
            max_offer_bytes: DEFAULT_MAX_OFFER,
            auto_accept_verified: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    pub group: SocketAddrV4,
    /// IPv4 addresses of the interfaces to join the group on and send from.
    pub interfaces: Vec<Ipv4Addr>,
}

/// Protocol periods and timeouts. Tests shorten some of them; users don't.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Heartbeat we propose to p2pchatd peers; a link silent for a
    /// heartbeat and `heartbeat_late` more is dead, so a peer that vanishes
    /// without a FIN is seen gone in under 10 s.
    pub heartbeat: Duration,
    /// How late a heartbeat may be before its link is called dead.
    pub heartbeat_late: Duration,
    /// Heartbeat toward Go peers, which drop a link silent for 2 minutes and
    /// never send heartbeats themselves (PROTOCOL §3): at most 60 s.
    pub go_heartbeat: Duration,
    /// Discovery announce period while Go peers are around. They announce
    /// every 5 s and call a peer stale after 10 s of silence; 4 s keeps us
    /// fresh through one lost datagram, on the same 2 s beat as heartbeats.
    pub announce_every: Duration,
    /// Announce period among p2pchatd peers only.
    pub announce_quiet: Duration,
    /// Unlinked peers not heard from for this long are forgotten (Go: 30 s).
    pub peer_expiry: Duration,
    /// An accepted connection must identify itself within this.
    pub handshake_timeout: Duration,
    /// How long a dialer waits for a p2pchatd acceptor's reply before
    /// treating the peer as a Go peer.
    pub reply_wait: Duration,
    pub dial_timeout: Duration,
    /// A link whose socket takes no bytes for this long is stuck and dropped.
    pub write_stall: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            // Each heartbeat costs both ends a wakeup's share and a
            // loopback or LAN round of the kernel: at 50 peers, 4 s instead
            // of 2 s halves an idle daemon's CPU (`make bench`).
            heartbeat: Duration::from_secs(4),
            heartbeat_late: Duration::from_secs(3),
            go_heartbeat: Duration::from_secs(30),
            announce_every: Duration::from_secs(4),
            announce_quiet: Duration::from_secs(10),
            peer_expiry: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(5),
            reply_wait: Duration::from_secs(1),
            dial_timeout: Duration::from_secs(3),
            write_stall: Duration::from_secs(5),
        }
    }
}

impl Timing {
    /// The period of the one clock every link and discovery run on: the
    /// shortest of their periods, and half a heartbeat, so a link's silence
    /// is judged soon after it has gone on too long (2 s by default).
    pub(crate) fn beat(&self) -> Duration {
        (self.heartbeat / 2)
            .min(self.go_heartbeat)
            .min(self.announce_every)
            .max(MIN_BEAT)
    }

    /// How many beats make `period`, at least one.
    pub(crate) fn beats(&self, period: Duration) -> u64 {
        let beat = self.beat().as_nanos().max(1);
        u64::try_from(period.as_nanos().div_ceil(beat))
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// Beats never come faster than this, whatever a test sets.
const MIN_BEAT: Duration = Duration::from_millis(10);

/// The default discovery group and port (PROTOCOL §1).
pub(crate) const DEFAULT_MULTICAST: SocketAddrV4 =
    SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 1), 9999);

/// After a failed accept (out of descriptors and the like), the wait before
/// the next: the condition passes, and spinning on it would not help.
pub(crate) const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Ports tried in order when `--port` is not given, as the Go program does.
pub(crate) const DEFAULT_PORTS: std::ops::RangeInclusive<u16> = 8080..=8999;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_silence_rule_holds() {
        let t = Timing::default();
        assert!(
            t.beat() * u32::try_from(t.beats(t.go_heartbeat)).unwrap() <= Duration::from_secs(60)
        );
        // A silent p2pchatd peer is declared dead, and noticed at the next
        // beat, within 10 s.
        assert!(t.heartbeat + t.heartbeat_late + t.beat() <= Duration::from_secs(10));
        // Heartbeats go on beats, up to a beat after their period when a
        // negotiated one is no whole number of beats: never taken for
        // missed ones.
        assert!(t.heartbeat_late > t.beat());
    }

    #[test]
    fn every_period_is_whole_beats() {
        let t = Timing::default();
        assert_eq!(t.beat(), Duration::from_secs(2));
        assert_eq!(
            (
                t.beats(t.heartbeat),
                t.beats(t.announce_every),
                t.beats(t.go_heartbeat)
            ),
            (2, 2, 15)
        );
        let fast = Timing {
            go_heartbeat: Duration::from_millis(250),
            ..Timing::default()
        };
        assert_eq!(fast.beat(), Duration::from_millis(250));
        assert_eq!(fast.beats(fast.heartbeat), 16);
        assert_eq!(fast.beats(Duration::from_millis(300)), 2, "rounded up");
    }
}
