//! Authorship that survives relaying (see docs/PROTOCOL-p2pchatd.md §6): a
//! line that reaches us through a third peer must be provably its
//! author's. Pure: hashing and the wire forms; the daemon signs and
//! verifies.
//!
//! An author chains its chat lines, per life: `h0` is derived from its key
//! and instance, and each line moves the chain on, `h = H(h, leaf(line))`.
//! Every run of at most [`MAX_RUN_LINES`] lines (or [`MAX_RUN_BYTES`] of
//! text, or what [`SEAL_DELAY_MS`] gathered) is closed by a *seal*: one
//! Ed25519 signature over the run's first and last sequence numbers, its
//! length and the chain hashes before and after it. A relayed run carries
//! the author's key, its seal and its lines; whoever gets it recomputes
//! the chain and checks the one signature. A relayer cannot alter, add,
//! drop or reorder a line without breaking the chain, and cannot make a
//! seal without the author's key. One signature per run, not per line,
//! keeps signing far below the cost of sending (an Ed25519 signature
//! takes ~20 µs; a run of 128 lines takes that once).

use serde::{Deserialize, Serialize};

use blake2::{Blake2s256, Digest};

use crate::keys::{KEY_LEN, peer_id_of, tagged, unhex};
use crate::limits::{MAX_TEXT_BYTES, ROOM};
use crate::rooms::MAX_SEALED_BYTES;
use crate::text::{TextError, validate_message_id};
use crate::time::{Timestamp, serde_rfc3339};
use crate::wire::{MessageType, PeerMessage};

/// A chain hash.
pub type Hash = [u8; 32];

/// Lines in one sealed run at most. A relay of a full run stays well under
/// the 64 KiB line limit: 128 lines of ~150 bytes of fields, plus text.
pub const MAX_RUN_LINES: usize = 128;
/// Text bytes in one run at most (escaped in JSON, at most twice that).
pub const MAX_RUN_BYTES: usize = 8 * 1024;
/// How long a run stays open for more lines before it is sealed.
pub const SEAL_DELAY_MS: u64 = 20;

/// Capability (Noise hello): the sender sends `seal` lines and takes
/// `relay` lines.
pub const CAP_SEALS: &str = "seals";

const CHAIN_START: &str = "p2pchat 2026-11 chain start";
const LEAF: &str = "p2pchat 2026-11 line";
const CHAIN: &str = "p2pchat 2026-11 chain";
const SEAL: &[u8] = b"p2pchat seal 1:";

/// The chain hash before an author's first line in one life.
pub fn chain_start(key: &[u8; KEY_LEN], instance: &str) -> Hash {
    let mut h = tagged(CHAIN_START);
    h.update(key);
    put(&mut h, instance.as_bytes());
    h.finalize().into()
}

/// Feeds `bytes` with its length first, so no two field lists hash alike.
fn put(h: &mut Blake2s256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// The hash of one chat line: every field a reader sees, and its place.
pub fn leaf(msg: &PeerMessage) -> Hash {
    let mut h = tagged(LEAF);
    put(&mut h, msg.sender_id.as_bytes());
    put(&mut h, msg.id.as_bytes());
    put(&mut h, msg.username.as_bytes());
    put(&mut h, msg.content.as_bytes());
    let (secs, nanos) = msg
        .timestamp
        .map_or((0, 0), |t| (t.timestamp(), t.timestamp_subsec_nanos()));
    h.update(secs.to_be_bytes());
    h.update(nanos.to_be_bytes());
    h.update(msg.sequence.to_be_bytes());
    put(&mut h, msg.room_id.as_bytes());
    h.finalize().into()
}

/// The chain moved on by one line.
pub fn chain(prev: &Hash, leaf: &Hash) -> Hash {
    let mut h = tagged(CHAIN);
    h.update(prev);
    h.update(leaf);
    h.finalize().into()
}

/// The author's signature over one run of its lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    /// The author's life the chain belongs to.
    pub instance: String,
    /// Sequence numbers of the run's first and last line.
    pub first: u64,
    pub last: u64,
    pub count: u32,
    /// Chain hashes before the run and after its last line, hex.
    pub prev: String,
    pub end: String,
    /// Ed25519 over [`Seal::signed_bytes`], hex.
    pub sig: String,
    /// The room (wire form) of the run's lines, when not `#general`: the
    /// life is then the room's stream ([`crate::rooms::stream_life`]).
    /// Not signed: every leaf holds the room, and the chain starts from
    /// the life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

impl Seal {
    /// What the author signs: its id and every field but the signature.
    pub fn signed_bytes(
        author: &str,
        instance: &str,
        (first, last, count): (u64, u64, u32),
        prev: &Hash,
        end: &Hash,
    ) -> Vec<u8> {
        let mut out = SEAL.to_vec();
        for field in [author.as_bytes(), instance.as_bytes()] {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field);
        }
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&last.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(prev);
        out.extend_from_slice(end);
        out
    }
}

