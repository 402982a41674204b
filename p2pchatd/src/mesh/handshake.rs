//! The handshake of PROTOCOL §3, both ways. An accepted connection must
//! identify itself with a `join`; a p2pchatd dialer gets our `join` back.
//! A dialer sends its identifying `join` and the hello `join` Go acceptors
//! show, then waits briefly for a p2pchatd acceptor's answer. Either way
//! the link then runs in [`super::link`] with the heartbeat both sides
//! agreed on.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::api::{LinkDirection, PeerKind};
use shared::keys::is_key_id;
use shared::text::sanitize_foreign_nick;
use shared::wire::{MessageType, PeerMessage, PeerMeta};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{Instrument, debug, info, info_span, warn};

use super::link::{self, LinkOutcome, LinkSetup, Liveness, Wire, peer_lines, read_line};
use super::secure::{Established, SecureError};
use super::table::PeerIdentity;
use super::{HandshakeSlot, Mesh};

/// Negotiated heartbeats stay within these bounds.
const MIN_HEARTBEAT: Duration = Duration::from_millis(200);
const MAX_HEARTBEAT: Duration = Duration::from_secs(30);

/// What a dialer knows before connecting.
pub(crate) enum Expect {
    /// Heard on discovery; `p2pchatd` peers answer our join with theirs,
    /// `noise` ones our Noise handshake.
    Peer {
        id: Arc<str>,
        nick: String,
        p2pchatd: bool,
        noise: bool,
    },
    /// A `--peer HOST:PORT`: whoever answers; Noise is tried first.
    Unknown { noise: bool },
}

/// The heartbeat and silence limit of a link: `theirs` is the heartbeat
/// the peer proposed (our peers do, Go peers do not).
pub(super) fn liveness(mesh: &Mesh, kind: PeerKind, theirs: Option<u64>) -> Liveness {
    let t = mesh.timing();
    match kind {
        // The Go peer never sends heartbeats: only our side keeps it alive.
        PeerKind::Go => Liveness {
            heartbeat: t.go_heartbeat,
            heartbeat_beats: t.beats(t.go_heartbeat),
            dead_after: None,
        },
        PeerKind::P2pchatd => {
            let theirs = theirs.map_or(t.heartbeat, Duration::from_millis);
            let heartbeat = t.heartbeat.max(theirs).clamp(MIN_HEARTBEAT, MAX_HEARTBEAT);
            Liveness {
                heartbeat,
                heartbeat_beats: t.beats(heartbeat),
                dead_after: Some(heartbeat + t.heartbeat_late),
            }
        }
    }
}

/// TCP keepalive on links: probes after this much silence, ...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// ... this far apart, ...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ... and the kernel gives up after this many unanswered.
const KEEPALIVE_PROBES: u32 = 3;
/// Bytes we sent that go unacknowledged this long end the link.
const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Keepalive and a user timeout catch dead Go links, which carry no
/// heartbeats from their side; no delay keeps latency low.
fn tune(stream: &TcpStream) {
    let sock = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let res = stream
        .set_nodelay(true)
        .and_then(|()| sock.set_tcp_keepalive(&keepalive))
        .and_then(|()| sock.set_tcp_user_timeout(Some(USER_TIMEOUT)));
    if let Err(e) = res {
        debug!(error = %e, "could not tune link socket");
    }
}

