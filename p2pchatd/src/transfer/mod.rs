//! File transfer: offers travel on the link to their recipient alone; an
//! accepted offer's bytes travel on a connection of their own, which the
//! recipient dials to the sender's chat port with a Noise handshake whose
//! hello names the offer (PROTOCOL-p2pchatd §10). Each transfer's
//! connection has two threads of its own: one at nice 10 keeps its books
//! (state, progress, record) and one in the idle class does the bulk
//! (sealing or opening, hashing, the files), so a chat thread that wakes
//! takes the CPU from it at once and chat lines on the same pair never wait
//! behind a file's chunks.
//!
//! The recipient pulls: the sender sends the listing (checked against the
//! offer's root), the recipient asks for the first file not yet landed
//! from the first chunk not yet verified, and the sender streams from
//! there to the end. Every chunk is checked against its hash before it is
//! written; a cut transfer resumes from what is verified, so at most the
//! chunk that was in flight is sent again. What both ends need to go on
//! after a restart (the sender's sources and hashes, the recipient's
//! listing, where each file lands and how many landed) is written down in
//! the state folder, one file per transfer until it is over, by a writer
//! thread of its own.

mod conn;
mod fetch;
mod offer;
mod records;
mod serve;

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shared::api::{
    RpcError, SendParams, TransferDirection, TransferInfo, TransferState, Trust, code,
};
use shared::keys::{KEY_LEN, hex};
use shared::transfer::{Answer, MAX_PENDING_PER_PEER, Offer, human_bytes};
use shared::wire::MessageType;
use tokio::sync::broadcast;
use tracing::{debug, info};

use crate::config::Files;
use crate::mesh::Mesh;
use records::{Record, Records};

pub(crate) use serve::serve;

/// Transfer events waiting for a slow subscriber; past this it misses
/// progress (the `transfers` method always has the state).
const EVENT_QUEUE: usize = 256;
/// Finished transfers `transfers` still lists; those that were offers to
/// us stay written down across restarts too, so that one offered again
/// gets the same answer.
const KEEP_FINISHED: usize = 64;
/// Offers waiting for an answer, from all peers together; more are
/// refused (a peer's keys cost it nothing, so the per-peer cap alone does
/// not bound them).
const MAX_PENDING: usize = 64;
/// Progress events are this far apart, at least.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// Data connections served at once; more wait for the recipient's retry.
const MAX_SERVING: usize = 8;
/// Accepted transfers fetching at once; the others wait their turn.
const MAX_FETCHING: usize = 4;
/// Open files the transfers may hold at once: a served connection's
/// socket, the handle that cuts it and the file read; a fetch's socket,
/// cutter, download folder, file written and the last whole one; and the
/// record writer's.
pub(crate) const MAX_FDS: usize = 3 * MAX_SERVING + 5 * MAX_FETCHING + 2;

/// Every transfer of this daemon, both ways; cheap to clone.
#[derive(Clone)]
pub(crate) struct Transfers {
    inner: Arc<Inner>,
}

struct Inner {
    book: Mutex<Book>,
    /// Places for fetches running at once.
    fetching: Arc<tokio::sync::Semaphore>,
    events: broadcast::Sender<Arc<TransferInfo>>,
    /// Where records are written (`None`: no state folder; nothing
    /// survives a restart).
    records: Option<Records>,
    files: Files,
}

#[derive(Default)]
struct Book {
    entries: HashMap<String, Entry>,
    next: u64,
    serving: usize,
    stopped: bool,
}

struct Entry {
    info: TransferInfo,
    /// Order of creation, for listing.
    order: u64,
    key: [u8; KEY_LEN],
    side: Side,
    /// The data connections running now, to cut them.
    conns: Vec<(u64, TcpStream)>,
    last_event: Instant,
    last_done: u64,
    /// A fetch loop runs for it (incoming).
    fetching: bool,
}

/// What each end keeps of a transfer besides what it shows.
#[derive(Clone)]
enum Side {
    Out(Arc<Outgoing>),
    In(Incoming),
}

/// An offer of ours: what it lists and where each file is read from.
pub(super) struct Outgoing {
    pub(super) listing: Vec<u8>,
    /// What the offer names the listing by.
    root: [u8; 32],
    pub(super) sources: Vec<Source>,
}

impl Outgoing {
    fn new(listing: Vec<u8>, sources: Vec<Source>) -> Self {
        Self {
            root: shared::transfer::listing_root(&listing),
            listing,
            sources,
        }
    }
}

/// A file we offered, as it was when offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Source {
    pub(super) path: PathBuf,
    pub(super) size: u64,
    /// Nanoseconds since the epoch it was last modified, when offered.
    pub(super) modified: Option<u64>,
    /// Its chunk hashes, as `HASHES` sends them (hex when written down).
    #[serde(with = "hex_bytes")]
    pub(super) hashes: Vec<u8>,
}

/// Bytes as hex in a record.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&shared::keys::hex(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        shared::keys::unhex_vec(&text).ok_or_else(|| D::Error::custom("not hex"))
    }
}

