//! `p2pchat doctor`: why nobody shows up, in plain sentences, and how to
//! fix it. Works with no daemon too: the interfaces, the routes and a
//! multicast self-test (our own datagram heard back on each interface)
//! need none.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use shared::api::{Call, PeerInfo, StatusInfo};
use shared::config::FileConfig;
use shared::netif::{self, Choice};

use crate::client::{Client, ClientError};

/// After this long with nobody linked, `status` and the TUI hint at
/// `p2pchat doctor`.
pub(crate) const ALONE_HINT_S: u64 = 15;
/// How long the self-test waits for its datagram to come back.
const ECHO_WAIT: Duration = Duration::from_secs(1);
/// How long a connection to our own chat port may take.
const CONNECT_WAIT: Duration = Duration::from_secs(1);
/// Peers heard this recently count as present.
const RECENT_MS: u64 = 60_000;
/// The discovery group when neither the daemon nor the settings say.
const DEFAULT_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 1), 9999);

/// One finding: what was checked, whether it is fine, and the fix.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct InterfaceReport {
    pub name: String,
    pub ip: Ipv4Addr,
    pub kind: netif::Kind,
    pub used: bool,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerSeen {
    pub nick: String,
    pub linked: bool,
    pub seen_ms_ago: u64,
}

/// Everything `doctor` found; `ok` when every check passed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
    pub interfaces: Vec<InterfaceReport>,
    pub peers: Vec<PeerSeen>,
    pub firewall: Vec<String>,
}