/// Serves an inbound connection: it must identify itself with a `join`.
/// `slot` is its place among those waiting to identify, given back once it
/// has; a newer connection may take it over, which ends this one.
pub(crate) async fn accept(
    mesh: Mesh,
    mut stream: TcpStream,
    remote: SocketAddr,
    slot: HandshakeSlot,
) {
    tune(&stream);
    let mut lines = peer_lines();
    let wait = mesh.timing().handshake_timeout;
    // The first bytes tell a Noise dialer (its preamble starts with a NUL,
    // which no JSON line does) from a plaintext join.
    let started = tokio::select! {
        () = slot.evicted.cancelled() => return debug!(%remote, "made room for a newer connection"),
        r = timeout(wait, stream.read_buf(lines.space())) => r,
    };
    match started {
        Ok(Ok(0)) => return debug!(%remote, "closed before identifying"),
        Ok(Err(e)) => return debug!(%remote, error = %e, "read failed before identifying"),
        Err(_) => return debug!(%remote, "did not identify in time"),
        Ok(Ok(_)) => {}
    }
    if lines.buffered().first() == Some(&0) {
        return accept_noise(mesh, stream, remote, slot, lines.take_buffered()).await;
    }
    if mesh.encryption_required() {
        return info!(%remote, "refused a plaintext connection: encryption is required");
    }
    let read = tokio::select! {
        () = slot.evicted.cancelled() => return debug!(%remote, "made room for a newer connection"),
        r = timeout(wait, read_line(&mut lines, &mut stream)) => r,
    };
    let first = match read {
        Ok(Ok(Some(Ok(line)))) => line,
        Ok(Ok(Some(Err(e)))) => return warn!(%remote, "identifying line refused: {e}"),
        Ok(Ok(None)) => return debug!(%remote, "closed before identifying"),
        Ok(Err(e)) => return debug!(%remote, error = %e, "read failed before identifying"),
        Err(_) => return debug!(%remote, "did not identify in time"),
    };
    let msg = match PeerMessage::decode(&first) {
        Ok(m) if m.kind == MessageType::Join => m,
        Ok(m) => return warn!(%remote, kind = m.kind.as_str(), "first line is not a join"),
        Err(e) => return warn!(%remote, "identifying line refused: {e}"),
    };
    if *msg.sender_id == **mesh.peer_id() {
        return debug!(%remote, "connection from ourselves");
    }
    if is_key_id(&msg.sender_id) && mesh.noise_links() {
        // Peers with keys link over Noise, always: no downgrade.
        return warn!(%remote, peer = msg.sender_id, "refused a plaintext join in a key's name");
    }
    let meta = msg.metadata.as_ref().filter(|m| m.is_p2pchatd());
    let kind = if meta.is_some() {
        PeerKind::P2pchatd
    } else {
        PeerKind::Go
    };
    if meta.is_some() {
        // Our peers learn who answered from this reply; Go dialers get none
        // (the Go acceptor sends nothing either).
        let reply = mesh.identifying_join();
        if let Err(e) = timeout(wait, stream.write_all(&reply))
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "reply timed out")))
        {
            return debug!(%remote, error = %e, "could not answer the join");
        }
    }
    let who = PeerIdentity {
        id: Arc::from(msg.sender_id.as_str()),
        nick: sanitize_foreign_nick(&msg.username).into_owned(),
        kind,
        key: None,
        seals: false,
        life: None,
        sync: false,
        rooms: false,
        files: false,
        standing: None,
    };
    let live = liveness(&mesh, kind, meta.and_then(|m| m.heartbeat_ms));
    drop(slot);
    let span = info_span!("link", peer = %who.id, %remote);
    let setup = LinkSetup {
        stream,
        remote,
        direction: LinkDirection::Accepted,
        who: Some(who),
        lines,
        early: Vec::new(),
        live,
        wire: Wire::Plain,
    };
    link::run(&mesh, setup).instrument(span).await;
}

/// Serves an inbound Noise connection; `raw` is what it sent so far.
async fn accept_noise(
    mesh: Mesh,
    mut stream: TcpStream,
    remote: SocketAddr,
    slot: HandshakeSlot,
    raw: bytes::BytesMut,
) {
    let wait = mesh.timing().handshake_timeout;
    let shaken = tokio::select! {
        () = slot.evicted.cancelled() => return debug!(%remote, "made room for a newer connection"),
        r = timeout(wait, mesh.secure().respond(&mut stream, raw, mesh.our_hello())) => r,
    };
    let est = match shaken {
        Ok(Ok(est)) => est,
        Ok(Err(e)) => return warn!(%remote, "noise handshake failed: {e}"),
        Err(_) => return debug!(%remote, "noise handshake stalled"),
    };
    if *est.peer.peer_id == **mesh.peer_id() {
        return debug!(%remote, "connection from ourselves");
    }
    drop(slot);
    if let Some(id) = est.peer.fetch.clone() {
        let span = info_span!("fetch", peer = %est.peer.peer_id, %remote);
        return crate::transfer::serve(mesh.clone(), stream, remote, est, id)
            .instrument(span)
            .await;
    }
    run_noise_link(&mesh, stream, remote, LinkDirection::Accepted, est).await;
}

