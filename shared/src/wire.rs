//! The chat wire between peers (PROTOCOL §2-4): one JSON object per line.
//!
//! [`PeerMessage`] is exactly the Go program's message: its eight fields in
//! its order, plus the optional `metadata` object through which our own peers
//! announce what they support. Decoding is lenient where the Go peer is
//! (missing optional fields, `null`, unknown fields, odd timestamps) and
//! strict where it is (`id`, `type`, `sender_id`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::authorship::{Relay, Seal};
use crate::limits::{MAX_PEER_LINE, PROTO_TAG, ROOM};
use crate::sync::SyncVector;
use crate::text::{TextError, validate_message_id, validate_peer_id};
use crate::time::{Timestamp, serde_rfc3339};

/// The `type` of a peer message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Chat,
    Join,
    Leave,
    Heartbeat,
    /// p2pchatd peers only (docs/PROTOCOL-p2pchatd.md §6): the author's seal
    /// over its latest run of lines, and a sealed run of another author's
    /// lines passed on.
    Seal,
    Relay,
    /// p2pchatd peers only (§7): a part of the sender's version vector.
    Sync,
    /// p2pchatd peers only (§8): the sender is away (`content` says why)
    /// or, with no content, back.
    Away,
    /// p2pchatd peers only (§9): the rooms the sender is in, besides
    /// `#general` (in `rooms`).
    Rooms,
    /// p2pchatd peers only (§9): a room's topic (in `topic`).
    Topic,
    /// p2pchatd peers only (§10): files offered to the recipient (in
    /// `offer`), and its refusal (in `answer`).
    FileOffer,
    FileAnswer,
    /// A type this version does not know (a newer peer's). Never sent.
    Unknown,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Heartbeat => "heartbeat",
            Self::Seal => "seal",
            Self::Relay => "relay",
            Self::Sync => "sync",
            Self::Away => "away",
            Self::Rooms => "rooms",
            Self::Topic => "topic",
            Self::FileOffer => "file_offer",
            Self::FileAnswer => "file_answer",
            Self::Unknown => "unknown",
        }
    }
}

impl Serialize for MessageType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MessageType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(match &*s {
            "chat" => Self::Chat,
            "join" => Self::Join,
            "leave" => Self::Leave,
            "heartbeat" => Self::Heartbeat,
            "seal" => Self::Seal,
            "relay" => Self::Relay,
            "sync" => Self::Sync,
            "away" => Self::Away,
            "rooms" => Self::Rooms,
            "file_offer" => Self::FileOffer,
            "file_answer" => Self::FileAnswer,
            "topic" => Self::Topic,
            _ => Self::Unknown,
        })
    }
}

/// What a p2pchatd peer says about itself in `metadata` (PROTOCOL §4).
/// Go peers send none; unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct PeerMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<String>,
    /// The heartbeat period the sender proposes for this link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// The sender's life (new on every start): a peer that said goodbye
    /// and comes back under its lasting id is told from its late announces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// Capability: the sender sends and expects fast heartbeats (negotiated
/// liveness, PROTOCOL §4).
pub const CAP_HEARTBEAT: &str = "heartbeat";

/// Capabilities and their strings are short; a peer that sends more is cut.
const MAX_CAPS: usize = 16;
const MAX_META_STRING: usize = 64;

impl PeerMeta {
    /// Our own metadata, proposing `heartbeat_ms`.
    pub fn ours(heartbeat_ms: u64) -> Self {
        Self {
            proto: Some(PROTO_TAG.to_owned()),
            caps: vec![CAP_HEARTBEAT.to_owned()],
            heartbeat_ms: Some(heartbeat_ms),
            instance: None,
        }
    }

    /// True when the sender is a p2pchatd peer (any version).
    pub fn is_p2pchatd(&self) -> bool {
        self.proto
            .as_deref()
            .is_some_and(|p| p.starts_with("p2pchatd/"))
    }

    fn from_value(v: &serde_json::Value) -> Option<Self> {
        let obj = v.as_object()?;
        let short = |s: &str| (s.len() <= MAX_META_STRING).then(|| s.to_owned());
        Some(Self {
            proto: obj.get("proto").and_then(|p| p.as_str()).and_then(short),
            caps: obj
                .get("caps")
                .and_then(|c| c.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().and_then(short))
                        .take(MAX_CAPS)
                        .collect()
                })
                .unwrap_or_default(),
            heartbeat_ms: obj.get("heartbeat_ms").and_then(|h| h.as_u64()),
            instance: obj.get("instance").and_then(|p| p.as_str()).and_then(short),
        })
    }
}

pub(crate) fn lenient_meta<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PeerMeta>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(PeerMeta::from_value(&v))
}

