//! The one event type that feeds the daemon's history, the API's
//! `subscribe`/`history` and `p2pchat tail --json` (DESIGN §3).
//!
//! On the wire an event is a flat JSON object: `kind`, `cursor`, `ts`, then
//! the fields of its kind. This schema is documented in the README as stable
//! for scripts; new fields may be added, none removed.

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::api::Trust;
use crate::time::Timestamp;

/// The recipient of a direct message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dm {
    pub peer_id: String,
    pub nick: String,
}

/// An event with its place in the daemon's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Strictly increasing within one daemon's life.
    pub cursor: u64,
    /// When the daemon recorded it.
    pub ts: Timestamp,
    pub body: EventBody,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBody {
    /// A chat line. `action` marks an IRC-style `/me` line; `fingerprint`
    /// and `trust` are the author's (none on our own lines).
    Message {
        id: String,
        peer_id: String,
        nick: String,
        text: String,
        action: bool,
        /// Shared by every line of one author: one allocation, not one
        /// a line.
        fingerprint: Option<Arc<str>>,
        trust: Option<Trust>,
        /// The author's sequence number for the line, going on across the
        /// author's restarts (none from a Go peer, which sends 0).
        seq: Option<u64>,
        /// When the author sent it, by the author's clock.
        sent: Option<Timestamp>,
        /// It came through catch-up after a partition or a restart, not
        /// live: shown with its own time.
        late: bool,
        /// The room it was said in (`#general` when absent, as from a
        /// daemon before rooms); none on a direct message.
        room: Option<String>,
        /// A direct message: the recipient's peer id and nick (ours, on
        /// one we got).
        to: Option<Dm>,
    },
    /// A room's topic changed (set by `peer_id`, then `nick`).
    Topic {
        peer_id: String,
        nick: String,
        room: String,
        text: String,
    },
    /// A peer (or we) joined or left a room.
    Room {
        peer_id: String,
        nick: String,
        room: String,
        joined: bool,
    },
    /// A peer became linked.
    Join { peer_id: String, nick: String },
    /// A peer left or its link was lost; `reason` is for people.
    Leave {
        peer_id: String,
        nick: String,
        reason: Option<String>,
    },
    /// A peer (or we) changed nick.
    Nick {
        peer_id: String,
        old: String,
        new: String,
    },
    /// Something about who is who that must not go unseen: a verified
    /// nick turned up with another key.
    Alert { peer_id: String, text: String },
    /// A file transfer was offered, moved on, or ended (never held in the
    /// history: sent live to subscribers without a room filter, with the
    /// cursor they stand at).
    Transfer(Box<crate::api::TransferInfo>),
    /// This subscriber fell behind and `missed` events up to and including
    /// `cursor` were skipped; they can be fetched with `history` while held.
    Gap { missed: u64 },
    /// A kind this client does not know (from a newer daemon).
    Other { kind: String },
}

impl EventBody {
    /// The room an event belongs to, for a room filter: a message's room
    /// (`#general` when it names none), a room event's room, and
    /// `#general` for what is no room's (joins, leaves, nicks, alerts,
    /// gaps). `None` for a direct message.
    pub fn room(&self) -> Option<&str> {
        match self {
            Self::Message { to: Some(_), .. } => None,
            Self::Message { room, .. } => Some(room.as_deref().unwrap_or(crate::rooms::GENERAL)),
            Self::Room { room, .. } | Self::Topic { room, .. } => Some(room),
            _ => Some(crate::rooms::GENERAL),
        }
    }

    pub fn kind(&self) -> &str {
        match self {
            Self::Message { .. } => "message",
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::Nick { .. } => "nick",
            Self::Alert { .. } => "alert",
            Self::Room { .. } => "room",
            Self::Topic { .. } => "topic",
            Self::Transfer(_) => "transfer",
            Self::Gap { .. } => "gap",
            Self::Other { kind } => kind,
        }
    }
}

/// The flat form, borrowed for writing.
#[derive(Serialize)]
struct FlatOut<'a> {
    kind: &'a str,
    cursor: u64,
    ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nick: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    action: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    fingerprint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trust: Option<Trust>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    late: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_nick: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    joined: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    missed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transfer: Option<&'a crate::api::TransferInfo>,
}