/// Examines the daemon on `socket` (if any) and this machine's network.
pub(crate) async fn examine(socket: &Path, settings: &FileConfig) -> Report {
    let mut checks = Vec::new();
    let daemon = ask_daemon(socket).await;
    let ours = env!("CARGO_PKG_VERSION");
    match &daemon {
        Ok((s, _)) => {
            checks.push(Check {
                name: "daemon",
                ok: true,
                detail: format!(
                    "p2pchatd {} is running (pid {}, socket {})",
                    s.version, s.pid, s.socket
                ),
                fix: None,
            });
            checks.push(Check {
                name: "version",
                ok: s.version == ours,
                detail: if s.version == ours {
                    format!("client and daemon are both {ours}")
                } else {
                    format!("the daemon is {}, this client is {ours}", s.version)
                },
                fix: (s.version != ours).then(|| {
                    "restart the daemon so both are the same: `p2pchat stop`, then `p2pchat` (or `systemctl --user restart p2pchatd`)".to_owned()
                }),
            });
        }
        Err(e) => checks.push(Check {
            name: "daemon",
            ok: false,
            detail: e.to_string(),
            fix: Some(
                "start it: `p2pchat` starts it, or `systemctl --user enable --now p2pchatd`"
                    .to_owned(),
            ),
        }),
    }
    let status = daemon.as_ref().ok().map(|(s, _)| s);
    let group = status
        .and_then(|s| s.multicast.as_deref())
        .and_then(|g| g.parse().ok())
        .or(settings.network.multicast)
        .unwrap_or(DEFAULT_GROUP);
    let discovery_on = status.map_or(settings.network.discovery != Some(false), |s| {
        s.multicast.is_some()
    });

    // Which interfaces discovery uses, and why.
    let all = netif::list().unwrap_or_default();
    let mut choice = netif::default_choice(&all);
    let named: Option<Vec<String>> = match status {
        Some(s) => Some(s.interfaces.clone()),
        None => settings.network.interfaces.clone(),
    };
    if let Some(named) = &named {
        for c in &mut choice {
            let i = &c.interface;
            let is_named = named
                .iter()
                .any(|n| *n == i.name || n.parse::<Ipv4Addr>().ok() == Some(i.ip));
            let default_why = std::mem::take(&mut c.why);
            c.used = is_named;
            c.why = match (status.is_some(), is_named) {
                (true, true) => "used by p2pchatd".to_owned(),
                (false, true) => "named in the settings".to_owned(),
                (_, false) if c.interface.kind.skipped_by_default() => default_why,
                (true, false) => "not used by p2pchatd".to_owned(),
                (false, false) => "not named in the settings".to_owned(),
            };
        }
    }
    if !discovery_on {
        for c in &mut choice {
            c.used = false;
            c.why = "discovery is off (--no-discovery)".to_owned();
        }
    }
    let used: Vec<&Choice> = choice.iter().filter(|c| c.used).collect();
    let heard = daemon.as_ref().is_ok_and(|(_, p)| {
        p.iter()
            .any(|p| p.connected || p.last_seen_ms.is_some_and(|ms| ms <= RECENT_MS))
    });
    if discovery_on {
        let only_loopback = used
            .iter()
            .all(|c| c.interface.kind == netif::Kind::Loopback);
        if only_loopback {
            // Fine while peers on this machine are all there is to find.
            checks.push(Check {
                name: "interfaces",
                ok: heard,
                detail: "discovery runs on loopback only: peers on this machine can be found, nobody on another one".to_owned(),
                fix: (!heard).then(|| {
                    "connect to a network, or name an interface: `p2pchatd --interface NAME` (bridges, veth pairs and tunnels are skipped unless named)"
                        .to_owned()
                }),
            });
        }
        for c in &used {
            checks.push(self_test(&c.interface, group).await);
        }
        checks.push(route_check(group, &used));
    }

    // The chat port, and who was heard.
    let mut peers = Vec::new();
    if let Ok((s, list)) = &daemon {
        checks.push(chat_port(s, &used).await);
        for p in list {
            let ago = if p.connected {
                0
            } else {
                p.last_seen_ms.unwrap_or(u64::MAX)
            };
            if ago <= RECENT_MS {
                peers.push(PeerSeen {
                    nick: p.nick.clone(),
                    linked: p.connected,
                    seen_ms_ago: ago,
                });
            }
        }
        let linked = peers.iter().filter(|p| p.linked).count();
        checks.push(Check {
            name: "peers",
            ok: !peers.is_empty(),
            detail: match (peers.len(), linked) {
                (0, _) => "no peer heard in the last minute".to_owned(),
                (n, l) => format!("{n} heard in the last minute, {l} linked"),
            },
            fix: peers.is_empty().then(|| {
                "if others run p2pchat on this network: open the firewall (below) on both sides; across subnets multicast does not pass, so link directly with `p2pchatd --peer HOST:PORT`".to_owned()
            }),
        });
    }
    let port = status.map(|s| s.port);
    Report {
        ok: checks.iter().all(|c| c.ok),
        checks,
        interfaces: choice
            .into_iter()
            .map(|c| InterfaceReport {
                name: c.interface.name,
                ip: c.interface.ip,
                kind: c.interface.kind,
                used: c.used,
                why: c.why,
            })
            .collect(),
        peers,
        firewall: firewall_rules(group.port(), port),
    }
}

async fn ask_daemon(socket: &Path) -> Result<(StatusInfo, Vec<PeerInfo>), ClientError> {
    let c = Client::connect(socket).await?;
    let s: StatusInfo = c.call(&Call::Status).await?;
    let p: Vec<PeerInfo> = c.call(&Call::Peers).await?;
    Ok((s, p))
}

