//! p2pchat, the client of p2pchatd.
//!
//! [`client`] speaks the daemon's JSON-RPC API; [`cli`] holds the shell
//! commands (`say`, `tail`, ...), which never touch the terminal UI in
//! [`tui`].

pub mod cli;
pub mod client;
mod doctor;
mod files;
mod format;
pub mod tui;
