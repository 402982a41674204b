//! Catch-up (docs/PROTOCOL-p2pchatd.md §7): what was said while two peers
//! were apart reaches both once their link is back.
//!
//! Authors seal runs of their lines ([`crate::mesh`], `author`); every
//! daemon keeps each sealed run it holds, ready to relay, in the store
//! ([`RunRow`]), and knows per author and life how far the runs it holds
//! reach without a hole (the chain proves there is none: a run's `prev` is
//! the `end` of the one before). That reach, for every life, is the version
//! vector a link sends when it comes up; each side then sends the other the
//! runs it lacks, as relayed runs the receiver checks like any other.
//!
//! Who sends what: the author sends its own lives; another peer sends a
//! life only when its author is not linked with the receiver (it is gone,
//! or apart), so a returning peer gets each run about once.
//!
//! Lines are held here until their seal arrives (at most a run's worth and
//! some per life): a run is kept only whole, and only once its chain and
//! its author's signature check out, so what we relay always verifies.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use shared::authorship::{Hash, MAX_RUN_LINES, Relay, RelayedLine, Seal, chain_start};
use shared::keys::{hex, unhex};
use shared::sync::{Have, MAX_HAVE, SyncVector};
use shared::wire::PeerMessage;
use tracing::{debug, warn};

use crate::store::{LifeRow, RunRow, Store};

/// An author and one of its lives.
pub(crate) type LifeKey = (Arc<str>, Arc<str>);

/// Unsealed lines held per life: two full runs (a seal is due after one).
const UNSEALED: usize = 2 * MAX_RUN_LINES;
/// Runs held past a hole, per life, that we remember to join up when the
/// hole fills (they are stored either way).
const WAITING: usize = 1024;
/// Runs read from the store at once when sending.
pub(crate) const SEND_BATCH: usize = 64;

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
}

#[derive(Debug, Default)]
struct State {
    lives: HashMap<LifeKey, Life>,
    unsealed: HashMap<LifeKey, VecDeque<RelayedLine>>,
}

