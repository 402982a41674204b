//! What every p2pchat test binary and `make bench` share, written once:
//! real daemons on loopback with folders of their own ([`daemon`]), waits on
//! events instead of sleeps ([`wait`]), a raw API client that sends bytes
//! the typed client never would ([`raw`]), a tmux driver for the real TUI
//! ([`tmux`]), `/proc` readings ([`procfs`]), temp folders ([`dir`]) and
//! someone else on the LAN ([`lan`]).
//!
//! It is a dev-dependency only and uses only crates and features the normal
//! build already has, so tests and the bench run the binaries users get.
// A kit for tests: a setup step that fails is a failed test, said loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

pub mod daemon;
pub mod dir;
pub mod lan;
pub mod noise;
pub mod procfs;
pub mod raw;
pub mod relay;
pub mod tmux;
pub mod wait;

pub use daemon::{
    ApiProbe, Daemon, Reaper, TestNet, client_bin, daemon_bin, free_tcp_port, in_namespace_of,
    mode_of,
};
pub use dir::TempDir;
pub use raw::Raw;
pub use tmux::Tmux;
pub use wait::{
    Subscriber, block_on, on_own_thread, refused, subscribe_at, text, wait_full_mesh, wait_until,
};
