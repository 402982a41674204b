//! Catch-up between p2pchatd peers (docs/PROTOCOL-p2pchatd.md §7): when a
//! link comes up, each side says which sealed runs it holds, per author and
//! life, and the other sends what is missing as relayed runs
//! ([`crate::authorship::Relay`]). Pure: the wire forms and their limits.

use serde::{Deserialize, Serialize};

/// Capability (Noise hello): the sender sends and reads `sync` lines.
pub const CAP_SYNC: &str = "sync";

/// Entries in one `sync` line: 256 of ~80 bytes stay far below the line
/// limit.
pub const HAVE_PER_LINE: usize = 256;
/// Entries a whole vector may hold; more are refused with the link's line.
pub const MAX_HAVE: usize = 16 * 1024;
/// Peer ids in `linked`, in one line and in all.
pub const MAX_LINKED: usize = 1024;
/// Characters of a life (an instance): hex.
pub const MAX_LIFE: usize = 32;

/// One part of a version vector. The last part has `more: false`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncVector {
    /// Per author and life: the last sequence number of the runs held
    /// without a hole from the life's first line.
    pub have: Vec<Have>,
    /// The peers the sender is linked with: they send their own lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub linked: Vec<String>,
    pub more: bool,
    /// Not a vector but a receipt: the sender now holds the author's (the
    /// receiver's) lines up to `have[0].last` of that life.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ack: bool,
}

/// Runs held of one author's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Have {
    pub author: String,
    pub life: String,
    pub last: u64,
}

/// A life (an author's instance) is 1-32 lowercase hex digits.
pub fn valid_life(life: &str) -> bool {
    !life.is_empty()
        && life.len() <= MAX_LIFE
        && life
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl SyncVector {
    /// Fits the limits of one line: entries, ids and lives.
    pub fn valid(&self) -> bool {
        self.have.len() <= HAVE_PER_LINE
            && self.linked.len() <= MAX_LINKED
            && self
                .have
                .iter()
                .all(|h| valid_life(&h.life) && crate::text::validate_peer_id(&h.author).is_ok())
            && self
                .linked
                .iter()
                .all(|p| crate::text::validate_peer_id(p).is_ok())
    }

    /// A receipt to `author`: its `life` is held up to `last`.
    pub fn receipt(author: &str, life: &str, last: u64) -> Self {
        Self {
            have: vec![Have {
                author: author.to_owned(),
                life: life.to_owned(),
                last,
            }],
            linked: Vec::new(),
            more: false,
            ack: true,
        }
    }

    /// `have` cut into lines of at most [`HAVE_PER_LINE`]; `linked` rides
    /// on the last. Always at least one line.
    pub fn parts(have: Vec<Have>, linked: Vec<String>) -> Vec<Self> {
        let mut parts: Vec<Self> = have
            .chunks(HAVE_PER_LINE)
            .map(|c| Self {
                have: c.to_vec(),
                linked: Vec::new(),
                more: true,
                ack: false,
            })
            .collect();
        if parts.is_empty() {
            parts.push(Self::default());
        }
        if let Some(last) = parts.last_mut() {
            last.more = false;
            last.linked = linked;
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lives_are_short_hex() {
        assert!(valid_life("0123456789abcdef"));
        assert!(!valid_life(""));
        assert!(!valid_life("0123456789ABCDEF"));
        assert!(!valid_life(&"a".repeat(33)));
        assert!(!valid_life("../x"));
    }

    #[test]
    fn a_vector_is_cut_into_lines_and_read_back() {
        let have: Vec<Have> = (0..600)
            .map(|i| Have {
                author: format!("k{i:024x}"),
                life: format!("{i:016x}"),
                last: i,
            })
            .collect();
        let parts = SyncVector::parts(have.clone(), vec!["kaaaaaaaaaaaaaaaaaaaaaaaa".into()]);
        assert_eq!(parts.len(), 3);
        assert!(parts[0].more && parts[1].more && !parts[2].more);
        assert!(parts[..2].iter().all(|p| p.linked.is_empty()));
        assert_eq!(parts[2].linked.len(), 1);
        let mut back = Vec::new();
        for p in &parts {
            let line = serde_json::to_string(p).unwrap();
            assert!(line.len() < 32 * 1024, "{} bytes", line.len());
            let p: SyncVector = serde_json::from_str(&line).unwrap();
            assert!(p.valid());
            back.extend(p.have);
        }
        assert_eq!(back, have);
        let empty = SyncVector::parts(Vec::new(), Vec::new());
        assert_eq!(empty, vec![SyncVector::default()]);
    }
}
