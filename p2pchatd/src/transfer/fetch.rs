//! The recipient's end: a loop that dials the sender whenever it is
//! linked, and on a thread of its own fetches what is not verified yet.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shared::api::{TransferInfo, TransferState};
use shared::keys::KEY_LEN;
use shared::transfer::fetch::{DONE, ERROR, FROM, GET, Get, HASHES, LIST, LISTING, MAX_CONTROL};
use shared::transfer::{
    CAP_FETCH, CHUNK, Listed, MAX_LISTING_BYTES, Manifest, chunk_len, chunks_of, listing_root,
    part_of, safe_path, shown_name, unique_destination,
};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::conn::Conn;
use super::serve::Stop;
use super::{Incoming, Transfers, on_own_thread};
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
        if !mesh.is_linked(&info.peer_id) {
            tokio::select! {
                r = topology.changed() => if r.is_err() { return },
                () = mesh.cancel_token().cancelled() => return,
            }
            continue;
        }
        let conn = match connect(mesh, &info, &inc, &key).await {
            Ok(c) => c,
            Err(why) => {
                debug!(id, "cannot fetch yet: {why}");
                t.set_state(id, TransferState::Waiting, Some(why));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = mesh.cancel_token().cancelled() => return,
                }
                wait = (wait * 2).min(RETRY_MOST);
                continue;
            }
        };
        let Some(reg) = conn.cutter().ok().and_then(|c| t.register(id, c)) else {
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
        let r = on_own_thread(move || {
            let mut conn = conn;
            let r = fetch_all(&worker, &mut conn, &mut job);
            (job, conn.received, r)
        })
        .await;
        t.unregister(id, reg);
        let (job, received, r) = match r {
            Ok(x) => x,
            Err(why) => return t.set_state(id, TransferState::Failed, Some(why)),
        };
        t.received(id, received);
        verified = job.verified;
        mismatches = job.mismatches;
        match r {
            Ok(()) => {
                info!(id, "files received, whole and verified");
                return t.set_state(id, TransferState::Done, None);
            }
            Err(Stop::Fatal(why)) => {
                warn!(id, "a transfer failed: {why}");
                return t.set_state(id, TransferState::Failed, Some(why));
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
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = mesh.cancel_token().cancelled() => return,
        }
        wait = (wait * 2).min(RETRY_MOST);
    }
}

/// Dials the sender and proves it is the key that offered.
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
    hello.caps = vec![CAP_FETCH.to_owned()];
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

fn sender_says(nick: &str, body: &[u8]) -> Stop {
    let why: String = shared::text::sanitize_foreign_text(&String::from_utf8_lossy(body))
        .chars()
        .take(300)
        .collect();
    Stop::Fatal(format!("{nick}: {why}"))
}