/// An offer to us: the listing's root, and once the listing was fetched
/// (the sender sends it on every connection) where each file lands, and
/// how many landed.
#[derive(Clone, Default)]
pub(super) struct Incoming {
    pub(super) listing_root: [u8; 32],
    /// The sender's chat port, as its offer said.
    pub(super) port: u16,
    pub(super) dests: Arc<Vec<PathBuf>>,
    /// Files whole, verified and under their names, in order.
    pub(super) landed: usize,
}

fn no_such(id: &str) -> RpcError {
    RpcError::new(
        code::NO_SUCH_TRANSFER,
        format!("no offer waits for an answer with id {id:?} (see `p2pchat transfers`)"),
    )
}

impl Entry {
    fn new(info: TransferInfo, order: u64, key: [u8; KEY_LEN], side: Side) -> Self {
        Self {
            last_done: info.done,
            info,
            order,
            key,
            side,
            conns: Vec::new(),
            last_event: Instant::now(),
            fetching: false,
        }
    }

    fn record(&self) -> Record {
        let mut r = Record {
            info: self.info.clone(),
            key: hex(&self.key),
            listing_root: String::new(),
            port: 0,
            listing: None,
            sources: Vec::new(),
            dests: Vec::new(),
            landed: 0,
        };
        match &self.side {
            Side::Out(o) => {
                r.listing_root = hex(&o.root);
                r.listing = Some(String::from_utf8_lossy(&o.listing).into_owned());
                r.sources.clone_from(&o.sources);
            }
            Side::In(i) => {
                r.listing_root = hex(&i.listing_root);
                r.port = i.port;
                r.dests = i.dests.to_vec();
                r.landed = i.landed;
            }
        }
        r
    }
}