/// `null` reads as the default, as Go's zero values would.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One line of the chat wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMessage {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: MessageType,
    pub sender_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub username: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub content: String,
    #[serde(default, with = "serde_rfc3339::lenient")]
    pub timestamp: Option<Timestamp>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub sequence: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub room_id: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_meta"
    )]
    pub metadata: Option<PeerMeta>,
    /// Only in a `seal` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<Seal>,
    /// Only in a `relay` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<Box<Relay>>,
    /// Only in a `sync` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<Box<SyncVector>>,
    /// Only in a `rooms` line: room names without the `#`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Only in a `topic` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<Box<crate::rooms::Topic>>,
    /// Only in a `file_offer` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<Box<crate::transfer::Offer>>,
    /// Only in a `file_answer` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Box<crate::transfer::Answer>>,
}

/// Bytes the JSON of a message takes besides its content, about.
const FIELDS_JSON_GUESS: usize = 160;

/// Why a peer line was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("line is longer than {MAX_PEER_LINE} bytes")]
    TooLong,
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("bad `id`: {0}")]
    BadId(TextError),
    #[error("bad `sender_id`: {0}")]
    BadSender(TextError),
}

impl PeerMessage {
    /// A message of ours, with the fields the Go peer expects always filled.
    pub fn new(
        kind: MessageType,
        id: String,
        sender_id: &str,
        username: &str,
        content: String,
        timestamp: Timestamp,
        sequence: u64,
    ) -> Self {
        Self {
            id,
            kind,
            sender_id: sender_id.to_owned(),
            username: username.to_owned(),
            content,
            timestamp: Some(timestamp),
            sequence,
            room_id: ROOM.to_owned(),
            metadata: None,
            seal: None,
            relay: None,
            sync: None,
            rooms: None,
            topic: None,
            offer: None,
            answer: None,
        }
    }

    /// Decodes one line (newline already removed) and checks the fields the
    /// Go peer requires.
    pub fn decode(line: &[u8]) -> Result<Self, WireError> {
        if line.len() > MAX_PEER_LINE {
            return Err(WireError::TooLong);
        }
        let msg: Self = serde_json::from_slice(line)?;
        validate_message_id(&msg.id).map_err(WireError::BadId)?;
        validate_peer_id(&msg.sender_id).map_err(WireError::BadSender)?;
        Ok(msg)
    }

    /// The message as one line, newline included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIELDS_JSON_GUESS + self.content.len());
        // Serializing plain strings and numbers into a Vec cannot fail.
        if serde_json::to_writer(&mut out, self).is_ok() {
            out.push(b'\n');
        }
        out
    }
}

/// The content of a `join` that announces `nick` (PROTOCOL §5).
pub fn join_content(nick: &str) -> String {
    format!("{nick} joined the chat")
}

/// The content of a `leave` (PROTOCOL §5).
pub fn leave_content(nick: &str) -> String {
    format!("{nick} left the chat")
}

/// The content of the Go program's nick-change `join` (PROTOCOL §2).
pub fn nick_change_content(old: &str, new: &str) -> String {
    format!("{old} changed their name to {new}")
}

/// Prefix by which an action (IRC `/me`) travels in `content`. A Go user sees
/// `/me waves` and understands it; a Go user who types `/me waves` is shown
/// as an action by our clients.
pub const ACTION_PREFIX: &str = "/me ";

