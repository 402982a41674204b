//! One TCP link to one peer, once the handshake ([`super::handshake`]) is
//! done: a reader and a writer running side by side in one task until
//! either ends.
//!
//! The writer drains the link's bounded inbox in batches (one syscall for
//! many lines), adds heartbeats, and drops the link when the peer stops
//! taking bytes or, for p2pchatd peers, stops sending them. The reader cuts
//! lines with a hard length limit and hands each message to the history or
//! the table; a malformed line is dropped, as the Go peer does, and only a
//! flood of them or an over-long line closes the link.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use shared::api::{LinkDirection, PeerKind, Trust};
use shared::authorship::{MAX_RUN_BYTES, MAX_RUN_LINES, Relay, RelayError, RelayedLine, Seal};
use shared::event::{Dm, EventBody};
use shared::keys::fingerprint_of;
use shared::limits::{MAX_PEER_LINE, MAX_TEXT_BYTES};
use shared::line::{LineReader, LineTooLong};
use shared::rooms::{GENERAL, MAX_JOINED, MAX_SEALED_BYTES, Scope, stream_life};
use shared::sync::SyncVector;
use shared::text::{sanitize_foreign_nick, sanitize_foreign_text};
use shared::wire::{ACTION_PREFIX, MessageType, PeerMessage, WireError, split_action};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::admission::UNPROVEN_GRACE;
use super::secure::{Opener, Sealer};
use super::table::{LinkId, NewLink, PeerIdentity, Refused};
use super::{LinkStats, Mesh};
use crate::sync::{SEND_BATCH, Send, Taken, TheirVector};

/// Lines queued for one link. When full, our sender waits (see
/// `Mesh::fan_out`); 1,024 lines is ~250 KiB, enough to ride out a busy
/// moment on a healthy link without letting a stuck one hoard memory.
const LINK_INBOX: usize = 1024;
/// Lines taken from the inbox for one write.
const WRITE_BATCH: usize = 256;
/// Bytes read from a busy link at once.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes read at once while a connection shakes hands (a join is ~300),
/// and by a link until it carries more.
const FIRST_CHUNK: usize = 1024;
/// A peer that sends this many malformed lines is broken or hostile.
const MAX_BAD_LINES: u32 = 100;
/// Live lines of a link's author held for their seal: two full runs.
const UNSEALED_LINES: usize = 2 * MAX_RUN_LINES;
const UNSEALED_BYTES: usize = 2 * (MAX_RUN_BYTES + MAX_SEALED_BYTES);
/// Relayed runs in a link's queue at once while catching its peer up.
const RELAYS_QUEUED: usize = 16;
/// How far ahead of our clock a topic's time may be.
const TOPIC_CLOCK_SLACK: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// `rooms` lines of a peer said as events in a window (more are taken
/// quietly), and `topic` lines taken in one.
const ROOMS_PER_WINDOW: u32 = 10;
const ROOMS_WINDOW: Duration = Duration::from_secs(10);
/// A link asks its peer again for what it lacks at most this often.
const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// Last flush of a closing link.
const FLUSH_WAIT: Duration = Duration::from_millis(300);
/// A Go peer that closes a fresh link this fast, having said nothing,
/// refuses our peer id until it restarts (PROTOCOL §3).
pub(super) const GO_REFUSAL_WINDOW: Duration = Duration::from_secs(2);

/// How a link ended, for the dialer's backoff. The default is a link that
/// never came up.
#[derive(Debug, Default)]
pub(crate) struct LinkOutcome {
    pub peer: Option<Arc<str>>,
    pub lasted: Duration,
    pub lines: u64,
    pub refused: Option<Refused>,
    /// A Go peer closed the link at once: it needs a restart.
    pub go_refusal: bool,
    /// A `--peer` did not answer our Noise handshake: dial it in plaintext.
    pub no_noise: bool,
}

/// Why a link ended; the text goes into the leave event.
#[derive(Debug)]
enum End {
    Eof,
    Io(io::Error),
    TooLong,
    Garbage,
    Stalled,
    Timeout,
    Unproven,
    Closed,
    Refused(Refused),
}

impl End {
    fn reason(&self) -> String {
        match self {
            Self::Eof => "connection closed".into(),
            Self::Io(e) => format!("connection error: {e}"),
            Self::TooLong => format!("sent a line over {MAX_PEER_LINE} bytes"),
            Self::Garbage => "sent too many malformed lines".into(),
            Self::Stalled => "stopped reading".into(),
            Self::Timeout => "ping timeout".into(),
            Self::Unproven => "never showed it is who it claims".into(),
            Self::Closed => "closed".into(),
            Self::Refused(r) => r.to_string(),
        }
    }
}

/// Heartbeat period and how long silence means death.
#[derive(Debug, Clone, Copy)]
pub(super) struct Liveness {
    pub(super) heartbeat: Duration,
    /// The heartbeat period in beats of the mesh's clock.
    pub(super) heartbeat_beats: u64,
    /// `None` toward Go peers, which never send heartbeats.
    pub(super) dead_after: Option<Duration>,
}

/// A line reader for a peer connection: lines up to [`MAX_PEER_LINE`],
/// read in small pieces until it carries more (a crowd of connections that
/// never do costs little memory).
pub(super) fn peer_lines() -> LineReader {
    LineReader::new(MAX_PEER_LINE, FIRST_CHUNK)
}

/// The next line from `r`; `Ok(None)` at end of stream.
pub(super) async fn read_line<R: AsyncRead + Unpin>(
    lines: &mut LineReader,
    r: &mut R,
) -> io::Result<Option<Result<BytesMut, LineTooLong>>> {
    loop {
        if let Some(line) = lines.next_line() {
            return Ok(Some(line));
        }
        if r.read_buf(lines.space()).await? == 0 {
            return Ok(None);
        }
    }
}

/// A connection whose handshake is done, ready to run as a link.
pub(super) struct LinkSetup {
    pub(super) stream: TcpStream,
    pub(super) remote: SocketAddr,
    pub(super) direction: LinkDirection,
    /// `None` for a `--peer` dial to a silent (Go) acceptor: its first line
    /// names it.
    pub(super) who: Option<PeerIdentity>,
    /// Holds what arrived after the handshake's own lines.
    pub(super) lines: LineReader,
    /// Lines the handshake read that belong to the chat.
    pub(super) early: Vec<PeerMessage>,
    pub(super) live: Liveness,
    pub(super) wire: Wire,
}