/// One relayed line: the author's chat line without what the run implies
/// (its type, sender and room).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayedLine {
    pub id: String,
    pub username: String,
    pub content: String,
    #[serde(with = "serde_rfc3339")]
    pub timestamp: Timestamp,
    pub sequence: u64,
}

impl RelayedLine {
    /// The line as its author sent it, taken apart without a copy.
    pub fn from_message(msg: PeerMessage) -> Option<Self> {
        Some(Self {
            timestamp: msg.timestamp?,
            sequence: msg.sequence,
            id: msg.id,
            username: msg.username,
            content: msg.content,
        })
    }

    /// The line as its author sent it.
    pub fn of(msg: &PeerMessage) -> Option<Self> {
        Some(Self {
            id: msg.id.clone(),
            username: msg.username.clone(),
            content: msg.content.clone(),
            timestamp: msg.timestamp?,
            sequence: msg.sequence,
        })
    }

    fn message(&self, author: &str, room: &str) -> PeerMessage {
        PeerMessage {
            id: self.id.clone(),
            kind: MessageType::Chat,
            sender_id: author.to_owned(),
            username: self.username.clone(),
            content: self.content.clone(),
            timestamp: Some(self.timestamp),
            sequence: self.sequence,
            room_id: room.to_owned(),
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
}

/// A sealed run of one author's lines, passed on by another peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    /// The author's identity key, hex: its peer id is derived from it.
    pub key: String,
    pub seal: Seal,
    pub lines: Vec<RelayedLine>,
    /// The room (wire form) of the lines, when not `#general`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// Why a relayed run was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("the author's key or a hash is not hex of the right length")]
    Malformed,
    #[error("a run holds 1 to {MAX_RUN_LINES} lines, this one {0}")]
    Length(usize),
    #[error("the seal covers {sealed} lines, the run holds {held}")]
    Count { sealed: u32, held: usize },
    #[error("the lines' sequence numbers do not run from the seal's first to its last")]
    Sequence,
    #[error("a line's id is bad: {0}")]
    Id(TextError),
    #[error("a line's text is longer than {MAX_TEXT_BYTES} bytes")]
    TooLong,
    #[error("the run and its seal name different rooms, or #general by name")]
    Room,
    #[error("the lines do not hash to the sealed chain")]
    Chain,
    #[error("the seal's signature is not the author's")]
    Signature,
}

/// A relayed run checked but for its signature: what the signature must
/// cover, and the author's lines once it does.
#[derive(Debug)]
pub struct Opened {
    pub author: String,
    pub key: [u8; KEY_LEN],
    pub signed: Vec<u8>,
    pub sig: [u8; 64],
    pub lines: Vec<PeerMessage>,
}

impl Relay {
    /// Recomputes the run's chain against its seal. The caller verifies
    /// `sig` over `signed` with `key` before it trusts `lines`.
    pub fn open(&self) -> Result<Opened, RelayError> {
        let key = unhex::<KEY_LEN>(&self.key).ok_or(RelayError::Malformed)?;
        let prev = unhex::<32>(&self.seal.prev).ok_or(RelayError::Malformed)?;
        let end = unhex::<32>(&self.seal.end).ok_or(RelayError::Malformed)?;
        let sig = unhex::<64>(&self.seal.sig).ok_or(RelayError::Malformed)?;
        let n = self.lines.len();
        if n == 0 || n > MAX_RUN_LINES {
            return Err(RelayError::Length(n));
        }
        if usize::try_from(self.seal.count).ok() != Some(n) {
            return Err(RelayError::Count {
                sealed: self.seal.count,
                held: n,
            });
        }
        let increasing = self.lines.windows(2).all(|w| w[0].sequence < w[1].sequence);
        if !increasing
            || self.lines.first().map(|l| l.sequence) != Some(self.seal.first)
            || self.lines.last().map(|l| l.sequence) != Some(self.seal.last)
        {
            return Err(RelayError::Sequence);
        }
        let author = peer_id_of(&key);
        // One spelling: `#general`'s runs name no room, so a run cannot
        // pass for another by a field no leaf tells apart.
        let room = self.room.as_deref().unwrap_or(ROOM);
        if self.room.as_deref() != self.seal.room.as_deref()
            || self
                .room
                .as_deref()
                .is_some_and(|r| r.is_empty() || r == ROOM)
        {
            return Err(RelayError::Room);
        }
        // Direct messages are sealed to their recipient: hex, and longer.
        let max = if room.starts_with('@') {
            MAX_SEALED_BYTES
        } else {
            MAX_TEXT_BYTES
        };
        let mut h = prev;
        let mut lines = Vec::with_capacity(n);
        for l in &self.lines {
            validate_message_id(&l.id).map_err(RelayError::Id)?;
            if l.content.len() > max {
                return Err(RelayError::TooLong);
            }
            let msg = l.message(&author, room);
            h = chain(&h, &leaf(&msg));
            lines.push(msg);
        }
        if h != end {
            return Err(RelayError::Chain);
        }
        let signed = Seal::signed_bytes(
            &author,
            &self.seal.instance,
            (self.seal.first, self.seal.last, self.seal.count),
            &prev,
            &end,
        );
        Ok(Opened {
            author,
            key,
            signed,
            sig,
            lines,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::hex;

    fn run(n: usize) -> (Relay, Vec<PeerMessage>) {
        let key = [9u8; KEY_LEN];
        let author = peer_id_of(&key);
        let start = chain_start(&key, "life");
        let msgs: Vec<PeerMessage> = (1..=n as u64)
            .map(|i| {
                PeerMessage::new(
                    MessageType::Chat,
                    format!("{i:016x}"),
                    &author,
                    "amy",
                    format!("line {i}"),
                    chrono::Utc::now(),
                    i * 2,
                )
            })
            .collect();
        let end = msgs.iter().fold(start, |h, m| chain(&h, &leaf(m)));
        let relay = Relay {
            key: hex(&key),
            seal: Seal {
                instance: "life".into(),
                first: msgs[0].sequence,
                last: msgs[n - 1].sequence,
                count: u32::try_from(n).unwrap(),
                prev: hex(&start),
                end: hex(&end),
                sig: hex(&[0u8; 64]),
                room: None,
            },
            lines: msgs.iter().map(|m| RelayedLine::of(m).unwrap()).collect(),
            room: None,
        };
        (relay, msgs)
    }

    #[test]
    fn a_whole_run_opens_to_its_lines() {
        let (relay, msgs) = run(5);
        let opened = relay.open().unwrap();
        assert_eq!(opened.lines, msgs);
        assert_eq!(opened.author, msgs[0].sender_id);
        // It survives the wire.
        let back: Relay = serde_json::from_str(&serde_json::to_string(&relay).unwrap()).unwrap();
        assert_eq!(back.open().unwrap().lines, msgs);
    }

    #[test]
    fn any_change_breaks_the_chain_or_the_seal() {
        let (relay, _) = run(5);
        let mut altered = relay.clone();
        altered.lines[2].content = "line 3, altered".into();
        assert_eq!(altered.open().unwrap_err(), RelayError::Chain);
        let mut renamed = relay.clone();
        renamed.lines[0].username = "bob".into();
        assert_eq!(renamed.open().unwrap_err(), RelayError::Chain);
        let mut swapped = relay.clone();
        swapped.lines.swap(1, 2);
        assert_eq!(swapped.open().unwrap_err(), RelayError::Sequence);
        let mut dropped = relay.clone();
        dropped.lines.remove(2);
        assert!(matches!(
            dropped.open().unwrap_err(),
            RelayError::Count { .. }
        ));
        // Another author: its id is in every leaf.
        let mut other_key = relay.clone();
        other_key.key = hex(&[8u8; KEY_LEN]);
        assert_eq!(other_key.open().unwrap_err(), RelayError::Chain);
        let mut empty = relay;
        empty.lines.clear();
        empty.seal.count = 0;
        assert_eq!(empty.open().unwrap_err(), RelayError::Length(0));
    }
}