/// Runs a Noise link from its first frame to its end.
async fn run_noise_link(
    mesh: &Mesh,
    stream: TcpStream,
    remote: SocketAddr,
    direction: LinkDirection,
    est: Established,
) -> LinkOutcome {
    let live = liveness(mesh, PeerKind::P2pchatd, Some(est.peer.heartbeat_ms));
    let who = PeerIdentity {
        id: Arc::from(est.peer.peer_id.as_str()),
        nick: est.peer.nick,
        kind: PeerKind::P2pchatd,
        key: Some(est.peer.key),
        seals: est.peer.seals,
        life: est.peer.life.clone(),
        sync: est.peer.sync,
        rooms: est.peer.rooms,
        files: est.peer.files,
        standing: None,
    };
    let span = info_span!("link", peer = %who.id, %remote);
    let setup = LinkSetup {
        stream,
        remote,
        direction,
        who: Some(who),
        lines: peer_lines(),
        early: Vec::new(),
        live,
        wire: Wire::Noise(est.opener, est.sealer),
    };
    link::run(mesh, setup).instrument(span).await
}

/// Runs a link we dialed, from the handshake to its end. `slot` is the
/// dial's place among those in flight, given back once the link runs.
pub(crate) async fn dial(
    mesh: &Mesh,
    mut stream: TcpStream,
    remote: SocketAddr,
    expect: Expect,
    slot: OwnedSemaphorePermit,
) -> LinkOutcome {
    let started = Instant::now();
    let failed = |go_refusal| LinkOutcome {
        lasted: started.elapsed(),
        go_refusal,
        ..LinkOutcome::default()
    };
    tune(&stream);
    let noise = match &expect {
        Expect::Peer { noise, .. } | Expect::Unknown { noise } => *noise,
    };
    if noise {
        return dial_noise(mesh, stream, remote, expect, slot).await;
    }
    if mesh.encryption_required() {
        info!(%remote, "not dialing in plaintext: encryption is required");
        return failed(false);
    }
    // Identify, then say hello as the Go dialer does: a Go acceptor shows
    // the second join as our arrival.
    let mut hello = mesh.identifying_join();
    hello.extend_from_slice(&mesh.hello_join().await);
    let t = mesh.timing().clone();
    if !matches!(
        timeout(t.dial_timeout, stream.write_all(&hello)).await,
        Ok(Ok(()))
    ) {
        debug!(%remote, "could not send our join");
        return failed(false);
    }
    let mut lines = peer_lines();
    let mut early = Vec::new();
    let wait_reply = match &expect {
        Expect::Peer { p2pchatd, .. } => *p2pchatd,
        Expect::Unknown { .. } => true,
    };
    // (who answered, their metadata) once known.
    let mut answered: Option<(PeerIdentity, Option<PeerMeta>)> = None;
    if wait_reply {
        let deadline = Instant::now() + t.reply_wait;
        loop {
            let next = tokio::select! {
                () = mesh.cancel_token().cancelled() => return failed(false),
                r = timeout_at(deadline, read_line(&mut lines, &mut stream)) => r,
            };
            match next {
                Err(_) => break, // silent: a Go acceptor
                Ok(Ok(None)) => {
                    debug!(%remote, "closed during handshake");
                    return failed(matches!(
                        expect,
                        Expect::Peer {
                            p2pchatd: false,
                            ..
                        }
                    ));
                }
                Ok(Err(e)) => {
                    debug!(%remote, error = %e, "handshake read failed");
                    return failed(false);
                }
                Ok(Ok(Some(Err(e)))) => {
                    warn!(%remote, "handshake line refused: {e}");
                    return failed(false);
                }
                Ok(Ok(Some(Ok(line)))) => match PeerMessage::decode(&line) {
                    Ok(m)
                        if m.kind == MessageType::Join
                            && m.metadata.as_ref().is_some_and(PeerMeta::is_p2pchatd) =>
                    {
                        let who = PeerIdentity {
                            id: Arc::from(m.sender_id.as_str()),
                            nick: sanitize_foreign_nick(&m.username).into_owned(),
                            kind: PeerKind::P2pchatd,
                            key: None,
                            seals: false,
                            life: None,
                            sync: false,
                            rooms: false,
                            files: false,
                            standing: None,
                        };
                        answered = Some((who, m.metadata));
                        break;
                    }
                    // A Go acceptor's user typed before we knew it was Go.
                    Ok(m) => {
                        early.push(m);
                        break;
                    }
                    Err(e) => debug!(%remote, "dropped a malformed line: {e}"),
                },
            }
        }
    }
    let (who, meta) = match (answered, expect) {
        (Some((who, _)), Expect::Peer { id, .. }) if who.id != id => {
            warn!(%remote, expected = %id, answered = %who.id, "a different peer answered");
            return failed(false);
        }
        (Some((who, meta)), _) => (Some(who), meta),
        // A p2pchatd that does not answer is frozen or overloaded, not a
        // Go peer: try again later rather than link without liveness.
        (None, Expect::Peer { p2pchatd: true, .. }) if early.is_empty() => {
            debug!(%remote, "no answer to our join");
            return failed(false);
        }
        (None, Expect::Peer { id, nick, .. }) => (
            Some(PeerIdentity {
                id,
                nick,
                kind: PeerKind::Go,
                key: None,
                seals: false,
                life: None,
                sync: false,
                rooms: false,
                files: false,
                standing: None,
            }),
            None,
        ),
        (None, Expect::Unknown { .. }) => (None, None),
    };
    if who.as_ref().is_some_and(|w| is_key_id(&w.id)) && mesh.noise_links() {
        warn!(%remote, "refused a plaintext answer in a key's name");
        return failed(false);
    }
    let kind = who.as_ref().map_or(PeerKind::Go, |w| w.kind);
    let live = liveness(mesh, kind, meta.and_then(|m| m.heartbeat_ms));
    let span = match &who {
        Some(w) => info_span!("link", peer = %w.id, %remote),
        None => info_span!("link", peer = "?", %remote),
    };
    drop(slot);
    let setup = LinkSetup {
        stream,
        remote,
        direction: LinkDirection::Dialed,
        who,
        lines,
        early,
        live,
        wire: Wire::Plain,
    };
    let mut outcome = link::run(mesh, setup).instrument(span).await;
    outcome.lasted = started.elapsed();
    outcome
}