/// What carries a link's lines: the socket itself, or Noise frames.
pub(super) enum Wire {
    Plain,
    Noise(Opener, Sealer),
}

/// Where a link's reader gets plaintext.
enum Inbound {
    Plain,
    Noise(Opener),
}

impl Inbound {
    /// Reads until some plaintext is in `lines`; `Ok(0)` at end of stream.
    async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        lines: &mut LineReader,
    ) -> io::Result<usize> {
        match self {
            Self::Plain => r.read_buf(lines.space()).await,
            Self::Noise(opener) => opener.fill(r, lines).await,
        }
    }
}

/// How a link's writer puts plaintext on the wire.
enum Outbound {
    Plain,
    Noise { sealer: Sealer, sealed: Vec<u8> },
}

impl Outbound {
    /// The bytes to write for `plain`.
    fn wire<'a>(&'a mut self, plain: &'a [u8]) -> io::Result<&'a [u8]> {
        match self {
            Self::Plain => Ok(plain),
            Self::Noise { sealer, sealed } => {
                sealed.clear();
                sealer.seal(plain, sealed)?;
                Ok(sealed)
            }
        }
    }
}

/// Registers the link and runs its reader and writer until one ends.
pub(super) async fn run(mesh: &Mesh, setup: LinkSetup) -> LinkOutcome {
    let LinkSetup {
        mut stream,
        remote,
        direction,
        who,
        lines,
        early,
        live,
        wire,
    } = setup;
    let (inbound, outbound) = match wire {
        Wire::Plain => (Inbound::Plain, Outbound::Plain),
        Wire::Noise(opener, sealer) => (
            Inbound::Noise(opener),
            Outbound::Noise {
                sealer,
                sealed: Vec::new(),
            },
        ),
    };
    let (tx, rx) = mpsc::channel(LINK_INBOX);
    let own_tx = tx.clone();
    let close = mesh.cancel_token().child_token();
    let kind = who.as_ref().map(|w| w.kind);
    // A peer we dialed is the one we meant to reach; one with a key proved
    // it holds it.
    let keyed = who.as_ref().is_some_and(|w| w.key.is_some());
    let stats = Arc::new(LinkStats::new(direction == LinkDirection::Dialed || keyed));
    // How the peer is shown: never as a nick another key holds.
    let epoch = mesh.trust_epoch();
    let who = who.map(|mut w| {
        w.standing = Some(mesh.standing(&w.id, w.key.as_ref(), &w.nick));
        w
    });
    let mut outcome = LinkOutcome {
        peer: who.as_ref().map(|w| w.id.clone()),
        ..LinkOutcome::default()
    };
    let registered = mesh.table_op(|t, h| {
        t.register(
            NewLink {
                direction,
                remote,
                peer: who.clone(),
                tx,
                close: close.clone(),
                stats: stats.clone(),
                heartbeat: live.dead_after.map(|_| live.heartbeat),
            },
            std::time::Instant::now(),
            h,
        )
    });
    let id = match registered {
        Ok(id) => id,
        Err(refused) => {
            refused.log(remote);
            outcome.refused = Some(refused);
            return outcome;
        }
    };
    mesh.topology_changed();
    info!(link = %id, ?direction, ?kind, heartbeat_ms = shared::millis(live.heartbeat), "link up");
    let syncs = who
        .as_ref()
        .is_some_and(|w| w.sync && w.key.is_some() && w.life.is_some())
        && mesh.syncs();
    // Which rooms we are in (none, too), before our vector: the peer plans
    // what to send us by it, and announces only what changes after.
    if who.as_ref().is_some_and(|w| w.rooms) {
        let _ = own_tx.try_send(mesh.rooms_line());
    }
    if syncs {
        send_vector(mesh, &own_tx);
    }
    // A p2pchatd peer learns at once that we are away.
    if who.as_ref().is_some_and(|w| w.seals)
        && let Some(away) = mesh.away()
    {
        let _ = own_tx.try_send(mesh.away_line(Some(&away)));
    }
    // Our offers it has not answered: the first may have gone nowhere.
    if let Some(w) = who.as_ref().filter(|w| w.files)
        && let Some(key) = &w.key
    {
        for line in crate::transfer::offers_for(mesh, &w.id, key) {
            let _ = own_tx.try_send(line);
        }
    }
    let mut ctx = Reader {
        mesh,
        id,
        peer: who.as_ref().map(|w| w.id.clone()),
        key: who.as_ref().and_then(|w| w.key),
        fingerprint: who
            .as_ref()
            .and_then(|w| w.key.as_ref().map(|k| Arc::from(fingerprint_of(k)))),
        trust: who.as_ref().and_then(PeerIdentity::trust),
        epoch,
        said: who.as_ref().map(|w| w.nick.clone()).unwrap_or_default(),
        nick: who
            .as_ref()
            .map(|w| w.shown().to_owned())
            .unwrap_or_default(),
        stats: &stats,
        bad_lines: 0,
        life: who.as_ref().and_then(|w| w.life.clone()),
        syncs,
        tx: own_tx,
        their: None,
        asked: None,
        unsealed: VecDeque::new(),
        unsealed_bytes: 0,
        catching_up: Arc::new(AtomicBool::new(false)),
        pending: Arc::default(),
        rooms_lines: Window::default(),
        topic_lines: Window::default(),
    };
    let mut end = None;
    for msg in early {
        if let Err(e) = ctx.handle(msg) {
            end = Some(e);
            break;
        }
    }
    let end = match end {
        Some(e) => e,
        None => {
            let (r, w) = stream.split();
            tokio::select! {
                e = ctx.read_loop(r, lines, inbound, live) => e,
                e = write_loop(mesh, w, outbound, rx, &close, live, &stats, direction) => e,
            }
        }
    };
    let reason = end.reason();
    match &end {
        End::Closed => info!(link = %id, "link closed"),
        _ => info!(link = %id, reason, "link down"),
    }
    outcome.peer = ctx.peer.clone();
    outcome.lines = stats.lines();
    outcome.lasted = stats.age();
    outcome.refused = match end {
        End::Refused(r) => Some(r),
        _ => None,
    };
    outcome.go_refusal = kind != Some(PeerKind::P2pchatd)
        && outcome.lines == 0
        && outcome.lasted < GO_REFUSAL_WINDOW
        && matches!(end, End::Eof | End::Io(_));
    mesh.link_closed(id, &reason);
    outcome
}

