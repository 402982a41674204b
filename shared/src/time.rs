//! RFC 3339 timestamps as both programs write them.

use chrono::{DateTime, SecondsFormat, Utc};

/// A point in time, always handled in UTC inside the program.
pub type Timestamp = DateTime<Utc>;

/// Whole milliseconds of `d`, saturating (a `Duration` holds more than a
/// `u64` of them only after 584 million years).
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// RFC 3339 with nanoseconds and `Z`, the form Go's `time.Time` writes and
/// parses.
pub fn format_rfc3339(ts: &Timestamp) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Parses RFC 3339 with any offset and any fraction, returning UTC.
pub(crate) fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Serde helpers for timestamps on the peer wire.
pub(crate) mod serde_rfc3339 {
    use super::{Timestamp, format_rfc3339, parse_rfc3339};
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(crate) fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339(ts))
    }

    /// Strict: a missing or malformed timestamp is an error.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_rfc3339(&s).ok_or_else(|| D::Error::custom("timestamp is not RFC 3339"))
    }

    /// Lenient, for optional fields: anything that is not an RFC 3339 string
    /// reads as `None` instead of failing the whole message.
    pub(crate) mod lenient {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            ts: &Option<Timestamp>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match ts {
                Some(ts) => super::serialize(ts, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Timestamp>, D::Error> {
            let v = serde_json::Value::deserialize(d)?;
            Ok(v.as_str().and_then(parse_rfc3339))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        for s in [
            "2026-11-25T12:34:35.832445356Z",
            "2026-11-24T10:00:00.123456789+01:00",
            "2026-11-24T10:00:00Z",
            "2026-11-24T10:00:00-07:30",
        ] {
            assert!(parse_rfc3339(s).is_some(), "{s}");
        }
        assert_eq!(
            parse_rfc3339("2026-11-24T10:00:00.5+01:00").map(|t| format_rfc3339(&t)),
            Some("2026-11-24T09:00:00.500000000Z".to_owned())
        );
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
