//! The mesh: one TCP link to every peer, and our side of the conversation.
//!
//! [`Mesh`] is the handle the rest of the daemon uses: discovery reports
//! peers to it, the API sends lines and reads the peer list through it, and
//! each link reports what arrives. Inside, a [`table::Table`] under a lock
//! holds who is linked how; our own lines go out in one order through one
//! async lock, so every peer sees them in sequence.

pub(crate) mod admission;
mod author;
mod beat;
mod dial;
mod handshake;
pub(crate) mod journal;
mod link;
pub(crate) mod secure;
pub(crate) mod table;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use author::{Next, Outbox, Sealed};
use bytes::Bytes;
use chrono::Utc;
use shared::api::{DETACHED_AWAY, PeerInfo, RoomInfo, RpcError, SayResult, Trust, code};
use shared::authorship::{CAP_SEALS, SEAL_DELAY_MS};
use shared::event::{Dm, EventBody};
use shared::limits::PROTO_TAG;
use shared::rooms::{CAP_ROOMS, GENERAL, Scope, Topic};
use shared::secure::{CAP_NETWORK_KEY, CAP_NOISE};
use shared::sync::CAP_SYNC;
use shared::wire::{
    ACTION_PREFIX, CAP_HEARTBEAT, MessageType, PeerMessage, PeerMeta, join_content, leave_content,
    nick_change_content,
};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc::error::TrySendError, watch};
use tokio::time::{Duration, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ACCEPT_RETRY, Timing};
use crate::history::History;
use crate::identity::Identity;
use crate::rooms::{Joined, RoomsError};
use crate::trust::{KnownPeers, Standing, TrustError};
use admission::{Handshakes, MAX_DIALS};
pub(crate) use beat::Beat;
use secure::OurHello;
pub(crate) use secure::Secure;
pub(crate) use table::Sighting;
use table::{Audience, Table};

/// Where one of our lines goes, checked.
#[derive(Debug, Clone)]
pub(crate) enum Dest {
    /// A room we are in (`#name`).
    Room(String),
    /// A peer with a key.
    Direct {
        id: Arc<str>,
        key: [u8; shared::keys::KEY_LEN],
        nick: String,
    },
}

impl Dest {
    fn scope(&self) -> Scope {
        match self {
            Self::Room(r) => Scope::Room(r.clone()),
            Self::Direct { id, .. } => Scope::Direct(id.to_string()),
        }
    }
}

/// The links a line of a room goes to: every link for `#general`.
fn room_audience(room: &str) -> Audience<'_> {
    if room == GENERAL {
        Audience::All
    } else {
        Audience::Room(room)
    }
}

/// Who we are and how we link, as the node sets it up.
pub(crate) struct Local {
    pub(crate) identity: Arc<Identity>,
    pub(crate) nick: String,
    pub(crate) port: u16,
    /// Our side of Noise handshakes (with the network key, if any).
    pub(crate) secure: Secure,
    /// Nicks pinned to keys (trust on first use).
    pub(crate) known: KnownPeers,
    /// Plaintext (Go) peers are refused; always so with a network key.
    pub(crate) require_encryption: bool,
    /// p2pchatd peers link in plaintext (the bench's comparison only).
    pub(crate) plaintext_links: bool,
    /// Days of history kept: catch-up takes nothing older.
    pub(crate) retain_days: Option<u32>,
    /// What the last life's journal held (its lost events are back in the
    /// store already).
    pub(crate) journal_last: Option<journal::Last>,
    /// Runs the notify command on mentions, when one is configured.
    pub(crate) notifier: Option<crate::notify::Notifier>,
    /// The rooms we are in, as the last life left them.
    pub(crate) rooms: Joined,
    /// File transfers, as the last life left them.
    pub(crate) transfers: crate::transfer::Transfers,
}

/// Our own identity on the network.
struct Me {
    identity: Arc<Identity>,
    peer_id: Arc<str>,
    /// New on every start: this life of the daemon.
    instance: Arc<str>,
    /// Our key's fingerprint, as every event of ours carries it.
    fingerprint: Arc<str>,
    nick: Mutex<Arc<str>>,
    port: u16,
    secure: Secure,
    known: Mutex<KnownPeers>,
    /// Bumped when who holds which nick changed (`trust`, `forget`): link
    /// readers then look up again how their peer is shown.
    trust_epoch: AtomicU64,
    require_encryption: bool,
    plaintext_links: bool,
}

/// What goes to one key alone.
#[derive(Debug, Clone, Copy)]
enum ToKey {
    Message,
    Files,
}

impl ToKey {
    fn code(self) -> i64 {
        match self {
            Self::Message => code::CANNOT_DM,
            Self::Files => code::CANNOT_SEND,
        }
    }

    fn things(self) -> &'static str {
        match self {
            Self::Message => "direct messages",
            Self::Files => "files",
        }
    }
}

/// The peer holding a nick, by its key.
pub(crate) struct KeyHolder {
    pub(crate) id: Arc<str>,
    pub(crate) key: [u8; shared::keys::KEY_LEN],
    pub(crate) nick: String,
}

/// The mesh handle; cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<Inner>,
}

struct Inner {
    me: Me,
    history: Arc<History>,
    /// What catch-up holds and knows.
    sync: crate::sync::Sync,
    /// Our lines, written down before a peer can have them (with a store).
    /// Opened by [`Mesh::open_journal`] once what the last life left is
    /// stored.
    journal: Mutex<Option<journal::Journal>>,
    /// Per peer and stream life of ours, how far it confirmed holding our
    /// lines; bumped on each receipt, for `say {wait}`.
    receipts: watch::Sender<Receipts>,
    /// The rooms we are in, and the lock of writing them down.
    rooms: Mutex<Joined>,
    rooms_saving: Mutex<()>,
    table: Mutex<Table>,
    /// Orders our own lines: taken for the whole fan-out of one line, so
    /// every link gets our lines in the same order and sequence numbers
    /// match that order. Also holds the sequence counter.
    outbox: tokio::sync::Mutex<Outbox>,
    timing: Timing,
    tasks: TaskTracker,
    /// Cancelled when the mesh stops: dialers end, links flush and close.
    cancel: CancellationToken,
    /// Bumped whenever a link comes or goes, for `--peer` dialers waiting
    /// for their peer to lose its link.
    topology: watch::Sender<u64>,
    /// The clock of every link and of discovery ([`beat`]).
    beats: watch::Sender<Beat>,
    handshakes: Mutex<Handshakes>,
    dials: Arc<Semaphore>,
    /// Connections accepted so far, and when memory last went back.
    accepted: AtomicU64,
    bursts: Mutex<crate::memory::Bursts>,
    notifier: Option<crate::notify::Notifier>,
    presence: Mutex<Presence>,
    transfers: crate::transfer::Transfers,
}

