//! Discovery on the multicast group (PROTOCOL §1).
//!
//! We announce at start and every 5 s, answer a peer we have not heard of at
//! once (so a newcomer is linked in milliseconds, not after a period), and
//! say `leave` when stopping. Received datagrams that are ours, stale, too
//! large or malformed are dropped and logged at debug; nothing here is fatal.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use chrono::Utc;
use shared::discovery::{Datagram, DatagramType};
use shared::limits::{MAX_DATAGRAM, PROTO_TAG};
use shared::secure::CAP_NOISE;
use shared::wire::PeerMeta;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::DiscoveryConfig;
use crate::mesh::{Mesh, Sighting};

/// The bound discovery sockets: one to receive on the group, one per
/// interface to send from (each with its own multicast interface set).
pub(crate) struct DiscoverySockets {
    recv: UdpSocket,
    senders: Vec<(Ipv4Addr, UdpSocket)>,
    group: SocketAddrV4,
}

fn udp() -> io::Result<Socket> {
    Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
}

/// Binds the group's port (shared with other daemons on this host) and
/// joins the group on every interface. Needs a tokio runtime.
pub(crate) fn bind(cfg: &DiscoveryConfig) -> io::Result<DiscoverySockets> {
    let group = cfg.group;
    let recv = udp()?;
    recv.set_reuse_address(true)?;
    recv.set_reuse_port(true)?;
    // Bound to the group address, the socket gets only this group's
    // datagrams, not every group another program joined on this port.
    recv.bind(&SocketAddr::V4(group).into())?;
    recv.set_multicast_all_v4(false)?;
    for iface in &cfg.interfaces {
        recv.join_multicast_v4(group.ip(), iface)
            .map_err(|e| io::Error::new(e.kind(), format!("joining {group} on {iface}: {e}")))?;
    }
    recv.set_nonblocking(true)?;
    let recv = UdpSocket::from_std(recv.into())?;
    let mut senders = Vec::with_capacity(cfg.interfaces.len());
    for iface in &cfg.interfaces {
        let s = udp()?;
        s.set_multicast_if_v4(iface)?;
        s.set_multicast_ttl_v4(1)?;
        s.set_multicast_loop_v4(true)?;
        s.bind(&SocketAddr::V4(SocketAddrV4::new(*iface, 0)).into())?;
        s.set_nonblocking(true)?;
        senders.push((*iface, UdpSocket::from_std(s.into())?));
    }
    Ok(DiscoverySockets {
        recv,
        senders,
        group,
    })
}

/// Announces, listens and answers until `cancel`, then says `leave`.
/// `address` is what we put in the `address` field (`LISTEN:PORT`).
pub(crate) async fn run(
    sockets: DiscoverySockets,
    mesh: Mesh,
    address: String,
    cancel: CancellationToken,
) {
    let mut beats = mesh.beats();
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let ours = Announcer {
        sockets: &sockets,
        mesh: &mesh,
        address,
    };
    info!(group = %sockets.group, interfaces = ?sockets.senders.iter().map(|s| s.0).collect::<Vec<_>>(), "discovery on");
    ours.send(DatagramType::Announce).await;
    // Beats since our last announce. Announces ride the links' beat, so
    // daemons whose clocks agree announce together.
    let mut quiet = 0;
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            r = beats.changed() => {
                if r.is_err() {
                    break;
                }
                mesh.expire();
                quiet += 1;
                if quiet >= announce_beats(&mesh) {
                    ours.send(DatagramType::Announce).await;
                    quiet = 0;
                }
            }
            r = sockets.recv.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    if handle(&mesh, &buf[..n], from) {
                        ours.send(DatagramType::Pong).await;
                    }
                }
                Err(e) => debug!(error = %e, "discovery receive failed"),
            },
        }
    }
    ours.send(DatagramType::Leave).await;
}

/// Beats between our announces. Go peers call a peer stale after 10 s
/// without one, so while any is around we announce every 4 s; our own
/// peers know us through their links and hear a newcomer's first announce
/// answered at once, so among them every 10 s will do (announces are most
/// of what wakes an idle daemon in a large room).
fn announce_beats(mesh: &Mesh) -> u64 {
    let t = mesh.timing();
    t.beats(if mesh.knows_go_peers() {
        t.announce_every
    } else {
        t.announce_quiet
    })
}

/// Handles one datagram; true when it came from a peer new to us.
fn handle(mesh: &Mesh, bytes: &[u8], from: SocketAddr) -> bool {
    if bytes.len() > MAX_DATAGRAM {
        debug!(%from, "dropped an oversized datagram");
        return false;
    }
    let d = match Datagram::decode(bytes, Utc::now()) {
        Ok(d) => d,
        Err(e) => {
            debug!(%from, "dropped a datagram: {e}");
            return false;
        }
    };
    if *d.peer_id == **mesh.peer_id() || d.kind == DatagramType::Unknown {
        return false;
    }
    let nick = shared::text::sanitize_foreign_nick(&d.username).into_owned();
    let sighting = Sighting {
        addr: SocketAddr::new(from.ip(), d.port),
        shown: mesh.announced_as(&d.peer_id, &nick),
        nick,
        alive: d.kind.is_alive(),
        p2pchatd: d.metadata.as_ref().is_some_and(PeerMeta::is_p2pchatd),
        noise: d
            .metadata
            .as_ref()
            .is_some_and(|m| m.caps.iter().any(|c| c == CAP_NOISE)),
        instance: d.metadata.and_then(|m| m.instance),
        peer_id: d.peer_id,
    };
    let new = mesh.heard(&sighting);
    if new {
        info!(peer = %sighting.peer_id, addr = %sighting.addr, "discovered");
    }
    new
}

struct Announcer<'a> {
    sockets: &'a DiscoverySockets,
    mesh: &'a Mesh,
    address: String,
}

impl Announcer<'_> {
    async fn send(&self, kind: DatagramType) {
        let d = Datagram {
            kind,
            peer_id: self.mesh.peer_id().to_string(),
            // With a network key, those without it learn no nick either.
            username: if self.mesh.secure().has_network_key() {
                String::new()
            } else {
                self.mesh.nick().to_string()
            },
            // The Go peer sends "" in a leave.
            address: if kind == DatagramType::Leave {
                String::new()
            } else {
                self.address.clone()
            },
            port: self.mesh.port(),
            timestamp: Utc::now(),
            sequence: 0,
            metadata: Some(PeerMeta {
                proto: Some(PROTO_TAG.to_owned()),
                caps: self.mesh.caps(),
                instance: Some(self.mesh.instance().to_owned()),
                ..PeerMeta::default()
            }),
        };
        let bytes = d.encode();
        for (iface, s) in &self.sockets.senders {
            if let Err(e) = s.send_to(&bytes, self.sockets.group).await {
                warn!(%iface, error = %e, "could not send {}", kind.as_str());
            }
        }
    }
}
