//! The recipient's end: a loop that dials the sender whenever it is
//! linked, and on a thread of its own fetches what is not verified yet.
//!
//! Files are fetched in order. Each chunk is checked against its hash,
//! then written at its place in the file's `.part`. A whole file is
//! forced to disk and then given its name; small ones are forced in
//! batches (one `syncfs` for up to 256), so a folder of many small files
//! is not held up by a disk flush each. How many files landed is written
//! down, so a restart goes on with the next one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shared::api::{TransferInfo, TransferState};
use shared::keys::KEY_LEN;
use shared::transfer::fetch::{CHUNK as CHUNK_MSG, DONE, FROM, GET, Get, HASHES, LISTING};
use shared::transfer::{
    CHUNK, Listed, MAX_LISTING_BYTES, Manifest, chunk_len, chunks_of, listing_root, part_of,
    safe_path, shown_name, unique_destination, unique_destination_from,
};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::conn::{Conn, Stop};
use super::{Incoming, Report, in_idle_class, on_own_thread};
use crate::mesh::Mesh;

/// Waits between tries to reach the sender: from this, doubling, ...
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// ... to this.
const RETRY_MOST: Duration = Duration::from_secs(10);
/// Time to reach the sender's port.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Chunks that may fail their hash in one transfer before it fails: a
/// sender whose file changes under it, or that lies, is not tried forever.
const MAX_MISMATCHES: u32 = 8;
/// How long the sender may take to say it heard that all is whole.
const DONE_WAIT: Duration = Duration::from_secs(10);
/// Whole files waiting to be forced to disk and named, at most: ...
const LAND_FILES: usize = 256;
/// ... and bytes. A file this large is forced on its own at once.
const LAND_BYTES: u64 = 8 << 20;

/// What the fetch thread works with, and hands back for the next try.
struct Job {
    id: String,
    info: TransferInfo,
    inc: Incoming,
    /// The file being fetched and how many of its chunks are verified.
    verified: Option<(usize, u64)>,
    mismatches: u32,
}

/// Fetches transfer `id` until it is whole, fails, or the daemon stops.
pub(super) async fn run(mesh: &Mesh, id: &str) {
    let t = mesh.transfers().clone();
    let mut topology = mesh.watch_topology();
    let mut verified = None;
    let mut mismatches = 0;
    let mut wait = RETRY_FIRST;
    loop {
        let Some((inc, info, key)) = t.incoming(id) else {
            return;
        };
        if info.state.is_over() || mesh.cancel_token().is_cancelled() {
            return;
        }
        // All landed in a life that ended before it said so.
        if !inc.dests.is_empty() && inc.landed == inc.dests.len() {
            {
                t.set_state(id, TransferState::Done, None);
                return;
            }
        }
        if !mesh.is_linked(&info.peer_id) {
            tokio::select! {
                r = topology.changed() => if r.is_err() { return },
                () = mesh.cancel_token().cancelled() => return,
            }
            continue;
        }
        // A place among the fetches running at once, for as long as this
        // connection lasts.
        let place = tokio::select! {
            p = t.inner.fetching.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = mesh.cancel_token().cancelled() => return,
        };
        let reached = tokio::select! {
            r = connect(mesh, &info, &inc, &key) => r,
            () = mesh.cancel_token().cancelled() => return,
        };
        let conn = match reached {
            Ok(c) => c,
            Err(why) => {
                drop(place);
                debug!(id, "cannot fetch yet: {why}");
                t.set_state(id, TransferState::Waiting, Some(why));
                if !pause(mesh, &mut wait).await {
                    return;
                }
                continue;
            }
        };
        let cut = match conn.cutter() {
            Ok(c) => c,
            Err(e) => {
                drop(place);
                t.set_state(id, TransferState::Waiting, Some(e.to_string()));
                if !pause(mesh, &mut wait).await {
                    return;
                }
                continue;
            }
        };
        let Some(reg) = t.register(id, cut) else {
            return;
        };
        t.set_state(id, TransferState::Active, None);
        let worker = t.clone();
        let mut job = Job {
            id: id.to_owned(),
            info,
            inc,
            verified,
            mismatches,
        };
        let before = job.info.done;
        let job_id = job.id.clone();
        let r = on_own_thread(move || {
            in_idle_class(&worker, &job_id, move |report| {
                let mut conn = conn;
                let r = fetch_all(report, &mut conn, &mut job);
                if let Err(Stop::Fatal(why)) = &r {
                    conn.fail(why);
                }
                (job, conn.received, r)
            })
        })
        .await
        .and_then(|r| r);
        t.unregister(id, reg);
        drop(place);
        let (job, received, r) = match r {
            Ok(x) => x,
            Err(why) => {
                t.set_state(id, TransferState::Failed, Some(why));
                return;
            }
        };
        t.received(id, received);
        verified = job.verified;
        mismatches = job.mismatches;
        match r {
            Ok(()) => {
                info!(id, "files received, whole and verified");
                mesh.send_to_peer_now(&job.info.peer_id, &super::done_line(mesh, id));
                {
                    t.set_state(id, TransferState::Done, None);
                    return;
                }
            }
            Err(Stop::Fatal(why)) => {
                warn!(id, "a transfer failed: {why}");
                // Also on the link: the ERROR may not have got through.
                let line = super::answer_line(mesh, id, Some(why.clone()));
                mesh.send_to_peer_now(&job.info.peer_id, &line);
                t.set_state(id, TransferState::Failed, Some(why));
                return;
            }
            Err(Stop::Theirs(why)) => {
                warn!(id, "the sender stopped a transfer: {why}");
                let why = format!("{}: {why}", job.info.nick);
                {
                    t.set_state(id, TransferState::Failed, Some(why));
                    return;
                }
            }
            Err(Stop::Cut(why)) => {
                info!(
                    id,
                    "a transfer was cut ({why}); it goes on from what is verified"
                );
                if t.done_of(id) > before {
                    wait = RETRY_FIRST;
                }
                t.set_state(id, TransferState::Waiting, Some(why));
            }
        }
        if !pause(mesh, &mut wait).await {
            return;
        }
    }
}