impl Transfers {
    /// Reads what the last life left under `state_dir` (`transfers/`).
    pub(crate) fn load(state_dir: Option<&Path>, files: Files) -> Self {
        let records = state_dir.map(|d| Records::new(d.join("transfers")));
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let mut left = records.as_ref().map(Records::load).unwrap_or_default();
        // Offers answered come last, newest first: the newest are kept and
        // the rest forgotten. They go into the book first, oldest first,
        // as the book drops the oldest finished: before what is still
        // live, which may finish later.
        let first_answered = left.iter().position(|r| r.info.state.is_over());
        if let Some(at) = first_answered {
            let mut answered = left.split_off(at);
            let keep = answered.len().min(KEEP_FINISHED);
            for gone in answered.drain(keep..) {
                if let Some(r) = &records {
                    r.remove(&gone.info.id);
                }
            }
            answered.reverse();
            answered.append(&mut left);
            left = answered;
        }
        let t = Self {
            inner: Arc::new(Inner {
                book: Mutex::default(),
                fetching: Arc::new(tokio::sync::Semaphore::new(MAX_FETCHING)),
                events,
                records,
                files,
            }),
        };
        for r in left {
            t.restore(r);
        }
        t
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.inner.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Transfer events, for an API subscriber.
    pub(crate) fn events(&self) -> broadcast::Receiver<Arc<TransferInfo>> {
        self.inner.events.subscribe()
    }

    /// Every transfer known, oldest first.
    pub(crate) fn list(&self) -> Vec<TransferInfo> {
        let book = self.book();
        let mut all: Vec<&Entry> = book.entries.values().collect();
        all.sort_by_key(|e| e.order);
        all.iter().map(|e| e.info.clone()).collect()
    }

    /// Ends every data connection: the daemon stops.
    pub(crate) fn stop(&self) {
        let mut all = Vec::new();
        {
            let mut book = self.book();
            book.stopped = true;
            for e in book.entries.values_mut() {
                all.extend(e.conns.drain(..).map(|(_, c)| c));
            }
        }
        cut(all);
    }

    /// Waits until every record handed to the writer is on disk (at stop).
    pub(crate) fn flush(&self) {
        if let Some(r) = &self.inner.records {
            r.flush();
        }
    }

    fn emit(&self, info: &TransferInfo) {
        let _ = self.inner.events.send(Arc::new(info.clone()));
    }

    /// Hands `entry`'s record to the writer, or its removal once over.
    /// An offer to us that is over stays written down, without where its
    /// files went: its sender, which may not have heard our answer, offers
    /// it again after our restart, and gets the same answer instead of a
    /// second fetch.
    fn save(&self, entry: &Entry) {
        if let Some(r) = &self.inner.records {
            match (&entry.side, entry.info.state.is_over()) {
                (Side::In(_), true) => {
                    let mut answered = entry.record();
                    answered.dests = Vec::new();
                    answered.landed = 0;
                    r.write(&answered);
                }
                (Side::Out(_), true) => r.remove(&entry.info.id),
                (_, false) => r.write(&entry.record()),
            }
        }
    }

    /// Changes a transfer's state (and reason), tells subscribers, and
    /// writes it down (or removes its record once it is over). False when
    /// nothing changed (it was over already).
    fn set_state(&self, id: &str, state: TransferState, reason: Option<String>) -> bool {
        let mut ended = Vec::new();
        let info = {
            let mut book = self.book();
            let Some(e) = book.entries.get_mut(id) else {
                return false;
            };
            if e.info.state.is_over() || (e.info.state == state && e.info.reason == reason) {
                return false;
            }
            // Active and waiting are one to a restart (it resumes either):
            // flipping between them writes nothing down.
            let moving =
                |s: TransferState| matches!(s, TransferState::Active | TransferState::Waiting);
            let write = !(moving(e.info.state) && moving(state));
            e.info.state = state;
            e.info.reason = reason;
            if state != TransferState::Active {
                e.info.rate = 0;
            }
            if state.is_over() {
                ended.extend(e.conns.drain(..).map(|(_, c)| c));
            }
            if write {
                self.save(e);
            }
            let info = e.info.clone();
            if state.is_over() {
                for gone in prune(&mut book) {
                    if let Some(r) = &self.inner.records {
                        r.remove(&gone);
                    }
                }
            }
            info
        };
        cut(ended);
        self.emit(&info);
        true
    }

    /// Bytes done moved on: a progress event now and then.
    fn progress(&self, id: &str, done: u64) {
        let info = {
            let mut book = self.book();
            let Some(e) = book.entries.get_mut(id).filter(|e| !e.info.state.is_over()) else {
                return;
            };
            e.info.done = done;
            let now = Instant::now();
            let since = now.duration_since(e.last_event);
            if since < PROGRESS_EVERY {
                return;
            }
            let moved = done.saturating_sub(e.last_done);
            e.info.rate = (u128::from(moved) * 1000 / since.as_millis().max(1))
                .try_into()
                .unwrap_or(u64::MAX);
            e.last_event = now;
            e.last_done = done;
            e.info.clone()
        };
        self.emit(&info);
    }

    fn add(&self, info: TransferInfo, key: [u8; KEY_LEN], side: Side) {
        let info = {
            let mut book = self.book();
            book.next += 1;
            let e = Entry::new(info, book.next, key, side);
            self.save(&e);
            let info = e.info.clone();
            book.entries.insert(info.id.clone(), e);
            info
        };
        self.emit(&info);
    }

    /// Registers a data connection of `id` so it can be cut; `None` when
    /// the daemon stops or the transfer is over.
    fn register(&self, id: &str, conn: TcpStream) -> Option<u64> {
        let (n, older) = {
            let mut book = self.book();
            if book.stopped {
                return None;
            }
            book.next += 1;
            let n = book.next;
            let e = book.entries.get_mut(id)?;
            if e.info.state.is_over() {
                return None;
            }
            // One connection a transfer: a newer one (the other end came
            // back while we still waited on the old) ends the older.
            let older: Vec<TcpStream> = e.conns.drain(..).map(|(_, c)| c).collect();
            e.conns.push((n, conn));
            (n, older)
        };
        cut(older);
        Some(n)
    }

    /// Forgets data connection `n` of `id`; whether another still runs.
    fn unregister(&self, id: &str, n: u64) -> bool {
        let mut book = self.book();
        let Some(e) = book.entries.get_mut(id) else {
            return false;
        };
        e.conns.retain(|(k, _)| *k != n);
        !e.conns.is_empty()
    }

    /// Bytes came in on a connection of `id`.
    fn received(&self, id: &str, n: u64) {
        if let Some(e) = self.book().entries.get_mut(id) {
            e.info.transferred += n;
        }
    }

    fn is_over(&self, id: &str) -> bool {
        self.book()
            .entries
            .get(id)
            .is_none_or(|e| e.info.state.is_over())
    }

    fn done_of(&self, id: &str) -> u64 {
        self.book().entries.get(id).map_or(0, |e| e.info.done)
    }

    fn restore(&self, r: Record) {
        let Some(key) = shared::keys::unhex::<KEY_LEN>(&r.key) else {
            return;
        };
        let Some(listing_root) = shared::keys::unhex::<32>(&r.listing_root) else {
            return;
        };
        let mut info = r.info;
        let answered = info.state.is_over();
        if (answered && info.direction == TransferDirection::Out)
            || !shared::transfer::valid_id(&info.id)
        {
            return;
        }
        info.rate = 0;
        if info.state == TransferState::Active {
            info.state = TransferState::Waiting;
        }
        let side = match info.direction {
            TransferDirection::Out => {
                let Some(listing) = r.listing else { return };
                Side::Out(Arc::new(Outgoing::new(listing.into_bytes(), r.sources)))
            }
            TransferDirection::In => Side::In(Incoming {
                listing_root,
                port: r.port,
                dests: Arc::new(r.dests),
                landed: r.landed,
            }),
        };
        let mut book = self.book();
        book.next += 1;
        let e = Entry::new(info, book.next, key, side);
        book.entries.insert(e.info.id.clone(), e);
    }

    // --- what the data threads ask ---

    /// Our offer `id` to the holder of `key`, if it is live.
    fn outgoing(&self, id: &str, key: &[u8; KEY_LEN]) -> Option<Arc<Outgoing>> {
        let book = self.book();
        let e = book.entries.get(id)?;
        match &e.side {
            Side::Out(o) if e.key == *key && !e.info.state.is_over() => Some(o.clone()),
            _ => None,
        }
    }

    fn incoming(&self, id: &str) -> Option<(Incoming, TransferInfo, [u8; KEY_LEN])> {
        let book = self.book();
        let e = book.entries.get(id)?;
        match &e.side {
            Side::In(i) => Some((i.clone(), e.info.clone(), e.key)),
            Side::Out(_) => None,
        }
    }

    /// What the recipient knows of its files now (the listing and where
    /// each lands, or how many landed): written down, so that a restart
    /// goes on into the same `.part` files.
    fn incoming_changed(&self, id: &str, inc: &Incoming) {
        let mut book = self.book();
        if let Some(e) = book.entries.get_mut(id) {
            e.side = Side::In(inc.clone());
            self.save(e);
        }
    }

    /// A place among the connections served at once, if one is free.
    fn serving(&self) -> Option<Serving> {
        let mut book = self.book();
        if book.serving >= MAX_SERVING {
            return None;
        }
        book.serving += 1;
        Some(Serving(self.clone()))
    }
}

/// A place among the connections served at once, given back when dropped.
struct Serving(Transfers);

impl Drop for Serving {
    fn drop(&mut self) {
        let mut book = self.0.book();
        book.serving = book.serving.saturating_sub(1);
    }
}

/// Drops the oldest finished transfers past [`KEEP_FINISHED`]; returns
/// their ids.
fn prune(book: &mut Book) -> Vec<String> {
    let mut over: Vec<(u64, String)> = book
        .entries
        .values()
        .filter(|e| e.info.state.is_over())
        .map(|e| (e.order, e.info.id.clone()))
        .collect();
    if over.len() <= KEEP_FINISHED {
        return Vec::new();
    }
    over.sort_unstable();
    let dropped = over.len() - KEEP_FINISHED;
    over.into_iter()
        .take(dropped)
        .map(|(_, id)| {
            book.entries.remove(&id);
            id
        })
        .collect()
}

/// A transfer as it starts: `offer`, waiting for an answer.
fn offered(
    offer: &Offer,
    direction: TransferDirection,
    peer_id: &str,
    nick: &str,
    names: Vec<String>,
) -> TransferInfo {
    TransferInfo {
        id: offer.id.clone(),
        direction,
        peer_id: peer_id.to_owned(),
        nick: nick.to_owned(),
        names,
        files: offer.files,
        bytes: offer.bytes,
        done: 0,
        state: TransferState::Offered,
        reason: None,
        rate: 0,
        folder: None,
        transferred: 0,
    }
}

/// A fresh transfer id: 16 hex digits.
fn new_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

// --- what the API asks ---

/// `send {paths, to}`: hashes the files, then offers them to the peer.
pub(crate) async fn send(mesh: &Mesh, p: SendParams) -> Result<TransferInfo, RpcError> {
    let refuse = |why: String| RpcError::new(code::CANNOT_SEND, why);
    let peer = mesh.file_peer(&p.to)?;
    if p.paths.is_empty() {
        return Err(refuse("no files to send".into()));
    }
    let paths: Vec<PathBuf> = p.paths.iter().map(PathBuf::from).collect();
    if let Some(rel) = paths.iter().find(|p| !p.is_absolute()) {
        return Err(refuse(format!(
            "{} is not an absolute path (the daemon has no working folder of yours)",
            rel.display()
        )));
    }
    // Hashing reads every byte offered: background work, as a transfer is.
    let built = on_own_thread(move || offer::build(&paths))
        .await
        .map_err(|e| refuse(format!("hashing stopped: {e}")))?
        .map_err(refuse)?;
    let id = new_id();
    let offer = Offer {
        id: id.clone(),
        files: built.sources.len() as u64,
        bytes: built.bytes,
        names: built.names.clone(),
        listing: hex(&shared::transfer::listing_root(&built.listing)),
        port: mesh.port(),
    };
    let info = offered(
        &offer,
        TransferDirection::Out,
        &peer.id,
        &peer.nick,
        built.names,
    );
    let outgoing = Outgoing::new(built.listing, built.sources);
    mesh.transfers()
        .add(info.clone(), peer.key, Side::Out(Arc::new(outgoing)));
    let mut msg = mesh.own_line(MessageType::FileOffer);
    msg.offer = Some(Box::new(offer));
    mesh.send_to_peer(&peer.id, Bytes::from(msg.encode())).await;
    info!(id, to = %peer.nick, files = info.files, bytes = info.bytes, "offered files");
    Ok(info)
}

/// `accept {id}`: checks there is room, then fetches.
pub(crate) fn accept(mesh: &Mesh, id: &str) -> Result<TransferInfo, RpcError> {
    let t = mesh.transfers();
    let (_, info, _) = t
        .incoming(id)
        .filter(|(_, i, _)| i.state == TransferState::Offered)
        .ok_or_else(|| no_such(id))?;
    let room = |why: String| RpcError::new(code::NO_ROOM_FOR_FILES, why);
    let dir = t.inner.files.download_dir.clone().ok_or_else(|| {
        room("there is no download folder: start p2pchatd with --download-dir, or set [files] download_dir".into())
    })?;
    std::fs::create_dir_all(&dir).map_err(|e| {
        room(format!(
            "cannot make the download folder {}: {e}",
            dir.display()
        ))
    })?;
    let free = free_bytes(&dir).map_err(|e| {
        room(format!(
            "cannot tell the free space at {}: {e}",
            dir.display()
        ))
    })?;
    // What the transfers accepted before still need is spoken for.
    let promised: u64 = t
        .book()
        .entries
        .values()
        .filter(|e| matches!(e.side, Side::In(_)))
        .filter(|e| matches!(e.info.state, TransferState::Active | TransferState::Waiting))
        .map(|e| e.info.bytes.saturating_sub(e.info.done))
        .sum();
    let needed = info.bytes.saturating_add(promised);
    if free < needed {
        return Err(room(format!(
            "{} needs {}{}, and {} has {} free",
            info.names.first().map_or("the offer", String::as_str),
            human_bytes(info.bytes),
            if promised > 0 {
                format!(
                    " besides the {} transfers under way need",
                    human_bytes(promised)
                )
            } else {
                String::new()
            },
            dir.display(),
            human_bytes(free)
        )));
    }
    let info = {
        let mut book = t.book();
        let e = book.entries.get_mut(id).ok_or_else(|| no_such(id))?;
        e.info.folder = Some(dir.display().to_string());
        e.info.clone()
    };
    t.set_state(id, TransferState::Waiting, None);
    info!(id, from = %info.nick, "accepted an offer");
    start_fetch(mesh, id);
    Ok(TransferInfo {
        state: TransferState::Waiting,
        ..info
    })
}

/// `decline {id}`: says no to the sender.
pub(crate) async fn decline(mesh: &Mesh, id: &str) -> Result<TransferInfo, RpcError> {
    let t = mesh.transfers();
    let (_, info, _) = t
        .incoming(id)
        .filter(|(_, i, _)| i.state == TransferState::Offered)
        .ok_or_else(|| no_such(id))?;
    t.set_state(id, TransferState::Declined, None);
    let line = answer_line(mesh, id, None);
    mesh.send_to_peer(&info.peer_id, line).await;
    Ok(TransferInfo {
        state: TransferState::Declined,
        ..info
    })
}

fn answer_line(mesh: &Mesh, id: &str, reason: Option<String>) -> Bytes {
    answer_of(mesh, id, reason, false)
}

/// The recipient's word that every file of `id` is whole: also on the
/// link, as the fetch connection's last `DONE` may not have got through.
fn done_line(mesh: &Mesh, id: &str) -> Bytes {
    answer_of(mesh, id, None, true)
}

fn answer_of(mesh: &Mesh, id: &str, reason: Option<String>, done: bool) -> Bytes {
    let mut msg = mesh.own_line(MessageType::FileAnswer);
    msg.answer = Some(Box::new(Answer {
        id: id.to_owned(),
        reason,
        done,
    }));
    Bytes::from(msg.encode())
}

/// Free bytes for us at `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

// --- what peers say ---

/// Who sent an offer or an answer, as its link knows it.
pub(crate) struct From<'a> {
    pub(crate) id: &'a Arc<str>,
    pub(crate) key: [u8; KEY_LEN],
    pub(crate) nick: &'a str,
    pub(crate) trust: Option<Trust>,
}