/// The reading side of a link.
struct Reader<'a> {
    mesh: &'a Mesh,
    id: LinkId,
    /// `None` until a `--peer` link to a silent acceptor names its peer.
    peer: Option<Arc<str>>,
    /// The key the link proved (Noise), its fingerprint, and how far the
    /// peer is who its nick says.
    key: Option<[u8; 32]>,
    fingerprint: Option<Arc<str>>,
    trust: Option<Trust>,
    /// The `trust_epoch` that `nick` and `trust` are of.
    epoch: u64,
    /// The peer's nick as it last said it on this link...
    said: String,
    /// ... and as it is shown (`nick~tag` when another key holds it).
    nick: String,
    stats: &'a LinkStats,
    bad_lines: u32,
    /// The peer's life (Noise), what its live lines and seals are of.
    life: Option<Arc<str>>,
    /// Both sides take part in catch-up.
    syncs: bool,
    /// The link's own inbox, for what catch-up sends back.
    tx: mpsc::Sender<Bytes>,
    /// The peer's version vector, while its parts arrive.
    their: Option<TheirVector>,
    /// When we last asked the peer for what we lack, and how far the life
    /// reached then.
    asked: Option<(std::time::Instant, u64)>,
    /// The link's author's live lines not yet sealed (with their room id,
    /// when not `#general`), and their text bytes.
    unsealed: VecDeque<(Option<Box<str>>, RelayedLine)>,
    unsealed_bytes: usize,
    /// The peer's `rooms` and `topic` lines, counted per window.
    rooms_lines: Window,
    topic_lines: Window,
    /// A catch-up of the peer runs, and the vector it plans by next.
    catching_up: Arc<AtomicBool>,
    pending: Arc<std::sync::Mutex<Option<TheirVector>>>,
}

