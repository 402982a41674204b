//! Who may hold a link or a handshake slot, and which of two links to one
//! peer survives: the rules that keep someone on the LAN from taking over a
//! peer's link, filling the tables, or squatting in them.
//!
//! A link is *proven* when its peer showed it is who it claims: we dialed
//! it (we chose the address), discovery heard its id from the link's
//! address, or it talked. Before peers have keys that is the evidence there
//! is, and it is what a squatter lacks. Unproven links are bounded per
//! address and in all, and the idlest goes first when room is needed.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Links in all: a LAN room, not a botnet. Every limit here together stays
/// inside the 1,024 open files a user service gets (see `node::FD_BUDGET`).
pub(crate) const MAX_LINKS: usize = 512;
/// Accepted links from one address: a machine runs a daemon per user.
pub(crate) const MAX_ACCEPTED_PER_ADDRESS: usize = 64;
/// Accepted links not yet proven, in all and from one address.
pub(crate) const MAX_UNPROVEN: usize = 64;
pub(crate) const MAX_UNPROVEN_PER_ADDRESS: usize = 8;
/// An accepted link that never sends a heartbeat (a Go peer's) must prove
/// itself within this or be dropped: a real Go peer announces every 5 s
/// and its user talks; a silent squatter does neither.
pub(crate) const UNPROVEN_GRACE: Duration = Duration::from_secs(20);

/// Peers heard on discovery but not linked, in all and from one address:
/// forged announces with fresh ids cost a bounded table and bounded dials.
/// One host may run many daemons (a daemon per user; the bench's 50), and
/// a newcomer hears all of them at once.
pub(crate) const MAX_UNLINKED: usize = 256;
pub(crate) const MAX_UNLINKED_PER_ADDRESS: usize = 64;

/// Dials in flight (connecting or shaking hands), each holding a socket;
/// more wait their turn.
pub(crate) const MAX_DIALS: usize = 32;

/// Connections accepted but not yet identified, in all and from one
/// address. Each holds a read buffer until it identifies or times out.
pub(crate) const MAX_HANDSHAKES: usize = 64;
pub(crate) const MAX_HANDSHAKES_PER_ADDRESS: usize = 8;
/// A real peer identifies in milliseconds; only connections waiting longer
/// than this count against their address, so a burst of peers on one host
/// (a room of daemons joining a newcomer at once) is never turned away.
const HANDSHAKE_GRACE: Duration = Duration::from_millis(250);

/// One side of a contest between two links to the same peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Contender {
    /// Dialed by the peer with the smaller id (PROTOCOL §3).
    pub(crate) canonical: bool,
    pub(crate) proven: bool,
    /// Silent past its heartbeats (only p2pchatd links can tell).
    pub(crate) dead: bool,
}

/// Whether a `new` link replaces the peer's `old` one. A dead link always
/// goes. Two links from the same host are the peer's own: crossed dials
/// settle on the canonical one, which both ends pick alike, and of two
/// equal ones the newer wins (the peer gave up on the older). A link from
/// another host may be anyone claiming the peer's id: it wins only with
/// proof over a link without; a healthy link is never given up for it.
pub(crate) fn new_link_wins(old: Contender, new: Contender, same_host: bool) -> bool {
    if old.dead {
        return true;
    }
    if same_host {
        return new.canonical || !old.canonical;
    }
    new.proven && !old.proven
}

/// The connections waiting to identify. When full, the oldest makes room:
/// a real peer identifies in milliseconds, so an idle crowd cannot keep it
/// out; one address holds a few slots at most.
#[derive(Debug, Default)]
pub(crate) struct Handshakes {
    pending: VecDeque<Pending>,
    next: u64,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    from: IpAddr,
    since: Instant,
    evicted: CancellationToken,
}

impl Handshakes {
    /// A slot for a connection from `from` at `now`: its id and the token
    /// that tells it it was evicted. `None`: its address holds enough
    /// connections that did not identify in time.
    pub(crate) fn admit(&mut self, from: IpAddr, now: Instant) -> Option<(u64, CancellationToken)> {
        let stalling = self
            .pending
            .iter()
            .filter(|p| p.from == from && now.duration_since(p.since) > HANDSHAKE_GRACE)
            .count();
        if stalling >= MAX_HANDSHAKES_PER_ADDRESS {
            return None;
        }
        if self.pending.len() >= MAX_HANDSHAKES
            && let Some(oldest) = self.pending.pop_front()
        {
            oldest.evicted.cancel();
        }
        let id = self.next;
        self.next += 1;
        let evicted = CancellationToken::new();
        self.pending.push_back(Pending {
            id,
            from,
            since: now,
            evicted: evicted.clone(),
        });
        Some((id, evicted))
    }

    /// The handshake `id` is over, however it ended.
    pub(crate) fn done(&mut self, id: u64) {
        self.pending.retain(|p| p.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTHY: Contender = Contender {
        canonical: true,
        proven: true,
        dead: false,
    };

    #[test]
    fn a_healthy_link_is_never_given_up_for_a_claimant() {
        let claimant = Contender {
            proven: false,
            ..HEALTHY
        };
        assert!(!new_link_wins(HEALTHY, claimant, false));
        // Proven too (it announced the id from its own address): still no.
        assert!(!new_link_wins(HEALTHY, HEALTHY, false));
        // The old link dead, or the peer itself reconnecting from its host.
        let dead = Contender {
            dead: true,
            ..HEALTHY
        };
        assert!(new_link_wins(dead, claimant, false));
        assert!(new_link_wins(HEALTHY, HEALTHY, true));
    }

    #[test]
    fn crossed_dials_settle_on_the_canonical_link_at_both_ends() {
        let canonical = HEALTHY;
        let other = Contender {
            canonical: false,
            proven: false,
            ..HEALTHY
        };
        // Whichever each end sees first, both keep the canonical one,
        // proven or not.
        assert!(new_link_wins(other, canonical, true));
        assert!(!new_link_wins(canonical, other, true));
    }

    #[test]
    fn proof_beats_a_squatter_from_elsewhere() {
        let squatter = Contender {
            proven: false,
            ..HEALTHY
        };
        let real = Contender {
            canonical: false,
            ..HEALTHY
        };
        assert!(new_link_wins(squatter, real, false));
        assert!(!new_link_wins(real, squatter, false));
    }

    #[test]
    fn handshake_slots_evict_the_oldest_and_cap_each_address() {
        let mut h = Handshakes::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        // A burst from one host is let in...
        let slots: Vec<_> = (0..3 * MAX_HANDSHAKES_PER_ADDRESS)
            .map(|_| h.admit(a, t0).unwrap())
            .collect();
        // ... but not more while they stall.
        let later = t0 + HANDSHAKE_GRACE * 2;
        assert!(h.admit(a, later).is_none(), "one address holds a few slots");
        for i in 0..MAX_HANDSHAKES {
            let [_, _, hi, lo] = u32::try_from(i).unwrap().to_be_bytes();
            let ip = IpAddr::from([10, 1, hi, lo]);
            h.admit(ip, later).unwrap();
        }
        assert!(
            slots.iter().all(|(_, t)| t.is_cancelled()),
            "the oldest made room"
        );
        assert_eq!(h.pending.len(), MAX_HANDSHAKES);
        let (id, _) = h.admit(a, later).unwrap();
        h.done(id);
        assert_eq!(h.pending.len(), MAX_HANDSHAKES - 1);
    }
}
