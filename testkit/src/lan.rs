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

/// A chat-wire line in `sender`'s name, as anyone could send it; with our
/// metadata when `p2pchatd`.
pub fn forged_line(kind: &str, sender: &str, content: &str, p2pchatd: bool) -> String {
    let meta = if p2pchatd {
        r#","metadata":{"proto":"p2pchatd/1","caps":["heartbeat"],"heartbeat_ms":2000}"#
    } else {
        ""
    };
    line_as(kind, sender, "mallory", content, meta)
}

/// A Go peer's line: `sender` calling itself `nick`.
pub fn go_line(kind: &str, sender: &str, nick: &str, content: &str) -> String {
    line_as(kind, sender, nick, content, "")
}

fn line_as(kind: &str, sender: &str, nick: &str, content: &str, meta: &str) -> String {
    format!(
        r#"{{"id":"{:016x}","type":"{kind}","sender_id":"{sender}","username":"{nick}","content":"{content}","sequence":0,"room_id":"general"{meta}}}"#,
        fastrand::u64(..)
    ) + "\n"
}

/// The id of the `i`th forged peer: `a00000_1` and on, smaller than any
/// nick's id, so a daemon is the one to dial them.
pub fn forged_id(i: usize) -> String {
    format!("a{i:05}_1")
}

/// `n` announces with fresh ids ([`forged_id`]) from 100 addresses
/// (127.0.0.100 and up), all pointing at `port`.
pub async fn announce_flood(group: SocketAddrV4, n: usize, port: u16) {
    let forgers: Vec<Forger> = (0..100u8)
        .map(|i| Forger::new(group, loopback(100 + i)))
        .collect();
    for i in 0..n {
        forgers[i % forgers.len()].send(DatagramType::Announce, &forged_id(i), port, true);
        // Paced so that the daemon's receive buffer takes them all: a
        // burst would mostly be dropped by the kernel, sparing it.
        if i % 100 == 99 {
            tokio::time::sleep(FLOOD_PACE).await;
        }
    }
}

/// `n` hostile connections to `to` from four addresses (127.0.0.10-13): a
/// third idle, a third Go-style joins with fresh ids, a third claims on
/// forged ids in our metadata. Returns those that connected, held open.
pub async fn hostile_crowd(to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..n {
        let from = loopback(10 + u8::try_from(i % 4).unwrap_or(0));
        let connect = connect_from(from, to);
        let Ok(Ok(mut s)) = tokio::time::timeout(CONNECT_WAIT, connect).await else {
            continue;
        };
        let first = match i % 3 {
            0 => String::new(),
            1 => forged_line("join", &format!("sq{i}_1"), "joined", false),
            _ => forged_line("join", &forged_id(i), "joined", true),
        };
        let _ = tokio::io::AsyncWriteExt::write_all(&mut s, first.as_bytes()).await;
        held.push(s);
    }
    held
}

/// The pause after every 100 forged announces: ~50,000 a second.
const FLOOD_PACE: std::time::Duration = std::time::Duration::from_millis(2);

/// How long one hostile connect may take: a daemon that stopped accepting
/// leaves it hanging in the kernel's backlog.
const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);