/// Dials with the Noise handshake. A `--peer` that does not answer it (a
/// Go peer) is reported, so the next dial tries plaintext.
async fn dial_noise(
    mesh: &Mesh,
    mut stream: TcpStream,
    remote: SocketAddr,
    expect: Expect,
    slot: OwnedSemaphorePermit,
) -> LinkOutcome {
    let started = Instant::now();
    let failed = |no_noise| LinkOutcome {
        lasted: started.elapsed(),
        no_noise,
        ..LinkOutcome::default()
    };
    let unknown = matches!(expect, Expect::Unknown { .. });
    let t = mesh.timing();
    let shaken = tokio::select! {
        () = mesh.cancel_token().cancelled() => return failed(false),
        r = timeout(t.dial_timeout, mesh.secure().initiate(&mut stream, mesh.our_hello())) => r,
    };
    let est = match shaken {
        Ok(Ok(est)) => est,
        Ok(Err(SecureError::Closed)) | Err(_) if unknown => {
            debug!(%remote, "no answer to the noise handshake; trying plaintext next");
            return failed(true);
        }
        Ok(Err(e)) => {
            warn!(%remote, "noise handshake failed: {e}");
            return failed(false);
        }
        Err(_) => {
            debug!(%remote, "noise handshake stalled");
            return failed(false);
        }
    };
    if let Expect::Peer { id, .. } = &expect
        && **id != *est.peer.peer_id
    {
        warn!(%remote, expected = %id, answered = est.peer.peer_id, "a different peer answered");
        return failed(false);
    }
    drop(slot);
    let mut outcome = run_noise_link(mesh, stream, remote, LinkDirection::Dialed, est).await;
    outcome.lasted = started.elapsed();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_negotiate_to_the_slower_side() {
        let mesh = crate::mesh::tests::test_mesh();
        let theirs = PeerMeta {
            heartbeat_ms: Some(5000),
            ..PeerMeta::ours(5000)
        };
        let l = liveness(&mesh, PeerKind::P2pchatd, theirs.heartbeat_ms);
        assert_eq!(l.heartbeat, Duration::from_secs(5));
        let silly = PeerMeta {
            heartbeat_ms: Some(1),
            ..PeerMeta::ours(1)
        };
        let l = liveness(&mesh, PeerKind::P2pchatd, silly.heartbeat_ms);
        assert_eq!(l.heartbeat, mesh.timing().heartbeat);
        assert!(liveness(&mesh, PeerKind::Go, None).dead_after.is_none());
    }
}
