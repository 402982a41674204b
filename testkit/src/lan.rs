//! Someone else on the LAN, played on loopback: datagrams to a discovery
//! group and TCP connections to a chat port, sent from source addresses of
//! its own (127.0.0.2 and up) so that limits per address tell it apart from
//! the real peers on 127.0.0.1.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use shared::discovery::{Datagram, DatagramType};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;

/// `127.0.0.{n}`: a loopback source address of its own.
pub fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// Sends discovery datagrams to a group, from a source address it picks.
pub struct Forger {
    sock: std::net::UdpSocket,
    group: SocketAddrV4,
}

impl Forger {
    pub fn new(group: SocketAddrV4, from: Ipv4Addr) -> Self {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("udp socket");
        s.bind(&SocketAddr::from((from, 0)).into())
            .expect("bind the source address");
        s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)
            .expect("multicast on loopback");
        s.set_multicast_loop_v4(true).expect("multicast loop");
        s.set_multicast_ttl_v4(1).expect("ttl 1");
        Self {
            sock: s.into(),
            group,
        }
    }

    /// A datagram of `kind` in `peer_id`'s name, stamped now, with our
    /// metadata when `p2pchatd`.
    pub fn send(&self, kind: DatagramType, peer_id: &str, port: u16, p2pchatd: bool) {
        let d = Datagram {
            kind,
            peer_id: peer_id.into(),
            username: "forged".into(),
            address: String::new(),
            port,
            timestamp: chrono::Utc::now(),
            sequence: 0,
            metadata: p2pchatd.then(|| shared::wire::PeerMeta::ours(2000)),
        };
        self.sock
            .send_to(&d.encode(), self.group)
            .expect("send a datagram");
    }
}

/// A TCP connection to `to` from the source address `from`.
pub async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.set_nonblocking(true)?;
    let s = tokio::net::TcpSocket::from_std_stream(s.into());
    s.connect(to).await
}
