//! Dial loops: one per peer we are to dial, with capped, jittered backoff.
//!
//! A discovered peer is dialed only by the side with the smaller peer id
//! (PROTOCOL §3), until it is linked, quits or is forgotten. A `--peer`
//! target is dialed for the life of the daemon, except while its peer is
//! linked some other way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tracing::{Instrument, debug, info, info_span, warn};

use super::Mesh;
use super::handshake::{self, Expect};
use super::link::{GO_REFUSAL_WINDOW, LinkOutcome};
use super::table::{DialClaim, Refused};

/// First retry after a failed dial: quick, because a Go peer announces
/// before its listener is up (PROTOCOL §1).
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Retries slow down to this; cheap on a LAN, and a peer that comes back
/// is linked within it.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// A link that lived this long was healthy: start backoff afresh.
const HEALTHY_LINK: Duration = Duration::from_secs(10);
/// A Go peer that refuses our id needs a restart; ask rarely.
const GO_REFUSAL_RETRY: Duration = Duration::from_secs(15);
const GO_REFUSAL_MAX: Duration = Duration::from_secs(60);

/// Capped exponential backoff with ±20 % jitter.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    go_refusals: u32,
}

impl Backoff {
    /// The wait before the next dial, given how the last one went.
    fn next(&mut self, last: Option<&LinkOutcome>) -> Duration {
        let base = match last {
            Some(o) if o.go_refusal => {
                self.go_refusals += 1;
                grow(GO_REFUSAL_RETRY, self.go_refusals - 1, GO_REFUSAL_MAX)
            }
            Some(o) if o.lasted >= HEALTHY_LINK => {
                self.failures = 0;
                self.go_refusals = 0;
                FIRST_RETRY
            }
            _ => {
                self.failures += 1;
                grow(FIRST_RETRY, self.failures - 1, MAX_RETRY)
            }
        };
        jitter(base)
    }
}

fn grow(first: Duration, doublings: u32, max: Duration) -> Duration {
    first.saturating_mul(1 << doublings.min(16)).min(max)
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + fastrand::f64() * 0.4)
}

