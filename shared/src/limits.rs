//! Size limits and fixed periods of the protocol, in one place.
//!
//! Every bound on input from the network, the socket or the user is a named
//! constant here, so both ends and the tests agree on it.

/// Longest line a peer may send, newline excluded. A 4 KiB text escapes to at
/// most ~24 KiB of JSON; the Go peer has no limit, so this leaves room for its
/// long pastes while capping what one link can make us buffer.
pub const MAX_PEER_LINE: usize = 64 * 1024;

/// Longest JSON-RPC request line a local client may send.
pub const MAX_API_LINE: usize = 64 * 1024;

/// Largest discovery datagram we accept (PROTOCOL §1).
pub const MAX_DATAGRAM: usize = 1024;

/// Discovery datagrams older than this are ignored, as the Go peer does.
pub const DATAGRAM_MAX_AGE_SECS: i64 = 30;

/// A chat text is 1..=4096 bytes of UTF-8 (DESIGN §2).
pub const MAX_TEXT_BYTES: usize = 4096;

/// A nick is 1..=20 characters (DESIGN §2).
pub const MAX_NICK_CHARS: usize = 20;

/// Longest peer id we accept. The Go peer's is `<nick>_<0-999>`.
pub const MAX_PEER_ID_BYTES: usize = 128;

/// Longest message id we accept. The Go peer's is 16 hex characters.
pub const MAX_MESSAGE_ID_BYTES: usize = 128;

/// The only room the Go program knows.
pub const ROOM: &str = "general";

/// Protocol tag our peers put in `metadata.proto` (PROTOCOL §4).
pub const PROTO_TAG: &str = "p2pchatd/1";

/// Longest line a client accepts from the daemon: a `history` reply of
/// many events is one line.
pub const MAX_RESPONSE_LINE: usize = 64 * 1024 * 1024;