impl Reader<'_> {
    /// Reads lines until the link ends; on each beat, judges the peer by
    /// its silence (a p2pchatd peer sends a heartbeat every period).
    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        mut r: R,
        mut lines: LineReader,
        mut inbound: Inbound,
        live: Liveness,
    ) -> End {
        // Subscribers are woken once per batch of lines, on every way out.
        let history = self.mesh.history();
        let _publish = PublishOnDrop(history);
        let mut beats = self.mesh.beats();
        beats.borrow_and_update();
        let silent = |stats: &LinkStats| live.dead_after.is_some_and(|d| stats.silent_for() > d);
        loop {
            while let Some(line) = lines.next_line() {
                let Ok(line) = line else { return End::TooLong };
                match PeerMessage::decode(&line) {
                    Ok(msg) => {
                        if let Err(end) = self.handle(msg) {
                            return end;
                        }
                    }
                    Err(e) => {
                        if let Some(end) = self.malformed(&e) {
                            return end;
                        }
                    }
                }
            }
            // The batch is in; wake subscribers before waiting for more.
            history.publish();
            let read = tokio::select! {
                biased;
                r = inbound.fill(&mut r, &mut lines) => r,
                beat = beats.changed() => match beat {
                    Err(_) => return End::Closed,
                    Ok(()) if !silent(self.stats) => continue,
                    Ok(()) => {
                        // After a pause (SIGSTOP, a suspended laptop) the
                        // runtime may run the overdue beat before its I/O
                        // driver has seen what arrived meanwhile: give the
                        // driver a turn and look once more before the
                        // verdict.
                        tokio::task::yield_now().await;
                        tokio::select! {
                            biased;
                            r = inbound.fill(&mut r, &mut lines) => r,
                            () = std::future::ready(()) => return End::Timeout,
                        }
                    }
                },
            };
            match read {
                Ok(0) => return End::Eof,
                Ok(n) => {
                    lines.read(n, READ_CHUNK);
                    self.stats.received();
                }
                Err(e) => return End::Io(e),
            }
        }
    }

    fn malformed(&mut self, e: &WireError) -> Option<End> {
        self.bad_line(format_args!("dropped a malformed line: {e}"))
    }

    /// Counts a line dropped as bad, says why (loudly the first time);
    /// past [`MAX_BAD_LINES`] the link ends.
    fn bad_line(&mut self, why: std::fmt::Arguments<'_>) -> Option<End> {
        self.bad_lines += 1;
        if self.bad_lines == 1 {
            warn!(link = %self.id, "{why}");
        } else {
            debug!(link = %self.id, "{why}");
        }
        (self.bad_lines >= MAX_BAD_LINES).then_some(End::Garbage)
    }

    fn handle(&mut self, msg: PeerMessage) -> Result<(), End> {
        self.stats.line();
        let peer = match &self.peer {
            Some(p) => p.clone(),
            None => self.identify(&msg)?,
        };
        if *msg.sender_id != *peer {
            debug!(link = %self.id, sender = msg.sender_id, "dropped a line sent on behalf of another peer");
            return Ok(());
        }
        let epoch = self.mesh.trust_epoch();
        if epoch != self.epoch {
            // `trust` or `forget` ran: the table has how it is shown now.
            self.epoch = epoch;
            if let Some((nick, trust)) = self.mesh.table_op(|t, _| t.shown(&peer)) {
                self.nick = nick;
                self.trust = trust;
            }
        }
        if !msg.username.is_empty() {
            let said = sanitize_foreign_nick(&msg.username);
            if *said != *self.said {
                let standing = self.mesh.standing(&peer, self.key.as_ref(), &said);
                self.mesh
                    .table_op(|t, h| t.renamed(&peer, &said, &standing, h));
                self.said = said.into_owned();
                self.nick = standing.shown;
                self.trust = Some(standing.trust);
            }
        }
        match msg.kind {
            MessageType::Chat => {
                if !self.stats.proven() {
                    self.mesh.table_op(|t, h| t.talked(self.id, h));
                }
                let Some(scope) = self.scope_of(&msg.room_id) else {
                    return self.malformed_room(&msg.room_id);
                };
                if !self.for_us(&scope) {
                    return Ok(());
                }
                self.chat(
                    &peer,
                    &msg,
                    &scope,
                    self.key.as_ref(),
                    (&self.nick, self.fingerprint.as_ref(), self.trust),
                    false,
                );
                self.hold(msg);
            }
            MessageType::Rooms if self.key.is_some() => {
                if let Some(end) = self.rooms(msg.rooms) {
                    return Err(end);
                }
            }
            MessageType::Topic if self.key.is_some() => {
                return self.topic(&msg.room_id, msg.topic);
            }
            MessageType::FileOffer => {
                if let Some(key) = self.key {
                    let from = crate::transfer::From {
                        id: &peer,
                        key,
                        nick: &self.nick,
                        trust: self.trust,
                    };
                    if let Err(why) = crate::transfer::heard_offer(self.mesh, &from, msg.offer)
                        && let Some(end) = self.bad_line(format_args!("{why}"))
                    {
                        return Err(end);
                    }
                }
            }
            MessageType::FileAnswer if self.key.is_some() => {
                crate::transfer::heard_answer(self.mesh, &peer, msg.answer);
            }
            MessageType::Seal => {
                if let (Some(key), Some(instance), Some(seal)) =
                    (self.key, self.life.clone(), msg.seal)
                {
                    let room_id = seal.room.as_deref().unwrap_or(shared::limits::ROOM);
                    // `#general`'s seals name no room (one spelling).
                    let scope = match (Scope::from_wire(room_id), seal.room.as_deref()) {
                        (Some(s), Some(_)) if s.is_general() => None,
                        (s, _) => s,
                    };
                    let Some(scope) = scope else {
                        return self.malformed_room(room_id);
                    };
                    if !self.for_us(&scope) {
                        return Ok(());
                    }
                    let life: Arc<str> = Arc::from(stream_life(&instance, room_id));
                    let last = seal.last;
                    let lines = self.unsealed_of(&seal);
                    let sync = self.mesh.sync();
                    if let Some(run) = sync.sealed(&peer, &life, &key, seal, lines) {
                        if let Some(reach) = &run.reach {
                            self.receipt(reach);
                        }
                        self.mesh.store_run(run);
                    }
                    // Lines of this life are missing (said before the link
                    // was up, or lost): ask the author for them now.
                    let reach = sync.reach(&peer, &life);
                    if self.syncs && reach < last {
                        self.ask_again(reach);
                    }
                }
            }
            MessageType::Sync if self.syncs => {
                if let Some(end) = self.vector_part(&peer, msg.sync) {
                    return Err(end);
                }
            }
            MessageType::Leave => self.mesh.table_op(|t, h| t.quit(self.id, h)),
            MessageType::Away if self.key.is_some() => {
                let away = shared::api::clip_away(&sanitize_foreign_text(&msg.content));
                self.mesh.table_op(|t, _| t.set_away(self.id, away));
            }
            MessageType::Relay if self.key.is_some() => {
                if let Some(end) = self.relayed(msg) {
                    return Err(end);
                }
            }
            // Joins only matter for the nick (above); link state makes the
            // join event. Heartbeats only prove life. Relays from a peer
            // without a key are not taken, nor vectors from one that does
            // not take part in catch-up.
            MessageType::Join
            | MessageType::Heartbeat
            | MessageType::Relay
            | MessageType::Sync
            | MessageType::Away
            | MessageType::Rooms
            | MessageType::Topic
            | MessageType::FileAnswer
            | MessageType::Unknown => {}
        }
        Ok(())
    }

    /// A sealed run of another author's lines, passed on by this peer: its
    /// lines are taken as the author's only if the chain and the author's
    /// signature check out; otherwise the whole run is dropped, logged and
    /// counted against the link like a malformed line.
    fn relayed(&mut self, msg: PeerMessage) -> Option<End> {
        let room_id = msg
            .relay
            .as_deref()
            .and_then(|r| r.room.as_deref())
            .unwrap_or(shared::limits::ROOM);
        let Some(scope) = Scope::from_wire(room_id) else {
            return self.malformed_room(room_id).err();
        };
        // A room we are not in is not ours to keep (dropped before its
        // signature costs anything); a direct message to another peer is
        // kept (sealed: we cannot read it) for its recipient, not shown.
        let shown_here = match &scope {
            Scope::Room(r) if !self.mesh.in_room(r) => {
                debug!(link = %self.id, room = r, "dropped a relayed run of a room we are not in");
                return None;
            }
            Scope::Room(_) => true,
            Scope::Direct(to) => **to == **self.mesh.peer_id(),
        };
        let checked = msg
            .relay
            .as_deref()
            .ok_or(RelayError::Malformed)
            .and_then(crate::sync::checked);
        let opened = match checked {
            Ok(o) => o,
            Err(e) => {
                let author = msg.relay.as_deref().map_or("?", |r| r.key.as_str());
                return self.bad_line(format_args!("dropped a relayed run: {e} (author {author})"));
            }
        };
        if *opened.author == **self.mesh.peer_id() {
            return None;
        }
        let author: Arc<str> = Arc::from(opened.author.as_str());
        // A run we hold already (the author's own link or another peer
        // brought it) shows nothing twice.
        let relay = *msg.relay?;
        let run = match self.mesh.sync().relayed(&author, &opened.key, relay) {
            Taken::New(run) => Some(*run),
            Taken::Held => return None,
            Taken::Untracked => None,
        };
        let fingerprint: Arc<str> = Arc::from(fingerprint_of(&opened.key));
        let mut shown: Option<(String, crate::trust::Standing)> = None;
        for line in opened.lines.iter().filter(|_| shown_here) {
            let said = sanitize_foreign_nick(&line.username);
            let standing = match &shown {
                Some((s, standing)) if *s == *said => standing.clone(),
                _ => {
                    let st = self.mesh.standing(&author, Some(&opened.key), &said);
                    shown = Some((said.into_owned(), st.clone()));
                    st
                }
            };
            self.chat(
                &author,
                line,
                &scope,
                Some(&opened.key),
                (&standing.shown, Some(&fingerprint), Some(standing.trust)),
                true,
            );
        }
        if let Some(run) = run {
            if let Some(reach) = &run.reach
                && self.peer.as_deref() == Some(&*author)
            {
                self.receipt(reach);
            }
            self.mesh.store_run(run);
        }
        debug!(link = %self.id, author = %author, lines = opened.lines.len(), "took a relayed run");
        None
    }

    /// Holds a live chat line of the link's author until its run's seal
    /// (only with a store to keep runs in; lines too long for a run are
    /// not held, so their run is not kept).
    fn hold(&mut self, msg: PeerMessage) {
        let max = if msg.room_id.starts_with('@') {
            MAX_SEALED_BYTES
        } else {
            MAX_TEXT_BYTES + ACTION_PREFIX.len()
        };
        if self.key.is_none()
            || self.life.is_none()
            || !self.mesh.syncs()
            || msg.content.len() > max
        {
            return;
        }
        let room = (!msg.room_id.is_empty() && msg.room_id != shared::limits::ROOM)
            .then(|| Box::from(msg.room_id.as_str()));
        let Some(line) = RelayedLine::from_message(msg) else {
            return;
        };
        while self.unsealed.len() >= UNSEALED_LINES
            || self.unsealed_bytes + line.content.len() > UNSEALED_BYTES
        {
            let Some((_, old)) = self.unsealed.pop_front() else {
                break;
            };
            self.unsealed_bytes -= old.content.len();
        }
        self.unsealed_bytes += line.content.len();
        self.unsealed.push_back((room, line));
    }

    /// The held lines `seal` covers, taken out (and older ones of its room
    /// dropped). Lines of other rooms stay for their own seals.
    fn unsealed_of(&mut self, seal: &Seal) -> Vec<RelayedLine> {
        let room = seal.room.as_deref();
        let takes =
            |r: &Option<Box<str>>, l: &RelayedLine| r.as_deref() == room && l.sequence <= seal.last;
        let mut out = Vec::with_capacity(
            usize::try_from(seal.count)
                .unwrap_or(0)
                .min(self.unsealed.len()),
        );
        // One room at a time (the usual case): the run is at the front.
        while self.unsealed.front().is_some_and(|(r, l)| takes(r, l)) {
            let Some((_, l)) = self.unsealed.pop_front() else {
                break;
            };
            self.unsealed_bytes -= l.content.len();
            if l.sequence >= seal.first {
                out.push(l);
            }
        }
        // Lines of rooms said in between: sort the run's out.
        if self.unsealed.iter().any(|(r, l)| takes(r, l)) {
            for (r, l) in std::mem::take(&mut self.unsealed) {
                if takes(&r, &l) {
                    self.unsealed_bytes -= l.content.len();
                    if l.sequence >= seal.first {
                        out.push(l);
                    }
                } else {
                    self.unsealed.push_back((r, l));
                }
            }
        }
        out
    }

    /// Where a line of this link's peer was said: always `#general` from
    /// a peer without a key (a Go peer knows no other room); `None` for a
    /// `room_id` that names neither a room nor a key.
    fn scope_of(&self, room_id: &str) -> Option<Scope> {
        if self.key.is_none() {
            return Some(Scope::general());
        }
        Scope::from_wire(room_id)
    }

    /// Whether a line of `scope` is for us: a room we are in, or a direct
    /// message to us. Anything else is dropped, and said.
    fn for_us(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Room(r) if r == GENERAL => true,
            Scope::Room(r) => {
                let ours = self.mesh.in_room(r);
                if !ours {
                    debug!(link = %self.id, room = r, "dropped a line of a room we are not in");
                }
                ours
            }
            Scope::Direct(to) => {
                let ours = **to == **self.mesh.peer_id();
                if !ours {
                    debug!(link = %self.id, to, "dropped a direct message addressed to someone else");
                }
                ours
            }
        }
    }

    /// A room's topic, as a member tells it: taken if newer than ours, in a
    /// room we are in; over its bounds it counts as a malformed line.
    fn topic(
        &mut self,
        room_id: &str,
        topic: Option<Box<shared::rooms::Topic>>,
    ) -> Result<(), End> {
        let Some(Scope::Room(room)) = Scope::from_wire(room_id) else {
            return self.malformed_room(room_id);
        };
        let topic = topic.filter(|t| {
            t.text.chars().count() <= shared::rooms::MAX_TOPIC_CHARS
                && shared::text::validate_peer_id(&t.by).is_ok()
                && t.nick.chars().count() <= shared::limits::MAX_NICK_CHARS * 4
        });
        // A topic from the future would win for good: a clock may be off
        // by minutes, not more.
        let soon = chrono::Utc::now() + TOPIC_CLOCK_SLACK;
        let topic = topic.filter(|t| t.at <= soon);
        // A room's topic changes as people change it, not many times a second.
        let n = self.topic_lines.hit();
        let topic = topic.filter(|_| n <= ROOMS_PER_WINDOW);
        let Some(mut topic) = topic else {
            let why = "dropped a topic over its bounds, from the future, or in a flood";
            return self.bad_line(format_args!("{why}")).map_or(Ok(()), Err);
        };
        if !self.mesh.in_room(&room) {
            debug!(link = %self.id, room, "dropped the topic of a room we are not in");
            return Ok(());
        }
        topic.text = sanitize_foreign_text(&topic.text).into_owned();
        // Shown as its setter's key is (`nick~tag` when another holds it).
        topic.nick = self
            .mesh
            .announced_as(&topic.by, &sanitize_foreign_nick(&topic.nick));
        self.mesh.heard_topic(&room, *topic);
        Ok(())
    }

    /// A line whose `room_id` is neither a room nor a key: dropped and
    /// counted like a malformed line.
    fn malformed_room(&mut self, room_id: &str) -> Result<(), End> {
        self.bad_line(format_args!("dropped a line for no room ({room_id:?})"))
            .map_or(Ok(()), Err)
    }

    /// The peer says which rooms it is in: at most [`MAX_JOINED`], each a
    /// room's one spelling; a list that breaks that is dropped and counted
    /// like a malformed line.
    fn rooms(&mut self, rooms: Option<Vec<String>>) -> Option<End> {
        let set: Option<std::collections::BTreeSet<String>> =
            rooms.filter(|r| r.len() <= MAX_JOINED).and_then(|r| {
                r.iter()
                    .map(|w| match Scope::from_wire(w) {
                        Some(Scope::Room(name)) if name != GENERAL => Some(name),
                        _ => None,
                    })
                    .collect()
            });
        // A peer changes rooms as a person does, not many times a second:
        // past that, what it is in still counts (room lines and catch-up
        // go by it), but its changes are not said as events.
        let n = self.rooms_lines.hit();
        let said = n <= ROOMS_PER_WINDOW;
        // Far past it, a peer is flooding, not changing rooms: its list
        // still counts, and so does the line, as garbage.
        if n > 10 * ROOMS_PER_WINDOW
            && let Some(end) = self.bad_line(format_args!("a flood of rooms lines"))
        {
            return Some(end);
        }
        match set {
            Some(set) => {
                let ours = self.mesh.joined();
                let (added, first) = self
                    .mesh
                    .table_op(|t, h| t.set_rooms(self.id, set, &ours, said, h));
                // The topics of the rooms we now share, so both hold the
                // newest (#general's on the first word).
                let shared: Vec<&str> = added
                    .iter()
                    .map(String::as_str)
                    .filter(|r| ours.contains(*r))
                    .chain(first.then_some(GENERAL))
                    .collect();
                for line in self.mesh.topic_lines(&shared) {
                    let _ = self.tx.try_send(line);
                }
                None
            }
            None => self.bad_line(format_args!(
                "dropped a rooms line over its limits or with a bad name"
            )),
        }
    }

    /// Tells the peer, the author of `reach`'s life, that we hold its
    /// lines that far (its `say {wait}` counts on it). A full inbox skips
    /// one: the next receipt says as much and more.
    fn receipt(&self, reach: &crate::store::LifeRow) {
        if !self.syncs {
            return;
        }
        let mut msg = self.mesh.own_line(MessageType::Sync);
        msg.sync = Some(Box::new(SyncVector::receipt(
            &reach.author,
            &reach.life,
            reach.last,
        )));
        let _ = self.tx.try_send(Bytes::from(msg.encode()));
    }

    /// Sends our version vector again, so the peer sends what we lack; at
    /// most once per [`RESYNC_EVERY`] on a link.
    /// Not again while the reach stands where it stood when we last asked
    /// (a run that cannot come would make us ask forever).
    fn ask_again(&mut self, reach: u64) {
        if self
            .asked
            .is_some_and(|(t, at)| at == reach || t.elapsed() < RESYNC_EVERY)
        {
            return;
        }
        self.asked = Some((std::time::Instant::now(), reach));
        debug!(link = %self.id, "lines are missing; asking for them");
        send_vector(self.mesh, &self.tx);
    }

    /// A part of the peer's version vector; once whole, what it lacks is
    /// sent back on this link. A part over the limits counts as a
    /// malformed line.
    fn vector_part(&mut self, peer: &Arc<str>, part: Option<Box<SyncVector>>) -> Option<End> {
        if let Some(part) = part.as_deref()
            && part.ack
        {
            // A receipt for our own lines: how far the peer holds them.
            match part.have.as_slice() {
                [h] if h.author == **self.mesh.peer_id() => {
                    self.mesh.receipt(peer, &h.life, h.last);
                }
                _ => debug!(link = %self.id, "dropped a receipt that is not for our lines"),
            }
            return None;
        }
        let their = self.their.get_or_insert_with(TheirVector::default);
        let added = part
            .ok_or("a sync line without its vector")
            .and_then(|part| {
                let more = part.more;
                their.add(*part).map(|()| more)
            });
        match added {
            Ok(true) => None,
            Ok(false) => {
                let their = self.their.take().unwrap_or_default();
                // One catch-up at a time per link: a vector that comes
                // while one runs is planned once it ends (a room joined
                // meanwhile asks for its history so).
                *lock(&self.pending) = Some(their);
                if self.catching_up.swap(true, Ordering::AcqRel) {
                    debug!(link = %self.id, "a version vector while catching the peer up; next");
                    return None;
                }
                self.mesh.spawn(catch_up(
                    self.mesh.clone(),
                    self.tx.clone(),
                    self.id,
                    peer.clone(),
                    self.pending.clone(),
                    CatchingUp {
                        flag: self.catching_up.clone(),
                        armed: true,
                    },
                ));
                None
            }
            Err(e) => {
                self.their = None;
                self.bad_line(format_args!("dropped a version vector: {e}"))
            }
        }
    }

    fn identify(&mut self, msg: &PeerMessage) -> Result<Arc<str>, End> {
        if shared::keys::is_key_id(&msg.sender_id) && self.mesh.noise_links() {
            // Peers with keys link over Noise, always: no downgrade.
            return Err(End::Refused(Refused::Taken));
        }
        let said = sanitize_foreign_nick(&msg.username).into_owned();
        let standing = self.mesh.standing(&msg.sender_id, None, &said);
        let who = PeerIdentity {
            id: Arc::from(msg.sender_id.as_str()),
            nick: said,
            kind: PeerKind::Go,
            key: None,
            seals: false,
            life: None,
            sync: false,
            rooms: false,
            files: false,
            standing: Some(standing),
        };
        let now = std::time::Instant::now();
        self.mesh
            .table_op(|t, h| t.attach(self.id, who.clone(), now, h))
            .map_err(End::Refused)?;
        self.mesh.topology_changed();
        info!(link = %self.id, peer = %who.id, "peer identified by its first line");
        self.peer = Some(who.id.clone());
        self.nick = who.shown().to_owned();
        self.trust = who.trust();
        self.said = who.nick;
        Ok(who.id)
    }

    /// One chat line of `author` (key `key`, if it has one) in `scope`,
    /// shown as `nick`; `late` when it came through catch-up. A direct
    /// message (to us: the caller checked) is opened first; one that does
    /// not open is dropped.
    fn chat(
        &self,
        author: &Arc<str>,
        msg: &PeerMessage,
        scope: &Scope,
        key: Option<&[u8; 32]>,
        (nick, fingerprint, trust): (&str, Option<&Arc<str>>, Option<Trust>),
        late: bool,
    ) {
        // The event's room and recipient are built only for a line not seen
        // before (in the closure below).
        let (content, room, to) = match scope {
            Scope::Room(r) => (sanitize_foreign_text(&msg.content), Some(r), None),
            Scope::Direct(to) => {
                let opened = key.and_then(|k| {
                    crate::direct::open(self.mesh.identity(), k, author, to, &msg.content)
                });
                let Some(text) = opened else {
                    debug!(link = %self.id, id = msg.id, "dropped a direct message that does not open");
                    return;
                };
                (
                    std::borrow::Cow::Owned(sanitize_foreign_text(&text).into_owned()),
                    None,
                    Some(to),
                )
            }
        };
        let (text, action) = split_action(&content);
        if text.is_empty() {
            return;
        }
        let added = self
            .mesh
            .history()
            .append_message_unpublished(author, &msg.id, || EventBody::Message {
                id: msg.id.clone(),
                peer_id: author.to_string(),
                nick: nick.to_owned(),
                text: text.to_owned(),
                action,
                fingerprint: fingerprint.cloned(),
                trust,
                // Go peers send 0: no sequence.
                seq: (msg.sequence > 0).then_some(msg.sequence),
                sent: msg.timestamp,
                late,
                room: room.cloned(),
                to: to.map(|to| Dm {
                    peer_id: to.clone(),
                    nick: self.mesh.nick().to_string(),
                }),
            });
        if added.is_none() {
            debug!(link = %self.id, id = msg.id, "dropped a duplicate");
        } else {
            self.mesh.said_by_peer(nick, room.map(String::as_str), text);
        }
    }
}

