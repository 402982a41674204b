//! `p2pchat`: the shell commands of the p2pchat client.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use p2pchat_tui::cli::{self, Command};
use shared::paths::SOCKET_ENV;

const EXAMPLES: &str = "\
Examples:
  p2pchat say hello everyone        send a line
  tail -f build.log | p2pchat say - send each line of a stream
  p2pchat tail -f                   follow the room
  p2pchat tail -n 0 -f --json       events for scripts, one JSON per line
  p2pchat peers                     who is there";

/// The p2pchat client: talk on the LAN chat through the local p2pchatd
///
/// The commands below speak to the daemon on its socket; it keeps you
/// present in the room while no client is attached.
#[derive(Debug, Parser)]
#[command(name = "p2pchat", version, after_help = EXAMPLES)]
struct Cli {
    /// API socket of the daemon [default: $XDG_RUNTIME_DIR/p2pchat/p2pchatd.sock,
    /// else /tmp/p2pchat-$UID/p2pchatd.sock]
    #[arg(long, env = SOCKET_ENV, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,

    /// Print a completion script for SHELL and exit
    #[arg(long, value_name = "SHELL", hide = true)]
    print_completions: Option<clap_complete::Shell>,

    /// Write the man pages into DIR and exit
    #[arg(long, value_name = "DIR", hide = true)]
    write_man_pages: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(shell) = cli.print_completions {
        use clap::CommandFactory;
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "p2pchat",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    if let Some(dir) = &cli.write_man_pages {
        use clap::CommandFactory;
        return match clap_mangen::generate_to(Cli::command(), dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("p2pchat: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let socket = cli::socket_or_default(cli.socket);
    let Some(command) = cli.command else {
        use clap::CommandFactory;
        let _ = Cli::command().print_help();
        return ExitCode::from(2);
    };
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
    match runtime.block_on(cli::run(&socket, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2pchat: {e}");
            e.exit_code()
        }
    }
}
