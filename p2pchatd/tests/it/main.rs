//! Integration tests: real p2pchatd processes on real loopback sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod api;
mod bad_input;
mod files;
mod go_peer;
mod hostile;
mod lifecycle;
mod mesh;
mod notify;
mod presence;
mod rooms;
mod secure;
mod service;
mod store;
mod sync;
mod trust;