/// Waits `wait`, then doubles it; false when the daemon stops meanwhile.
async fn pause(mesh: &Mesh, wait: &mut Duration) -> bool {
    let waited = tokio::select! {
        () = tokio::time::sleep(*wait) => true,
        () = mesh.cancel_token().cancelled() => false,
    };
    *wait = (*wait * 2).min(RETRY_MOST);
    waited
}

/// Dials the sender, names the offer, and checks it is the key that
/// offered.
async fn connect(
    mesh: &Mesh,
    info: &TransferInfo,
    inc: &Incoming,
    key: &[u8; KEY_LEN],
) -> Result<Conn, String> {
    let addr = mesh
        .fetch_addr(&info.peer_id, inc.port)
        .ok_or_else(|| format!("no address is known for {}", info.nick))?;
    let mut stream = timeout(CONNECT_WAIT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("{} did not answer at {addr}", info.nick))?
        .map_err(|e| format!("cannot reach {} at {addr}: {e}", info.nick))?;
    let _ = stream.set_nodelay(true);
    let mut hello = mesh.our_hello();
    hello.caps = Vec::new();
    hello.fetch = Some(info.id.clone());
    let est = timeout(
        mesh.timing().handshake_timeout,
        mesh.secure().initiate(&mut stream, hello),
    )
    .await
    .map_err(|_| format!("the handshake with {} at {addr} stalled", info.nick))?
    .map_err(|e| format!("the handshake with {} at {addr} failed: {e}", info.nick))?;
    if est.peer.key != *key {
        return Err(format!(
            "{addr} answered with another key than {}'s",
            info.nick
        ));
    }
    Conn::new(stream, est).map_err(|e| e.to_string())
}

