//! Our own lines, written down before any peer can have them, so that a
//! crash (`kill -9`, an out-of-memory kill) loses none that a peer holds.
//!
//! Each chat line of ours (with the cursor its event got here) and each seal
//! is appended to a buffer as it is said;
//! every link writer writes that buffer to the file before it puts bytes on
//! its socket (one `write` for many lines), so whatever reached a peer is in
//! the file (the page cache survives the process). On the next start the
//! last life's journal is read back: events the store did not get go in at
//! the cursors they had ([`restore_events`], before the history loads, so a
//! client that saw them live does not see them again); the runs it sealed
//! and the lines it sent unsealed are sealed now, with the same key and
//! life, and stored ([`recover`]); catch-up then brings them to every peer.
//! The next life's sequence numbers go on past everything it sent.
//!
//! The file starts again, empty, at a seal once it has grown past
//! [`ROTATE_BYTES`] (everything in it being stored by then), and at a clean
//! stop. It is not the history (that is the store); it is how the history
//! survives the moments before the store has it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shared::authorship::{
    Hash, MAX_RUN_BYTES, MAX_RUN_LINES, RelayedLine, Seal, chain, chain_start, leaf,
};
use shared::event::{Dm, Event, EventBody};
use shared::keys::{hex, unhex};
use shared::limits::ROOM;
use shared::rooms::{Scope, stream_life};
use shared::wire::{MessageType, PeerMessage, split_action};
use tracing::{info, warn};

use crate::history::History;
use crate::identity::Identity;
use crate::store::Row;
use crate::sync::Sync;

/// The journal, in the state folder beside the store.
pub(crate) const JOURNAL_FILE: &str = "outbox.journal";
/// First line: this tag, the life, the chain hash the lines go on from
/// (hex, `-` for the life's start) and the sequence number before them.
const HEADER: &str = "p2pchat-journal 1";
/// Notes kept in memory at most before they are written anyway.
const BUF_BYTES: usize = 16 * 1024;
/// Sequence numbers a crashed life may have used past its journal (joins
/// as it dialed, nick changes).
const CRASH_SEQ_JUMP: u64 = 1 << 20;
/// Past this, the journal starts again at the next seal.
pub(crate) const ROTATE_BYTES: u64 = 8 * 1024 * 1024;

/// The journal of this life.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Bytes in the file.
    len: u64,
    /// The newest cursor of a line noted since the last restart.
    newest: u64,
    /// A write failed (said once); the journal is off until it restarts.
    failed: bool,
}

/// What the last life's journal held.
#[derive(Debug)]
pub(crate) struct Last {
    life: String,
    prev: Option<Hash>,
    seq: u64,
    /// It ended with a clean stop.
    stopped: bool,
    /// Its chat and seal lines, in the order sent, each with the cursor
    /// its event got (0 for a seal).
    lines: Vec<(u64, PeerMessage)>,
}

impl Journal {
    /// Starts this life's journal (`life`) in `dir`, empty, after sequence
    /// `seq`. Read the last one first ([`read_last`]).
    pub(crate) fn open(dir: &Path, life: &str, seq: u64) -> io::Result<Self> {
        let path = dir.join(JOURNAL_FILE);
        let file = crate::store::open_private(&path)?;
        let mut j = Self {
            path,
            file,
            buf: Vec::new(),
            len: 0,
            newest: 0,
            failed: false,
        };
        j.restart(life, None, seq, false)?;
        Ok(j)
    }

    /// Notes one of our lines as sent: a chat line with the cursor its
    /// event got here, a seal with 0.
    pub(crate) fn append_line(&mut self, cursor: u64, line: &[u8]) {
        if !self.failed {
            // Into the buffer itself: no string per line.
            let _ = write!(self.buf, "{cursor} ");
            self.newest = self.newest.max(cursor);
        }
        self.append(line);
    }

    /// The newest cursor of a line noted since the journal started again:
    /// the store must hold it before the journal may start again.
    pub(crate) fn newest_cursor(&self) -> u64 {
        self.newest
    }