/// Sends our version vector, in parts, first thing on a new link.
fn send_vector(mesh: &Mesh, tx: &mpsc::Sender<Bytes>) {
    for line in vector_lines(mesh) {
        // A new link's inbox is empty: far more room than a vector takes.
        if tx.try_send(line).is_err() {
            warn!("could not queue our version vector");
            return;
        }
    }
}

/// Our version vector as the lines that carry it.
pub(super) fn vector_lines(mesh: &Mesh) -> Vec<Bytes> {
    // Only peers that catch others up send their own lines themselves.
    let linked = mesh
        .table_op(|t, _| t.audience(super::table::Audience::All))
        .into_iter()
        .filter(|(_, _, syncs)| *syncs)
        .map(|(id, _, _)| id.to_string())
        .take(shared::sync::MAX_LINKED)
        .collect();
    SyncVector::parts(mesh.sync().have(), linked)
        .into_iter()
        .map(|part| {
            let mut msg = mesh.own_line(MessageType::Sync);
            msg.sync = Some(Box::new(part));
            Bytes::from(msg.encode())
        })
        .collect()
}

/// Lines of one kind counted over a [`ROOMS_WINDOW`].
#[derive(Debug, Default)]
struct Window {
    since: Option<std::time::Instant>,
    n: u32,
}