/// A peer offers us files. `Err` says why the line is malformed (the link
/// counts it); an offer we cannot take is refused with an answer.
pub(crate) fn heard_offer(
    mesh: &Mesh,
    from: &From<'_>,
    offer: Option<Box<Offer>>,
) -> Result<(), String> {
    let offer = offer.ok_or("a file_offer line without an offer")?;
    offer
        .check()
        .map_err(|e| format!("refused an offer: {e}"))?;
    let listing_root = shared::keys::unhex::<32>(&offer.listing).ok_or("a bad listing root")?;
    let t = mesh.transfers();
    let refusal = {
        let book = t.book();
        if let Some(e) = book.entries.get(&offer.id) {
            // An offer heard again (the sender's link came back): what we
            // answered may not have reached it.
            let ours_to_answer = matches!(e.side, Side::In(_))
                && *e.info.peer_id == **from.id
                && matches!(
                    e.info.state,
                    TransferState::Declined | TransferState::Failed
                );
            let again = ours_to_answer.then(|| answer_line(mesh, &offer.id, e.info.reason.clone()));
            drop(book);
            if let Some(line) = again {
                mesh.send_to_peer_now(from.id, &line);
            }
            return Ok(());
        }
        // Offers waiting and transfers under way alike: an auto-accepted
        // offer leaves the first kind at once.
        let live = |e: &&Entry| matches!(e.side, Side::In(_)) && !e.info.state.is_over();
        let pending = book.entries.values().filter(live);
        let (all, theirs) = pending.fold((0, 0), |(all, theirs), e| {
            (all + 1, theirs + usize::from(*e.info.peer_id == **from.id))
        });
        if offer.bytes > t.inner.files.max_offer_bytes {
            Some(format!(
                "{} is more than the {} this peer takes in one offer",
                human_bytes(offer.bytes),
                human_bytes(t.inner.files.max_offer_bytes)
            ))
        } else if theirs >= MAX_PENDING_PER_PEER {
            Some(format!(
                "{MAX_PENDING_PER_PEER} offers of yours wait for an answer or move already"
            ))
        } else if all >= MAX_PENDING {
            Some(format!(
                "{MAX_PENDING} offers wait for an answer or move already"
            ))
        } else if t.inner.files.download_dir.is_none() {
            Some("this peer has no download folder".into())
        } else {
            None
        }
    };
    if let Some(why) = refusal {
        debug!(peer = %from.id, id = offer.id, "refused an offer: {why}");
        mesh.send_to_peer_now(from.id, &answer_line(mesh, &offer.id, Some(why)));
        return Ok(());
    }
    let info = offered(
        &offer,
        TransferDirection::In,
        from.id,
        from.nick,
        offer.shown_names(),
    );
    info!(id = offer.id, from = %from.nick, files = offer.files, bytes = offer.bytes, "files offered");
    let side = Side::In(Incoming {
        listing_root,
        port: offer.port,
        ..Incoming::default()
    });
    t.add(info, from.key, side);
    if t.inner.files.auto_accept_verified
        && from.trust == Some(Trust::Verified)
        && let Err(e) = accept(mesh, &offer.id)
    {
        mesh.send_to_peer_now(
            from.id,
            &answer_line(mesh, &offer.id, Some(e.message.clone())),
        );
        t.set_state(&offer.id, TransferState::Failed, Some(e.message));
    }
    Ok(())
}