    /// Notes one of our lines (a seal, or the rest of a chat line), as sent.
    /// With no
    /// link writing (no peers), the notes are written once they fill
    /// [`BUF_BYTES`].
    pub(crate) fn append(&mut self, line: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(line);
            if self.buf.len() >= BUF_BYTES {
                self.flush();
            }
        }
    }

    /// Writes what was noted; every link calls this before its socket.
    pub(crate) fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.file.write_all(&self.buf) {
            Ok(()) => self.len += self.buf.len() as u64,
            Err(e) => {
                warn!(path = %self.path.display(), "cannot write the journal of our lines ({e}); a crash now may lose the last of them");
                self.failed = true;
            }
        }
        self.buf.clear();
    }

    /// Bytes in the file.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Starts the file again, empty: the lines of `life` go on from the
    /// chain hash `prev` (its start when `None`) after sequence `seq`;
    /// `stopped` after a clean stop. Everything noted before must be
    /// stored.
    pub(crate) fn restart(
        &mut self,
        life: &str,
        prev: Option<&Hash>,
        seq: u64,
        stopped: bool,
    ) -> io::Result<()> {
        self.buf.clear();
        self.newest = 0;
        let prev = prev.map_or_else(|| "-".to_owned(), |h| hex(h));
        let end = if stopped { " stopped" } else { "" };
        let header = format!("{HEADER} {life} {prev} {seq}{end}\n");
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(header.as_bytes())?;
        self.len = header.len() as u64;
        self.failed = false;
        Ok(())
    }
}

/// What the last life left in `dir`, if anything.
pub(crate) fn read_last(dir: &Path) -> Option<Last> {
    read(File::open(dir.join(JOURNAL_FILE)).ok()?)
}

/// Parses a journal; `None` when it holds nothing to go on from.
fn read(f: File) -> Option<Last> {
    let mut lines = BufReader::new(f).split(b'\n');
    let header = String::from_utf8(lines.next()?.ok()?).ok()?;
    let mut parts = header.strip_prefix(HEADER)?.split_whitespace();
    let life = parts.next()?.to_owned();
    let prev = match parts.next()? {
        "-" => None,
        h => Some(unhex::<32>(h)?),
    };
    let seq = parts.next()?.parse().ok()?;
    let stopped = parts.next() == Some("stopped");
    if !shared::sync::valid_life(&life) {
        return None;
    }
    // A line cut by the crash (or anything else unreadable) ends it.
    let lines = lines
        .map_while(Result::ok)
        .map_while(|l| {
            let space = l.iter().position(|&b| b == b' ');
            let (cursor, json) = match space {
                Some(i) => (
                    std::str::from_utf8(&l[..i]).ok()?.parse().ok()?,
                    &l[i + 1..],
                ),
                None => (0, &l[..]),
            };
            Some((cursor, PeerMessage::decode(json).ok()?))
        })
        .filter(|(_, m)| matches!(m.kind, MessageType::Chat | MessageType::Seal))
        .collect();
    Some(Last {
        life,
        prev,
        seq,
        stopped,
        lines,
    })
}

impl Last {
    /// A sequence number the last life did not get past: after a crash,
    /// well past what the journal shows, as joins and nick changes (not
    /// journaled) take sequence numbers too.
    pub(crate) fn last_seq(&self) -> u64 {
        let shown = self
            .lines
            .iter()
            .map(|(_, m)| m.seal.as_ref().map_or(m.sequence, |s| s.last))
            .fold(self.seq, u64::max);
        if self.stopped {
            shown
        } else {
            shown.saturating_add(CRASH_SEQ_JUMP)
        }
    }
}

/// Opens one of our direct messages to a peer (its id, the sealed
/// content): the text and the peer's nick.
pub(crate) type OpenDm<'a> =
    dyn Fn(&str, &str) -> Option<(String, String)> + std::marker::Sync + 'a;