/// A chat line's `content` as shown: the text, and whether it is an action
/// (`/me waves`; a bare `/me ` is text).
pub fn split_action(content: &str) -> (&str, bool) {
    match content.strip_prefix(ACTION_PREFIX) {
        Some(rest) if !rest.is_empty() => (rest, true),
        _ => (content, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO_LINES: [&str; 4] = [
        r#"{"id":"52041141e026c365","type":"join","sender_id":"amy_76","username":"amy","content":"amy joined the chat","timestamp":"2026-11-25T12:34:40.951751993Z","sequence":0,"room_id":"general"}"#,
        r#"{"id":"b9ae38b33dbb8612","type":"join","sender_id":"amy_76","username":"amy","content":"amy joined the chat","timestamp":"2026-11-25T12:34:40.951836669Z","sequence":46,"room_id":"general"}"#,
        r#"{"id":"d96d9c6e098643e3","type":"chat","sender_id":"amy_76","username":"amy","content":"bfirst 46 1795610080954524076","timestamp":"2026-11-25T12:34:40.954537796Z","sequence":47,"room_id":"general"}"#,
        r#"{"id":"ce5b96727ed93852","type":"leave","sender_id":"amy_76","username":"amy","content":"amy left the chat","timestamp":"2026-11-25T12:34:52.457011716Z","sequence":152,"room_id":"general"}"#,
    ];

    #[test]
    fn go_samples_parse_and_reencode_identically() {
        let kinds = [
            MessageType::Join,
            MessageType::Join,
            MessageType::Chat,
            MessageType::Leave,
        ];
        for (line, kind) in GO_LINES.iter().zip(kinds) {
            let m = PeerMessage::decode(line.as_bytes()).unwrap();
            assert_eq!(m.kind, kind);
            assert_eq!(m.sender_id, "amy_76");
            assert!(m.metadata.is_none());
            // Our encoding of a Go message is byte for byte what Go wrote.
            let mut enc = m.encode();
            assert_eq!(enc.pop(), Some(b'\n'));
            assert_eq!(std::str::from_utf8(&enc).unwrap(), *line);
        }
    }

    #[test]
    fn lenient_where_go_is() {
        let cases = [
            // minimal
            r#"{"id":"a","type":"chat","sender_id":"s"}"#,
            // metadata null, extra fields, sequence 0, offset with nanos
            r#"{"id":"a","type":"chat","sender_id":"s","metadata":null,"x":[1,2],"sequence":0,"timestamp":"2026-11-24T10:00:00.123456789+01:00"}"#,
            // nulls and a timestamp that is not one
            r#"{"id":"a","type":"chat","sender_id":"s","username":null,"content":null,"timestamp":17,"room_id":null}"#,
            // metadata of the wrong shape
            r#"{"id":"a","type":"chat","sender_id":"s","metadata":"hi"}"#,
        ];
        for c in cases {
            PeerMessage::decode(c.as_bytes()).unwrap_or_else(|e| panic!("{c}: {e}"));
        }
        let m = PeerMessage::decode(cases[1].as_bytes()).unwrap();
        assert_eq!(
            m.timestamp.map(|t| crate::format_rfc3339(&t)).as_deref(),
            Some("2026-11-24T09:00:00.123456789Z")
        );
        let m = PeerMessage::decode(br#"{"id":"a","type":"shout","sender_id":"s"}"#).unwrap();
        assert_eq!(m.kind, MessageType::Unknown);
    }

    #[test]
    fn strict_where_go_is() {
        for c in [
            r#"{"type":"chat","sender_id":"s"}"#,
            r#"{"id":"a","sender_id":"s"}"#,
            r#"{"id":"a","type":"chat"}"#,
            r#"{"id":"","type":"chat","sender_id":"s"}"#,
            r#"{"id":"a","type":"chat","sender_id":"two words"}"#,
            r#"{"id":"a","type":"chat","sender_id":"s","sequence":-1}"#,
            r#"{"id":"a","type":"chat","sender_id":"s""#,
            "[]",
            "",
        ] {
            assert!(PeerMessage::decode(c.as_bytes()).is_err(), "{c}");
        }
        assert!(
            PeerMessage::decode(b"{\"id\":\"\xff\",\"type\":\"chat\",\"sender_id\":\"s\"}")
                .is_err()
        );
    }

    #[test]
    fn roundtrip_with_metadata() {
        let mut m = PeerMessage::new(
            MessageType::Join,
            "0123456789abcdef".into(),
            "bob_1",
            "bob",
            join_content("bob"),
            chrono::Utc::now(),
            0,
        );
        m.metadata = Some(PeerMeta::ours(2000));
        let enc = m.encode();
        assert_eq!(enc.iter().filter(|&&b| b == b'\n').count(), 1);
        let back = PeerMessage::decode(&enc[..enc.len() - 1]).unwrap();
        assert_eq!(back, m);
        let meta = back.metadata.unwrap();
        assert!(meta.is_p2pchatd() && meta.caps == [CAP_HEARTBEAT]);
    }

    #[test]
    fn roundtrip_every_type() {
        for kind in [
            MessageType::Chat,
            MessageType::Join,
            MessageType::Leave,
            MessageType::Heartbeat,
        ] {
            let m = PeerMessage::new(
                kind,
                "id1".into(),
                "s",
                "n",
                "line\nwith \"quotes\" and \u{1b}".into(),
                chrono::Utc::now(),
                7,
            );
            let enc = m.encode();
            assert_eq!(PeerMessage::decode(&enc[..enc.len() - 1]).unwrap(), m);
        }
    }

    #[test]
    fn sentences_are_the_go_programs() {
        let content = |line: &str| PeerMessage::decode(line.as_bytes()).unwrap().content;
        assert_eq!(join_content("amy"), content(GO_LINES[0]));
        assert_eq!(join_content("amy"), content(GO_LINES[1]));
        assert_eq!(leave_content("amy"), content(GO_LINES[3]));
        assert_eq!(
            nick_change_content("amy", "amelia"),
            "amy changed their name to amelia"
        );
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = PeerMessage::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_near_json(s in r#"\{"(id|type|sender_id|metadata|timestamp)":("[a-z]{0,4}"|null|[0-9]{1,3}|\{\}|\[\]),?.{0,20}\}?"#) {
            let _ = PeerMessage::decode(s.as_bytes());
        }
    }
}
