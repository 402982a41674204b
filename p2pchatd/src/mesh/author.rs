//! Our half of authorship ([`shared::authorship`]): each of our chat lines
//! moves our chain on, and each run of them is sealed with our key, so a
//! peer can later pass our lines on and a third can check them.
//!
//! The run lives with the sequence counter under the outbox lock, which
//! orders our lines: the chain follows the order every link sees.

use std::collections::HashMap;

use shared::authorship::{
    Hash, MAX_RUN_BYTES, MAX_RUN_LINES, RelayedLine, Seal, chain, chain_start, leaf,
};
use shared::keys::{KEY_LEN, hex};
use shared::limits::ROOM;
use shared::rooms::stream_life;
use shared::wire::PeerMessage;

use crate::identity::Identity;

/// What the outbox lock guards: our sequence numbers and our open runs,
/// one per stream (a room, or a direct conversation; docs/PROTOCOL-p2pchatd.md
/// §9). Sequence numbers are one count across streams; each stream chains
/// in its own life.
pub(crate) struct Outbox {
    /// The sequence number of our latest line.
    pub(crate) seq: u64,
    instance: String,
    key: [u8; KEY_LEN],
    /// By room id (wire form); `#general`'s is there from the start.
    streams: HashMap<String, Run>,
    /// The number the next run opened gets, across streams.
    next_number: u64,
}

#[derive(Debug)]
struct Run {
    /// The stream's life, and its room id when not `#general`.
    life: String,
    room: Option<String>,
    /// The chain before the run, and after its latest line.
    prev: Hash,
    head: Hash,
    first: u64,
    last: u64,
    count: u32,
    bytes: usize,
    /// Which run this is: a delayed seal for a run already sealed (full)
    /// must not seal the next one early.
    number: u64,
    /// Its lines, kept for catch-up once the run is sealed.
    lines: Vec<RelayedLine>,
}

/// What a chained line asks of the caller.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Run `n` is full: seal it now.
    SealNow(u64),
    /// The line opened run `n`: seal it after the delay.
    SealLater(u64),
    /// The run is open and a seal is already due.
    Nothing,
}

/// A sealed run of ours: the seal, its lines, and its room id when not
/// `#general`.
pub(crate) struct Sealed {
    pub(crate) seal: Seal,
    pub(crate) lines: Vec<RelayedLine>,
    pub(crate) room: Option<String>,
}

impl Outbox {
    pub(crate) fn new(identity: &Identity, instance: &str) -> Self {
        let mut out = Self {
            seq: 0,
            instance: instance.to_owned(),
            key: identity.public_key(),
            streams: HashMap::new(),
            next_number: 0,
        };
        out.stream(ROOM);
        out
    }

    fn stream(&mut self, room_id: &str) -> &mut Run {
        let (instance, key, number) = (&self.instance, &self.key, &mut self.next_number);
        self.streams.entry(room_id.to_owned()).or_insert_with(|| {
            let life = stream_life(instance, room_id);
            let start = chain_start(key, &life);
            *number += 1;
            Run {
                life,
                room: (room_id != ROOM).then(|| room_id.to_owned()),
                prev: start,
                head: start,
                first: 0,
                last: 0,
                count: 0,
                bytes: 0,
                number: *number - 1,
                lines: Vec::new(),
            }
        })
    }

    /// Lines are chained that no seal covers yet.
    pub(crate) fn is_open(&self) -> bool {
        self.streams.values().any(|r| r.count > 0)
    }

    /// The chain hash after our latest line in `#general`.
    pub(crate) fn head(&self) -> Hash {
        self.streams.get(ROOM).map_or([0; 32], |r| r.head)
    }

    /// Moves our chain of the line's room on by one of our chat lines.
    pub(crate) fn chain(&mut self, msg: PeerMessage) -> Next {
        let run = self.stream(&msg.room_id);
        if run.count == 0 {
            run.first = msg.sequence;
        }
        run.head = chain(&run.head, &leaf(&msg));
        run.last = msg.sequence;
        run.count += 1;
        run.bytes += msg.content.len();
        if let Some(line) = RelayedLine::from_message(msg) {
            run.lines.push(line);
        }
        if run.count as usize >= MAX_RUN_LINES || run.bytes >= MAX_RUN_BYTES {
            Next::SealNow(run.number)
        } else if run.count == 1 {
            Next::SealLater(run.number)
        } else {
            Next::Nothing
        }
    }

    /// The numbers of the runs open now.
    pub(crate) fn open_runs(&self) -> Vec<u64> {
        self.streams
            .values()
            .filter(|r| r.count > 0)
            .map(|r| r.number)
            .collect()
    }