/// Puts the events of our last life's lines that the store did not get
/// into it, at the cursors they had (so a client that saw them live does
/// not see them again, and one that did not finds them in order). Before
/// the history loads. Returns how many.
pub(crate) async fn restore_events(
    last: &Last,
    store: &crate::store::Store,
    me: &str,
    fingerprint: &Arc<str>,
    open_dm: &OpenDm<'_>,
) -> usize {
    let ours: Vec<&(u64, PeerMessage)> = last
        .lines
        .iter()
        .filter(|(c, m)| *c > 0 && m.kind == MessageType::Chat && *m.sender_id == *me)
        .collect();
    // Retention may have trimmed the oldest since: those stay gone.
    let oldest = match store.oldest() {
        Ok(o) => o.unwrap_or(0),
        Err(e) => {
            warn!("could not read the store: {e}");
            return 0;
        }
    };
    let cursors: Vec<u64> = ours.iter().map(|(c, _)| *c).collect();
    let stored = match store.stored_among(&cursors) {
        Ok(s) => s,
        Err(e) => {
            warn!("could not read which of our last lines are stored: {e}");
            return 0;
        }
    };
    let mut rows = Vec::new();
    for (cursor, m) in ours {
        if stored.contains(cursor) || *cursor < oldest {
            continue;
        }
        let (content, room, to) = match Scope::from_wire(&m.room_id) {
            Some(Scope::Room(r)) => (m.content.clone(), Some(r), None),
            Some(Scope::Direct(to)) => match open_dm(&to, &m.content) {
                Some((text, nick)) => (text, None, Some(Dm { peer_id: to, nick })),
                None => {
                    warn!(
                        to,
                        "a direct message of ours the store lost cannot be opened (its recipient's key is not known); not put back"
                    );
                    continue;
                }
            },
            None => continue,
        };
        let (text, action) = split_action(&content);
        let ts = m.timestamp.unwrap_or_else(chrono::Utc::now);
        let event = Event {
            cursor: *cursor,
            ts,
            body: EventBody::Message {
                id: m.id.clone(),
                peer_id: me.to_owned(),
                nick: m.username.clone(),
                text: text.to_owned(),
                action,
                fingerprint: Some(fingerprint.clone()),
                trust: None,
                seq: Some(m.sequence),
                sent: m.timestamp,
                late: false,
                room,
                to,
            },
        };
        let Ok(json) = serde_json::to_string(&event) else {
            continue;
        };
        rows.push(Row {
            cursor: *cursor,
            ts_ms: ts.timestamp_millis(),
            json: json.into(),
            room: crate::history::filter_key(&event.body),
        });
    }
    let n = rows.len();
    if n > 0 {
        store.write(rows);
        store.flush().await;
        info!(
            restored = n,
            "the store lost some of our last lines in a crash; put back from the journal"
        );
    }
    n
}

/// Seals, stores and hands to catch-up what the last life sent: its runs,
/// and the lines it sent unsealed (sealed now, with our key, in its life),
/// each stream (room, direct conversation) on its own chain. Returns how
/// many lines were sealed now.
pub(crate) fn recover(
    last: &Last,
    identity: &Identity,
    me: &Arc<str>,
    sync: &Sync,
    history: &History,
) -> usize {
    let key = identity.public_key();
    let mut runs: Vec<(Seal, Vec<RelayedLine>)> = Vec::new();
    // Per room id: the chain head its sealed runs reached in the journal,
    // and its lines sent after them.
    let mut streams: HashMap<String, (Option<Hash>, Vec<PeerMessage>)> = HashMap::new();
    for (_, m) in &last.lines {
        match (&m.kind, &m.seal) {
            (MessageType::Seal, Some(seal)) => {
                let room_id = seal.room.as_deref().unwrap_or(ROOM);
                if seal.instance != stream_life(&last.life, room_id) {
                    continue;
                }
                let (head, pending) = streams.entry(room_id.to_owned()).or_default();
                let (run, rest): (Vec<PeerMessage>, Vec<PeerMessage>) = pending
                    .drain(..)
                    .partition(|l| l.sequence >= seal.first && l.sequence <= seal.last);
                *pending = rest
                    .into_iter()
                    .filter(|l| l.sequence > seal.last)
                    .collect();
                if let Some(end) = unhex::<32>(&seal.end) {
                    *head = Some(end);
                }
                runs.push((
                    seal.clone(),
                    run.iter().filter_map(RelayedLine::of).collect(),
                ));
            }
            (MessageType::Chat, _) if *m.sender_id == **me => {
                let room_id = if m.room_id.is_empty() {
                    ROOM
                } else {
                    &m.room_id
                };
                streams
                    .entry(room_id.to_owned())
                    .or_default()
                    .1
                    .push(m.clone());
            }
            _ => {}
        }
    }
    // What went out unsealed is sealed now, in runs as the outbox makes,
    // chained on from where the stream stood: its last seal here, else
    // the header (`#general`) or its stored runs, else its start.
    let mut late = 0;
    for (room_id, (head, pending)) in &streams {
        let life: Arc<str> = Arc::from(stream_life(&last.life, room_id));
        let room = (room_id != ROOM).then(|| room_id.clone());
        let mut head = head
            .or_else(|| if room.is_none() { last.prev } else { None })
            .or_else(|| sync.end_of(me, &life))
            .unwrap_or_else(|| chain_start(&key, &life));
        late += pending.len();
        for chunk in runs_of(pending) {
            let prev = head;
            for m in chunk {
                head = chain(&head, &leaf(m));
            }
            let (first, last_seq) = (chunk[0].sequence, chunk[chunk.len() - 1].sequence);
            let count = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            let signed = Seal::signed_bytes(me, &life, (first, last_seq, count), &prev, &head);
            let seal = Seal {
                instance: life.to_string(),
                first,
                last: last_seq,
                count,
                prev: hex(&prev),
                end: hex(&head),
                sig: hex(&identity.sign(&signed)),
                room: room.clone(),
            };
            runs.push((seal, chunk.iter().filter_map(RelayedLine::of).collect()));
        }
    }
    for (seal, lines) in runs {
        let life: Arc<str> = Arc::from(seal.instance.as_str());
        if let Some(run) = sync.sealed(me, &life, &key, seal, lines) {
            history.stage_run(run);
        }
    }
    if late > 0 {
        info!(life = %last.life, sealed_now = late, "the last life stopped with lines sent unsealed; sealed now");
    }
    late
}