/// The flat form, owned for reading.
#[derive(Deserialize)]
struct FlatIn {
    kind: String,
    cursor: u64,
    ts: Timestamp,
    id: Option<String>,
    peer_id: Option<String>,
    nick: Option<String>,
    text: Option<String>,
    #[serde(default)]
    action: bool,
    fingerprint: Option<String>,
    trust: Option<Trust>,
    seq: Option<u64>,
    sent: Option<Timestamp>,
    #[serde(default)]
    late: bool,
    room: Option<String>,
    to: Option<String>,
    to_nick: Option<String>,
    joined: Option<bool>,
    old: Option<String>,
    new: Option<String>,
    reason: Option<String>,
    missed: Option<u64>,
    transfer: Option<crate::api::TransferInfo>,
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = FlatOut {
            kind: self.body.kind(),
            cursor: self.cursor,
            ts: self.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            id: None,
            peer_id: None,
            nick: None,
            text: None,
            action: false,
            fingerprint: None,
            trust: None,
            seq: None,
            sent: None,
            late: false,
            room: None,
            to: None,
            to_nick: None,
            joined: None,
            old: None,
            new: None,
            reason: None,
            missed: None,
            transfer: None,
        };
        match &self.body {
            EventBody::Message {
                id,
                peer_id,
                nick,
                text,
                action,
                fingerprint,
                trust,
                seq,
                sent,
                late,
                room,
                to,
            } => {
                out.id = Some(id);
                out.peer_id = Some(peer_id);
                out.nick = Some(nick);
                out.text = Some(text);
                out.action = *action;
                out.fingerprint = fingerprint.as_deref();
                out.trust = *trust;
                out.seq = *seq;
                out.sent = sent.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                out.late = *late;
                out.room = room.as_deref();
                out.to = to.as_ref().map(|d| d.peer_id.as_str());
                out.to_nick = to.as_ref().map(|d| d.nick.as_str());
            }
            EventBody::Room {
                peer_id,
                nick,
                room,
                joined,
            } => {
                out.peer_id = Some(peer_id);
                out.nick = Some(nick);
                out.room = Some(room);
                out.joined = Some(*joined);
            }
            EventBody::Topic {
                peer_id,
                nick,
                room,
                text,
            } => {
                out.peer_id = Some(peer_id);
                out.nick = Some(nick);
                out.room = Some(room);
                out.text = Some(text);
            }
            EventBody::Alert { peer_id, text } => {
                out.peer_id = Some(peer_id);
                out.text = Some(text);
            }
            EventBody::Join { peer_id, nick } => {
                out.peer_id = Some(peer_id);
                out.nick = Some(nick);
            }
            EventBody::Leave {
                peer_id,
                nick,
                reason,
            } => {
                out.peer_id = Some(peer_id);
                out.nick = Some(nick);
                out.reason = reason.as_deref();
            }
            EventBody::Nick { peer_id, old, new } => {
                out.peer_id = Some(peer_id);
                out.old = Some(old);
                out.new = Some(new);
            }
            EventBody::Gap { missed } => out.missed = Some(*missed),
            EventBody::Transfer(t) => out.transfer = Some(t),
            EventBody::Other { .. } => {}
        }
        out.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let f = FlatIn::deserialize(d)?;
        let need = |v: Option<String>, name: &'static str| {
            v.ok_or_else(|| D::Error::custom(format!("{} event without `{name}`", f.kind)))
        };
        let body = match f.kind.as_str() {
            "message" => EventBody::Message {
                id: need(f.id, "id")?,
                peer_id: need(f.peer_id, "peer_id")?,
                nick: need(f.nick, "nick")?,
                text: need(f.text, "text")?,
                action: f.action,
                fingerprint: f.fingerprint.map(Arc::from),
                trust: f.trust,
                seq: f.seq,
                sent: f.sent,
                late: f.late,
                to: f.to.map(|peer_id| Dm {
                    nick: f.to_nick.unwrap_or_else(|| peer_id.clone()),
                    peer_id,
                }),
                room: f.room,
            },
            "topic" => EventBody::Topic {
                peer_id: need(f.peer_id, "peer_id")?,
                nick: need(f.nick, "nick")?,
                room: need(f.room, "room")?,
                text: need(f.text, "text")?,
            },
            "room" => EventBody::Room {
                peer_id: need(f.peer_id, "peer_id")?,
                nick: need(f.nick, "nick")?,
                room: need(f.room, "room")?,
                joined: f.joined.unwrap_or_default(),
            },
            "alert" => EventBody::Alert {
                peer_id: need(f.peer_id, "peer_id")?,
                text: need(f.text, "text")?,
            },
            "join" => EventBody::Join {
                peer_id: need(f.peer_id, "peer_id")?,
                nick: need(f.nick, "nick")?,
            },
            "leave" => EventBody::Leave {
                peer_id: need(f.peer_id, "peer_id")?,
                nick: need(f.nick, "nick")?,
                reason: f.reason,
            },
            "nick" => EventBody::Nick {
                peer_id: need(f.peer_id, "peer_id")?,
                old: need(f.old, "old")?,
                new: need(f.new, "new")?,
            },
            "gap" => EventBody::Gap {
                missed: f
                    .missed
                    .ok_or_else(|| D::Error::custom("gap event without `missed`"))?,
            },
            "transfer" => EventBody::Transfer(Box::new(
                f.transfer
                    .ok_or_else(|| D::Error::custom("transfer event without `transfer`"))?,
            )),
            _ => EventBody::Other { kind: f.kind },
        };
        Ok(Event {
            cursor: f.cursor,
            ts: f.ts,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> Timestamp {
        "2026-11-25T12:34:35.832Z".parse().unwrap()
    }

    fn all_kinds() -> Vec<Event> {
        let bodies = vec![
            EventBody::Message {
                id: "52041141e026c365".into(),
                peer_id: "amy_76".into(),
                nick: "amy".into(),
                text: "hello \"world\"\t🌍".into(),
                action: false,
                fingerprint: None,
                trust: None,
                seq: None,
                sent: None,
                late: false,
                room: None,
                to: None,
            },
            EventBody::Message {
                id: "x".into(),
                peer_id: "amy_76".into(),
                nick: "amy".into(),
                text: "waves".into(),
                action: true,
                fingerprint: Some("12345 67890 12345 67890 12345 67890".into()),
                trust: Some(Trust::Conflict),
                seq: Some(17),
                sent: Some(chrono::DateTime::from_timestamp_millis(1_764_000_000_123).unwrap()),
                late: true,
                room: None,
                to: Some(Dm {
                    peer_id: "k0123456789abcdef01234567".into(),
                    nick: "bob".into(),
                }),
            },
            EventBody::Message {
                id: "y".into(),
                peer_id: "k0123456789abcdef01234567".into(),
                nick: "bob".into(),
                text: "in ops".into(),
                action: false,
                fingerprint: None,
                trust: Some(Trust::Pinned),
                seq: Some(3),
                sent: None,
                late: false,
                room: Some("#ops".into()),
                to: None,
            },
            EventBody::Room {
                peer_id: "k0123456789abcdef01234567".into(),
                nick: "bob".into(),
                room: "#ops".into(),
                joined: true,
            },
            EventBody::Topic {
                peer_id: "k0123456789abcdef01234567".into(),
                nick: "bob".into(),
                room: "#ops".into(),
                text: "deploys on Fridays".into(),
            },
            EventBody::Alert {
                peer_id: "k00".into(),
                text: "alice's key changed".into(),
            },
            EventBody::Join {
                peer_id: "bob_1".into(),
                nick: "bob".into(),
            },
            EventBody::Leave {
                peer_id: "bob_1".into(),
                nick: "bob".into(),
                reason: Some("quit".into()),
            },
            EventBody::Leave {
                peer_id: "bob_1".into(),
                nick: "bob".into(),
                reason: None,
            },
            EventBody::Nick {
                peer_id: "bob_1".into(),
                old: "bob".into(),
                new: "robert".into(),
            },
            EventBody::Gap { missed: 12 },
            EventBody::Transfer(Box::new(crate::api::TransferInfo {
                id: "0123456789abcdef".into(),
                direction: crate::api::TransferDirection::In,
                peer_id: "k00".into(),
                nick: "bob".into(),
                names: vec!["report.pdf".into()],
                files: 1,
                bytes: 3_000_000,
                done: 1_048_576,
                state: crate::api::TransferState::Active,
                reason: None,
                rate: 400_000_000,
                folder: Some("/home/amy/Downloads/p2pchat".into()),
                transferred: 1_100_000,
            })),
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Event {
                cursor: i as u64 + 1,
                ts: ts(),
                body,
            })
            .collect()
    }

    #[test]
    fn roundtrip_every_kind() {
        for e in all_kinds() {
            let json = serde_json::to_string(&e).unwrap();
            assert!(json.starts_with(&format!("{{\"kind\":\"{}\",\"cursor\":", e.body.kind())));
            let back: Event = serde_json::from_str(&json).unwrap();
            assert_eq!(back, e, "{json}");
        }
    }

    #[test]
    fn schema_is_flat() {
        let e = &all_kinds()[0];
        assert_eq!(
            serde_json::to_string(e).unwrap(),
            r#"{"kind":"message","cursor":1,"ts":"2026-11-25T12:34:35.832Z","id":"52041141e026c365","peer_id":"amy_76","nick":"amy","text":"hello \"world\"\t🌍"}"#
        );
        let gap = &all_kinds()[10];
        assert_eq!(
            serde_json::to_string(gap).unwrap(),
            r#"{"kind":"gap","cursor":11,"ts":"2026-11-25T12:34:35.832Z","missed":12}"#
        );
    }

    #[test]
    fn unknown_kind_and_fields_are_tolerated() {
        let e: Event = serde_json::from_str(
            r#"{"kind":"poll","cursor":3,"ts":"2026-11-25T12:34:35+01:00","poll":"x"}"#,
        )
        .unwrap();
        assert_eq!(e.body.kind(), "poll");
        assert!(
            serde_json::from_str::<Event>(
                r#"{"kind":"message","cursor":1,"ts":"2026-11-25T12:34:35Z"}"#
            )
            .is_err()
        );
    }
}