/// What peer `id` (key `key`) may have missed while its link was down,
/// as lines said again when it comes up: our offers it has not answered,
/// and our answers to its offers (declined, failed, cancelled, done) that
/// this life still holds.
pub(crate) fn offers_for(mesh: &Mesh, id: &str, key: &[u8; KEY_LEN]) -> Vec<Bytes> {
    let book = mesh.transfers().book();
    book.entries
        .values()
        .filter(|e| e.key == *key && *e.info.peer_id == *id)
        .filter_map(|e| match &e.side {
            Side::In(_)
                if matches!(
                    e.info.state,
                    TransferState::Declined | TransferState::Failed
                ) =>
            {
                Some(answer_line(mesh, &e.info.id, e.info.reason.clone()))
            }
            Side::In(_) if e.info.state == TransferState::Done => Some(done_line(mesh, &e.info.id)),
            Side::Out(o) if e.info.state == TransferState::Offered => {
                let mut msg = mesh.own_line(MessageType::FileOffer);
                msg.offer = Some(Box::new(Offer {
                    id: e.info.id.clone(),
                    files: e.info.files,
                    bytes: e.info.bytes,
                    names: e.info.names.clone(),
                    listing: hex(&o.root),
                    port: mesh.port(),
                }));
                Some(Bytes::from(msg.encode()))
            }
            _ => None,
        })
        .collect()
}

