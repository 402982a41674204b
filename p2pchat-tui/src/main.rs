//! `p2pchat`: the terminal UI, or with a subcommand a shell command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, CommandFactory, Parser};
use p2pchat_tui::cli::{self, Command};
use p2pchat_tui::tui;
use shared::cli::{DocFlags, socket_or_default};
use shared::config::CONFIG_ENV;
use shared::paths::SOCKET_ENV;

const EXAMPLES: &str = "\
Examples:
  p2pchat                           open the chat (starts p2pchatd if needed)
  p2pchat --nick alice              ... starting p2pchatd as alice
  p2pchat say hello everyone        send a line
  tail -f build.log | p2pchat say - send each line of a stream
  p2pchat tail -f                   follow the room
  p2pchat tail -n 0 -f --json       events for scripts, one JSON per line
  p2pchat peers                     who is there
  p2pchat fingerprint bob           bob's key, to compare with bob's own
  p2pchat trust bob                 ... once it matches: bob is verified";

/// The p2pchat client: a terminal UI and shell commands for the LAN chat
///
/// With no command it opens the chat in the terminal, attached to the
/// p2pchatd daemon on the socket (started if none answers). /quit detaches:
/// the daemon stays and keeps you present. The commands speak to the same
/// daemon from a shell or a script.
#[derive(Debug, Parser)]
#[command(name = "p2pchat", version, after_help = EXAMPLES)]
struct Cli {
    /// API socket of the daemon [default: $XDG_RUNTIME_DIR/p2pchat/p2pchatd.sock,
    /// else /tmp/p2pchat-$UID/p2pchatd.sock]
    #[arg(long, env = SOCKET_ENV, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,

    /// Settings file [default: $XDG_CONFIG_HOME/p2pchat/config.toml, else
    /// ~/.config/p2pchat/config.toml]; flags override it
    #[arg(long, env = CONFIG_ENV, value_name = "PATH", global = true)]
    config: Option<PathBuf>,

    /// Do not start p2pchatd when none answers; fail instead
    #[arg(long)]
    no_autostart: bool,

    #[command(flatten)]
    daemon: DaemonFlags,

    #[command(flatten)]
    docs: DocFlags,

    /// Write the time to the first frame showing history into FILE (bench)
    #[arg(long, value_name = "FILE", hide = true)]
    first_frame_report: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

/// Flags passed on to a p2pchatd this command starts (see `p2pchatd --help`).
#[derive(Debug, Args)]
#[command(next_help_heading = "For a daemon it starts")]
struct DaemonFlags {
    /// Your nick
    #[arg(long, visible_alias = "username", value_name = "NAME")]
    nick: Option<String>,
    /// Interface to discover on; repeatable
    #[arg(long = "interface", value_name = "IP|NAME")]
    interfaces: Vec<String>,
    /// Address the chat port listens on
    #[arg(long, value_name = "IP")]
    listen: Option<String>,
    /// TCP chat port
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// Discovery group and port
    #[arg(long, value_name = "ADDR:PORT")]
    multicast: Option<String>,
    /// Peer to dial without discovery; repeatable
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// No multicast discovery
    #[arg(long)]
    no_discovery: bool,
    /// Events the daemon holds
    #[arg(long, value_name = "N")]
    history: Option<u32>,
}

impl DaemonFlags {
    fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let mut opt = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(flag.to_owned());
                a.push(v);
            }
        };
        opt("--nick", self.nick.clone());
        opt("--listen", self.listen.clone());
        opt("--port", self.port.map(|p| p.to_string()));
        opt("--multicast", self.multicast.clone());
        opt("--history", self.history.map(|h| h.to_string()));
        for i in &self.interfaces {
            a.extend(["--interface".to_owned(), i.clone()]);
        }
        for p in &self.peers {
            a.extend(["--peer".to_owned(), p.clone()]);
        }
        if self.no_discovery {
            a.push("--no-discovery".to_owned());
        }
        a
    }
}

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    match cli.docs.write(Cli::command()) {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => {
            eprintln!("p2pchat: {e}");
            return ExitCode::FAILURE;
        }
    }
    let daemon_args = cli.daemon.to_args();
    if cli.command.is_some() && (cli.no_autostart || !daemon_args.is_empty()) {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--no-autostart and the daemon flags are for the chat UI (no subcommand)",
            )
            .exit();
    }
    let socket = socket_or_default(cli.socket.as_deref());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("p2pchat: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(command) = cli.command else {
        // The daemon reads the same file; one we start is told which.
        let file = match shared::config::load(cli.config.as_deref()) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("p2pchat: {e}");
                return ExitCode::FAILURE;
            }
        };
        let opts = tui::Options {
            socket,
            autostart: !cli.no_autostart,
            daemon_args,
            first_frame_report: cli.first_frame_report,
            started,
            settings: tui::Settings::from_file(&file.config),
            color: file.config.tui.color.unwrap_or(true),
            warnings: file.warnings,
            config: file.path,
        };
        return match runtime.block_on(tui::run(opts)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("p2pchat: {e}");
                e.exit_code()
            }
        };
    };
    match runtime.block_on(cli::run(&socket, cli.config.as_deref(), command)) {
        Ok(()) => ExitCode::SUCCESS,
        // `p2pchat tail | head`: the reader had what it wanted.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2pchat: {e}");
            e.exit_code()
        }
    }
}
