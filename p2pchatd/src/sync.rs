//! Catch-up (docs/PROTOCOL-p2pchatd.md §7): what was said while two peers
//! were apart reaches both once their link is back.
//!
//! Authors seal runs of their lines ([`crate::mesh`], `author`); every
//! daemon keeps each sealed run it holds, ready to relay, in the store
//! ([`RunRow`]), and knows per author and life how far the runs it holds
//! reach without a hole (the chain says there is none: a run's `prev` is
//! the `end` of the one before). That reach, for every life, is the version
//! vector a link sends when it comes up; each side then sends the other the
//! runs it lacks, as relayed runs the receiver checks like any other.
//!
//! Who sends what: the author sends its own lives; another peer sends a
//! life only when its author is not linked with the receiver (it is gone,
//! or apart), so a returning peer gets each run about once.
//!
//! A run that arrives live, from its author's own link (or is our own), is
//! kept as it came: checking its chain and signature costs a hash per line
//! and a signature, paid instead when (if ever) it is sent on, and a run
//! that does not check out then is not sent. So an author can spoil only
//! the catch-up of its own lines, and what we relay always verifies.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use shared::authorship::{Hash, Opened, Relay, RelayError, RelayedLine, Seal, chain_start};
use shared::keys::{hex, unhex};
use shared::limits::MAX_PEER_LINE;
use shared::sync::{Have, MAX_HAVE, MAX_LINKED, SyncVector, valid_life};
use tracing::{debug, warn};

use crate::store::{LifeRow, RunRow, Store};

/// An author and one of its lives.
pub(crate) type LifeKey = (Arc<str>, Arc<str>);

/// Runs held past a hole, per life, that we remember to join up when the
/// hole fills (they are stored either way).
const WAITING: usize = 1024;
/// Lives of one author tracked at most: a restart is a life, and so is each
/// room and direct conversation it spoke in during one (a year of daily
/// restarts with a few rooms fits; retention trims the old ones).
const LIVES_PER_AUTHOR: usize = 4096;
/// Runs read from the store at once when sending.
pub(crate) const SEND_BATCH: usize = 64;
/// A run's relay object at most, so that its `relay` line stays under the
/// line limit with the envelope around it.
const MAX_RELAY_JSON: usize = MAX_PEER_LINE - 1024;

/// How far one author's life is held.
#[derive(Debug)]
struct Life {
    key: [u8; 32],
    /// The last sequence number of the runs held without a hole, and the
    /// chain hash after it (the life's start before any run).
    last: u64,
    end: Hash,
    /// Runs held past a hole: by the chain hash before them, (last, end).
    waiting: HashMap<Hash, (u64, Hash)>,
    /// The room (wire form) of its lines, when not `#general`: a room's
    /// runs go only to its members, a direct conversation's to peers that
    /// take rooms.
    room: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct State {
    lives: HashMap<LifeKey, Life>,
}

/// What catch-up knows; shared by the links.
#[derive(Debug)]
pub(crate) struct Sync {
    me: Arc<str>,
    /// Runs all older than this many days are past retention: neither
    /// stored nor shown again.
    retain_days: Option<u32>,
    state: Mutex<State>,
}

/// What became of a run offered to [`Sync`].
#[derive(Debug)]
pub(crate) enum Taken {
    /// News: store it (its lines are to be shown).
    New(Box<RunRow>),
    /// Held already, or past retention: nothing to show.
    Held,
    /// Not kept (too many lives, too big): its lines are shown, deduplicated
    /// by id, but it is not stored or sent on.
    Untracked,
}

/// A peer's version vector, as its `sync` lines add up.
#[derive(Debug, Default)]
pub(crate) struct TheirVector {
    have: HashMap<(String, String), u64>,
    linked: HashSet<String>,
}

impl TheirVector {
    /// Adds one part; `Err` when it breaks the limits.
    pub(crate) fn add(&mut self, part: SyncVector) -> Result<(), &'static str> {
        if !part.valid() {
            return Err("a sync line over its limits or with a bad id");
        }
        if self.have.len() + part.have.len() > MAX_HAVE
            || self.linked.len() + part.linked.len() > MAX_LINKED
        {
            return Err("a version vector over its limit");
        }
        for h in part.have {
            self.have.insert((h.author, h.life), h.last);
        }
        self.linked.extend(part.linked);
        Ok(())
    }
}