/// Blocking: the listing, then every file not yet landed, each chunk
/// verified before it is written.
fn fetch_all(r: &Report, conn: &mut Conn, job: &mut Job) -> Result<(), Stop> {
    let folder = job
        .info
        .folder
        .clone()
        .map(PathBuf::from)
        .ok_or_else(|| Stop::Fatal("no download folder".into()))?;
    let body = conn.expect(LISTING, MAX_LISTING_BYTES)?;
    let listed = checked_listing(body, &job.inc.listing_root, &job.info)?;
    if job.inc.dests.len() != listed.len() {
        let dests = place(&folder, &listed)?;
        job.inc.dests = Arc::new(dests);
        r.incoming_changed(&job.inc);
        // Every `.part` is new and empty: nothing on disk to check.
        job.verified = Some((0, 0));
    }
    let dests = job.inc.dests.clone();
    // What landed in a life that ended before it was written down: told
    // once, after the look.
    let first_unseen = job.inc.landed;
    while job.inc.landed < listed.len() && !part_of(&dests[job.inc.landed]).exists() {
        let (l, _) = &listed[job.inc.landed];
        if !landed_whole(&dests[job.inc.landed], l) {
            return Err(Stop::Fatal(format!(
                "the partial file {} is gone",
                part_of(&dests[job.inc.landed]).display()
            )));
        }
        job.inc.landed += 1;
    }
    if job.inc.landed > first_unseen {
        r.incoming_changed(&job.inc);
    }
    let first = job.inc.landed;
    if first == listed.len() {
        return done(r, conn);
    }
    let from = job.verified.filter(|(f, _)| *f == first).map(|(_, k)| k);
    let get = serde_json::to_vec(&Get {
        file: u32::try_from(first).unwrap_or(u32::MAX),
        from,
    })
    .unwrap_or_default();
    conn.send(GET, &get)?;
    let mut landing = Landing::new(&folder)?;
    let fetched = fetch_files(r, conn, job, &listed, &mut landing, from);
    // What is whole lands even when the connection broke after it, so
    // the next one does not fetch it again.
    landing.land(r, job, &listed)?;
    fetched?;
    done(r, conn)
}

/// Says every file is whole, and waits a moment for the sender to say it
/// heard. Every file landed already: a sender that does not answer (it
/// went away, or is older) does not undo that.
fn done(r: &Report, conn: &mut Conn) -> Result<(), Stop> {
    conn.send(DONE, &[])?;
    conn.idle(DONE_WAIT)?;
    if let Err(Stop::Cut(why)) = conn.expect(DONE, 0) {
        r.debug(format!(
            "the sender did not say it heard that all is whole: {why}"
        ));
    }
    Ok(())
}

/// Every file from the first not landed, each chunk verified; whole files
/// go to `landing`.
fn fetch_files(
    r: &Report,
    conn: &mut Conn,
    job: &mut Job,
    listed: &[(Listed, PathBuf)],
    landing: &mut Landing,
    from: Option<u64>,
) -> Result<(), Stop> {
    let first = job.inc.landed;
    let dests = job.inc.dests.clone();
    let mut before: u64 = listed[..first].iter().map(|(l, _)| l.size).sum();
    for (f, (l, _)) in listed.iter().enumerate().skip(first) {
        let chunks = chunks_of(l.size);
        let body = conn.expect(HASHES, usize::try_from(chunks * 32).unwrap_or(usize::MAX))?;
        let hashes = body
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap_or([0; 32]))
            .collect();
        let manifest = Manifest::listed(l.size, hashes);
        let root = shared::keys::unhex::<32>(&l.root).unwrap_or_default();
        if !manifest.matches(&root) {
            return Err(Stop::Fatal(format!(
                "the chunk hashes of {} do not match the offer",
                shown_name(&l.name)
            )));
        }
        let part = part_of(&dests[f]);
        let file = open_part(&part)?;
        let k = match (f == first, from) {
            (true, Some(k)) => k,
            (true, None) => {
                let k = verified_on_disk(&file, &manifest);
                job.verified = Some((f, k));
                conn.send(FROM, &k.to_be_bytes())?;
                k
            }
            (false, _) => 0,
        };
        r.progress(before + (k * CHUNK as u64).min(l.size));
        for c in k..chunks {
            let body = conn.expect(CHUNK_MSG, CHUNK)?;
            let want = chunk_len(l.size, c);
            if body.len() != want {
                return Err(Stop::Fatal(format!(
                    "{} sent {} bytes for chunk {c} of {}, which holds {want}",
                    job.info.nick,
                    body.len(),
                    shown_name(&l.name)
                )));
            }
            if !manifest.verify(usize::try_from(c).unwrap_or(usize::MAX), body) {
                job.mismatches += 1;
                r.warn(format!(
                    "chunk {c} of {} did not match its hash",
                    shown_name(&l.name)
                ));
                if job.mismatches > MAX_MISMATCHES {
                    return Err(Stop::Fatal(format!(
                        "{MAX_MISMATCHES} chunks did not match their hashes: {}'s files changed, or its copy is damaged",
                        job.info.nick
                    )));
                }
                return Err(Stop::Cut(format!(
                    "chunk {c} of {} did not match its hash; fetching it again",
                    shown_name(&l.name)
                )));
            }
            file.write_all_at(body, c * CHUNK as u64)
                .map_err(|e| disk(&part, &e))?;
            job.verified = Some((f, c + 1));
            r.progress(before + c * CHUNK as u64 + want as u64);
        }
        file.set_len(l.size).map_err(|e| disk(&part, &e))?;
        landing.add(f, file, l.size);
        job.verified = None;
        if landing.full() {
            landing.land(r, job, listed)?;
        }
        before += l.size;
    }
    Ok(())
}