impl Window {
    /// Counts one line; how many the window holds now.
    fn hit(&mut self) -> u32 {
        let now = std::time::Instant::now();
        if self
            .since
            .is_none_or(|s| now.duration_since(s) > ROOMS_WINDOW)
        {
            (self.since, self.n) = (Some(now), 0);
        }
        self.n += 1;
        self.n
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Catches the link's peer up: plans what it lacks by each vector it sent
/// (the latest, when several came meanwhile) and sends it, until none is
/// pending; then the next vector starts a new catch-up.
async fn catch_up(
    mesh: Mesh,
    tx: mpsc::Sender<Bytes>,
    link: LinkId,
    peer: Arc<str>,
    pending: Arc<std::sync::Mutex<Option<TheirVector>>>,
    mut running: CatchingUp,
) {
    loop {
        loop {
            // Taken out first: no lock is held across the sending.
            let next = lock(&pending).take();
            let Some(their) = next else { break };
            let rooms = mesh.table_op(|t, _| t.link_rooms(link));
            let plan = mesh.sync().plan(&peer, &their, rooms.as_deref());
            if !send_missing(&mesh, &tx, link, plan).await {
                return;
            }
        }
        // Done, unless a vector came after the last look: then this task
        // goes on, or the reader that saw it done starts another.
        running.flag.store(false, Ordering::Release);
        if lock(&pending).is_none() || running.flag.swap(true, Ordering::AcqRel) {
            running.armed = false;
            return;
        }
    }
}

/// Sends a peer the runs it lacks, read from the store a batch at a time,
/// as relayed runs on its link (waiting while the link is busy); false
/// when the link is gone.
async fn send_missing(
    mesh: &Mesh,
    tx: &mpsc::Sender<Bytes>,
    link: LinkId,
    plan: Vec<Send>,
) -> bool {
    let Some(store) = mesh.history().store_handle() else {
        return false;
    };
    // A few runs in the link's queue at a time: chat lines are not held up
    // behind a long catch-up, nor memory taken by it. Each queued run holds
    // a permit until the link's writer is done with it (or drops it with
    // the link).
    let slots = Arc::new(tokio::sync::Semaphore::new(RELAYS_QUEUED));
    // Runs sealed just now are read back too.
    mesh.history().flush().await;
    let mut sent = 0usize;
    for Send {
        author,
        life,
        mut after,
    } in plan
    {
        loop {
            let reader = store.clone();
            let (a, l) = (author.clone(), life.clone());
            let read =
                tokio::task::spawn_blocking(move || reader.runs_after(&a, &l, after, SEND_BATCH))
                    .await;
            let runs = match read {
                Ok(Ok(runs)) => runs,
                Ok(Err(e)) => {
                    warn!(%link, "could not read runs to catch a peer up: {e}");
                    return true;
                }
                Err(e) => {
                    warn!(%link, "reading runs to catch a peer up failed: {e}");
                    return true;
                }
            };
            let Some(&(last, _)) = runs.last() else { break };
            for (_, json) in runs {
                // Kept as it came from its author: it goes on only if it
                // checks out, so a receiver never counts it against us.
                let Ok(relay) = serde_json::from_str::<Relay>(&json) else {
                    continue;
                };
                if let Err(e) = crate::sync::checked(&relay) {
                    debug!(%link, author = %author, "not relaying a run: {e}");
                    continue;
                }
                let mut msg = mesh.own_line(MessageType::Relay);
                msg.relay = Some(Box::new(relay));
                let line = msg.encode();
                if line.len() > MAX_PEER_LINE {
                    continue;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return false;
                };
                let queued = Bytes::from_owner(Queued { line, _slot: slot });
                if tx.send(queued).await.is_err() {
                    return false;
                }
                sent += 1;
            }
            after = last;
        }
    }
    debug!(%link, runs = sent, "caught a peer up");
    true
}

/// A relayed run in a link's queue, and the slot it takes until dropped.
struct Queued {
    line: Vec<u8>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Queued {
    fn as_ref(&self) -> &[u8] {
        &self.line
    }
}

/// A link's catch-up runs: marked done when its task ends, however it
/// ends (unless it handed the mark on).
struct CatchingUp {
    flag: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for CatchingUp {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(false, Ordering::Release);
        }
    }
}

/// Publishes the history when the reader stops, however it stops.
struct PublishOnDrop<'a>(&'a crate::history::History);

impl Drop for PublishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.publish();
    }
}