/// Per peer and stream life of ours, how far the peer holds our lines.
type Receipts = HashMap<(Arc<str>, Arc<str>), u64>;

/// Whether we are away: by hand (`away {reason}`), or while no person's
/// client is attached (as soju does).
#[derive(Debug, Default)]
struct Presence {
    attached: usize,
    manual: Option<String>,
    /// What peers were last told (`None`: nothing yet).
    sent: Option<Option<String>>,
}

impl Presence {
    fn away(&self) -> Option<String> {
        self.manual
            .clone()
            .or_else(|| (self.attached == 0).then(|| DETACHED_AWAY.to_owned()))
    }
}

/// A person's client attached (`subscribe {attach}`); dropped when it
/// leaves, which notes where the user left off.
pub(crate) struct Attached {
    mesh: Mesh,
    /// The newest event it was sent.
    pub(crate) delivered: Option<u64>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(c) = self.delivered {
            self.mesh.history().set_read(c);
        }
        self.mesh
            .presence_op(|p| p.attached = p.attached.saturating_sub(1));
    }
}

/// How long a full link inbox may hold up our lines before its peer counts
/// as not reading. A peer that reads at all frees a slot in microseconds;
/// its kernel buffers and 1,024 queued lines must fill first.
const SLOW_PEER_GRACE: Duration = Duration::from_millis(500);

/// How long a run of our lines stays open before it is sealed.
const SEAL_DELAY: Duration = Duration::from_millis(SEAL_DELAY_MS);

/// How long shutdown waits to hand our `leave` to every link.
const LEAVE_WAIT: Duration = Duration::from_millis(500);