/// The other end said no: the recipient declined or refused an offer of
/// ours, or either end cancelled a transfer between us.
pub(crate) fn heard_answer(mesh: &Mesh, from: &Arc<str>, answer: Option<Box<Answer>>) {
    let Some(a) = answer else { return };
    let t = mesh.transfers();
    if a.done {
        // The recipient has every file: a transfer of ours to it that
        // moved (and lost its last DONE) is done.
        let moved = t.book().entries.get(&a.id).is_some_and(|e| {
            matches!(e.side, Side::Out(_))
                && *e.info.peer_id == **from
                && matches!(e.info.state, TransferState::Active | TransferState::Waiting)
        });
        if moved {
            t.set_state(&a.id, TransferState::Done, None);
        }
        return;
    }
    let found = {
        let book = t.book();
        book.entries
            .get(&a.id)
            .filter(|e| *e.info.peer_id == **from && !e.info.state.is_over())
            // All landed: only the last word is missing; no answer undoes it.
            .filter(|e| !matches!(&e.side, Side::In(i) if i.landed as u64 == e.info.files))
            .map(|e| {
                (
                    matches!(e.side, Side::Out(_)),
                    e.info.state,
                    e.info.nick.clone(),
                )
            })
    };
    let reason: Option<String> = a.reason.map(|r| {
        shared::text::sanitize_foreign_text(&r)
            .chars()
            .take(200)
            .collect()
    });
    match found {
        Some((true, TransferState::Offered, _)) => {
            t.set_state(&a.id, TransferState::Declined, reason);
        }
        Some((_, _, nick)) => {
            let why = match reason {
                Some(r) => format!("{nick} stopped it: {r}"),
                None => format!("{nick} stopped it"),
            };
            t.set_state(&a.id, TransferState::Failed, Some(why));
        }
        None => {}
    }
}

/// `cancel {id}`: stops a transfer either way, offered or under way; the
/// other end hears it. What arrived stays in its `.part`.
pub(crate) async fn cancel(mesh: &Mesh, id: &str) -> Result<TransferInfo, RpcError> {
    let t = mesh.transfers();
    let info = t
        .book()
        .entries
        .get(id)
        .filter(|e| !e.info.state.is_over())
        .map(|e| e.info.clone())
        .ok_or_else(|| {
            RpcError::new(
                code::NO_SUCH_TRANSFER,
                format!("no transfer under way has id {id:?} (see `p2pchat transfers`)"),
            )
        })?;
    let state = match (info.direction, info.state) {
        (TransferDirection::In, TransferState::Offered) => TransferState::Declined,
        _ => TransferState::Failed,
    };
    let reason = (state == TransferState::Failed).then(|| "cancelled".to_owned());
    if !t.set_state(id, state, reason.clone()) {
        // It ended meanwhile (done, say): as it is now.
        return t
            .book()
            .entries
            .get(id)
            .map(|e| e.info.clone())
            .ok_or_else(|| no_such(id));
    }
    let line = answer_line(mesh, id, reason.clone());
    mesh.send_to_peer(&info.peer_id, line).await;
    Ok(TransferInfo {
        state,
        reason,
        ..info
    })
}

