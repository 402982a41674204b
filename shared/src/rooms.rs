//! Rooms and direct messages (docs/PROTOCOL-p2pchatd.md §9): what a room
//! name may be, how rooms and direct messages travel in the Go wire's
//! `room_id`, and the stream each of an author's lines is chained in.
//!
//! A room is `#` and 1-32 of `a-z 0-9 - _ .`, case folded (IRC channels are
//! case-blind): `#Ops` and `#ops` are one room. `#general` is the Go
//! program's one room (`room_id` "general"); every peer is in it, Go peers
//! only in it. On the wire a room is its name without the `#`; a direct
//! message to a peer is `@` and the recipient's peer id, which no room can
//! be.
//!
//! Each author chains its lines per *stream*: `#general` in its life (the
//! life's instance, as before rooms), every other room and every direct
//! conversation in a life derived from both, so a peer that is not in a
//! room holds a whole, checkable chain of everything it was sent.

use blake2::Digest;

use crate::keys::{is_key_id, tagged};
use crate::limits::{MAX_TEXT_BYTES, ROOM};

/// The room every peer is in, Go peers too.
pub const GENERAL: &str = "#general";
/// Characters of a room name after the `#`, at most.
pub const MAX_ROOM_CHARS: usize = 32;
/// Rooms a daemon may be in besides `#general`, and rooms one `rooms` line
/// may name.
pub const MAX_JOINED: usize = 64;
/// What a direct message's `content` starts with: the rest is hex of a
/// 24-byte nonce and the XChaCha20-Poly1305 ciphertext of the text.
pub const SEALED_PREFIX: &str = "p2pchat-sealed-1:";
/// A sealed text's `content` at most: the prefix, then hex of the nonce,
/// the text (with room for the `/me` mark) and the tag.
pub const MAX_SEALED_BYTES: usize = SEALED_PREFIX.len() + 2 * (24 + MAX_TEXT_BYTES + 16 + 16);

/// Characters of a room's topic, at most.
pub const MAX_TOPIC_CHARS: usize = 300;

/// A room's topic: what it says, who set it and when. The newest wins,
/// by time and then by who set it, so every member ends on the same one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Topic {
    pub text: String,
    /// The setter's peer id, and nick then.
    pub by: String,
    pub nick: String,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub at: crate::Timestamp,
}

impl Topic {
    /// Whether it replaces `other`.
    pub fn newer_than(&self, other: &Self) -> bool {
        (self.at, &self.by) > (other.at, &other.by)
    }
}

/// Capability (Noise hello): the sender takes room lines, `rooms` lines
/// and direct messages.
pub const CAP_ROOMS: &str = "rooms";

const STREAM_LIFE: &str = "p2pchat 2026-11 stream life";

/// Why a room name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("a room name starts with '#', like #ops")]
    NoHash,
    #[error("a room name is 1 to {MAX_ROOM_CHARS} characters after the '#'")]
    Length,
    #[error("a room name may hold only letters a-z, digits, '-', '_' and '.'")]
    Characters,
}

/// Checks a room name as a user typed it (`#Ops`, or `ops` where a room is
/// expected) and gives its one spelling, `#ops`.
pub fn parse_room(name: &str) -> Result<String, RoomError> {
    let bare = name.strip_prefix('#').unwrap_or(name);
    if bare.is_empty() && name.starts_with('#') {
        return Err(RoomError::Length);
    }
    if bare.is_empty() {
        return Err(RoomError::NoHash);
    }
    if bare.chars().count() > MAX_ROOM_CHARS {
        return Err(RoomError::Length);
    }
    if !bare
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(RoomError::Characters);
    }
    Ok(format!("#{}", bare.to_ascii_lowercase()))
}

/// Where a line is said: a room, or to one peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// A room, as `#name` (one spelling).
    Room(String),
    /// A direct message to the peer with this (key) id.
    Direct(String),
}

impl Scope {
    pub fn general() -> Self {
        Self::Room(GENERAL.to_owned())
    }

    pub fn is_general(&self) -> bool {
        matches!(self, Self::Room(r) if r == GENERAL)
    }

    /// The `room_id` it travels as.
    pub fn wire(&self) -> String {
        match self {
            Self::Room(r) if r == GENERAL => ROOM.to_owned(),
            Self::Room(r) => r[1..].to_owned(),
            Self::Direct(to) => format!("@{to}"),
        }
    }

    /// Reads a p2pchatd peer's `room_id` (empty is `#general`, as from a
    /// Go peer); `None` when it names neither a room nor a key.
    pub fn from_wire(room_id: &str) -> Option<Self> {
        if room_id.is_empty() || room_id == ROOM {
            return Some(Self::general());
        }
        if let Some(to) = room_id.strip_prefix('@') {
            return is_key_id(to).then(|| Self::Direct(to.to_owned()));
        }
        // Only the one spelling: a peer sends names as we would.
        let room = parse_room(room_id).ok()?;
        (room[1..] == *room_id).then_some(Self::Room(room))
    }

    /// The room's name, if it is one.
    pub fn room(&self) -> Option<&str> {
        match self {
            Self::Room(r) => Some(r),
            Self::Direct(_) => None,
        }
    }
}

/// The life an author's lines of `room_id` (wire form) are chained in,
/// in the author's life `instance`: the instance itself for `#general`,
/// else 32 hex digits derived from both.
pub fn stream_life(instance: &str, room_id: &str) -> String {
    if room_id == ROOM {
        return instance.to_owned();
    }
    let mut h = tagged(STREAM_LIFE);
    for part in [instance, room_id] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let d: [u8; 32] = h.finalize().into();
    crate::keys::hex(&d[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_have_one_spelling() {
        assert_eq!(parse_room("#Ops").unwrap(), "#ops");
        assert_eq!(parse_room("ops").unwrap(), "#ops");
        assert_eq!(parse_room("#a.b-c_9").unwrap(), "#a.b-c_9");
        assert_eq!(parse_room("#"), Err(RoomError::Length));
        assert_eq!(parse_room(""), Err(RoomError::NoHash));
        assert_eq!(
            parse_room(&format!("#{}", "a".repeat(33))),
            Err(RoomError::Length)
        );
        assert!(parse_room(&format!("#{}", "a".repeat(32))).is_ok());
        for bad in ["#a b", "#a/b", "#é", "#a#b", "#@k", "#\u{202e}x"] {
            assert_eq!(parse_room(bad), Err(RoomError::Characters), "{bad}");
        }
    }

    #[test]
    fn scopes_travel_as_room_ids() {
        let key = format!("k{}", "ab".repeat(12));
        for s in [
            Scope::general(),
            Scope::Room("#ops".into()),
            Scope::Direct(key),
        ] {
            assert_eq!(Scope::from_wire(&s.wire()), Some(s.clone()));
        }
        assert_eq!(Scope::general().wire(), "general");
        assert_eq!(Scope::from_wire(""), Some(Scope::general()));
        assert_eq!(Scope::from_wire("Ops"), None, "not our spelling");
        assert_eq!(Scope::from_wire("@bob_1"), None, "a DM goes to a key");
        assert_eq!(Scope::from_wire("a b"), None);
    }

    #[test]
    fn each_stream_has_its_own_life() {
        assert_eq!(stream_life("00ff", "general"), "00ff");
        let ops = stream_life("00ff", "ops");
        assert_eq!(ops.len(), 32);
        assert!(crate::sync::valid_life(&ops));
        assert_ne!(ops, stream_life("00fe", "ops"));
        assert_ne!(ops, stream_life("00ff", "build"));
    }
}