/// What to send a peer: runs of a life after a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Send {
    pub author: Arc<str>,
    pub life: Arc<str>,
    pub after: u64,
}

impl Sync {
    /// What the store holds, or nothing.
    pub(crate) fn load(me: Arc<str>, store: Option<&Store>, retain_days: Option<u32>) -> Self {
        let mut state = State::default();
        if let Some(store) = store {
            match store.lives() {
                Ok(rows) => {
                    for r in rows {
                        let mut life = Life {
                            key: r.key,
                            last: r.last,
                            end: r.end,
                            waiting: HashMap::new(),
                            room: r.room.clone(),
                        };
                        match store.runs_beyond(&r.author, &r.life, r.last, WAITING) {
                            Ok(runs) => {
                                for (last, prev, end) in runs {
                                    life.waiting.insert(prev, (last, end));
                                }
                            }
                            Err(e) => warn!("could not read runs for catch-up: {e}"),
                        }
                        state.lives.insert((r.author, r.life), life);
                    }
                }
                Err(e) => warn!("could not read what catch-up holds: {e}"),
            }
        }
        Self {
            me,
            retain_days,
            state: Mutex::new(state),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A run sealed by `author` in `life` that arrived live on its own link
    /// (or is ours), with the lines held for it: the run to store, if the
    /// lines are the ones the seal covers and it is news.
    pub(crate) fn sealed(
        &self,
        author: &Arc<str>,
        life: &Arc<str>,
        key: &[u8; 32],
        seal: Seal,
        lines: Vec<RelayedLine>,
    ) -> Option<RunRow> {
        let whole = *seal.instance == **life
            && usize::try_from(seal.count).ok() == Some(lines.len())
            && lines.first().map(|l| l.sequence) == Some(seal.first)
            && lines.last().map(|l| l.sequence) == Some(seal.last)
            && lines.windows(2).all(|w| w[0].sequence < w[1].sequence);
        if !whole {
            debug!(%author, "a run not held whole; not kept");
            return None;
        }
        let relay = Relay {
            key: hex(key),
            room: seal.room.clone(),
            seal,
            lines,
        };
        match self.take(author, life, key, relay) {
            Taken::New(run) => Some(*run),
            Taken::Held | Taken::Untracked => None,
        }
    }

    /// A relayed run that checked out (chain and signature).
    pub(crate) fn relayed(&self, author: &Arc<str>, key: &[u8; 32], relay: Relay) -> Taken {
        let life: Arc<str> = Arc::from(relay.seal.instance.as_str());
        self.take(author, &life, key, relay)
    }

    /// Files a whole run.
    fn take(&self, author: &Arc<str>, life: &Arc<str>, key: &[u8; 32], relay: Relay) -> Taken {
        let seal = &relay.seal;
        let (Some(prev), Some(end)) = (unhex::<32>(&seal.prev), unhex::<32>(&seal.end)) else {
            return Taken::Untracked;
        };
        if let Some(days) = self.retain_days {
            let cutoff = chrono::Utc::now() - chrono::TimeDelta::days(i64::from(days));
            if relay.lines.iter().all(|l| l.timestamp < cutoff) {
                return Taken::Held;
            }
        }
        // Counting the JSON is needed only when a rough bound says it may
        // be too big (each text byte escapes to at most 6, a line's other
        // fields take well under 256).
        let text: usize = relay
            .lines
            .iter()
            .map(|l| l.content.len() + l.username.len())
            .sum();
        let bound = relay.lines.len() * 256 + text * 6 + 512;
        let bytes = if bound > MAX_RELAY_JSON {
            json_len(&relay)
        } else {
            bound
        };
        if bytes > MAX_RELAY_JSON {
            debug!(%author, bytes, "a run too big to relay; not kept");
            return Taken::Untracked;
        }
        let mut state = self.state();
        let k = (author.clone(), life.clone());
        let new_life = !state.lives.contains_key(&k);
        if new_life {
            // Counted when a life is new (rare: a restart), not kept apart.
            // The table's size first: the count walks it (at most
            // MAX_HAVE lives, and only for a life not seen before).
            // Our own lives are always kept (`say {wait}` counts on them).
            let full = **author != *self.me
                && (state.lives.len() >= MAX_HAVE
                    || state.lives.keys().filter(|(a, _)| a == author).count() >= LIVES_PER_AUTHOR);
            if full {
                warn!(%author, "too many lives to keep track of; a run of a new one is not kept");
                return Taken::Untracked;
            }
            let start = Life {
                key: *key,
                last: 0,
                end: chain_start(key, life),
                waiting: HashMap::new(),
                room: relay.room.as_deref().map(Arc::from),
            };
            state.lives.insert(k.clone(), start);
        }
        let Some(held) = state.lives.get_mut(&k) else {
            return Taken::Untracked;
        };
        if held.room.as_deref() != relay.room.as_deref() {
            // A life is one room's: its author mixed them (or it is not
            // the life we know). Not kept, so never passed on.
            debug!(%author, life = %life, "a run of another room than its life's; not kept");
            return Taken::Untracked;
        }
        if held.key != *key || seal.last <= held.last || held.waiting.contains_key(&prev) {
            return Taken::Held;
        }
        let advanced = prev == held.end;
        if advanced {
            held.last = seal.last;
            held.end = end;
            while let Some((last, end)) = held.waiting.remove(&held.end) {
                held.last = last;
                held.end = end;
            }
        } else if held.waiting.len() < WAITING {
            held.waiting.insert(prev, (seal.last, end));
        }
        // A new life is recorded at once, so a restart knows its runs
        // held past a hole.
        let reach = (advanced || new_life).then(|| LifeRow {
            author: author.clone(),
            life: life.clone(),
            key: *key,
            last: held.last,
            end: held.end,
            room: held.room.clone(),
        });
        drop(state);
        Taken::New(Box::new(RunRow {
            author: author.clone(),
            life: life.clone(),
            last: seal.last,
            prev,
            end,
            relay,
            reach,
        }))
    }

    /// Whether any run of `author`'s `life` is held.
    pub(crate) fn knows(&self, author: &Arc<str>, life: &Arc<str>) -> bool {
        self.state()
            .lives
            .contains_key(&(author.clone(), life.clone()))
    }

    /// The chain hash `life`'s held runs reach to without a hole.
    pub(crate) fn end_of(&self, author: &Arc<str>, life: &Arc<str>) -> Option<Hash> {
        self.state()
            .lives
            .get(&(author.clone(), life.clone()))
            .map(|l| l.end)
    }

    /// How far `life`'s runs reach without a hole (0 when none are held).
    pub(crate) fn reach(&self, author: &Arc<str>, life: &Arc<str>) -> u64 {
        self.state()
            .lives
            .get(&(author.clone(), life.clone()))
            .map_or(0, |l| l.last)
    }

    /// The furthest `author`'s runs reach in any of its lives.
    pub(crate) fn furthest_of(&self, author: &str) -> u64 {
        self.state()
            .lives
            .iter()
            .filter(|((a, _), _)| **a == *author)
            .map(|(_, l)| l.last)
            .max()
            .unwrap_or(0)
    }

    /// Our version vector: per life, how far its runs reach without a hole.
    pub(crate) fn have(&self) -> Vec<Have> {
        let state = self.state();
        state
            .lives
            .iter()
            .take(MAX_HAVE)
            .map(|((author, life), l)| Have {
                author: author.to_string(),
                life: life.to_string(),
                last: l.last,
            })
            .collect()
    }

    /// What `peer`, with `their` vector, lacks that we should send: our own
    /// lives, and those whose author it is not linked with. Never the
    /// peer's own. A room's lives only if the peer is in the room, direct
    /// conversations' only if it takes rooms (`rooms` is then the rooms it
    /// is in, `#name` each).
    pub(crate) fn plan(
        &self,
        peer: &str,
        their: &TheirVector,
        rooms: Option<&std::collections::BTreeSet<String>>,
    ) -> Vec<Send> {
        let state = self.state();
        let mut out = Vec::new();
        for ((author, life), l) in &state.lives {
            if **author == *peer || (*author != self.me && their.linked.contains(&**author)) {
                continue;
            }
            let belongs = match (l.room.as_deref(), rooms) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(r), Some(_)) if r.starts_with('@') => true,
                (Some(r), Some(rooms)) => rooms.contains(&format!("#{r}")),
            };
            if !belongs {
                continue;
            }
            let theirs = their
                .have
                .get(&(author.to_string(), life.to_string()))
                .copied()
                .unwrap_or(0);
            if l.last > theirs {
                out.push(Send {
                    author: author.clone(),
                    life: life.clone(),
                    after: theirs,
                });
            }
        }
        out
    }
}

