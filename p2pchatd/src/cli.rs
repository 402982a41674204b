//! Command-line flags of `p2pchatd` (DESIGN §2) and their checks.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use shared::cli::{DocFlags, socket_or_default};
use shared::config::{CONFIG_ENV, FileConfig, Loaded, check_host_port, expand_home};
use shared::netif;
use shared::paths::SOCKET_ENV;
use shared::text::validate_nick;

use crate::config::{Config, DEFAULT_MULTICAST, DiscoveryConfig, Files, Notify, Timing};
use crate::store::Retention;

const EXAMPLES: &str = "\
Examples:
  p2pchatd                                  join the LAN chat as $USER
  p2pchatd --nick alice --interface eth0    announce on eth0 only
  p2pchatd --no-discovery --peer 10.0.3.7:8080
                                            link to one peer across subnets
  p2pchatd --interface 127.0.0.1 --listen 127.0.0.1 --port 0
                                            a private room on this machine
  p2pchatd --daemon                         run in the background

Clients talk to it with `p2pchat` (see `p2pchat --help`).";

/// The p2pchat daemon: a serverless chat for the local network
///
/// Finds peers on the LAN by multicast, keeps a TCP link to each, holds
/// recent history and serves a JSON-RPC API on a local Unix socket, so you
/// stay present whether or not a client is attached.
#[derive(Debug, Parser)]
#[command(name = "p2pchatd", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Your nick: 1-20 characters, no whitespace [default: $USER]
    #[arg(long, visible_alias = "username", value_name = "NAME")]
    pub nick: Option<String>,

    /// TCP chat port [default: first free in 8080-8999, then any; 0 = any]
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,

    /// IP address the chat port listens on [default: 0.0.0.0]
    #[arg(long, value_name = "IP")]
    pub listen: Option<IpAddr>,

    /// Discovery group and port [default: 224.0.0.1:9999]
    #[arg(long, value_name = "ADDR:PORT")]
    pub multicast: Option<SocketAddrV4>,

    /// Interface to discover on, by IPv4 address or name; repeatable
    /// [default: every up, multicast-capable IPv4 interface but loopback,
    /// bridges, veth pairs and tunnels; else loopback]
    #[arg(long = "interface", value_name = "IP|NAME")]
    pub interfaces: Vec<String>,

    /// Peer to dial without discovery (crosses subnets); repeatable
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub peers: Vec<String>,

    /// Send and join nothing on multicast; link only with --peer and with
    /// peers that dial us
    #[arg(long)]
    pub no_discovery: bool,

    /// API socket [default: $XDG_RUNTIME_DIR/p2pchat/p2pchatd.sock, else
    /// /tmp/p2pchat-$UID/p2pchatd.sock]
    #[arg(long, env = SOCKET_ENV, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Your identity: the key that is who you are to your peers, made on
    /// first start [default: $XDG_DATA_HOME/p2pchat/identity, else
    /// ~/.local/share/p2pchat/identity]
    #[arg(long, value_name = "PATH")]
    pub identity: Option<PathBuf>,

    /// Events held in history [default: 1000]
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub history: Option<u32>,

    /// Days of history the store keeps (in $XDG_STATE_HOME/p2pchat/history.db,
    /// default ~/.local/state/p2pchat/) [default: 365]
    #[arg(long, value_name = "DAYS",
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub retain_days: Option<u32>,

    /// Events the store keeps at most; the oldest go first [default: 1000000]
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1_000..=1_000_000_000))]
    pub retain_messages: Option<u64>,

    /// Where accepted files land [default: $XDG_DOWNLOAD_DIR/p2pchat, else
    /// ~/Downloads/p2pchat]
    #[arg(long, value_name = "PATH")]
    pub download_dir: Option<PathBuf>,

    /// The most one offer of files may hold, e.g. 500M or 10G; larger
    /// offers are refused [default: 64G]
    #[arg(long, value_name = "SIZE", value_parser = shared::transfer::parse_size)]
    pub max_offer_size: Option<u64>,

    /// Accept offers without asking from: `verified` peers (whose
    /// fingerprint you compared), or `never` [default: never]
    #[arg(long, value_name = "WHO", value_parser = ["never", "verified"])]
    pub auto_accept: Option<String>,

    /// Settings file [default: $XDG_CONFIG_HOME/p2pchat/config.toml, else
    /// ~/.config/p2pchat/config.toml]; flags override it
    #[arg(long, env = CONFIG_ENV, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Fork into the background once serving; logs go to
    /// $XDG_STATE_HOME/p2pchat/p2pchatd.log (default ~/.local/state/...)
    #[arg(long)]
    pub daemon: bool,

    #[command(flatten)]
    pub docs: DocFlags,

    /// Link only with holders of the 32-byte key in FILE (`p2pchat keygen`
    /// makes one): a private room on a shared LAN. Implies
    /// --require-encryption; announces then carry no nick
    #[arg(long, value_name = "FILE")]
    pub network_key: Option<PathBuf>,

    /// Refuse plaintext peers (the Go program's): every link is encrypted
    #[arg(long)]
    pub require_encryption: bool,

    /// Links with p2pchatd peers in plaintext, as with Go peers: only for
    /// the bench, to measure what encryption costs. Both ends need it
    #[arg(long, hide = true, conflicts_with_all = ["network_key", "require_encryption"])]
    pub insecure_plaintext_links: bool,

    /// Log at debug level (same as --log-level debug)
    #[arg(long)]
    pub debug: bool,

    /// Log filter: a level (error, warn, info, debug, trace) or directives
    /// such as `warn,p2pchatd=debug`
    #[arg(
        long,
        value_name = "LEVEL",
        default_value = "info",
        conflicts_with = "debug"
    )]
    pub log_level: String,
}

