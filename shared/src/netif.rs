//! The machine's network interfaces, and which of them discovery uses by
//! default: the daemon picks with [`default_choice`], `p2pchat doctor`
//! explains the same choice.
//!
//! Bridges, veth pairs and tunnels are mostly Docker, libvirt and VPNs:
//! multicast there finds no one (or the wrong ones), so they are skipped
//! unless named with `--interface`, or unless nothing else is up (a
//! container's only interface is a veth; a libvirt host's address may sit
//! on its bridge).

use std::net::Ipv4Addr;
use std::path::Path;

use nix::net::if_::InterfaceFlags;

/// What an interface is, as far as the kernel tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Loopback,
    /// A network card (or a VM's).
    Physical,
    Wifi,
    Vlan,
    Bridge,
    Veth,
    /// tun/tap, WireGuard and other tunnels: mostly VPNs.
    Tunnel,
    /// Another virtual device (dummy, macvlan, ...).
    Virtual,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Physical => "physical",
            Self::Wifi => "wi-fi",
            Self::Vlan => "vlan",
            Self::Bridge => "bridge",
            Self::Veth => "veth",
            Self::Tunnel => "tun/VPN",
            Self::Virtual => "virtual",
        }
    }

    /// Skipped by default (used only when nothing else is up).
    pub fn skipped_by_default(self) -> bool {
        matches!(self, Self::Bridge | Self::Veth | Self::Tunnel)
    }
}

/// One IPv4 address of an interface, with what the interface is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ip: Ipv4Addr,
    pub kind: Kind,
    pub up: bool,
    pub multicast: bool,
}

/// Every interface with an IPv4 address.
pub fn list() -> std::io::Result<Vec<Interface>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    let mut out: Vec<Interface> = Vec::new();
    for ifa in addrs {
        let Some(ip) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|a| a.ip())
        else {
            continue;
        };
        let loopback = ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        let kind = if loopback {
            Kind::Loopback
        } else {
            kind_of(&Path::new("/sys/class/net").join(&ifa.interface_name))
        };
        let i = Interface {
            up: ifa.flags.contains(InterfaceFlags::IFF_UP),
            multicast: ifa.flags.contains(InterfaceFlags::IFF_MULTICAST),
            name: ifa.interface_name,
            ip,
            kind,
        };
        if !out.contains(&i) {
            out.push(i);
        }
    }
    Ok(out)
}

/// What sysfs says the interface at `dir` (`/sys/class/net/NAME`) is.
pub fn kind_of(dir: &Path) -> Kind {
    let uevent = std::fs::read_to_string(dir.join("uevent")).unwrap_or_default();
    let devtype = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVTYPE="))
        .unwrap_or("");
    let read_num = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let virtual_dev = std::fs::canonicalize(dir)
        .map(|p| p.starts_with("/sys/devices/virtual"))
        .unwrap_or(false);
    match devtype {
        "bridge" => return Kind::Bridge,
        "wlan" => return Kind::Wifi,
        "vlan" => return Kind::Vlan,
        "wireguard" | "ipip" | "gre" | "sit" | "vti" | "ppp" | "vxlan" | "geneve" => {
            return Kind::Tunnel;
        }
        _ => {}
    }
    if dir.join("bridge").is_dir() {
        return Kind::Bridge;
    }
    if dir.join("wireless").exists() || dir.join("phy80211").exists() {
        return Kind::Wifi;
    }
    // tun/tap, and links with no hardware address type of their own.
    if dir.join("tun_flags").exists() || read_num("type") == Some(65534) {
        return Kind::Tunnel;
    }
    if virtual_dev {
        // A veth's peer is another interface (its iflink is not itself),
        // and unlike a macvlan's it is no lower device of it.
        let has_lower = std::fs::read_dir(dir).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("lower_"))
        });
        return match (read_num("ifindex"), read_num("iflink")) {
            (Some(i), Some(l)) if i != l && !has_lower => Kind::Veth,
            _ => Kind::Virtual,
        };
    }
    Kind::Physical
}

/// Why an interface is or is not used for discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub interface: Interface,
    pub used: bool,
    pub why: String,
}

/// The default choice among `all`: every up, multicast-capable interface
/// but loopback and those [`Kind::skipped_by_default`]; if none, the
/// skipped ones; if none, loopback.
pub fn default_choice(all: &[Interface]) -> Vec<Choice> {
    let usable = |i: &Interface| i.up && i.multicast && i.kind != Kind::Loopback;
    let preferred = all
        .iter()
        .any(|i| usable(i) && !i.kind.skipped_by_default());
    let any_usable = all.iter().any(usable);
    all.iter()
        .map(|i| {
            // Loopback carries multicast with or without the flag.
            let (used, why) = if !i.up {
                (false, "down".to_owned())
            } else if i.kind == Kind::Loopback {
                if any_usable {
                    (false, "loopback: this machine only".to_owned())
                } else {
                    (true, "nothing else is up: this machine only".to_owned())
                }
            } else if !i.multicast {
                (false, "no multicast on it".to_owned())
            } else if i.kind.skipped_by_default() && preferred {
                (
                    false,
                    format!(
                        "a {} (Docker, libvirt, VPN): skipped unless named with --interface",
                        i.kind.as_str()
                    ),
                )
            } else if i.kind.skipped_by_default() {
                (
                    true,
                    format!("a {}, but nothing else is up", i.kind.as_str()),
                )
            } else {
                (true, "up, multicast".to_owned())
            };
            Choice {
                interface: i.clone(),
                used,
                why,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(name: &str, kind: Kind) -> Interface {
        Interface {
            name: name.into(),
            ip: Ipv4Addr::new(10, 0, 0, 1),
            kind,
            up: true,
            multicast: kind != Kind::Loopback,
        }
    }

    fn used(c: &[Choice]) -> Vec<&str> {
        c.iter()
            .filter(|c| c.used)
            .map(|c| c.interface.name.as_str())
            .collect()
    }

    #[test]
    fn bridges_veths_and_tunnels_only_when_nothing_else_is_up() {
        let all = [
            i("lo", Kind::Loopback),
            i("eth0", Kind::Physical),
            i("wlan0", Kind::Wifi),
            i("docker0", Kind::Bridge),
            i("veth1a", Kind::Veth),
            i("tun0", Kind::Tunnel),
        ];
        let c = default_choice(&all);
        assert_eq!(used(&c), ["eth0", "wlan0"]);
        assert!(c[3].why.contains("bridge (Docker, libvirt, VPN): skipped"));
        // A container: its veth is all there is.
        assert_eq!(
            used(&default_choice(&[
                i("lo", Kind::Loopback),
                i("eth0", Kind::Veth)
            ])),
            ["eth0"]
        );
        assert_eq!(used(&default_choice(&[i("lo", Kind::Loopback)])), ["lo"]);
        let mut down = i("eth1", Kind::Physical);
        down.up = false;
        assert_eq!(
            default_choice(&[down])[0].why,
            "down",
            "a down interface says so"
        );
    }

    #[test]
    fn loopback_is_classified() {
        let all = list().unwrap();
        assert!(
            all.iter()
                .any(|i| i.kind == Kind::Loopback && i.ip == Ipv4Addr::LOCALHOST)
        );
    }
}