impl Mesh {
    pub(crate) fn new(
        local: Local,
        history: Arc<History>,
        timing: Timing,
        tasks: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let peer_id: Arc<str> = Arc::from(local.identity.peer_id());
        let require_encryption = local.require_encryption || local.secure.has_network_key();
        let instance: Arc<str> = Arc::from(format!("{:016x}", fastrand::u64(..)));
        let mut outbox = Outbox::new(&local.identity, &instance);
        let fingerprint: Arc<str> = Arc::from(local.identity.fingerprint());
        let sync = crate::sync::Sync::load(peer_id.clone(), history.store(), local.retain_days);
        let bursts = crate::memory::Bursts::from(history.newest_cursor());
        // Sequence numbers go on past all the last life sent; what it sent
        // unsealed is sealed now.
        outbox.seq = sync.furthest_of(&peer_id);
        if let Some(last) = &local.journal_last {
            journal::recover(last, &local.identity, &peer_id, &sync, &history);
            outbox.seq = outbox.seq.max(last.last_seq());
        }
        let mut known = local.known;
        known.set_own(&local.nick, &local.identity.public_key());
        Self {
            inner: Arc::new(Inner {
                table: Mutex::new(Table::new(peer_id.clone())),
                me: Me {
                    identity: local.identity,
                    peer_id,
                    instance,
                    fingerprint,
                    nick: Mutex::new(Arc::from(local.nick)),
                    port: local.port,
                    secure: local.secure,
                    known: Mutex::new(known),
                    trust_epoch: AtomicU64::new(0),
                    require_encryption,
                    plaintext_links: local.plaintext_links,
                },
                sync,
                journal: Mutex::new(None),
                receipts: watch::Sender::new(HashMap::new()),
                history,
                outbox: tokio::sync::Mutex::new(outbox),
                timing,
                tasks,
                cancel,
                topology: watch::Sender::new(0),
                beats: watch::Sender::new(Beat::default()),
                handshakes: Mutex::default(),
                dials: Arc::new(Semaphore::new(MAX_DIALS)),
                accepted: AtomicU64::new(0),
                bursts: Mutex::new(bursts),
                notifier: local.notifier,
                presence: Mutex::default(),
                rooms: Mutex::new(local.rooms),
                rooms_saving: Mutex::new(()),
                transfers: local.transfers,
            }),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn peer_id(&self) -> &Arc<str> {
        &self.inner.me.peer_id
    }

    /// This life of the daemon (new on every start).
    pub(crate) fn instance(&self) -> &str {
        &self.inner.me.instance
    }

    /// What catch-up holds and knows.
    pub(crate) fn sync(&self) -> &crate::sync::Sync {
        &self.inner.sync
    }

    /// Whether we take part in catch-up: only with a store to keep runs in.
    pub(crate) fn syncs(&self) -> bool {
        self.inner.history.store().is_some()
    }

    /// Keeps a sealed run for catch-up (stored after its lines).
    pub(crate) fn store_run(&self, run: crate::store::RunRow) {
        self.inner.history.stage_run(run);
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.inner.me.identity
    }

    pub(crate) fn secure(&self) -> &Secure {
        &self.inner.me.secure
    }

    fn known(&self) -> MutexGuard<'_, KnownPeers> {
        self.inner
            .me
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// How a peer with `key` (or none) under `nick` is to be shown; an
    /// alert it raises goes into the history.
    pub(crate) fn standing(&self, peer_id: &str, key: Option<&[u8; 32]>, nick: &str) -> Standing {
        let standing = match key {
            Some(k) => self.known().met(k, nick),
            None => self.known().plaintext(nick),
        };
        if let Some(text) = &standing.alert {
            tracing::warn!(peer = peer_id, "{text}");
            self.inner.history.append(EventBody::Alert {
                peer_id: peer_id.to_owned(),
                text: text.clone(),
            });
        }
        standing
    }

    /// How a peer known only by its announce is shown.
    pub(crate) fn announced_as(&self, peer_id: &str, nick: &str) -> String {
        self.known().announced_as(peer_id, nick)
    }

    /// `p2pchat trust NICK`: the key holding it is verified.
    pub(crate) fn verify_nick(&self, nick: &str) -> Result<String, TrustError> {
        let fingerprint = self.known().verify(nick)?;
        self.reconsider();
        Ok(fingerprint)
    }

    /// `p2pchat forget NICK`: the nick is unpinned (and taken at once by a
    /// linked peer that says it, if any).
    pub(crate) fn forget_nick(&self, nick: &str) -> Result<(), TrustError> {
        self.known().forget(nick)?;
        self.reconsider();
        Ok(())
    }

    /// Judges every linked peer again, then tells the link readers.
    fn reconsider(&self) {
        self.table_op(|t, h| {
            let mut known = self.known();
            t.reconsider(
                |key, said| match key {
                    Some(k) => known.met(k, said),
                    None => known.plaintext(said),
                },
                h,
            );
        });
        self.inner.me.trust_epoch.fetch_add(1, Ordering::Release);
    }

    /// Changes whenever `reconsider` ran.
    pub(crate) fn trust_epoch(&self) -> u64 {
        self.inner.me.trust_epoch.load(Ordering::Acquire)
    }

    /// Plaintext (Go) peers are refused.
    pub(crate) fn encryption_required(&self) -> bool {
        self.inner.me.require_encryption
    }

    /// We dial p2pchatd peers over Noise, and a peer with a key is never
    /// taken in plaintext (no downgrade). Off only for the bench's
    /// plaintext comparison (`--insecure-plaintext-links`).
    pub(crate) fn noise_links(&self) -> bool {
        !self.inner.me.plaintext_links
    }

    /// What we put in our announces' and hellos' capabilities.
    pub(crate) fn caps(&self) -> Vec<String> {
        let mut caps = vec![
            CAP_HEARTBEAT.to_owned(),
            CAP_NOISE.to_owned(),
            CAP_SEALS.to_owned(),
        ];
        if self.syncs() {
            caps.push(CAP_SYNC.to_owned());
        }
        caps.push(CAP_ROOMS.to_owned());
        caps.push(shared::transfer::CAP_FILES.to_owned());
        if self.secure().has_network_key() {
            caps.push(CAP_NETWORK_KEY.to_owned());
        }
        caps
    }

    /// What we say of ourselves in a Noise handshake.
    pub(crate) fn our_hello(&self) -> OurHello {
        OurHello {
            nick: self.nick().to_string(),
            heartbeat_ms: shared::millis(self.inner.timing.heartbeat),
            instance: self.instance().to_owned(),
            caps: self.caps(),
            fetch: None,
        }
    }

    pub(crate) fn nick(&self) -> Arc<str> {
        self.inner
            .me
            .nick
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn port(&self) -> u16 {
        self.inner.me.port
    }

    pub(crate) fn timing(&self) -> &Timing {
        &self.inner.timing
    }

    pub(crate) fn history(&self) -> &History {
        &self.inner.history
    }

    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// The beat every link and discovery run on.
    pub(crate) fn beats(&self) -> watch::Receiver<Beat> {
        self.inner.beats.subscribe()
    }

    /// Runs the beat until the mesh stops.
    pub(crate) async fn run_beats(self) {
        beat::run(self).await;
    }

    /// Runs `fut` as a task of the mesh, so shutdown waits for it.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(fut);
    }

    /// A discovery datagram arrived. Returns true when the peer is new to
    /// us, so discovery answers at once.
    pub(crate) fn heard(&self, sighting: &Sighting) -> bool {
        let (new, dial) = self
            .table()
            .heard(sighting, Instant::now(), &self.inner.history);
        if let Some(dialer) = dial {
            self.spawn(dial::discovered(
                self.clone(),
                Arc::from(sighting.peer_id.as_str()),
                dialer,
            ));
        }
        new
    }

    /// Forgets peers not heard of for a while, and once a burst of
    /// connections, announces or lines has passed, gives the memory it took back
    /// to the system. Called on every beat by discovery.
    pub(crate) fn expire(&self) {
        let shrank = self
            .table()
            .expire(Instant::now(), self.inner.timing.peer_expiry);
        let accepted = self.inner.accepted.load(Ordering::Relaxed);
        let give_back = self
            .inner
            .bursts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .beat(accepted, self.inner.history.newest_cursor(), shrank);
        if give_back {
            self.inner.history.settle();
            crate::memory::give_back();
        }
    }

    /// Whether any Go peer is known (heard or linked).
    pub(crate) fn knows_go_peers(&self) -> bool {
        self.table().knows_go_peers()
    }

    /// Starts dialing a `--peer HOST:PORT`, for the life of the mesh.
    pub(crate) fn add_static_peer(&self, target: String) {
        self.spawn(dial::static_peer(self.clone(), target));
    }

    pub(crate) fn peers(&self) -> Vec<PeerInfo> {
        self.table().peers(Instant::now())
    }

    /// (connected peers, known peers).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let t = self.table();
        (t.connected(), t.known())
    }

    /// Where a line of ours goes: `room` (a room we are in; `#general`
    /// without one) or `to` (a nick: a direct message).
    pub(crate) fn dest(&self, room: Option<&str>, to: Option<&str>) -> Result<Dest, RpcError> {
        match (room, to) {
            (Some(_), Some(_)) => Err(RpcError::new(
                code::INVALID_PARAMS,
                "a line goes to a room or to a peer, not both",
            )),
            (None, Some(to)) => self.key_holder(to, ToKey::Message).map(|p| Dest::Direct {
                id: p.id,
                key: p.key,
                nick: p.nick,
            }),
            (None, None) => Ok(Dest::Room(GENERAL.to_owned())),
            (Some(r), None) => {
                let room = shared::api::room_param(r)?;
                if !self.in_room(&room) {
                    return Err(not_in_room(&room));
                }
                Ok(Dest::Room(room))
            }
        }
    }

    /// The key that holds `nick` (linked or only known), if `what` (a
    /// direct message, files) may go to it: never a Go peer (no key), a
    /// nick shown apart (another key holds it), or ourselves.
    fn key_holder(&self, nick: &str, what: ToKey) -> Result<KeyHolder, RpcError> {
        let refuse = |why: String| RpcError::new(what.code(), why);
        let things = what.things();
        if nick == &*self.nick() || nick == &**self.peer_id() {
            return Err(refuse("that is you".into()));
        }
        let shown = self.table().shown_as(nick);
        if let Some(p) = &shown {
            match p.trust {
                Some(Trust::Plaintext) => {
                    return Err(refuse(format!(
                        "{nick} is a Go peer: it has no key to seal {things} to, and would show them to everyone"
                    )));
                }
                Some(Trust::Conflict) => {
                    return Err(refuse(format!(
                        "{nick} is shown apart: another key holds its nick; compare fingerprints (p2pchat peers) before trusting it"
                    )));
                }
                _ => {}
            }
            if p.takes_rooms == Some(false) {
                return Err(refuse(format!(
                    "{nick} runs a p2pchatd too old for {things}"
                )));
            }
        }
        let key = match shown.as_ref().and_then(|p| p.key) {
            Some(k) => Some(k),
            None => self.known().key_of(nick),
        };
        let Some(key) = key else {
            return Err(refuse(match shown {
                Some(_) => format!("{nick} has not proved a key yet; wait until it is linked"),
                None => format!("no peer is known as {nick}"),
            }));
        };
        if self.identity().agree(&key).is_none() {
            return Err(refuse(format!("{nick}'s key cannot take {things}")));
        }
        let id = shared::keys::peer_id_of(&key);
        if shown.as_ref().is_some_and(|p| *p.id != *id) {
            return Err(refuse(format!("{nick} is not the key that holds the nick")));
        }
        Ok(KeyHolder {
            id: Arc::from(id),
            key,
            nick: nick.to_owned(),
        })
    }

    /// File transfers, both ways.
    pub(crate) fn transfers(&self) -> &crate::transfer::Transfers {
        &self.inner.transfers
    }

    /// The peer shown as `nick`, if files can go to it: a key that may
    /// take them ([`Mesh::key_holder`]), linked now, and able to.
    pub(crate) fn file_peer(&self, nick: &str) -> Result<KeyHolder, RpcError> {
        let peer = self.key_holder(nick, ToKey::Files)?;
        let refuse = |why: String| RpcError::new(code::CANNOT_SEND, why);
        match self
            .table()
            .shown_as(&peer.nick)
            .and_then(|s| s.takes_files)
        {
            None => Err(refuse(format!(
                "{nick} is not linked now; offer the files when it is"
            ))),
            Some(false) => Err(refuse(format!(
                "{nick} runs a p2pchatd too old to take files"
            ))),
            Some(true) => Ok(peer),
        }
    }

    /// Hands `line` to the link of peer `id` alone (if linked).
    pub(crate) async fn send_to_peer(&self, id: &str, line: Bytes) {
        self.fan_out(line, Audience::Peer(id)).await;
    }

    /// As [`Mesh::send_to_peer`], but never waits: a full link inbox drops
    /// the line (an answer to a peer that floods us and does not read).
    pub(crate) fn send_to_peer_now(&self, id: &str, line: &Bytes) {
        let targets = self.table().targets();
        for t in targets.iter().filter(|t| t.takes(Audience::Peer(id))) {
            let _ = t.tx.try_send(line.clone());
        }
    }

    /// Whether peer `id` is linked now.
    pub(crate) fn is_linked(&self, id: &str) -> bool {
        self.table().is_linked(id)
    }

    /// Where to dial peer `id` for a fetch: where it listens, else its
    /// link's host at `port` (its offer's).
    pub(crate) fn fetch_addr(&self, id: &str, port: u16) -> Option<std::net::SocketAddr> {
        let (addr, listens) = self.table().listen_addr(id)?;
        match (listens, port) {
            (true, _) => Some(addr),
            (false, 0) => None,
            (false, p) => Some(std::net::SocketAddr::new(addr.ip(), p)),
        }
    }

    /// Sends a chat line to `dest`; the API validated `text`.
    pub(crate) async fn say(
        &self,
        text: &str,
        action: bool,
        dest: &Dest,
    ) -> Result<SayResult, RpcError> {
        Ok(self.say_numbered(text, action, dest).await?.0)
    }

    /// Sends a chat line, then waits until every peer linked now that the
    /// line goes to confirms it holds it (a receipt once the line's run is
    /// sealed and checked), for at most `wait`. A peer that cannot confirm
    /// (a Go peer, or one without a store) counts as not confirming; so
    /// does the recipient of a direct message while it is not linked.
    pub(crate) async fn say_confirmed(
        &self,
        text: &str,
        action: bool,
        dest: &Dest,
        wait: Duration,
    ) -> Result<SayResult, RpcError> {
        let deadline = tokio::time::Instant::now() + wait;
        // Peers confirm only when we take part in catch-up too.
        let syncs = self.syncs();
        let mut audience = match dest {
            Dest::Direct { id, nick, .. } => {
                let linked = self.table().audience(Audience::Peer(id));
                if linked.is_empty() {
                    vec![(id.clone(), nick.clone(), false)]
                } else {
                    linked
                }
            }
            Dest::Room(r) => self.table().audience(room_audience(r)),
        };
        for (_, _, confirms) in &mut audience {
            *confirms &= syncs;
        }
        let mut receipts = self.inner.receipts.subscribe();
        let life: Arc<str> = Arc::from(shared::rooms::stream_life(
            self.instance(),
            &dest.scope().wire(),
        ));
        let (mut said, seq) = self.say_numbered(text, action, dest).await?;
        let pending = |held: &Receipts| -> Vec<&(Arc<str>, String, bool)> {
            audience
                .iter()
                .filter(|(id, _, _)| {
                    held.get(&(id.clone(), life.clone()))
                        .is_none_or(|&last| last < seq)
                })
                .collect()
        };
        loop {
            let missing: Vec<(Arc<str>, String, bool)> = pending(&receipts.borrow_and_update())
                .into_iter()
                .cloned()
                .collect();
            // Those that cannot confirm never will: do not wait for them.
            if missing.iter().all(|(_, _, confirms)| !confirms) {
                if missing.is_empty() {
                    said.confirmed =
                        Some(audience.iter().map(|(id, _, _)| id.to_string()).collect());
                    return Ok(said);
                }
                return Err(unconfirmed(&missing, wait));
            }
            tokio::select! {
                r = receipts.changed() => if r.is_err() { return Err(unconfirmed(&missing, wait)) },
                () = tokio::time::sleep_until(deadline) => return Err(unconfirmed(&missing, wait)),
            }
        }
    }

    /// A peer confirmed it holds our lines of `life` (one of our streams)
    /// up to `last`.
    pub(crate) fn receipt(&self, peer: &Arc<str>, life: &str, last: u64) {
        let life: Arc<str> = Arc::from(life);
        if !self.inner.sync.knows(&self.inner.me.peer_id, &life) {
            return;
        }
        self.inner.receipts.send_if_modified(|held| {
            let at = held.entry((peer.clone(), life)).or_insert(0);
            let moved = last > *at;
            *at = (*at).max(last);
            moved
        });
    }

    /// Sends a chat line; with the sequence number it got.
    async fn say_numbered(
        &self,
        text: &str,
        action: bool,
        dest: &Dest,
    ) -> Result<(SayResult, u64), RpcError> {
        let plain = if action {
            format!("{ACTION_PREFIX}{text}")
        } else {
            text.to_owned()
        };
        // Sealed before it takes a sequence number: a line that cannot be
        // sealed is not sent at all.
        let content = match dest {
            Dest::Room(_) => plain,
            Dest::Direct { id: to, key, nick } => {
                crate::direct::seal(self.identity(), key, to, &plain).ok_or_else(|| {
                    RpcError::new(
                        code::CANNOT_DM,
                        format!("could not seal a message to {nick} (no randomness?)"),
                    )
                })?
            }
        };
        let mut outbox = self.inner.outbox.lock().await;
        outbox.seq += 1;
        let id = new_message_id();
        let nick = self.nick();
        let mut msg = PeerMessage::new(
            MessageType::Chat,
            id.clone(),
            &self.inner.me.peer_id,
            &nick,
            content,
            Utc::now(),
            outbox.seq,
        );
        if !matches!(dest, Dest::Room(r) if r == GENERAL) {
            msg.room_id = dest.scope().wire();
        }
        let line = Bytes::from(msg.encode());
        let (seq, sent) = (msg.sequence, msg.timestamp);
        let next = outbox.chain(msg);
        let (room, to) = match dest {
            Dest::Room(r) => (Some(r.clone()), None),
            Dest::Direct { id, nick, .. } => (
                None,
                Some(Dm {
                    peer_id: id.to_string(),
                    nick: nick.clone(),
                }),
            ),
        };
        let cursor = self
            .inner
            .history
            .append_message(&self.inner.me.peer_id, &id, || EventBody::Message {
                id: id.clone(),
                peer_id: self.inner.me.peer_id.to_string(),
                nick: nick.to_string(),
                text: text.to_owned(),
                action,
                fingerprint: Some(self.inner.me.fingerprint.clone()),
                trust: None,
                seq: Some(seq),
                sent,
                late: false,
                room,
                to,
            })
            .unwrap_or_default();
        // Written down before any peer can have it.
        if let Some(j) = self.journal().as_mut() {
            j.append_line(cursor, &line);
        }
        let audience = match dest {
            Dest::Room(r) => room_audience(r),
            Dest::Direct { id, .. } => Audience::Peer(id),
        };
        self.fan_out(line, audience).await;
        match next {
            Next::SealNow(run) => self.seal(&mut outbox, run).await,
            Next::SealLater(run) => {
                let mesh = self.clone();
                self.inner.tasks.spawn(async move {
                    tokio::select! {
                        () = tokio::time::sleep(SEAL_DELAY) => {}
                        // Shutdown seals what is open itself.
                        () = mesh.inner.cancel.cancelled() => return,
                    }
                    let mut outbox = mesh.inner.outbox.lock().await;
                    mesh.seal(&mut outbox, run).await;
                });
            }
            Next::Nothing => {}
        }
        Ok((
            SayResult {
                id,
                cursor,
                confirmed: None,
            },
            seq,
        ))
    }

    /// Seals our open run `run` (if it still is) and hands the seal to
    /// every peer its lines went to. A run of direct messages is also
    /// left, sealed, with the peers that keep runs for others, so it
    /// reaches its recipient through them if we are gone when it is back.
    async fn seal(&self, outbox: &mut Outbox, run: u64) {
        let Some(Sealed { seal, lines, room }) = outbox.seal(self.identity(), run) else {
            return;
        };
        let me = &self.inner.me;
        let key = me.identity.public_key();
        let recipient = room
            .as_deref()
            .and_then(|r| r.strip_prefix('@'))
            .map(Arc::<str>::from);
        let deposit = recipient.as_ref().map(|_| shared::authorship::Relay {
            key: shared::keys::hex(&key),
            seal: seal.clone(),
            lines: lines.clone(),
            room: room.clone(),
        });
        let life: Arc<str> = Arc::from(seal.instance.as_str());
        if let Some(run) = self
            .inner
            .sync
            .sealed(&me.peer_id, &life, &key, seal.clone(), lines)
        {
            self.store_run(run);
        }
        let mut msg = self.own_line(MessageType::Seal);
        msg.seal = Some(seal);
        let line = Bytes::from(msg.encode());
        self.journal_append(&line);
        let in_room = room.as_deref().map(|r| format!("#{r}"));
        let audience = match (&recipient, &in_room) {
            (Some(to), _) => Audience::Peer(to),
            (None, Some(r)) => Audience::Room(r),
            (None, None) => Audience::Seals,
        };
        self.fan_out(line, audience).await;
        if let (Some(to), Some(relay)) = (&recipient, deposit) {
            let mut msg = self.own_line(MessageType::Relay);
            msg.relay = Some(Box::new(relay));
            self.fan_out(Bytes::from(msg.encode()), Audience::KeepersBut(to))
                .await;
        }
        // Grown large: start it again, once the store has all it holds.
        let large = self
            .journal()
            .as_ref()
            .is_some_and(|j| j.len() > journal::ROTATE_BYTES);
        // Only with no run open (all the journal holds is sealed): the
        // header says where `#general`'s chain stands, the other streams
        // go on from their stored runs.
        if large && !outbox.is_open() {
            self.inner.history.flush().await;
            self.restart_journal(Some(&outbox.head()), outbox.seq, false);
        }
    }

    /// Seals every open run of ours (before our `leave`).
    async fn seal_all(&self, outbox: &mut Outbox) {
        for run in outbox.open_runs() {
            self.seal(outbox, run).await;
        }
    }

    /// Whether we are in `room` (`#name`).
    pub(crate) fn in_room(&self, room: &str) -> bool {
        self.rooms().contains(room)
    }

    fn rooms(&self) -> MutexGuard<'_, Joined> {
        self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins `room` (one spelling): peers learn it, and those that hold
    /// its lines send them (catch-up). False when already in it.
    pub(crate) async fn join_room(&self, room: &str) -> Result<bool, RoomsError> {
        let joined = self.rooms().join(room)?;
        if joined {
            self.save_rooms().await;
            self.rooms_changed(room, true).await;
        }
        Ok(joined)
    }

    /// Writes the rooms we are in for the next start, off the runtime and
    /// outside the lock the links read them under; one writer at a time,
    /// each the newest state.
    async fn save_rooms(&self) {
        let mesh = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _one = mesh
                .inner
                .rooms_saving
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Taken first: the links read the rooms under that lock, and
            // the writes wait for the disk.
            let snapshot = mesh.rooms().snapshot();
            if let Some(snapshot) = snapshot {
                crate::rooms::save(&snapshot);
            }
        })
        .await;
    }

    /// Leaves `room`: its lines stop coming. False when not in it.
    pub(crate) async fn part_room(&self, room: &str) -> Result<bool, RoomsError> {
        let parted = self.rooms().part(room)?;
        if parted {
            self.save_rooms().await;
            self.rooms_changed(room, false).await;
        }
        Ok(parted)
    }

    async fn rooms_changed(&self, room: &str, joined: bool) {
        self.inner.history.append(EventBody::Room {
            peer_id: self.peer_id().to_string(),
            nick: self.nick().to_string(),
            room: room.to_owned(),
            joined,
        });
        let _order = self.inner.outbox.lock().await;
        self.fan_out(self.rooms_line(), Audience::Rooms).await;
        if joined && self.syncs() {
            // What the room said before we came: peers send what we lack.
            // On busy links too: the parts wait for room, in order.
            // A vector's parts go out together (one runtime thread: no
            // other task sends between them), so two never interleave.
            let lines = link::vector_lines(self);
            let targets = self.table().targets();
            for t in targets.iter().filter(|t| t.sync && t.takes_rooms) {
                let (tx, lines) = (t.tx.clone(), lines.clone());
                self.spawn(async move {
                    let Ok(permits) = tx.reserve_many(lines.len()).await else {
                        return;
                    };
                    for (permit, line) in permits.zip(lines) {
                        permit.send(line);
                    }
                });
            }
        }
    }

    /// Sets the topic of `room` (one we are in): its members hear it.
    pub(crate) async fn set_topic(&self, room: &str, text: &str) -> Result<Topic, RpcError> {
        if !self.in_room(room) {
            return Err(not_in_room(room));
        }
        let topic = {
            let mut rooms = self.rooms();
            // Newer than the one held, whatever the clocks say.
            let held = rooms
                .topic(room)
                .map(|t| t.at + chrono::TimeDelta::nanoseconds(1));
            let topic = Topic {
                text: text.to_owned(),
                by: self.peer_id().to_string(),
                nick: self.nick().to_string(),
                at: held.map_or_else(Utc::now, |h| h.max(Utc::now())),
            };
            if !rooms.set_topic(room, topic.clone()) {
                return Err(not_in_room(room));
            }
            topic
        };
        self.announce_topic(room, &topic).await;
        Ok(topic)
    }

    /// A topic just taken for `room`: said here, kept for the next start,
    /// and told to the room's members.
    async fn announce_topic(&self, room: &str, topic: &Topic) {
        self.inner.history.append(EventBody::Topic {
            peer_id: topic.by.clone(),
            nick: topic.nick.clone(),
            room: room.to_owned(),
            text: topic.text.clone(),
        });
        self.save_rooms().await;
        let _order = self.inner.outbox.lock().await;
        // `#general`'s goes to p2pchatd peers only: Go peers know no topic.
        let audience = match room_audience(room) {
            Audience::All => Audience::Rooms,
            a => a,
        };
        for line in self.topic_lines(&[room]) {
            self.fan_out(line, audience).await;
        }
    }

    /// The topic of `room`, if it has one.
    pub(crate) fn topic(&self, room: &str) -> Option<Topic> {
        self.rooms().topic(room).cloned()
    }

    /// A member told us `room`'s topic: kept, said and passed on to the
    /// room's other members if newer than ours (a member not linked with
    /// its setter hears it so; one that has it takes it no further).
    pub(crate) fn heard_topic(&self, room: &str, topic: Topic) {
        if !self.rooms().set_topic(room, topic.clone()) {
            return;
        }
        let mesh = self.clone();
        let room = room.to_owned();
        self.spawn(async move { mesh.announce_topic(&room, &topic).await });
    }

    /// Lines that tell the topics of `rooms` (those that have one).
    pub(crate) fn topic_lines(&self, rooms: &[&str]) -> Vec<Bytes> {
        let joined = self.rooms();
        rooms
            .iter()
            .filter_map(|r| {
                let topic = joined.topic(r)?.clone();
                let mut msg = self.own_line(MessageType::Topic);
                msg.room_id = Scope::Room((*r).to_owned()).wire();
                msg.topic = Some(Box::new(topic));
                Some(Bytes::from(msg.encode()))
            })
            .collect()
    }

    /// The line that says which rooms we are in (besides `#general`).
    pub(crate) fn rooms_line(&self) -> Bytes {
        let mut msg = self.own_line(MessageType::Rooms);
        msg.rooms = Some(self.rooms().rooms().map(|r| r[1..].to_owned()).collect());
        Bytes::from(msg.encode())
    }

    /// The rooms we are in besides `#general`.
    pub(crate) fn joined(&self) -> BTreeSet<String> {
        self.rooms().rooms().cloned().collect()
    }

    /// The rooms we are in and those linked peers are in.
    pub(crate) fn rooms_info(&self) -> Vec<RoomInfo> {
        let mut known = self.table().rooms();
        let linked = self.table().connected();
        let mut out = vec![RoomInfo {
            name: GENERAL.to_owned(),
            joined: true,
            members: linked + 1,
            peers: Vec::new(),
            topic: self.topic(GENERAL).map(|t| t.text),
        }];
        let joined: Vec<String> = self.rooms().rooms().cloned().collect();
        for r in &joined {
            known.entry(r.clone()).or_default();
        }
        for (name, peers) in known {
            let joined = joined.contains(&name);
            out.push(RoomInfo {
                topic: self.topic(&name).map(|t| t.text),
                members: peers.len() + usize::from(joined),
                name,
                joined,
                peers,
            });
        }
        out
    }

    fn journal(&self) -> MutexGuard<'_, Option<journal::Journal>> {
        self.inner.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a seal of ours in the journal (a seal has no cursor: 0).
    fn journal_append(&self, line: &[u8]) {
        if let Some(j) = self.journal().as_mut() {
            j.append_line(0, line);
        }
    }

    /// Writes our noted lines to the journal: before any link puts bytes
    /// on its socket.
    pub(crate) fn journal_flush(&self) {
        if let Some(j) = self.journal().as_mut() {
            j.flush();
        }
    }

    /// Starts the journal of this life, once what the last one left is
    /// stored (a crash now loses nothing of it).
    pub(crate) async fn open_journal(&self) {
        let Some(store) = self.inner.history.store() else {
            return;
        };
        self.inner.history.flush().await;
        let seq = self.inner.outbox.lock().await.seq;
        match journal::Journal::open(store.dir(), self.instance(), seq) {
            Ok(j) => *self.journal() = Some(j),
            Err(e) => tracing::warn!(
                "cannot keep a journal of our lines ({e}); a crash may lose the last of them"
            ),
        }
    }

    /// Starts the journal again, empty, only if the store holds all it
    /// has (else it is kept: the next start puts back what it must).
    fn restart_journal(&self, prev: Option<&shared::authorship::Hash>, seq: u64, stopped: bool) {
        let Some(store) = self.inner.history.store() else {
            return;
        };
        let mut journal = self.journal();
        let Some(j) = journal.as_mut() else {
            return;
        };
        j.flush();
        if store.failing() || store.persisted() < j.newest_cursor() {
            return;
        }
        if let Err(e) = j.restart(self.instance(), prev, seq, stopped) {
            tracing::warn!("cannot start the journal of our lines again: {e}");
        }
    }

    /// After a clean stop: the journal starts again, empty, with where our
    /// sequence numbers stand, unless lines went out unsealed (then it
    /// stays for the next start to seal them).
    pub(crate) async fn close_journal(&self) {
        let outbox = self.inner.outbox.lock().await;
        if outbox.is_open() {
            self.journal_flush();
            return;
        }
        let head = outbox.head();
        self.restart_journal(Some(&head), outbox.seq, true);
    }

    /// Changes our nick; Go peers see it as the `join` they send for one.
    /// Returns the old nick, or `None` when it was already `new`.
    pub(crate) async fn set_nick(&self, new: &str) -> Option<String> {
        let mut outbox = self.inner.outbox.lock().await;
        let old = {
            let mut nick = self.inner.me.nick.lock().unwrap_or_else(|p| p.into_inner());
            if &**nick == new {
                return None;
            }
            std::mem::replace(&mut *nick, Arc::from(new))
        };
        self.known()
            .set_own(new, &self.inner.me.identity.public_key());
        if let Some(n) = &self.inner.notifier {
            n.set_nick(new);
        }
        // A peer shown apart for our old nick is now itself again.
        self.reconsider();
        self.inner.history.append(EventBody::Nick {
            peer_id: self.inner.me.peer_id.to_string(),
            old: old.to_string(),
            new: new.to_owned(),
        });
        outbox.seq += 1;
        let line = self.line(
            MessageType::Join,
            nick_change_content(&old, new),
            outbox.seq,
        );
        self.fan_out(line, Audience::All).await;
        Some(old.to_string())
    }

    /// Our away message as peers see it, if we are away.
    pub(crate) fn away(&self) -> Option<String> {
        self.inner
            .presence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .away()
    }

    /// A person's client attached: we are back until the last one leaves.
    pub(crate) fn attach(&self) -> Attached {
        self.presence_op(|p| p.attached += 1);
        Attached {
            mesh: self.clone(),
            delivered: None,
        }
    }

    /// Away by hand with `reason` (cut to its bound), or back with none;
    /// returns what peers now see.
    pub(crate) fn set_away(&self, reason: Option<String>) -> Option<String> {
        let reason = reason.and_then(|r| shared::api::clip_away(&r));
        self.presence_op(|p| p.manual = reason);
        self.away()
    }

    /// Changes the presence; a change in what peers see is sent to every
    /// p2pchatd link, in order.
    fn presence_op(&self, f: impl FnOnce(&mut Presence)) {
        let (before, after) = {
            let mut p = self
                .inner
                .presence
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let before = p.away();
            f(&mut p);
            (before, p.away())
        };
        if before == after || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mesh = self.clone();
        self.inner.tasks.spawn(async move {
            // Under the outbox lock (which orders our lines and guards nick
            // changes), the presence as it is now, with the nick as it is
            // now; a change already told is not told twice.
            let _order = mesh.inner.outbox.lock().await;
            let now = {
                let mut p = mesh
                    .inner
                    .presence
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let now = p.away();
                if p.sent.as_ref() == Some(&now) {
                    return;
                }
                p.sent = Some(now.clone());
                now
            };
            let line = mesh.away_line(now.as_deref());
            mesh.fan_out(line, Audience::Seals).await;
        });
    }

    /// The line that says we are away (`Some`) or back.
    pub(crate) fn away_line(&self, away: Option<&str>) -> Bytes {
        let mut msg = self.own_line(MessageType::Away);
        msg.content = away.unwrap_or_default().to_owned();
        Bytes::from(msg.encode())
    }

    /// A line someone else said reached the history: a mention runs the
    /// notify command.
    pub(crate) fn said_by_peer(&self, nick: &str, room: Option<&str>, text: &str) {
        if let Some(n) = &self.inner.notifier {
            n.heard(nick, room, text);
        }
    }

    /// Says goodbye on every link; part of shutdown, bounded in time.
    pub(crate) async fn leave_all(&self) {
        let send = async {
            let mut outbox = self.inner.outbox.lock().await;
            // Our last lines leave sealed.
            self.seal_all(&mut outbox).await;
            outbox.seq += 1;
            let nick = self.nick();
            let line = self.line(MessageType::Leave, leave_content(&nick), outbox.seq);
            self.fan_out(line, Audience::All).await;
        };
        if timeout(LEAVE_WAIT, send).await.is_err() {
            tracing::warn!("could not hand our leave to every link in time");
        }
    }

    /// Stops dialers and closes every link after a last flush.
    pub(crate) fn close(&self) {
        self.inner.cancel.cancel();
        self.inner.transfers.stop();
        self.table().close_all();
    }

    /// Hands `line` to every link. A link whose inbox is full makes this
    /// caller wait (backpressure on whoever floods) while the peer drains
    /// it; a peer that takes nothing for `SLOW_PEER_GRACE` has stopped
    /// reading: its link is dropped (and redialed if it is ours to dial),
    /// so it never holds up the others for longer than that, once.
    /// `audience`: which links.
    async fn fan_out(&self, line: Bytes, audience: Audience<'_>) {
        let targets = self.table().targets();
        for t in targets.iter().filter(|t| t.takes(audience)) {
            match t.tx.try_send(line.clone()) {
                Ok(()) | Err(TrySendError::Closed(_)) => {}
                Err(TrySendError::Full(line)) => {
                    if timeout(SLOW_PEER_GRACE, t.tx.send(line)).await.is_err() {
                        tracing::warn!(link = %t.id, "peer stopped reading; dropping its link");
                        t.close.cancel();
                        self.link_closed(t.id, "stopped reading");
                    }
                }
            }
        }
    }

    /// One of our own lines (not a chat line).
    fn line(&self, kind: MessageType, content: String, seq: u64) -> Bytes {
        let nick = self.nick();
        Bytes::from(
            PeerMessage::new(
                kind,
                new_message_id(),
                &self.inner.me.peer_id,
                &nick,
                content,
                Utc::now(),
                seq,
            )
            .encode(),
        )
    }

    /// A line of ours of `kind` with no content, outside the sequence
    /// (catch-up's vectors and relays).
    pub(crate) fn own_line(&self, kind: MessageType) -> PeerMessage {
        PeerMessage::new(
            kind,
            new_message_id(),
            &self.inner.me.peer_id,
            &self.nick(),
            String::new(),
            Utc::now(),
            0,
        )
    }

    /// Our identifying `join` (sequence 0), with our metadata.
    pub(crate) fn identifying_join(&self) -> Vec<u8> {
        let nick = self.nick();
        let mut msg = PeerMessage::new(
            MessageType::Join,
            new_message_id(),
            &self.inner.me.peer_id,
            &nick,
            join_content(&nick),
            Utc::now(),
            0,
        );
        msg.metadata = Some(PeerMeta::ours(shared::millis(self.inner.timing.heartbeat)));
        debug_assert_eq!(
            msg.metadata.as_ref().and_then(|m| m.proto.as_deref()),
            Some(PROTO_TAG)
        );
        msg.encode()
    }

    /// The dialer's second `join`, which a Go acceptor shows as our arrival.
    pub(crate) async fn hello_join(&self) -> Bytes {
        let mut outbox = self.inner.outbox.lock().await;
        outbox.seq += 1;
        let nick = self.nick();
        self.line(MessageType::Join, join_content(&nick), outbox.seq)
    }

    /// A heartbeat line; per link, outside the sequence.
    pub(crate) fn heartbeat(&self) -> Bytes {
        self.line(MessageType::Heartbeat, String::new(), 0)
    }

    pub(crate) fn table_op<R>(&self, f: impl FnOnce(&mut Table, &History) -> R) -> R {
        let mut t = self.table();
        f(&mut t, &self.inner.history)
    }

    pub(crate) fn topology_changed(&self) {
        self.inner.topology.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Changes whenever a link comes or goes.
    pub(crate) fn watch_topology(&self) -> watch::Receiver<u64> {
        self.inner.topology.subscribe()
    }

    /// A link ended: file it, and redial its peer if that is our job.
    pub(crate) fn link_closed(&self, id: table::LinkId, reason: &str) {
        let redial = {
            let mut t = self.table();
            let peer = t.closed(id, reason, Instant::now(), &self.inner.history);
            if let Some(p) = &peer {
                self.inner.receipts.send_if_modified(|held| {
                    let before = held.len();
                    held.retain(|(peer, _), _| peer != p);
                    held.len() != before
                });
            }
            peer.and_then(|p| t.claim_dial(&p).map(|d| (p, d)))
        };
        self.topology_changed();
        if let Some((peer, dialer)) = redial
            && !self.inner.cancel.is_cancelled()
        {
            self.spawn(dial::discovered(self.clone(), peer, dialer));
        }
    }

    /// Accepts peers' connections until the mesh stops. Every connection
    /// is taken off the backlog at once; [`Handshakes`] decides which may
    /// wait to identify, so a crowd of idle ones cannot keep a peer out.
    pub(crate) async fn serve_peers(self, listener: TcpListener) {
        let cancel = self.inner.cancel.clone();
        loop {
            let (stream, remote) = tokio::select! {
                () = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and the like: back off, retry.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::select! {
                            () = cancel.cancelled() => break,
                            () = tokio::time::sleep(ACCEPT_RETRY) => continue,
                        }
                    }
                },
            };
            self.inner.accepted.fetch_add(1, Ordering::Relaxed);
            match self.handshake_slot(remote.ip()) {
                Some(slot) => self.spawn(handshake::accept(self.clone(), stream, remote, slot)),
                None => {
                    tracing::debug!(%remote, "closed a connection: its address has enough waiting to identify")
                }
            }
        }
    }

    fn handshake_slot(&self, from: IpAddr) -> Option<HandshakeSlot> {
        let (id, evicted) = self
            .inner
            .handshakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(from, Instant::now())?;
        Some(HandshakeSlot {
            mesh: self.clone(),
            id,
            evicted,
        })
    }

    /// A slot to dial in: dials in flight are bounded, the rest queue here.
    /// `None` once the mesh stops.
    pub(crate) async fn dial_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.dials.clone().acquire_owned().await.ok()
    }
}

