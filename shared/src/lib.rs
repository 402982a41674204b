//! The p2pchat contract, shared by the daemon and its clients.
//!
//! Everything two programs must agree on lives here and nowhere else: the
//! peer wire of the original Go program ([`wire`], [`discovery`]), the local
//! JSON-RPC API and its events ([`api`], [`event`]), the rules for nicks and
//! text ([`text`]), the line framing ([`line`]) and the size limits
//! ([`limits`]). No I/O, no runtime: types and pure codecs only.

pub mod api;
pub mod authorship;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod config;
pub mod discovery;
pub mod event;
pub mod keys;
pub mod limits;
pub mod line;
pub mod mention;
#[cfg(feature = "cli")]
pub mod netif;
pub mod paths;
pub mod rooms;
pub mod secure;
pub mod sync;
pub mod text;
mod time;
pub mod transfer;
pub mod wire;

pub use time::{Timestamp, format_rfc3339, millis};