/// `lines` cut into runs as the outbox cuts them: at most
/// [`MAX_RUN_LINES`] lines and about [`MAX_RUN_BYTES`] of text each.
fn runs_of(lines: &[PeerMessage]) -> Vec<&[PeerMessage]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, m) in lines.iter().enumerate() {
        bytes += m.content.len();
        if i + 1 - start >= MAX_RUN_LINES || bytes >= MAX_RUN_BYTES {
            out.push(&lines[start..=i]);
            start = i + 1;
            bytes = 0;
        }
    }
    if start < lines.len() {
        out.push(&lines[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(seq: u64, text: &str) -> PeerMessage {
        PeerMessage::new(
            MessageType::Chat,
            format!("{seq:016x}"),
            "kme000000000000000000000",
            "amy",
            text.to_owned(),
            chrono::Utc::now(),
            seq,
        )
    }

    #[test]
    fn a_journal_reads_back_up_to_a_line_cut_by_the_crash() {
        let dir = testkit::TempDir::new("journal-");
        assert!(read_last(dir.path()).is_none(), "nothing the first time");
        let mut j = Journal::open(dir.path(), "00aa", 0).unwrap();
        for seq in 1..=3 {
            j.append_line(seq + 10, &chat(seq, "hello").encode());
        }
        j.flush();
        // The crash cut the next line short.
        let cut = chat(4, "cut");
        j.append_line(14, &cut.encode()[..20]);
        j.flush();
        drop(j);
        let last = read_last(dir.path()).expect("the last life's journal");
        assert_eq!((last.life.as_str(), last.lines.len()), ("00aa", 3));
        assert_eq!(last.lines[2].0, 13, "with its cursor");
        assert!(
            last.last_seq() > 3,
            "no clean stop: well past what it shows"
        );
        let j = Journal::open(dir.path(), "00bb", 3).unwrap();
        // This life's journal starts empty.
        assert_eq!(
            j.len(),
            std::fs::metadata(dir.path().join(JOURNAL_FILE))
                .unwrap()
                .len()
        );
    }

    #[test]
    fn unsealed_lines_are_cut_into_runs_as_the_outbox_cuts_them() {
        let lines: Vec<PeerMessage> = (1..=300).map(|i| chat(i, "x")).collect();
        let runs = runs_of(&lines);
        assert_eq!(
            runs.iter().map(|r| r.len()).collect::<Vec<_>>(),
            vec![MAX_RUN_LINES, MAX_RUN_LINES, 300 - 2 * MAX_RUN_LINES]
        );
        let long: Vec<PeerMessage> = (1..=5).map(|i| chat(i, &"y".repeat(3000))).collect();
        assert_eq!(
            runs_of(&long).iter().map(|r| r.len()).collect::<Vec<_>>(),
            vec![3, 2]
        );
    }
}
