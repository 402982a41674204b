//! What both programs do alike on the command line: find this user's
//! default socket, and print their completions and man pages for
//! `make install`. Behind the `cli` feature: the contract itself needs none
//! of it.

use std::io;
use std::path::{Path, PathBuf};

use crate::paths::default_socket_path;

/// The hidden flags `make install` calls each program with.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DocFlags {
    /// Print a completion script for SHELL and exit
    #[arg(long, value_name = "SHELL", hide = true)]
    pub print_completions: Option<clap_complete::Shell>,

    /// Write the man pages into DIR and exit
    #[arg(long, value_name = "DIR", hide = true)]
    pub write_man_pages: Option<PathBuf>,
}

impl DocFlags {
    /// Writes what was asked for, from the program's `command`. True when
    /// something was asked: the program then exits.
    pub fn write(&self, mut command: clap::Command) -> io::Result<bool> {
        if let Some(shell) = self.print_completions {
            let name = command.get_name().to_owned();
            clap_complete::generate(shell, &mut command, name, &mut io::stdout());
        } else if let Some(dir) = &self.write_man_pages {
            clap_mangen::generate_to(command, dir)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

/// This user's default socket: `$XDG_RUNTIME_DIR/p2pchat/p2pchatd.sock`,
/// else `/tmp/p2pchat-$UID/p2pchatd.sock`.
pub fn default_socket() -> PathBuf {
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    default_socket_path(xdg.as_deref(), nix::unistd::getuid().as_raw())
}

/// An XDG base folder: `$VAR` when it is an absolute path, else
/// `~/FALLBACK` (the spec's defaults: `.local/share`, `.local/state`,
/// `.config`). `None` without either.
fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if p.is_absolute() => Some(p),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)),
    }
}

/// `$XDG_DATA_HOME/p2pchat` (default `~/.local/share/p2pchat`): the key
/// and the known peers.
pub fn data_dir() -> Option<PathBuf> {
    xdg_dir("XDG_DATA_HOME", ".local/share").map(|d| d.join("p2pchat"))
}

/// `$XDG_STATE_HOME/p2pchat` (default `~/.local/state/p2pchat`): the log
/// of a background daemon.
pub fn state_dir() -> Option<PathBuf> {
    xdg_dir("XDG_STATE_HOME", ".local/state").map(|d| d.join("p2pchat"))
}

/// `$XDG_CONFIG_HOME/p2pchat` (default `~/.config/p2pchat`): the settings
/// file.
pub fn config_dir() -> Option<PathBuf> {
    xdg_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("p2pchat"))
}

/// `--socket PATH` (or `P2PCHAT_SOCKET`) made absolute, or the default.
/// Absolute, because `--daemon` leaves the working folder.
pub fn socket_or_default(given: Option<&Path>) -> PathBuf {
    match given {
        Some(p) => std::path::absolute(p).unwrap_or_else(|_| p.to_owned()),
        None => default_socket(),
    }
}