// --- the recipient's fetch loop ---

/// Resumes what the last life accepted; called once the mesh runs.
pub(crate) fn resume(mesh: &Mesh) {
    let ids: Vec<String> = mesh
        .transfers()
        .book()
        .entries
        .values()
        .filter(|e| matches!(e.side, Side::In(_)))
        .filter(|e| matches!(e.info.state, TransferState::Active | TransferState::Waiting))
        .map(|e| e.info.id.clone())
        .collect();
    for id in ids {
        start_fetch(mesh, &id);
    }
}

fn start_fetch(mesh: &Mesh, id: &str) {
    {
        let mut book = mesh.transfers().book();
        match book.entries.get_mut(id) {
            Some(e) if !e.fetching => e.fetching = true,
            _ => return,
        }
    }
    let (m, id) = (mesh.clone(), id.to_owned());
    mesh.spawn(async move {
        fetch::run(&m, &id).await;
        if let Some(e) = m.transfers().book().entries.get_mut(&id) {
            e.fetching = false;
        }
    });
}

/// Ends data connections, from a thread of their own (called outside the
/// book's lock): the kernel's lock on a socket is held by the thread
/// copying bytes through it, which may be an idle-class thread that an
/// outside load keeps from running, and the daemon's thread must not wait
/// on that. If no thread can start, here, as a last resort.
fn cut(conns: Vec<TcpStream>) {
    if conns.is_empty() {
        return;
    }
    let shut = |conns: &[TcpStream]| {
        for c in conns {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    };
    let conns = Arc::new(conns);
    let theirs = conns.clone();
    let spawned = std::thread::Builder::new()
        .name("p2pchat-cut".into())
        .stack_size(64 * 1024)
        .spawn(move || shut(&theirs));
    if spawned.is_err() {
        shut(&conns);
    }
}

/// What a transfer's bulk work tells as it goes, without taking a lock the
/// daemon's thread takes: the bytes done, in an atomic; on a channel, the
/// recipient's landing state (a new record to write down), the question
/// whether the transfer is over, and lines for the log. The thread that
/// started the work answers and hands on ([`in_idle_class`]).
pub(super) struct Report {
    done: Arc<AtomicU64>,
    told: std::sync::mpsc::Sender<Told>,
}

/// What the bulk work tells the thread that started it.
enum Told {
    /// What the recipient knows of its files now.
    Incoming(Incoming),
    /// A question: is the transfer over (cancelled, failed)?
    IsOver(std::sync::mpsc::SyncSender<bool>),
    /// Something for the log (a warning, or for debugging).
    Log { warning: bool, text: String },
}

impl Report {
    /// `done` bytes of the transfer have moved.
    pub(super) fn progress(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
    }

    /// What the recipient knows of its files changed: write it down.
    pub(super) fn incoming_changed(&self, inc: &Incoming) {
        let _ = self.told.send(Told::Incoming(inc.clone()));
    }

    /// A warning for the log, written by the thread that started the work
    /// (the log's writer is locked while it writes).
    pub(super) fn warn(&self, text: String) {
        let _ = self.told.send(Told::Log {
            warning: true,
            text,
        });
    }

    /// Likewise, for debugging.
    pub(super) fn debug(&self, text: String) {
        let _ = self.told.send(Told::Log {
            warning: false,
            text,
        });
    }

    /// Whether the transfer is over, asked of the thread that started the
    /// work (which looks, under the lock).
    pub(super) fn is_over(&self) -> bool {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        if self.told.send(Told::IsOver(answer)).is_err() {
            return true;
        }
        answered.recv().unwrap_or(true)
    }
}

/// Runs `work`, a transfer's bulk (sealing or opening, hashing, reading or
/// writing its files), on a thread of its own in the idle class, so that a
/// chat thread that wakes takes the CPU from it at once; blocks the calling
/// thread (one at nice 10, from [`on_own_thread`]) meanwhile, which hands
/// on what the work reports under the transfers' lock: the work itself
/// never takes it, as an idle-class thread preempted there could keep the
/// daemon's thread waiting on it for as long as an outside load lasts.
fn in_idle_class<T: Send + 'static>(
    t: &Transfers,
    id: &str,
    work: impl FnOnce(&Report) -> T + Send + 'static,
) -> Result<T, String> {
    const NOTHING_YET: u64 = u64::MAX;
    let done = Arc::new(AtomicU64::new(NOTHING_YET));
    let (told, heard) = std::sync::mpsc::channel();
    let report = Report {
        done: done.clone(),
        told,
    };
    let worker = std::thread::Builder::new()
        .name("p2pchat-bulk".into())
        .spawn(move || {
            crate::service::idle_priority("a transfer's bulk work");
            work(&report)
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let mut told = NOTHING_YET;
    let mut tell = || {
        let now = done.load(Ordering::Relaxed);
        if now != told && now != NOTHING_YET {
            told = now;
            t.progress(id, now);
        }
    };
    // Until the work ends (and drops its report): what it tells at once,
    // the bytes done now and then.
    loop {
        match heard.recv_timeout(PROGRESS_EVERY) {
            Ok(Told::Incoming(inc)) => t.incoming_changed(id, &inc),
            Ok(Told::IsOver(answer)) => {
                let _ = answer.send(t.is_over(id));
            }
            Ok(Told::Log {
                warning: true,
                text,
            }) => tracing::warn!(id, "{text}"),
            Ok(Told::Log {
                warning: false,
                text,
            }) => debug!(id, "{text}"),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        tell();
    }
    let out = worker
        .join()
        .map_err(|_| "the transfer thread stopped".to_owned());
    tell();
    out
}

/// Runs `work` on a thread of its own at a lower priority than the chat,
/// and waits for what it returns.
async fn on_own_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("p2pchat-file".into())
        .spawn(move || {
            crate::service::background_priority("a transfer thread");
            let _ = tx.send(work());
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    rx.await
        .map_err(|_| "the transfer thread stopped".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's scheduling policy (field 41 of its `stat`).
    fn policy_of_this_thread() -> Option<i32> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .nth(38)?
            .parse()
            .ok()
    }

    #[test]
    fn bulk_work_runs_in_the_idle_class_and_reports_through_its_starter() {
        let t = Transfers::load(None, Files::default());
        let offer = Offer {
            id: "0123456789abcdef".into(),
            files: 1,
            bytes: 5,
            names: vec!["x".into()],
            listing: hex(&[1; 32]),
            port: 1,
        };
        let info = offered(
            &offer,
            TransferDirection::Out,
            "k1",
            "eve",
            offer.names.clone(),
        );
        let side = Side::Out(Arc::new(Outgoing::new(Vec::new(), Vec::new())));
        t.add(info, [7; KEY_LEN], side);
        let id = offer.id.clone();
        let elsewhere = t.clone();
        let (policy, before, after) = in_idle_class(&t, &offer.id, move |r| {
            r.progress(5);
            let before = r.is_over();
            elsewhere.set_state(&id, TransferState::Failed, Some("cancelled".into()));
            (policy_of_this_thread(), before, r.is_over())
        })
        .unwrap();
        assert_eq!(policy, Some(libc::SCHED_IDLE));
        assert!(!before && after, "the starter answers from the book");
        assert_eq!(t.done_of(&offer.id), 5, "the bytes done reach the book");
        assert_eq!(
            policy_of_this_thread(),
            Some(libc::SCHED_OTHER),
            "the starter's thread is left as it was"
        );
    }

    fn offer_to_us(n: usize, state: TransferState) -> Record {
        let offer = Offer {
            id: format!("{n:016x}"),
            files: 1,
            bytes: 5,
            names: vec!["x".into()],
            listing: hex(&[1; 32]),
            port: 1,
        };
        let names = offer.names.clone();
        Record {
            info: TransferInfo {
                state,
                ..offered(&offer, TransferDirection::In, "k1", "eve", names)
            },
            key: hex(&[7; KEY_LEN]),
            listing_root: offer.listing,
            port: offer.port,
            listing: None,
            sources: Vec::new(),
            dests: Vec::new(),
            landed: 0,
        }
    }

    /// 64 offers answered in a last life and one still waiting: the one
    /// answered after the restart is kept, and the oldest answer goes.
    #[test]
    fn an_offer_answered_after_a_restart_outlives_older_answers() {
        let dir = testkit::TempDir::new("answered");
        let records = Records::new(dir.path().join("transfers"));
        // The newest is the one written last, by its file's time: set
        // here, a second apart, in the past.
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for n in 0..KEEP_FINISHED {
            let r = offer_to_us(n, TransferState::Declined);
            records.write(&r);
            records.flush();
            let file = dir
                .path()
                .join("transfers")
                .join(format!("{}.json", r.info.id));
            std::fs::File::options()
                .write(true)
                .open(&file)
                .and_then(|f| f.set_modified(long_ago + std::time::Duration::from_secs(n as u64)))
                .unwrap();
        }
        let waiting = offer_to_us(KEEP_FINISHED, TransferState::Offered);
        records.write(&waiting);
        records.flush();
        let files = Files {
            download_dir: None,
            max_offer_bytes: 1 << 30,
            auto_accept_verified: false,
        };
        let t = Transfers::load(Some(dir.path()), files.clone());
        assert_eq!(t.list().len(), KEEP_FINISHED + 1);
        assert!(t.set_state(&waiting.info.id, TransferState::Declined, None));
        let ids: Vec<String> = t.list().into_iter().map(|i| i.id).collect();
        assert_eq!(ids.len(), KEEP_FINISHED);
        assert!(ids.contains(&waiting.info.id), "the newest answer is kept");
        assert!(!ids.contains(&offer_to_us(0, TransferState::Declined).info.id));
        // And so it is after the next start.
        t.flush();
        let again = Transfers::load(Some(dir.path()), files);
        let ids: Vec<String> = again.list().into_iter().map(|i| i.id).collect();
        assert_eq!(ids.len(), KEEP_FINISHED);
        assert!(ids.contains(&waiting.info.id));
    }
}
