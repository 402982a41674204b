//! p2pchatd, the p2pchat daemon, as a library: the binary only parses flags
//! and calls [`node`]; tests start nodes in-process.
//!
//! One module per concern — [`discovery`], [`mesh`], [`history`], [`api`] —
//! wired together in [`node`], which also owns the shutdown order.

pub mod api;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod history;
pub mod logging;
pub mod mesh;
pub mod node;
pub mod service;