/// Sends a datagram to the group from `iface` and waits to hear it back
/// there: the group's port is shared with a running daemon, which drops
/// the datagram's unknown type (so do Go peers).
async fn self_test(iface: &netif::Interface, group: SocketAddrV4) -> Check {
    let name = "multicast";
    let nonce = format!("doctor-{:016x}", getrandom::u64().unwrap_or(0));
    let started = Instant::now();
    let result = async {
        let recv = group_socket(iface.ip, group)?;
        let send = std::net::UdpSocket::bind(SocketAddrV4::new(iface.ip, 0))?;
        let send = socket2::Socket::from(send);
        send.set_multicast_if_v4(&iface.ip)?;
        send.set_multicast_ttl_v4(1)?;
        send.set_multicast_loop_v4(true)?;
        let datagram = serde_json::json!({
            "type": "doctor", "peer_id": nonce, "username": "", "address": "",
            "port": 1, "timestamp": chrono::Utc::now().to_rfc3339(), "sequence": 0,
        })
        .to_string();
        send.send_to(datagram.as_bytes(), &SocketAddr::V4(group).into())?;
        let recv = tokio::net::UdpSocket::from_std(recv.into())?;
        let mut buf = vec![0u8; 2048];
        tokio::time::timeout(ECHO_WAIT, async {
            loop {
                let (n, _) = recv.recv_from(&mut buf).await?;
                if buf[..n].windows(nonce.len()).any(|w| w == nonce.as_bytes()) {
                    return Ok::<(), std::io::Error>(());
                }
            }
        })
        .await
        .map_err(|_| std::io::Error::other("it did not come back within 1 s"))?
    }
    .await;
    match result {
        Ok(()) => Check {
            name,
            ok: true,
            detail: format!(
                "self-test on {} ({}): our datagram to {group} came back in {:.1} ms",
                iface.name,
                iface.ip,
                started.elapsed().as_secs_f64() * 1e3
            ),
            fix: None,
        },
        Err(e) => Check {
            name,
            ok: false,
            detail: format!(
                "self-test on {} ({}): multicast to {group} does not work: {e}",
                iface.name, iface.ip
            ),
            fix: Some(format!(
                "check that {} is up and has multicast (`ip link show {}`), and that the firewall lets UDP {} in (below)",
                iface.name,
                iface.name,
                group.port()
            )),
        },
    }
}

/// A socket on the group's port (shared with a daemon), joined on `ip`.
fn group_socket(ip: Ipv4Addr, group: SocketAddrV4) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(group).into())?;
    s.set_multicast_all_v4(false)?;
    s.join_multicast_v4(group.ip(), &ip)?;
    Ok(s)
}

/// Whether the routing table covers the group: without a route, programs
/// that do not pick an interface (Go peers) cannot send to it.
fn route_check(group: SocketAddrV4, used: &[&Choice]) -> Check {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let ip = u32::from(*group.ip());
    let covered = routes.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let dest = u32::from_str_radix(f.get(1)?, 16).ok()?.swap_bytes();
        let mask = u32::from_str_radix(f.get(7)?, 16).ok()?.swap_bytes();
        (ip & mask == dest & mask).then(|| f[0].to_owned())
    });
    let dev = used
        .iter()
        .find(|c| c.interface.kind != netif::Kind::Loopback)
        .map_or("eth0", |c| c.interface.name.as_str());
    match covered {
        Some(via) => Check {
            name: "route",
            ok: true,
            detail: format!("the group {} is routed via {via}", group.ip()),
            fix: None,
        },
        None => Check {
            name: "route",
            ok: false,
            detail: format!(
                "no route covers the discovery group {}: multicast cannot leave this machine, and Go peers here cannot announce",
                group.ip()
            ),
            fix: Some(format!(
                "add one: `sudo ip route add 224.0.0.0/4 dev {dev}` (or connect a network with a default route)"
            )),
        },
    }
}

/// Whether the chat port takes connections on the interfaces in use.
async fn chat_port(s: &StatusInfo, used: &[&Choice]) -> Check {
    let listen: Option<Ipv4Addr> = s.listen.parse().ok();
    let targets: Vec<Ipv4Addr> = match listen {
        Some(ip) if !ip.is_unspecified() => vec![ip],
        _ => used.iter().map(|c| c.interface.ip).collect(),
    };
    let targets = if targets.is_empty() {
        vec![Ipv4Addr::LOCALHOST]
    } else {
        targets
    };
    let mut failed = Vec::new();
    for ip in &targets {
        let addr = SocketAddrV4::new(*ip, s.port);
        match tokio::time::timeout(CONNECT_WAIT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failed.push(format!("{addr}: {e}")),
            Err(_) => failed.push(format!("{addr}: no answer within 1 s")),
        }
    }
    let shown: Vec<String> = targets
        .iter()
        .map(|ip| format!("{ip}:{}", s.port))
        .collect();
    Check {
        name: "chat port",
        ok: failed.is_empty(),
        detail: if failed.is_empty() {
            format!("the chat port takes connections on {}", shown.join(", "))
        } else {
            format!(
                "the chat port does not take connections: {}",
                failed.join("; ")
            )
        },
        fix: (!failed.is_empty()).then(|| {
            format!(
                "see `journalctl --user -u p2pchatd` or the daemon's log; it listens on {}",
                s.listen
            )
        }),
    }
}