/// A connection's place among those waiting to identify; given back when
/// dropped.
pub(crate) struct HandshakeSlot {
    mesh: Mesh,
    id: u64,
    /// Cancelled when a newer connection needed the room.
    pub(crate) evicted: CancellationToken,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.mesh
            .inner
            .handshakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .done(self.id);
    }
}

/// The error of a `say {wait}` that some peers did not confirm in time.
/// `say` or `topic` in a room we are not in.
fn not_in_room(room: &str) -> RpcError {
    RpcError::new(
        code::NOT_IN_ROOM,
        format!("not in {room}; join it first (/join {room})"),
    )
}

fn unconfirmed(missing: &[(Arc<str>, String, bool)], wait: Duration) -> RpcError {
    let names = |confirms: bool| {
        missing
            .iter()
            .filter(|(_, _, c)| *c == confirms)
            .map(|(_, nick, _)| nick.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (late, never) = (names(true), names(false));
    let mut message = String::from("sent, but ");
    if !late.is_empty() {
        message += &format!("not confirmed within {} s by {late}", wait.as_secs_f64());
    }
    if !never.is_empty() {
        if !late.is_empty() {
            message += "; ";
        }
        message += &format!("{never} cannot confirm (no receipts: a Go peer or no history store)");
    }
    RpcError::new(code::UNCONFIRMED, message)
}

/// A fresh message id: 16 lowercase hex characters, like the Go peer's.
pub(crate) fn new_message_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// What a link's reader, its writer and the table know of its traffic.
#[derive(Debug)]
pub(crate) struct LinkStats {
    opened: Instant,
    lines: AtomicU64,
    /// Milliseconds after `opened` when bytes last arrived.
    last_rx_ms: AtomicU64,
    /// The peer showed it is who it claims: we dialed it, discovery heard
    /// it from this link's address, or it talked.
    proven: AtomicBool,
}

impl LinkStats {
    pub(crate) fn new(proven: bool) -> Self {
        Self {
            opened: Instant::now(),
            lines: AtomicU64::new(0),
            last_rx_ms: AtomicU64::new(0),
            proven: AtomicBool::new(proven),
        }
    }

    /// Bytes arrived just now.
    pub(crate) fn received(&self) {
        self.last_rx_ms
            .store(shared::millis(self.opened.elapsed()), Ordering::Relaxed);
    }

    pub(crate) fn line(&self) {
        self.lines.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// How long nothing has arrived (since the link opened, at first).
    pub(crate) fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_rx_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    pub(crate) fn age(&self) -> Duration {
        self.opened.elapsed()
    }

    pub(crate) fn prove(&self) {
        self.proven.store(true, Ordering::Relaxed);
    }

    pub(crate) fn proven(&self) -> bool {
        self.proven.load(Ordering::Relaxed)
    }
}

/// An author's chain, for tests elsewhere.
#[cfg(test)]
pub(crate) fn author_outbox(identity: &Identity, life: &str) -> Outbox {
    Outbox::new(identity, life)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn test_mesh() -> Mesh {
        let identity = Arc::new(Identity::from_secret(&[1; 32]));
        let local = Local {
            secure: Secure::new(&identity, None).unwrap(),
            known: KnownPeers::in_memory(),
            identity,
            nick: "me".into(),
            port: 1,
            require_encryption: false,
            plaintext_links: false,
            retain_days: None,
            journal_last: None,
            notifier: None,
            rooms: Joined::default(),
            transfers: crate::transfer::Transfers::load(None, crate::config::Files::default()),
        };
        Mesh::new(
            local,
            Arc::new(History::new(10)),
            Timing::default(),
            TaskTracker::new(),
            CancellationToken::new(),
        )
    }
}