/// Blocking: the listing, then every file not yet whole, each chunk
/// verified before it is written.
fn fetch_all(t: &Transfers, conn: &mut Conn, job: &mut Job) -> Result<(), Stop> {
    let nick = job.info.nick.clone();
    conn.send(LIST, job.id.as_bytes())?;
    let listed = match conn.recv(|k| match k {
        LISTING => MAX_LISTING_BYTES,
        ERROR => MAX_CONTROL,
        _ => 0,
    })? {
        None => return Err(Stop::Cut("the sender closed the connection".into())),
        Some((ERROR, body)) => return Err(sender_says(&nick, body)),
        Some((LISTING, body)) => checked_listing(body, &job.inc.listing_root, &job.info)?,
        Some((kind, _)) => return Err(Stop::Fatal(format!("an unexpected message ({kind})"))),
    };
    if job.inc.dests.len() != listed.len() {
        let dir = PathBuf::from(job.info.folder.clone().unwrap_or_default());
        let dests = Arc::new(place(&dir, &listed)?);
        let listed = Arc::new(listed.clone());
        t.listed(&job.id, listed.clone(), dests.clone());
        job.inc.listed = Some(listed);
        job.inc.dests = dests;
        // Every `.part` is new and empty: nothing on disk to check.
        job.verified = Some((0, 0));
    }
    let dests = job.inc.dests.clone();
    // Files are fetched in order: the first whose `.part` is still there
    // is where it goes on.
    let Some(first) = (0..listed.len()).find(|&i| part_of(&dests[i]).exists()) else {
        conn.send(DONE, &[])?;
        return Ok(());
    };
    let from = job.verified.filter(|(f, _)| *f == first).map(|(_, k)| k);
    let get = serde_json::to_vec(&Get {
        file: u32::try_from(first).unwrap_or(u32::MAX),
        from,
    })
    .unwrap_or_default();
    conn.send(GET, &get)?;
    let mut before: u64 = listed[..first].iter().map(|l| l.size).sum();
    for (f, l) in listed.iter().enumerate().skip(first) {
        let chunks = chunks_of(l.size);
        let hashes = match conn.recv(|k| match k {
            HASHES => usize::try_from(chunks * 32).unwrap_or(usize::MAX),
            ERROR => MAX_CONTROL,
            _ => 0,
        })? {
            None => return Err(Stop::Cut("the sender closed the connection".into())),
            Some((ERROR, body)) => return Err(sender_says(&nick, body)),
            Some((HASHES, body)) => body
                .chunks_exact(32)
                .map(|c| c.try_into().unwrap_or([0; 32]))
                .collect(),
            Some((kind, _)) => return Err(Stop::Fatal(format!("an unexpected message ({kind})"))),
        };
        let manifest = Manifest::listed(l.size, hashes);
        let root = shared::keys::unhex::<32>(&l.root).unwrap_or_default();
        if !manifest.matches(&root) {
            return Err(Stop::Fatal(format!(
                "the chunk hashes of {} do not match the offer",
                shown_name(&l.name)
            )));
        }
        let part = part_of(&dests[f]);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&part)
            .map_err(|e| disk(&part, &e))?;
        let k = match (f == first, from) {
            (true, Some(k)) => k,
            (true, None) => {
                let k = verified_on_disk(&file, &manifest);
                conn.send(FROM, &k.to_be_bytes())?;
                k
            }
            (false, _) => 0,
        };
        t.progress(&job.id, before + (k * CHUNK as u64).min(l.size));
        for c in k..chunks {
            let body = match conn.recv(|k| match k {
                shared::transfer::fetch::CHUNK => CHUNK,
                ERROR => MAX_CONTROL,
                _ => 0,
            })? {
                None => return Err(Stop::Cut("the sender closed the connection".into())),
                Some((ERROR, body)) => return Err(sender_says(&nick, body)),
                Some((shared::transfer::fetch::CHUNK, body)) => body,
                Some((kind, _)) => {
                    return Err(Stop::Fatal(format!("an unexpected message ({kind})")));
                }
            };
            let want = chunk_len(l.size, c);
            if body.len() != want {
                return Err(Stop::Fatal(format!(
                    "{nick} sent {} bytes for chunk {c} of {}, which holds {want}",
                    body.len(),
                    shown_name(&l.name)
                )));
            }
            if !manifest.verify(usize::try_from(c).unwrap_or(usize::MAX), body) {
                job.mismatches += 1;
                if job.mismatches > MAX_MISMATCHES {
                    return Err(Stop::Fatal(format!(
                        "{MAX_MISMATCHES} chunks did not match their hashes: {nick}'s files changed, or its copy is damaged"
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
            t.progress(&job.id, before + c * CHUNK as u64 + want as u64);
        }
        file.set_len(l.size).map_err(|e| disk(&part, &e))?;
        file.sync_data().map_err(|e| disk(&part, &e))?;
        drop(file);
        let rel = safe_path(&l.name).map_err(|e| Stop::Fatal(e.to_string()))?;
        let dir = PathBuf::from(job.info.folder.clone().unwrap_or_default());
        land(&part, &dests[f], &dir, &rel).map_err(|e| disk(&part, &e))?;
        job.verified = None;
        before += l.size;
    }
    conn.send(DONE, &[])?;
    Ok(())
}

/// A disk error as the user reads it; the partial file stays.
fn disk(part: &Path, e: &io::Error) -> Stop {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        Stop::Fatal(format!(
            "the disk is full; what arrived stays in {}",
            part.display()
        ))
    } else {
        Stop::Fatal(format!("cannot write {}: {e}", part.display()))
    }
}

/// The listing, checked: it is the offer's, and it lists what the offer
/// said, each name safe to land.
fn checked_listing(body: &[u8], root: &[u8; 32], info: &TransferInfo) -> Result<Vec<Listed>, Stop> {
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
    for l in &listed {
        safe_path(&l.name)
            .map_err(|e| Stop::Fatal(format!("refused {:?}: {e}", shown_name(&l.name))))?;
        if shared::keys::unhex::<32>(&l.root).is_none() {
            return Err(Stop::Fatal("a malformed listing: a bad root".into()));
        }
    }
    Ok(listed)
}

/// Where each file lands inside `dir`, its tree kept; each gets its
/// `.part` now, which holds its name against later arrivals.
fn place(dir: &Path, listed: &[Listed]) -> Result<Vec<PathBuf>, Stop> {
    let mut dests = Vec::with_capacity(listed.len());
    for l in listed {
        let rel = safe_path(&l.name)
            .map_err(|e| Stop::Fatal(format!("refused {:?}: {e}", shown_name(&l.name))))?;
        if let Some(parent) = dir.join(&rel).parent() {
            std::fs::create_dir_all(parent).map_err(|e| disk(parent, &e))?;
        }
        let dest = loop {
            let dest = unique_destination(dir, &rel)
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
        let mut got = 0;
        while got < want {
            match file.read(&mut buf[got..want]) {
                Ok(0) => return k,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return k,
            }
        }
        if !manifest.verify(i, &buf[..want]) {
            return k;
        }
        k += 1;
    }
    k
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