/// The rules that let discovery and links in, for the firewalls found
/// here (all of them if none is).
fn firewall_rules(udp: u16, tcp: Option<u16>) -> Vec<String> {
    let tcp = tcp.map_or("8080:8999".to_owned(), |p| p.to_string());
    let tcp_ufw = tcp.replace('-', ":");
    let tcp_nft = tcp.replace(':', "-");
    let all = [
        (
            "ufw",
            format!("ufw: sudo ufw allow {udp}/udp && sudo ufw allow {tcp_ufw}/tcp"),
        ),
        (
            "firewall-cmd",
            format!(
                "firewalld: sudo firewall-cmd --permanent --add-port={udp}/udp --add-port={}/tcp && sudo firewall-cmd --reload",
                tcp_nft
            ),
        ),
        (
            "nft",
            format!(
                "nftables: sudo nft add rule inet filter input udp dport {udp} accept && sudo nft add rule inet filter input tcp dport {tcp_nft} accept"
            ),
        ),
    ];
    let found: Vec<String> = all
        .iter()
        .filter(|(bin, _)| on_path(bin))
        .map(|(_, r)| r.clone())
        .collect();
    if found.is_empty() {
        all.into_iter().map(|(_, r)| r).collect()
    } else {
        found
    }
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| d.join(bin).is_file())
            || ["/usr/sbin", "/sbin"]
                .iter()
                .any(|d| Path::new(d).join(bin).is_file())
    })
}

/// The report in sentences.
pub(crate) fn text(r: &Report) -> String {
    let mut out = String::new();
    let mark = |ok: bool| if ok { "ok  " } else { "FAIL" };
    // The daemon's checks, then the interfaces, then the network's checks.
    let split = r
        .checks
        .iter()
        .position(|c| matches!(c.name, "interfaces" | "multicast" | "route"))
        .unwrap_or(r.checks.len());
    let (first, rest) = r.checks.split_at(split);
    for c in first {
        line(&mut out, mark(c.ok), c);
    }
    let _ = writeln!(out, "interfaces:");
    let w = r.interfaces.iter().map(|i| i.name.len()).max().unwrap_or(0);
    for i in &r.interfaces {
        let _ = writeln!(
            out,
            "      {:<w$}  {:<15}  {:<9}  {}: {}",
            i.name,
            i.ip.to_string(),
            i.kind.as_str(),
            if i.used { "used" } else { "not used" },
            i.why
        );
    }
    for c in rest {
        line(&mut out, mark(c.ok), c);
    }
    for p in &r.peers {
        let how = if p.linked {
            "linked".to_owned()
        } else {
            format!("heard {} s ago, not linked", p.seen_ms_ago / 1000)
        };
        let _ = writeln!(out, "      {} ({how})", p.nick);
    }
    let _ = writeln!(
        out,
        "firewall: if peers on other machines do not show up, let discovery and links in:"
    );
    for f in &r.firewall {
        let _ = writeln!(out, "      {f}");
    }
    let _ = writeln!(
        out,
        "across subnets (multicast does not pass routers): p2pchatd --peer HOST:PORT"
    );
    let _ = writeln!(
        out,
        "{}",
        if r.ok {
            "all checks passed"
        } else {
            "something is wrong: see FAIL above"
        }
    );
    out
}

fn line(out: &mut String, mark: &str, c: &Check) {
    let _ = writeln!(out, "{mark}  {}", c.detail);
    if let Some(fix) = &c.fix {
        let _ = writeln!(out, "      fix: {fix}");
    }
}
