//! p2pchatd, the p2pchat daemon, as a library: the binary only parses flags
//! and calls [`node`]; tests start nodes in-process.
//!
//! One module per concern — [`discovery`], [`mesh`], [`history`], [`api`] —
//! wired together in [`node`], which also owns the shutdown order.

mod api;
pub mod cli;
pub mod config;
mod direct;
mod discovery;
mod history;
pub mod identity;
pub mod logging;
mod memory;
mod mesh;
pub mod node;
mod notify;
mod rooms;
pub mod service;
pub mod store;
mod sync;
mod transfer;
mod trust;

pub use api::ApiBindError;
pub use mesh::Mesh;
pub use trust::TrustError;