/// Bytes of `relay` as JSON, counted without building it.
fn json_len(relay: &Relay) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    match serde_json::to_writer(&mut n, relay) {
        Ok(()) => n.0,
        Err(_) => usize::MAX,
    }
}

/// Checks a run's life, chain and its author's signature: its lines, as
/// the author's, once they do.
pub(crate) fn checked(relay: &Relay) -> Result<Opened, RelayError> {
    if !valid_life(&relay.seal.instance) {
        return Err(RelayError::Malformed);
    }
    let o = relay.open()?;
    if crate::identity::verify(&o.key, &o.signed, &o.sig) {
        Ok(o)
    } else {
        Err(RelayError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use shared::wire::{MessageType, PeerMessage};

    /// An author's runs of `run` lines each: seal and lines.
    fn author(
        secret: u8,
        life: &str,
        lines: u64,
        run: u64,
    ) -> (Identity, Vec<(Seal, Vec<RelayedLine>)>) {
        let me = Identity::from_secret(&[secret; 32]);
        let mut out = crate::mesh::author_outbox(&me, life);
        let mut runs = Vec::new();
        for seq in 1..=lines {
            let msg = PeerMessage::new(
                MessageType::Chat,
                format!("{secret:02x}{seq:014x}"),
                me.peer_id(),
                "amy",
                format!("line {seq}"),
                chrono::Utc::now(),
                seq * 2,
            );
            out.chain(msg);
            if seq % run == 0 {
                let n = out.open_runs()[0];
                let sealed = out.seal(&me, n).unwrap();
                runs.push((sealed.seal, sealed.lines));
            }
        }
        (me, runs)
    }

    fn relay(key: &[u8; 32], run: &(Seal, Vec<RelayedLine>)) -> Relay {
        Relay {
            key: hex(key),
            seal: run.0.clone(),
            lines: run.1.clone(),
            room: None,
        }
    }

    #[test]
    fn live_runs_are_kept_whole_and_move_the_reach_on() {
        let (amy, runs) = author(3, "aa", 6, 3);
        let who: Arc<str> = Arc::from(amy.peer_id());
        let life: Arc<str> = Arc::from("aa");
        let key = amy.public_key();
        let sync = Sync::load(Arc::from("kme"), None, None);
        let (seal, lines) = runs[0].clone();
        let run = sync.sealed(&who, &life, &key, seal, lines).unwrap();
        assert_eq!(run.reach.as_ref().map(|r| r.last), Some(6));
        assert!(checked(&run.relay).is_ok());
        // The second run lost a line on the way: it is not kept.
        let (seal, mut lines) = runs[1].clone();
        lines.remove(1);
        assert!(
            sync.sealed(&who, &life, &key, seal.clone(), lines)
                .is_none()
        );
        // Nor is one of another life.
        let (_, lines) = runs[1].clone();
        assert!(
            sync.sealed(&who, &Arc::from("bb"), &key, seal, lines)
                .is_none()
        );
        assert_eq!(sync.reach(&who, &life), 6);
        // The same run again is held already.
        let (seal, lines) = runs[0].clone();
        assert!(sync.sealed(&who, &life, &key, seal, lines).is_none());
    }

    #[test]
    fn relayed_runs_fill_holes_in_any_order_and_count_once() {
        let (amy, runs) = author(4, "bb", 9, 3);
        let who: Arc<str> = Arc::from(amy.peer_id());
        let key = amy.public_key();
        let sync = Sync::load(Arc::from("kme"), None, None);
        let Taken::New(third) = sync.relayed(&who, &key, relay(&key, &runs[2])) else {
            panic!("a new run")
        };
        assert_eq!(
            third.reach.as_ref().map(|r| r.last),
            Some(0),
            "a new life, past a hole"
        );
        assert!(matches!(
            sync.relayed(&who, &key, relay(&key, &runs[2])),
            Taken::Held
        ));
        let Taken::New(first) = sync.relayed(&who, &key, relay(&key, &runs[0])) else {
            panic!("a new run")
        };
        assert_eq!(first.reach.map(|r| r.last), Some(6));
        let Taken::New(second) = sync.relayed(&who, &key, relay(&key, &runs[1])) else {
            panic!("a new run")
        };
        assert_eq!(second.reach.map(|r| r.last), Some(18), "the hole closed");
        assert!(matches!(
            sync.relayed(&who, &key, relay(&key, &runs[0])),
            Taken::Held
        ));
        assert_eq!(
            sync.have(),
            vec![Have {
                author: who.to_string(),
                life: "bb".into(),
                last: 18
            }]
        );
    }

    #[test]
    fn runs_too_big_to_relay_or_past_retention_are_not_kept() {
        let (amy, runs) = author(6, "dd", 3, 3);
        let who: Arc<str> = Arc::from(amy.peer_id());
        let key = amy.public_key();
        let mut big = relay(&key, &runs[0]);
        for l in &mut big.lines {
            l.content = "\u{1}".repeat(4000);
        }
        let sync = Sync::load(Arc::from("kme"), None, None);
        assert!(matches!(sync.relayed(&who, &key, big), Taken::Untracked));
        let mut old = relay(&key, &runs[0]);
        for l in &mut old.lines {
            l.timestamp = chrono::Utc::now() - chrono::TimeDelta::days(40);
        }
        let keeps_30_days = Sync::load(Arc::from("kme"), None, Some(30));
        assert!(matches!(
            keeps_30_days.relayed(&who, &key, old.clone()),
            Taken::Held
        ));
        assert!(matches!(sync.relayed(&who, &key, old), Taken::New(_)));
    }

    #[test]
    fn a_plan_sends_what_the_peer_lacks_and_only_once() {
        let (amy, runs) = author(5, "cc", 3, 3);
        let amy_id: Arc<str> = Arc::from(amy.peer_id());
        let life: Arc<str> = Arc::from("cc");
        let sync = Sync::load(Arc::from("kme"), None, None);
        let (seal, lines) = runs[0].clone();
        sync.sealed(&amy_id, &life, &amy.public_key(), seal, lines)
            .unwrap();
        let vector = |have: Vec<Have>, linked: Vec<String>| {
            let mut v = TheirVector::default();
            v.add(SyncVector {
                have,
                linked,
                more: false,
                ack: false,
            })
            .unwrap();
            v
        };
        let bob = "kbob000000000000000000000";
        let want = vec![Send {
            author: amy_id.clone(),
            life,
            after: 0,
        }];
        assert_eq!(sync.plan(bob, &vector(vec![], vec![]), None), want);
        // Not to amy herself, nor to a peer linked with her, nor to one
        // that has it.
        assert!(sync.plan(&amy_id, &vector(vec![], vec![]), None).is_empty());
        assert!(
            sync.plan(bob, &vector(vec![], vec![amy_id.to_string()]), None)
                .is_empty()
        );
        let has = vec![Have {
            author: amy_id.to_string(),
            life: "cc".into(),
            last: 6,
        }];
        assert!(sync.plan(bob, &vector(has, vec![]), None).is_empty());
        // A vector over its limits is refused.
        let mut v = TheirVector::default();
        let many: Vec<String> = (0..MAX_LINKED).map(|i| format!("k{i:024x}")).collect();
        v.add(SyncVector {
            linked: many.clone(),
            ..SyncVector::default()
        })
        .unwrap();
        assert!(
            v.add(SyncVector {
                linked: many,
                ..SyncVector::default()
            })
            .is_err()
        );
    }
}