/// The writing side: inbox batches, and on each beat a heartbeat if the
/// link has been silent (and the end of a squatter that never proved
/// itself).
#[allow(clippy::too_many_arguments)]
async fn write_loop<W: AsyncWrite + Unpin>(
    mesh: &Mesh,
    mut w: W,
    mut outbound: Outbound,
    mut inbox: mpsc::Receiver<Bytes>,
    close: &CancellationToken,
    live: Liveness,
    stats: &LinkStats,
    direction: LinkDirection,
) -> End {
    let stall = mesh.timing().write_stall;
    let mut beats = mesh.beats();
    beats.borrow_and_update();
    // Beats since we last wrote: a link that carries lines needs no
    // heartbeat.
    let mut quiet_beats = 0;
    let mut batch = Vec::new();
    // Grows to what the link carries; an idle link holds a heartbeat's worth.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            biased;
            () = close.cancelled() => {
                while let Ok(line) = inbox.try_recv() {
                    buf.extend_from_slice(&line);
                }
                mesh.journal_flush();
                let flush = async {
                    w.write_all(outbound.wire(&buf)?).await?;
                    w.shutdown().await
                };
                let _ = timeout(FLUSH_WAIT, flush).await;
                return End::Closed;
            }
            n = inbox.recv_many(&mut batch, WRITE_BATCH) => {
                if n == 0 {
                    return End::Closed;
                }
                for line in batch.drain(..) {
                    buf.extend_from_slice(&line);
                }
            }
            r = beats.changed() => {
                if r.is_err() {
                    return End::Closed;
                }
                // A link that sends no heartbeats (Go-style) and has not
                // shown in time that it is who it claims is a squatter.
                if live.dead_after.is_none()
                    && direction == LinkDirection::Accepted
                    && !stats.proven()
                    && stats.age() > UNPROVEN_GRACE
                {
                    return End::Unproven;
                }
                quiet_beats += 1;
                if quiet_beats < live.heartbeat_beats {
                    continue;
                }
                buf.extend_from_slice(&beats.borrow_and_update().heartbeat);
            }
        }
        // Our lines are written down before any peer can have them.
        mesh.journal_flush();
        let bytes = match outbound.wire(&buf) {
            Ok(b) => b,
            Err(e) => return End::Io(e),
        };
        if let Err(end) = write_progressing(&mut w, bytes, stall).await {
            return end;
        }
        quiet_beats = 0;
        buf.clear();
    }
}

