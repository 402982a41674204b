//! Our half of authorship ([`shared::authorship`]): each of our chat lines
//! moves our chain on, and each run of them is sealed with our key, so a
//! peer can later pass our lines on and a third can check them.
//!
//! The run lives with the sequence counter under the outbox lock, which
//! orders our lines: the chain follows the order every link sees.

use shared::authorship::{
    Hash, MAX_RUN_BYTES, MAX_RUN_LINES, RelayedLine, Seal, chain, chain_start, leaf,
};
use shared::keys::hex;
use shared::wire::PeerMessage;

use crate::identity::Identity;

/// What the outbox lock guards: our sequence numbers and our open run.
pub(crate) struct Outbox {
    /// The sequence number of our latest line.
    pub(crate) seq: u64,
    run: Run,
}

#[derive(Debug)]
struct Run {
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
    /// The run is full: seal it now.
    SealNow,
    /// The line opened run `n`: seal it after the delay.
    SealLater(u64),
    /// The run is open and a seal is already due.
    Nothing,
}

impl Outbox {
    pub(crate) fn new(identity: &Identity, instance: &str) -> Self {
        let start = chain_start(&identity.public_key(), instance);
        Self {
            seq: 0,
            run: Run {
                prev: start,
                head: start,
                first: 0,
                last: 0,
                count: 0,
                bytes: 0,
                number: 0,
                lines: Vec::new(),
            },
        }
    }

    /// Lines are chained that no seal covers yet.
    pub(crate) fn is_open(&self) -> bool {
        self.run.count > 0
    }

    /// The chain hash after our latest line.
    pub(crate) fn head(&self) -> Hash {
        self.run.head
    }

    /// Moves our chain on by one of our chat lines.
    pub(crate) fn chain(&mut self, msg: PeerMessage) -> Next {
        let run = &mut self.run;
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
            Next::SealNow
        } else if run.count == 1 {
            Next::SealLater(run.number)
        } else {
            Next::Nothing
        }
    }

    /// Seals the open run (only if it is run `number`, when given) and
    /// opens the next; `None` when there is nothing to seal. With the
    /// seal, the run's lines.
    pub(crate) fn seal(
        &mut self,
        identity: &Identity,
        instance: &str,
        number: Option<u64>,
    ) -> Option<(Seal, Vec<RelayedLine>)> {
        let run = &mut self.run;
        if run.count == 0 || number.is_some_and(|n| n != run.number) {
            return None;
        }
        let signed = Seal::signed_bytes(
            identity.peer_id(),
            instance,
            (run.first, run.last, run.count),
            &run.prev,
            &run.head,
        );
        let seal = Seal {
            instance: instance.to_owned(),
            first: run.first,
            last: run.last,
            count: run.count,
            prev: hex(&run.prev),
            end: hex(&run.head),
            sig: hex(&identity.sign(&signed)),
        };
        run.prev = run.head;
        run.count = 0;
        run.bytes = 0;
        run.number += 1;
        // The next run's lines grow as they come (one line, for a person
        // typing; a full run, for a flood).
        let grown = run.lines.len();
        Some((
            seal,
            std::mem::replace(&mut run.lines, Vec::with_capacity(grown)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::authorship::{Relay, RelayedLine};
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

    /// Runs close when full or when asked, and each one relays and checks
    /// out against our key; the next run starts where the last ended.
    #[test]
    fn our_runs_are_sealed_and_check_out() {
        let me = Identity::from_secret(&[5; 32]);
        let mut out = Outbox::new(&me, "life");
        let mut sent = Vec::new();
        let mut seals = Vec::new();
        for seq in 1..=(MAX_RUN_LINES as u64 + 3) {
            let msg = line(&me, seq, "hello");
            sent.push(msg.clone());
            let next = out.chain(msg);
            match next {
                Next::SealNow => seals.push(out.seal(&me, "life", None).unwrap().0),
                Next::SealLater(n) => assert_eq!(n, seals.len() as u64),
                Next::Nothing => {}
            }
        }
        assert_eq!(seals.len(), 1, "the first run filled up");
        // A late seal for the full run does nothing; the open one seals.
        assert!(out.seal(&me, "life", Some(0)).is_none());
        let (last, lines) = out.seal(&me, "life", Some(1)).unwrap();
        assert_eq!(lines.len(), 3, "the run's lines come with its seal");
        seals.push(last);
        assert!(out.seal(&me, "life", None).is_none(), "nothing open");
        assert_eq!(seals[1].prev, seals[0].end, "runs chain on");
        let mut at = 0;
        for seal in seals {
            let n = seal.count as usize;
            let relay = Relay {
                key: hex(&me.public_key()),
                seal,
                lines: sent[at..at + n]
                    .iter()
                    .map(|m| RelayedLine::of(m).unwrap())
                    .collect(),
            };
            let opened = relay.open().unwrap();
            assert!(crate::identity::verify(
                &opened.key,
                &opened.signed,
                &opened.sig
            ));
            assert_eq!(opened.lines, sent[at..at + n]);
            at += n;
        }
        assert_eq!(at, sent.len());
    }
}
