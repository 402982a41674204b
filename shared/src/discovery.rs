//! Discovery datagrams (PROTOCOL §1): one JSON object per UDP datagram,
//! multicast to the group every 5 s and answered at once by peers that have
//! not heard of the sender yet.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::{DATAGRAM_MAX_AGE_SECS, MAX_DATAGRAM};
use crate::text::{TextError, validate_peer_id};
use crate::time::{Timestamp, serde_rfc3339};
use crate::wire::PeerMeta;

/// The `type` of a discovery datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramType {
    Announce,
    Ping,
    Pong,
    Leave,
    /// Anything else; ignored, as the Go peer does.
    Unknown,
}

impl DatagramType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Announce => "announce",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Leave => "leave",
            Self::Unknown => "unknown",
        }
    }

    /// `announce`, `ping` and `pong` all mean "this peer is alive".
    pub fn is_alive(self) -> bool {
        matches!(self, Self::Announce | Self::Ping | Self::Pong)
    }
}

impl Serialize for DatagramType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DatagramType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(match &*s {
            "announce" => Self::Announce,
            "ping" => Self::Ping,
            "pong" => Self::Pong,
            "leave" => Self::Leave,
            _ => Self::Unknown,
        })
    }
}

/// One discovery datagram, fields in the Go program's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Datagram {
    #[serde(rename = "type")]
    pub kind: DatagramType,
    pub peer_id: String,
    #[serde(default)]
    pub username: String,
    /// As the sender sees itself; unreliable (`0.0.0.0:PORT`, or `""`).
    #[serde(default)]
    pub address: String,
    pub port: u16,
    #[serde(with = "serde_rfc3339")]
    pub timestamp: Timestamp,
    #[serde(default)]
    pub sequence: u64,
    /// Our extension: lets a peer know before dialing that it talks to a
    /// p2pchatd. Go peers neither send nor read it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::wire::lenient_meta"
    )]
    pub metadata: Option<PeerMeta>,
}

/// Why a datagram was dropped. Never fatal; logged at debug.
#[derive(Debug, thiserror::Error)]
pub enum DatagramError {
    #[error("datagram is larger than {MAX_DATAGRAM} bytes")]
    TooLarge,
    #[error("malformed datagram: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("bad peer_id: {0}")]
    BadPeerId(TextError),
    #[error("port 0")]
    NoPort,
    #[error("datagram is older than {DATAGRAM_MAX_AGE_SECS} s")]
    Stale,
}

impl Datagram {
    /// Decodes and checks a received datagram against the time `now`.
    pub fn decode(bytes: &[u8], now: Timestamp) -> Result<Self, DatagramError> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(DatagramError::TooLarge);
        }
        let d: Self = serde_json::from_slice(bytes)?;
        validate_peer_id(&d.peer_id).map_err(DatagramError::BadPeerId)?;
        if d.port == 0 {
            return Err(DatagramError::NoPort);
        }
        if (now - d.timestamp).num_milliseconds() > DATAGRAM_MAX_AGE_SECS * 1000 {
            return Err(DatagramError::Stale);
        }
        Ok(d)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Plain strings and numbers: serializing into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    const ANNOUNCE: &str = r#"{"type":"announce","peer_id":"alice_75","username":"alice","address":"0.0.0.0:8080","port":8080,"timestamp":"2026-11-25T12:34:35.832445356Z","sequence":0}"#;
    const LEAVE: &str = r#"{"type":"leave","peer_id":"bob_76","username":"bob","address":"","port":8081,"timestamp":"2026-11-25T12:34:52.439127819Z","sequence":0}"#;

    fn at(s: &str) -> Timestamp {
        crate::time::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn go_samples_parse_and_reencode_identically() {
        let now = at("2026-11-25T12:35:00Z");
        let a = Datagram::decode(ANNOUNCE.as_bytes(), now).unwrap();
        assert_eq!(a.kind, DatagramType::Announce);
        assert_eq!((a.peer_id.as_str(), a.port), ("alice_75", 8080));
        assert_eq!(String::from_utf8(a.encode()).unwrap(), ANNOUNCE);
        let l = Datagram::decode(LEAVE.as_bytes(), now).unwrap();
        assert_eq!(l.kind, DatagramType::Leave);
        assert_eq!(String::from_utf8(l.encode()).unwrap(), LEAVE);
    }

    #[test]
    fn drops_what_go_drops() {
        let now = at("2026-11-25T12:35:06Z");
        assert!(matches!(
            Datagram::decode(ANNOUNCE.as_bytes(), now),
            Err(DatagramError::Stale)
        ));
        let big = vec![b' '; MAX_DATAGRAM + 1];
        assert!(matches!(
            Datagram::decode(&big, now),
            Err(DatagramError::TooLarge)
        ));
        let now = at("2026-11-25T12:34:40Z");
        for bad in [
            r#"{"type":"announce","peer_id":"","port":1,"timestamp":"2026-11-25T12:34:35Z"}"#,
            r#"{"type":"announce","peer_id":"a","port":0,"timestamp":"2026-11-25T12:34:35Z"}"#,
            r#"{"type":"announce","peer_id":"a","port":70000,"timestamp":"2026-11-25T12:34:35Z"}"#,
            r#"{"type":"announce","peer_id":"a","port":1}"#,
            r#"{"type":"announce","peer_id":"a","port":1,"timestamp":"soon"}"#,
            r#"{"peer_id":"a","port":1,"timestamp":"2026-11-25T12:34:35Z"}"#,
            "garbage",
        ] {
            assert!(Datagram::decode(bad.as_bytes(), now).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_type_and_extra_fields_parse() {
        let now = at("2026-11-25T12:34:40Z");
        let d = Datagram::decode(
            br#"{"type":"hello","peer_id":"a","port":1,"timestamp":"2026-11-25T12:34:35.1+02:00","extra":{"x":1},"metadata":{"proto":"p2pchatd/1"}}"#,
            now - Duration::hours(2),
        )
        .unwrap();
        assert_eq!(d.kind, DatagramType::Unknown);
        assert!(d.metadata.is_some_and(|m| m.is_p2pchatd()));
    }

    #[test]
    fn roundtrip_ours() {
        let d = Datagram {
            kind: DatagramType::Pong,
            peer_id: "bob_0a1b2c3d".into(),
            username: "bob".into(),
            address: "127.0.0.1:8080".into(),
            port: 8080,
            timestamp: Utc::now(),
            sequence: 0,
            metadata: Some(PeerMeta::ours(2000)),
        };
        let enc = d.encode();
        assert!(enc.len() < MAX_DATAGRAM);
        assert_eq!(Datagram::decode(&enc, Utc::now()).unwrap(), d);
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1100)) {
            let _ = Datagram::decode(&bytes, Utc::now());
        }
    }
}