/// Whole files not yet forced to disk and named.
struct Landing {
    path: PathBuf,
    folder: File,
    files: Vec<usize>,
    bytes: u64,
    /// The last one's handle: a batch of one is forced on its own.
    last: Option<File>,
}

impl Landing {
    fn new(folder: &Path) -> Result<Self, Stop> {
        let path = folder.to_owned();
        let folder = File::open(folder).map_err(|e| disk(folder, &e))?;
        Ok(Self {
            path,
            folder,
            files: Vec::new(),
            bytes: 0,
            last: None,
        })
    }

    fn add(&mut self, f: usize, file: File, size: u64) {
        self.files.push(f);
        self.bytes += size;
        self.last = Some(file);
    }

    fn full(&self) -> bool {
        self.files.len() >= LAND_FILES || self.bytes >= LAND_BYTES
    }

    /// Forces the batch to disk, then gives each file its name, in order.
    fn land(
        &mut self,
        r: &Report,
        job: &mut Job,
        listed: &[(Listed, PathBuf)],
    ) -> Result<(), Stop> {
        if self.files.is_empty() {
            return Ok(());
        }
        if r.is_over() {
            // Cancelled: what arrived stays in its `.part`.
            return Err(Stop::Cut("the transfer is over".into()));
        }
        let synced = match (self.files.len(), &self.last) {
            (1, Some(f)) => f.sync_data(),
            _ => rustix::fs::syncfs(&self.folder).map_err(io::Error::from),
        };
        synced.map_err(|e| disk(&self.path, &e))?;
        let mut folders = std::collections::BTreeSet::new();
        let mut upto = job.inc.landed;
        for f in self.files.drain(..) {
            let dest = job.inc.dests[f].clone();
            let part = part_of(&dest);
            let named =
                land(&part, &dest, &self.path, &listed[f].1).map_err(|e| disk(&part, &e))?;
            if let Some(folder) = named.parent() {
                folders.insert(folder.to_owned());
            }
            // Where it is: a sibling's name, if its own was taken meanwhile
            // (rare: only then is the list, shared with the book, copied).
            if named != dest {
                Arc::make_mut(&mut job.inc.dests)[f] = named;
            }
            upto = f + 1;
        }
        // The names too are on disk before the count says they landed.
        for folder in folders {
            File::open(&folder)
                .and_then(|d| d.sync_all())
                .map_err(|e| disk(&folder, &e))?;
        }
        job.inc.landed = upto;
        self.bytes = 0;
        self.last = None;
        r.incoming_changed(&job.inc);
        Ok(())
    }
}

/// A file's `.part` (which may hold verified chunks), never through a
/// symbolic link.
fn open_part(part: &Path) -> Result<File, Stop> {
    crate::store::open_private(part).map_err(|e| disk(part, &e))
}

/// A disk error as the user reads it; the partial file stays.
fn disk(path: &Path, e: &io::Error) -> Stop {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        Stop::Fatal(format!(
            "the disk is full; what arrived stays in {}",
            path.display()
        ))
    } else {
        Stop::Fatal(format!("cannot write {}: {e}", path.display()))
    }
}