/// Connects within the dial timeout.
async fn connect(mesh: &Mesh, addr: SocketAddr) -> std::io::Result<TcpStream> {
    match timeout(mesh.timing().dial_timeout, TcpStream::connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Dials a peer heard on discovery until the table says stop, or revokes
/// the claim (the peer was forgotten while this loop waited).
pub(super) async fn discovered(mesh: Mesh, peer: Arc<str>, claim: DialClaim) {
    let DialClaim {
        id: dialer,
        revoked,
    } = claim;
    let span = info_span!("dial", %peer);
    async {
        let cancel = mesh.cancel_token().clone();
        let mut backoff = Backoff::default();
        loop {
            let slot = tokio::select! {
                () = cancel.cancelled() => break,
                () = revoked.cancelled() => break,
                s = mesh.dial_slot() => match s {
                    Some(s) => s,
                    None => break,
                },
            };
            let Some(plan) = mesh.table_op(|t, _| t.dial_plan(&peer, dialer)) else {
                debug!("dialing stops");
                break;
            };
            let addr = plan.addr;
            // Only connecting is cut short by shutdown; a link, once up,
            // stops by itself and says goodbye first.
            let connected = tokio::select! {
                () = cancel.cancelled() => break,
                r = connect(&mesh, addr) => r,
            };
            let outcome = match connected {
                Ok(stream) => {
                    let expect = Expect::Peer {
                        id: peer.clone(),
                        nick: plan.nick,
                        p2pchatd: plan.p2pchatd,
                        noise: plan.noise && mesh.noise_links(),
                    };
                    Some(handshake::dial(&mesh, stream, addr, expect, slot).await)
                }
                Err(e) => {
                    debug!(%addr, error = %e, "dial failed");
                    None
                }
            };
            if let Some(o) = &outcome
                && o.go_refusal
            {
                warn!(%addr, "the Go peer closed our link at once; it holds our id as dropped until it restarts");
            }
            let wait = backoff.next(outcome.as_ref());
            tokio::select! {
                () = cancel.cancelled() => break,
                () = revoked.cancelled() => break,
                () = sleep(wait) => {}
            }
        }
        mesh.table_op(|t, _| t.dial_stopped(&peer, dialer));
    }
    .instrument(span)
    .await;
}

/// Dials `--peer HOST:PORT` for the life of the mesh.
pub(super) async fn static_peer(mesh: Mesh, target: String) {
    let span = info_span!("peer", %target);
    async {
        let cancel = mesh.cancel_token().clone();
        let mut topology = mesh.watch_topology();
        let mut backoff = Backoff::default();
        let mut known: Option<Arc<str>> = None;
        // Noise first; plaintext once the target did not answer it (a Go
        // peer), unless encryption is required.
        let mut noise = mesh.noise_links();
        loop {
            // Linked some other way (it dialed us, or discovery did): wait.
            if let Some(peer) = &known
                && mesh.table_op(|t, _| t.is_linked(peer))
            {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    r = topology.changed() => if r.is_err() { break },
                }
                continue;
            }
            let connect = async {
                let slot = mesh.dial_slot().await?;
                let addr = match tokio::net::lookup_host(target.as_str()).await {
                    Ok(mut addrs) => addrs.next(),
                    Err(e) => {
                        warn!(error = %e, "cannot resolve");
                        None
                    }
                }?;
                match connect(&mesh, addr).await {
                    Ok(stream) => Some((stream, addr, slot)),
                    Err(e) => {
                        debug!(%addr, error = %e, "dial failed");
                        None
                    }
                }
            };
            let connected = tokio::select! {
                () = cancel.cancelled() => break,
                c = connect => c,
            };
            let tried_noise = noise;
            let outcome = match connected {
                Some((stream, addr, slot)) => Some(
                    handshake::dial(&mesh, stream, addr, Expect::Unknown { noise }, slot).await,
                ),
                None => None,
            };
            if let Some(o) = &outcome {
                if o.refused == Some(Refused::SelfLink) {
                    warn!("this --peer is this daemon itself; not dialing it again");
                    break;
                }
                if let Some(peer) = &o.peer
                    && known.as_ref() != Some(peer)
                {
                    info!(%peer, "peer answered");
                    known = Some(peer.clone());
                }
                if tried_noise && o.no_noise && !mesh.encryption_required() {
                    noise = false;
                } else if !tried_noise
                    && mesh.noise_links()
                    && o.lines == 0
                    && o.lasted < GO_REFUSAL_WINDOW
                {
                    // Plaintext was closed at once too: what looked like a
                    // Go peer may be a p2pchatd that was not there yet (a
                    // connection closed at once looks alike), which refuses
                    // plaintext in a key's name. Noise again, next; the
                    // backoff grows as after any failure (to 5 s), so a Go
                    // peer that refuses us is not asked in a spin either.
                    noise = true;
                }
            }
            topology.borrow_and_update();
            // A refusal in plaintext is no Go peer's verdict when we go
            // back to Noise: back off as after any failure.
            let switched_back = !tried_noise && noise;
            let wait = backoff.next(if switched_back {
                None
            } else {
                outcome.as_ref()
            });
            tokio::select! {
                () = cancel.cancelled() => break,
                () = sleep(wait) => {}
            }
        }
    }
    .instrument(span)
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(lasted: Duration, go_refusal: bool) -> LinkOutcome {
        LinkOutcome {
            lasted,
            go_refusal,
            ..LinkOutcome::default()
        }
    }

    #[test]
    fn backs_off_exponentially_with_a_cap_and_resets_after_a_healthy_link() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..10).map(|_| b.next(None)).collect();
        assert!(waits[0] >= Duration::from_millis(80) && waits[0] <= Duration::from_millis(120));
        assert!(waits[3] >= Duration::from_millis(640) && waits[3] <= Duration::from_millis(960));
        assert!(waits.iter().all(|w| *w <= MAX_RETRY.mul_f64(1.2)));
        assert!(waits[9] >= MAX_RETRY.mul_f64(0.8));
        let w = b.next(Some(&outcome(Duration::from_secs(60), false)));
        assert!(w <= Duration::from_millis(120));
        let w = b.next(Some(&outcome(Duration::from_millis(10), false)));
        assert!(w <= Duration::from_millis(240), "counting starts over");
    }

    #[test]
    fn a_refusing_go_peer_is_asked_rarely() {
        let mut b = Backoff::default();
        let first = b.next(Some(&outcome(Duration::from_millis(5), true)));
        assert!(first >= GO_REFUSAL_RETRY.mul_f64(0.8));
        for _ in 0..5 {
            b.next(Some(&outcome(Duration::from_millis(5), true)));
        }
        let late = b.next(Some(&outcome(Duration::from_millis(5), true)));
        assert!(late >= GO_REFUSAL_MAX.mul_f64(0.8) && late <= GO_REFUSAL_MAX.mul_f64(1.2));
    }
}