impl Cli {
    /// The log filter the flags ask for.
    pub fn log_filter(&self) -> &str {
        if self.debug { "debug" } else { &self.log_level }
    }

    /// The socket path, and whether it is the default (a folder of ours).
    pub fn socket_path(&self) -> (PathBuf, bool) {
        (
            socket_or_default(self.socket.as_deref()),
            self.socket.is_none(),
        )
    }

    /// Where files land and which offers are taken: flags, then the file.
    fn files(&self, f: &shared::config::Files) -> Files {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let config_home = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
        let auto = match self.auto_accept.as_deref() {
            Some(who) => who == "verified",
            None => f.auto_accept == Some(shared::config::AutoAccept::Verified),
        };
        Files {
            download_dir: self
                .download_dir
                .as_deref()
                .map(|p| socket_or_default(Some(p)))
                .or_else(|| {
                    let dir = expand_home(f.download_dir.as_deref()?);
                    std::path::absolute(&dir).ok()
                })
                .or_else(|| {
                    shared::transfer::download_dir(home.as_deref(), config_home.as_deref())
                }),
            max_offer_bytes: self
                .max_offer_size
                .or_else(|| {
                    let s = f.max_offer_size.as_deref()?;
                    shared::transfer::parse_size(s).ok()
                })
                .unwrap_or(crate::config::DEFAULT_MAX_OFFER)
                .min(shared::transfer::MAX_OFFER_BYTES),
            auto_accept_verified: auto,
        }
    }

    /// The settings file the flags point at, read and checked.
    pub fn load_file(&self) -> Result<Loaded, shared::config::ConfigError> {
        shared::config::load(self.config.as_deref())
    }

    /// Checks the flags and resolves interfaces and defaults: a flag wins
    /// over the settings file, which wins over the built-in default.
    pub fn config(&self, file: &Loaded) -> anyhow::Result<Config> {
        let f: &FileConfig = &file.config;
        let net = &f.network;
        let given = self.nick.as_ref().or(f.nick.as_ref());
        let nick = match given {
            Some(n) => n.clone(),
            None => login_name().context("no --nick given and no user name found; pass --nick")?,
        };
        validate_nick(&nick).with_context(|| match given {
            Some(_) => format!("invalid nick {nick:?}"),
            None => format!("your user name {nick:?} is not a valid nick; pass --nick"),
        })?;
        let multicast = self
            .multicast
            .or(net.multicast)
            .unwrap_or(DEFAULT_MULTICAST);
        if !multicast.ip().is_multicast() {
            bail!("--multicast {multicast} is not a multicast address");
        }
        let peers = if self.peers.is_empty() {
            net.peers.clone().unwrap_or_default()
        } else {
            self.peers.clone()
        };
        for p in &peers {
            check_host_port(p)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("invalid --peer {p:?}"))?;
        }
        let interfaces = if self.interfaces.is_empty() {
            net.interfaces.clone().unwrap_or_default()
        } else {
            self.interfaces.clone()
        };
        let discovery = if self.no_discovery || net.discovery == Some(false) {
            None
        } else {
            Some(DiscoveryConfig {
                group: multicast,
                interfaces: resolve_interfaces(&interfaces)?,
            })
        };
        let network_key = self
            .network_key
            .clone()
            .or_else(|| net.network_key.as_deref().map(expand_home));
        let defaults = Retention::default();
        Ok(Config {
            nick,
            listen: self
                .listen
                .or(net.listen)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            port: self.port.or(net.port),
            discovery,
            static_peers: peers,
            network_key: network_key.as_deref().map(|p| socket_or_default(Some(p))),
            require_encryption: self.require_encryption || net.require_encryption == Some(true),
            plaintext_links: self.insecure_plaintext_links,
            socket: self.socket_path().0,
            identity: self.identity.as_deref().map(|p| socket_or_default(Some(p))),
            history: self.history.or(f.history.held).unwrap_or(DEFAULT_HISTORY) as usize,
            state_dir: shared::cli::state_dir(),
            retention: Retention {
                days: self
                    .retain_days
                    .or(f.history.retain_days)
                    .unwrap_or(defaults.days),
                messages: self
                    .retain_messages
                    .or(f.history.retain_messages)
                    .unwrap_or(defaults.messages),
            },
            notify: Notify {
                highlight: f.notify.highlight.clone(),
                command: f.notify.command.clone(),
            },
            files: self.files(&f.files),
            config_file: file.path.clone().or_else(shared::config::default_path),
            timing: Timing::default(),
        })
    }
}