/// Writes all of `buf`, giving up when no byte is taken for `stall`.
async fn write_progressing<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &[u8],
    stall: Duration,
) -> Result<(), End> {
    let mut pos = 0;
    while pos < buf.len() {
        match timeout(stall, w.write(&buf[pos..])).await {
            Err(_) => return Err(End::Stalled),
            Ok(Err(e)) => return Err(End::Io(e)),
            Ok(Ok(0)) => return Err(End::Eof),
            Ok(Ok(n)) => pos += n,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link's writer on a real socket, driven by beats the test gives;
    /// returns the client end to read what it wrote.
    async fn writer(
        heartbeat_beats: u64,
    ) -> (
        Mesh,
        mpsc::Sender<Bytes>,
        CancellationToken,
        TcpStream,
        tokio::task::JoinHandle<End>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (server, _) = server.unwrap();
        let mesh = crate::mesh::tests::test_mesh();
        let (tx, rx) = mpsc::channel(4);
        let close = CancellationToken::new();
        let live = Liveness {
            heartbeat: Duration::from_secs(2),
            heartbeat_beats,
            dead_after: None,
        };
        let (m, c) = (mesh.clone(), close.clone());
        let task = tokio::spawn(async move {
            let stats = LinkStats::new(true);
            write_loop(
                &m,
                server,
                Outbound::Plain,
                rx,
                &c,
                live,
                &stats,
                LinkDirection::Dialed,
            )
            .await
        });
        settle().await;
        (mesh, tx, close, client.unwrap(), task)
    }

    /// Lets the writer task run until it waits again.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    async fn beat(mesh: &Mesh) {
        let heartbeat = mesh.heartbeat();
        mesh.inner.beats.send_modify(|b| {
            b.n += 1;
            b.heartbeat = heartbeat;
        });
        settle().await;
    }

    async fn lines(client: &mut TcpStream, close: &CancellationToken) -> Vec<PeerMessage> {
        close.cancel();
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        got.lines()
            .map(|l| PeerMessage::decode(l.as_bytes()).unwrap())
            .collect()
    }

    /// An idle link carries a heartbeat every period, each with its own id.
    #[tokio::test]
    async fn an_idle_link_gets_a_heartbeat_every_period() {
        let (mesh, _tx, close, mut client, task) = writer(2).await;
        for _ in 0..10 {
            beat(&mesh).await;
        }
        let beats = lines(&mut client, &close).await;
        assert!(matches!(task.await.unwrap(), End::Closed));
        assert_eq!(beats.len(), 5, "one heartbeat every 2 beats");
        assert!(beats.iter().all(|m| m.kind == MessageType::Heartbeat));
        let ids: std::collections::HashSet<&str> = beats.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids.len(), beats.len(), "every heartbeat has its own id");
    }

    /// A link that carries lines needs no heartbeat; once quiet, it does.
    #[tokio::test]
    async fn a_busy_link_sends_no_heartbeat() {
        use MessageType::{Chat, Heartbeat};
        let (mesh, tx, close, mut client, _task) = writer(2).await;
        for i in 0..3 {
            let chat = PeerMessage::new(
                Chat,
                format!("c{i}"),
                "x_1",
                "x",
                "hi".into(),
                chrono::Utc::now(),
                i,
            );
            tx.send(Bytes::from(chat.encode())).await.unwrap();
            settle().await;
            beat(&mesh).await;
        }
        beat(&mesh).await;
        let kinds: Vec<MessageType> = lines(&mut client, &close)
            .await
            .iter()
            .map(|m| m.kind)
            .collect();
        assert_eq!(kinds, [Chat, Chat, Chat, Heartbeat]);
    }
}