/// The listing, checked: it is the offer's, and it lists what the offer
/// said, each name safe to land (with where, inside the folder).
fn checked_listing(
    body: &[u8],
    root: &[u8; 32],
    info: &TransferInfo,
) -> Result<Vec<(Listed, PathBuf)>, Stop> {
    if listing_root(body) != *root {
        return Err(Stop::Fatal("the listing does not match the offer".into()));
    }
    let listed: Vec<Listed> = serde_json::from_slice(body)
        .map_err(|e| Stop::Fatal(format!("a malformed listing: {e}")))?;
    let total = listed
        .iter()
        .try_fold(0u64, |sum, l| sum.checked_add(l.size));
    if listed.len() as u64 != info.files || total != Some(info.bytes) {
        return Err(Stop::Fatal(format!(
            "the listing holds {} files and {} bytes; the offer said {} and {}",
            listed.len(),
            total.unwrap_or(u64::MAX),
            info.files,
            info.bytes
        )));
    }
    listed
        .into_iter()
        .map(|l| {
            if shared::keys::unhex::<32>(&l.root).is_none() {
                return Err(Stop::Fatal("a malformed listing: a bad root".into()));
            }
            let rel = safe_path(&l.name)
                .map_err(|e| Stop::Fatal(format!("refused {:?}: {e}", shown_name(&l.name))))?;
            Ok((l, rel))
        })
        .collect()
}

/// Where each file lands inside `dir`, its tree kept; each gets its
/// `.part` now, which holds its name against later arrivals.
fn place(dir: &Path, listed: &[(Listed, PathBuf)]) -> Result<Vec<PathBuf>, Stop> {
    let mut dests = Vec::with_capacity(listed.len());
    // Where numbering goes on, per name: an offer of 10,000 files of one
    // name looks at each number once, not 10,000 times.
    let mut numbers: HashMap<&Path, u32> = HashMap::new();
    // Listings go folder by folder: each is made once, not once a file.
    let mut made: Option<PathBuf> = None;
    for (l, rel) in listed {
        let whole = dir.join(rel);
        if let Some(parent) = whole.parent()
            && made.as_deref() != Some(parent)
        {
            std::fs::create_dir_all(parent).map_err(|e| disk(parent, &e))?;
            made = Some(parent.to_path_buf());
        }
        let next = numbers.entry(rel.as_path()).or_insert(0);
        let dest = loop {
            let dest = unique_destination_from(dir, rel, next)
                .ok_or_else(|| Stop::Fatal(format!("no free name for {}", shown_name(&l.name))))?;
            let part = part_of(&dest);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&part)
            {
                Ok(_) => break dest,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(disk(&part, &e)),
            }
        };
        dests.push(dest);
    }
    Ok(dests)
}

/// Chunks at the start of `file` that match their hashes.
fn verified_on_disk(mut file: &File, manifest: &Manifest) -> u64 {
    let mut buf = vec![0u8; CHUNK];
    let mut k = 0u64;
    for i in 0..manifest.hashes.len() {
        let want = chunk_len(manifest.size, i as u64);
        if file.read_exact(&mut buf[..want]).is_err() || !manifest.verify(i, &buf[..want]) {
            return k;
        }
        k += 1;
    }
    k
}

/// Whether `dest` is the listed file, whole (it landed before a restart
/// could write that down).
fn landed_whole(dest: &Path, l: &Listed) -> bool {
    let Ok(file) = File::open(dest) else {
        return false;
    };
    let root = shared::keys::unhex::<32>(&l.root).unwrap_or_default();
    Manifest::of(&file).is_ok_and(|m| m.size == l.size && m.root() == root)
}

/// Gives a whole file its name: `dest`, or a free sibling if something
/// took that meanwhile; never over an existing file.
fn land(part: &Path, dest: &Path, dir: &Path, rel: &Path) -> io::Result<PathBuf> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    let mut target = dest.to_path_buf();
    for _ in 0..16 {
        match renameat_with(CWD, part, CWD, &target, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(target),
            Err(rustix::io::Errno::EXIST) => {}
            // A file system without RENAME_NOREPLACE: look, then rename.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) if !target.exists() => {
                std::fs::rename(part, &target)?;
                return Ok(target);
            }
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
            Err(e) => return Err(e.into()),
        }
        target =
            unique_destination(dir, rel).ok_or_else(|| io::Error::other("no free name left"))?;
    }
    Err(io::Error::other("no free name left"))
}