/// Events held in memory when neither `--history` nor the file says.
const DEFAULT_HISTORY: u32 = 1000;

/// `$USER`, else `$LOGNAME`, else the name of our uid.
fn login_name() -> Option<String> {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|n| !n.is_empty()))
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
}

/// `--interface` values to IPv4 addresses; none given: the default choice
/// (every up, multicast-capable interface but loopback, bridges, veth pairs
/// and tunnels; those if nothing else is up; else loopback).
fn resolve_interfaces(wanted: &[String]) -> anyhow::Result<Vec<Ipv4Addr>> {
    let all = netif::list().context("cannot list network interfaces")?;
    if wanted.is_empty() {
        let mut chosen: Vec<Ipv4Addr> = netif::default_choice(&all)
            .into_iter()
            .filter(|c| c.used)
            .map(|c| c.interface.ip)
            .collect();
        chosen.dedup();
        if chosen.is_empty() {
            chosen.push(Ipv4Addr::LOCALHOST);
        }
        return Ok(chosen);
    }
    let mut out = Vec::new();
    for w in wanted {
        let ip = match w.parse::<Ipv4Addr>() {
            Ok(ip) => ip,
            Err(_) => all
                .iter()
                .find(|i| i.name == *w)
                .map(|i| i.ip)
                .with_context(|| {
                    format!("--interface {w}: no such interface with an IPv4 address")
                })?,
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("p2pchatd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_parse_and_check() {
        let c = cli(&[
            "--username",
            "bob",
            "--interface",
            "127.0.0.1",
            "--listen",
            "127.0.0.1",
            "--multicast",
            "239.255.1.2:4000",
            "--peer",
            "host:8080",
            "--history",
            "5",
        ]);
        let cfg = c.config(&Loaded::default()).unwrap();
        assert_eq!(cfg.nick, "bob");
        assert_eq!(cfg.history, 5);
        assert_eq!(cfg.discovery.unwrap().interfaces, vec![Ipv4Addr::LOCALHOST]);
        assert!(cli(&["--nick", "a b"]).config(&Loaded::default()).is_err());
        assert!(
            cli(&["--nick", "a", "--multicast", "10.0.0.1:1"])
                .config(&Loaded::default())
                .is_err()
        );
        assert!(
            cli(&["--nick", "a", "--peer", "nohost"])
                .config(&Loaded::default())
                .is_err()
        );
        assert!(
            cli(&["--nick", "a", "--interface", "no-such-if0"])
                .config(&Loaded::default())
                .is_err()
        );
        assert!(
            cli(&["--nick", "a", "--no-discovery"])
                .config(&Loaded::default())
                .unwrap()
                .discovery
                .is_none()
        );
        assert!(Cli::try_parse_from(["p2pchatd", "--history", "0"]).is_err());
        assert!(Cli::try_parse_from(["p2pchatd", "--debug", "--log-level", "warn"]).is_err());
    }

    #[test]
    fn interface_names_resolve() {
        assert_eq!(
            resolve_interfaces(&["lo".into()]).unwrap(),
            vec![Ipv4Addr::LOCALHOST]
        );
        assert!(!resolve_interfaces(&[]).unwrap().is_empty());
    }

    #[test]
    fn help_renders() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