/// What catch-up knows; shared by the links.
#[derive(Debug)]
pub(crate) struct Sync {
    me: Arc<str>,
    state: Mutex<State>,
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
        if self.have.len() + part.have.len() > MAX_HAVE {
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
    pub(crate) fn load(me: Arc<str>, store: Option<&Store>) -> Self {
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
            state: Mutex::new(state),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A chat line of `author` in `life`, as it arrived live (or as we
    /// sent it): held until its run's seal.
    pub(crate) fn line(&self, author: &Arc<str>, life: &Arc<str>, msg: &PeerMessage) {
        let Some(line) = RelayedLine::of(msg) else {
            return;
        };
        let mut state = self.state();
        let held = state
            .unsealed
            .entry((author.clone(), life.clone()))
            .or_default();
        if held.len() == UNSEALED {
            held.pop_front();
        }
        held.push_back(line);
    }

    /// `author`'s seal over a run of its lines in `life`, as it arrived
    /// live: the run, if we hold it whole and it checks out, to store.
    pub(crate) fn sealed(
        &self,
        author: &Arc<str>,
        life: &Arc<str>,
        key: &[u8; 32],
        seal: &Seal,
    ) -> Option<RunRow> {
        if *seal.instance != **life {
            debug!(%author, "dropped a seal of another life");
            return None;
        }
        let lines = {
            let mut state = self.state();
            let held = state.unsealed.get_mut(&(author.clone(), life.clone()))?;
            while held.front().is_some_and(|l| l.sequence < seal.first) {
                held.pop_front();
            }
            let n = held.iter().take_while(|l| l.sequence <= seal.last).count();
            let lines: Vec<RelayedLine> = held.drain(..n).collect();
            if held.is_empty() {
                state.unsealed.remove(&(author.clone(), life.clone()));
            }
            lines
        };
        let relay = Relay {
            key: hex(key),
            seal: seal.clone(),
            lines,
        };
        match checked(&relay) {
            Ok(()) => self.take(author, life, key, &relay),
            Err(e) => {
                debug!(%author, "a run we cannot relay: {e}");
                None
            }
        }
    }

    /// A relayed run that checked out (chain and signature): the run to
    /// store if it is news to us, `None` when we hold it already.
    pub(crate) fn relayed(
        &self,
        author: &Arc<str>,
        key: &[u8; 32],
        relay: &Relay,
    ) -> Option<RunRow> {
        let life: Arc<str> = Arc::from(relay.seal.instance.as_str());
        let row = self.take(author, &life, key, relay)?;
        // Lines of the run that came live are covered now.
        let mut state = self.state();
        if let Some(held) = state.unsealed.get_mut(&(author.clone(), life)) {
            held.retain(|l| l.sequence > relay.seal.last);
        }
        Some(row)
    }

    /// Files a whole, checked run; `None` when it is held already.
    fn take(
        &self,
        author: &Arc<str>,
        life: &Arc<str>,
        key: &[u8; 32],
        relay: &Relay,
    ) -> Option<RunRow> {
        let seal = &relay.seal;
        let (Some(prev), Some(end)) = (unhex::<32>(&seal.prev), unhex::<32>(&seal.end)) else {
            return None;
        };
        let mut state = self.state();
        let lives = state.lives.len();
        let k = (author.clone(), life.clone());
        if !state.lives.contains_key(&k) {
            if lives >= MAX_HAVE {
                warn!(%author, "too many lives to keep track of; not storing a run of a new one");
                return None;
            }
            let start = Life {
                key: *key,
                last: 0,
                end: chain_start(key, life),
                waiting: HashMap::new(),
            };
            state.lives.insert(k.clone(), start);
        }
        let held = state.lives.get_mut(&k)?;
        if held.key != *key || seal.last <= held.last || held.waiting.contains_key(&prev) {
            return None;
        }
        let mut reach = None;
        if prev == held.end {
            held.last = seal.last;
            held.end = end;
            while let Some((last, end)) = held.waiting.remove(&held.end) {
                held.last = last;
                held.end = end;
            }
            reach = Some(LifeRow {
                author: author.clone(),
                life: life.clone(),
                key: *key,
                last: held.last,
                end: held.end,
            });
        } else if held.waiting.len() < WAITING {
            held.waiting.insert(prev, (seal.last, end));
        }
        drop(state);
        Some(RunRow {
            author: author.clone(),
            life: life.clone(),
            last: seal.last,
            prev,
            end,
            relay: serde_json::to_string(relay).unwrap_or_default(),
            reach,
        })
    }

    /// How far `life`'s runs reach without a hole (0 when none are held).
    pub(crate) fn reach(&self, author: &Arc<str>, life: &Arc<str>) -> u64 {
        self.state()
            .lives
            .get(&(author.clone(), life.clone()))
            .map_or(0, |l| l.last)
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
    /// peer's own.
    pub(crate) fn plan(&self, peer: &str, their: &TheirVector) -> Vec<Send> {
        let state = self.state();
        let mut out = Vec::new();
        for ((author, life), l) in &state.lives {
            if **author == *peer || (*author != self.me && their.linked.contains(&**author)) {
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

/// Checks a run's chain and its author's signature.
pub(crate) fn checked(relay: &Relay) -> Result<(), shared::authorship::RelayError> {
    let o = relay.open()?;
    if crate::identity::verify(&o.key, &o.signed, &o.sig) {
        Ok(())
    } else {
        Err(shared::authorship::RelayError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use shared::wire::MessageType;

    /// An author's lines, and the seals it makes over runs of `run` lines.
    fn author(
        secret: u8,
        life: &str,
        lines: u64,
        run: u64,
    ) -> (Identity, Vec<PeerMessage>, Vec<Seal>) {
        let me = Identity::from_secret(&[secret; 32]);
        let mut out = crate::mesh::author_outbox(&me, life);
        let mut msgs = Vec::new();
        let mut seals = Vec::new();
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
            out.chain(&msg);
            msgs.push(msg);
            if seq % run == 0 {
                seals.push(out.seal(&me, life, None).unwrap());
            }
        }
        (me, msgs, seals)
    }

    #[test]
    fn live_runs_are_kept_whole_and_move_the_reach_on() {
        let (amy, msgs, seals) = author(3, "aa", 6, 3);
        let who: Arc<str> = Arc::from(amy.peer_id());
        let life: Arc<str> = Arc::from("aa");
        let sync = Sync::load(Arc::from("kme"), None);
        for m in &msgs[..3] {
            sync.line(&who, &life, m);
        }
        let run = sync
            .sealed(&who, &life, &amy.public_key(), &seals[0])
            .unwrap();
        assert_eq!(run.reach.as_ref().map(|r| r.last), Some(6));
        // The second run lost a line on the way: it is not kept.
        sync.line(&who, &life, &msgs[3]);
        sync.line(&who, &life, &msgs[5]);
        assert!(
            sync.sealed(&who, &life, &amy.public_key(), &seals[1])
                .is_none()
        );
        assert_eq!(sync.have()[0].last, 6);
        // A seal of another life, or a forged one, is no use either.
        let mut forged = seals[1].clone();
        forged.sig = hex(&[0u8; 64]);
        assert!(
            sync.sealed(&who, &life, &amy.public_key(), &forged)
                .is_none()
        );
    }

    #[test]
    fn relayed_runs_fill_holes_in_any_order_and_count_once() {
        let (amy, msgs, seals) = author(4, "bb", 9, 3);
        let who: Arc<str> = Arc::from(amy.peer_id());
        let key = amy.public_key();
        let relay = |i: usize| Relay {
            key: hex(&key),
            seal: seals[i].clone(),
            lines: msgs[i * 3..i * 3 + 3]
                .iter()
                .map(|m| RelayedLine::of(m).unwrap())
                .collect(),
        };
        let sync = Sync::load(Arc::from("kme"), None);
        let third = sync.relayed(&who, &key, &relay(2)).unwrap();
        assert!(third.reach.is_none(), "past a hole");
        assert!(
            sync.relayed(&who, &key, &relay(2)).is_none(),
            "held already"
        );
        let first = sync.relayed(&who, &key, &relay(0)).unwrap();
        assert_eq!(first.reach.map(|r| r.last), Some(6));
        let second = sync.relayed(&who, &key, &relay(1)).unwrap();
        assert_eq!(second.reach.map(|r| r.last), Some(18), "the hole closed");
        assert!(sync.relayed(&who, &key, &relay(0)).is_none());
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
    fn a_plan_sends_what_the_peer_lacks_and_only_once() {
        let (amy, msgs, seals) = author(5, "cc", 3, 3);
        let amy_id: Arc<str> = Arc::from(amy.peer_id());
        let life: Arc<str> = Arc::from("cc");
        let sync = Sync::load(Arc::from("kme"), None);
        for m in &msgs {
            sync.line(&amy_id, &life, m);
        }
        sync.sealed(&amy_id, &life, &amy.public_key(), &seals[0])
            .unwrap();
        let mut their = TheirVector::default();
        their
            .add(SyncVector {
                have: vec![],
                linked: vec![],
                more: false,
                ack: false,
            })
            .unwrap();
        let want = vec![Send {
            author: amy_id.clone(),
            life,
            after: 0,
        }];
        assert_eq!(sync.plan("kbob000000000000000000000", &their), want);
        // Not to amy herself, nor to a peer linked with her, nor to one
        // that has it.
        assert!(sync.plan(&amy_id, &their).is_empty());
        let mut linked = TheirVector::default();
        linked
            .add(SyncVector {
                have: vec![],
                linked: vec![amy_id.to_string()],
                more: false,
                ack: false,
            })
            .unwrap();
        assert!(sync.plan("kbob000000000000000000000", &linked).is_empty());
        let mut has = TheirVector::default();
        has.add(SyncVector {
            have: vec![Have {
                author: amy_id.to_string(),
                life: "cc".into(),
                last: 6,
            }],
            linked: vec![],
            more: false,
            ack: false,
        })
        .unwrap();
        assert!(sync.plan("kbob000000000000000000000", &has).is_empty());
    }
}