    /// Seals run `number` if it is open, and opens the next in its stream;
    /// `None` when it is not open (sealed already).
    pub(crate) fn seal(&mut self, identity: &Identity, number: u64) -> Option<Sealed> {
        let next = self.next_number;
        let run = self
            .streams
            .values_mut()
            .find(|r| r.number == number && r.count > 0)?;
        let signed = Seal::signed_bytes(
            identity.peer_id(),
            &run.life,
            (run.first, run.last, run.count),
            &run.prev,
            &run.head,
        );
        let seal = Seal {
            instance: run.life.clone(),
            first: run.first,
            last: run.last,
            count: run.count,
            prev: hex(&run.prev),
            end: hex(&run.head),
            sig: hex(&identity.sign(&signed)),
            room: run.room.clone(),
        };
        run.prev = run.head;
        run.count = 0;
        run.bytes = 0;
        run.number = next;
        // The next run's lines grow as they come (one line, for a person
        // typing; a full run, for a flood).
        let grown = run.lines.len();
        let lines = std::mem::replace(&mut run.lines, Vec::with_capacity(grown));
        let room = run.room.clone();
        self.next_number += 1;
        Some(Sealed { seal, lines, room })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::authorship::Relay;
    use shared::wire::MessageType;

    fn line(identity: &Identity, seq: u64, text: &str) -> PeerMessage {
        PeerMessage::new(
            MessageType::Chat,
            format!("{seq:016x}"),
            identity.peer_id(),
            "amy",
            text.to_owned(),
            chrono::Utc::now(),
            seq,
        )
    }

    fn relay_of(me: &Identity, sealed: Sealed, sent: &[PeerMessage]) -> Relay {
        let lines: Vec<RelayedLine> = sent
            .iter()
            .filter(|m| {
                m.sequence >= sealed.seal.first
                    && m.sequence <= sealed.seal.last
                    && Some(m.room_id.as_str()) == sealed.room.as_deref().or(Some(ROOM))
            })
            .map(|m| RelayedLine::of(m).unwrap())
            .collect();
        assert_eq!(lines, sealed.lines, "the run's lines come with its seal");
        Relay {
            key: hex(&me.public_key()),
            seal: sealed.seal,
            lines,
            room: sealed.room,
        }
    }

    fn checks_out(relay: &Relay) -> Vec<PeerMessage> {
        let opened = relay.open().unwrap();
        assert!(crate::identity::verify(
            &opened.key,
            &opened.signed,
            &opened.sig
        ));
        opened.lines
    }

    /// Runs close when full or when asked, and each one relays and checks
    /// out against our key; the next run starts where the last ended.
    #[test]
    fn our_runs_are_sealed_and_check_out() {
        let me = Identity::from_secret(&[5; 32]);
        let mut out = Outbox::new(&me, "life");
        let mut sent = Vec::new();
        let mut seals = Vec::new();
        let mut opened = None;
        for seq in 1..=(MAX_RUN_LINES as u64 + 3) {
            let msg = line(&me, seq, "hello");
            sent.push(msg.clone());
            match out.chain(msg) {
                Next::SealNow(n) => seals.push(out.seal(&me, n).unwrap()),
                Next::SealLater(n) => opened = Some(n),
                Next::Nothing => {}
            }
        }
        assert_eq!(seals.len(), 1, "the first run filled up");
        let first_run = seals[0].seal.clone();
        // A late seal for the full run does nothing; the open one seals.
        assert_eq!(out.open_runs().len(), 1);
        let open = opened.unwrap();
        assert!(out.seal(&me, open - 1).is_none());
        let last = out.seal(&me, open).unwrap();
        assert_eq!(last.lines.len(), 3);
        assert_eq!(last.seal.prev, first_run.end, "runs chain on");
        seals.push(last);
        assert!(out.open_runs().is_empty(), "nothing open");
        let mut all = Vec::new();
        for sealed in seals {
            all.extend(checks_out(&relay_of(&me, sealed, &sent)));
        }
        assert_eq!(all, sent);
    }

    /// Lines of two rooms, interleaved, chain apart: each room's runs check
    /// out alone, in the room's own life, and name the room.
    #[test]
    fn each_room_is_a_chain_of_its_own() {
        let me = Identity::from_secret(&[6; 32]);
        let mut out = Outbox::new(&me, "life");
        let mut sent = Vec::new();
        for seq in 1..=10 {
            let mut msg = line(&me, seq, "hi");
            if seq % 3 == 0 {
                msg.room_id = "ops".into();
            }
            sent.push(msg.clone());
            out.chain(msg);
        }
        let mut runs = out.open_runs();
        runs.sort_unstable();
        assert_eq!(runs.len(), 2);
        let general = out.seal(&me, runs[0]).unwrap();
        let ops = out.seal(&me, runs[1]).unwrap();
        assert_eq!(general.seal.instance, "life");
        assert_eq!(ops.seal.instance, stream_life("life", "ops"));
        assert_eq!(ops.room.as_deref(), Some("ops"));
        let ops_lines = checks_out(&relay_of(&me, ops, &sent));
        assert_eq!(ops_lines.len(), 3);
        assert!(ops_lines.iter().all(|m| m.room_id == "ops"));
        assert_eq!(checks_out(&relay_of(&me, general, &sent)).len(), 7);
    }
}
