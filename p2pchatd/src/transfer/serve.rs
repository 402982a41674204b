//! The sender's end of a fetch connection: the recipient dialed our chat
//! port and named a fetch in its hello; it asks for an offer's listing,
//! then for chunks, which we read from the source files as they are now
//! (a file changed or gone since the offer fails the transfer).

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;

use shared::api::TransferState;
use shared::keys::{KEY_LEN, unhex_vec};
use shared::transfer::fetch::{DONE, ERROR, FROM, GET, Get, HASHES, LIST, LISTING, MAX_CONTROL};
use shared::transfer::{CHUNK, chunk_len, chunks_of};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::conn::Conn;
use super::offer::modified_ns;
use super::{Outgoing, Source, Transfers, on_own_thread};
use crate::mesh::Mesh;
use crate::mesh::secure::Established;

/// Why a transfer stopped before its end.
pub(super) enum Stop {
    /// The connection broke: the recipient comes back for the rest.
    Cut(String),
    /// It cannot go on (said to the other end, shown to the user).
    Fatal(String),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Self::Cut(e.to_string())
    }
}

/// Serves an accepted fetch connection whose handshake is done.
pub(crate) async fn serve(mesh: Mesh, stream: TcpStream, remote: SocketAddr, est: Established) {
    let t = mesh.transfers().clone();
    if !t.serving(true) {
        return debug!(%remote, "too many transfers at once; the recipient will come back");
    }
    let key = est.peer.key;
    let conn = match Conn::new(stream, est) {
        Ok(c) => c,
        Err(e) => {
            t.serving(false);
            return debug!(%remote, "cannot take a fetch connection: {e}");
        }
    };
    let worker = t.clone();
    let r = on_own_thread(move || run(&worker, conn, &key)).await;
    t.serving(false);
    if let Err(e) = r {
        warn!(%remote, "a transfer stopped: {e}");
    }
}

fn control(kind: u8) -> usize {
    match kind {
        LIST | GET | FROM | DONE => MAX_CONTROL,
        _ => 0,
    }
}

/// Blocking: one fetch connection, from the listing to its end.
fn run(t: &Transfers, mut conn: Conn, key: &[u8; KEY_LEN]) {
    let id = match conn.recv(control) {
        Ok(Some((LIST, body))) => String::from_utf8_lossy(body).into_owned(),
        Ok(_) => return debug!("a fetch connection that asked for no offer"),
        Err(e) => return debug!("a fetch connection broke before asking: {e}"),
    };
    let Some(out) = t.outgoing(&id, key) else {
        let _ = conn.send(
            ERROR,
            b"no such offer: it was never made to you, or it is over",
        );
        return debug!(id, "a fetch for no offer of ours");
    };
    let Some(reg) = conn.cutter().ok().and_then(|c| t.register(&id, c)) else {
        return;
    };
    t.set_state(&id, TransferState::Active, None);
    let result = stream(t, &mut conn, &id, &out);
    t.unregister(&id, reg);
    match result {
        Ok(()) => {
            info!(id, "files sent, whole and verified");
            t.set_state(&id, TransferState::Done, None);
        }
        Err(Stop::Cut(why)) => {
            debug!(
                id,
                "a transfer was cut ({why}); it resumes when the recipient comes back"
            );
            if t.state(&id) == Some(TransferState::Active) {
                t.set_state(&id, TransferState::Waiting, None);
            }
        }
        Err(Stop::Fatal(why)) => {
            warn!(id, "a transfer failed: {why}");
            let _ = conn.send(ERROR, why.as_bytes());
            t.set_state(&id, TransferState::Failed, Some(why));
        }
    }
}

/// Sends the listing, then what the recipient asks for, until it says
/// every file is whole.
fn stream(t: &Transfers, conn: &mut Conn, id: &str, out: &Outgoing) -> Result<(), Stop> {
    conn.send(LISTING, &out.listing)?;
    let mut buf = Vec::with_capacity(CHUNK);
    loop {
        let get = match conn.recv(control)? {
            None => return Err(Stop::Cut("the recipient closed the connection".into())),
            Some((DONE, _)) => return Ok(()),
            Some((GET, body)) => serde_json::from_slice::<Get>(body)
                .map_err(|e| Stop::Fatal(format!("a malformed request: {e}")))?,
            Some((kind, _)) => return Err(Stop::Fatal(format!("an unexpected message ({kind})"))),
        };
        let first = get.file as usize;
        if first >= out.sources.len() {
            return Err(Stop::Fatal(format!(
                "asked for file {first} of {}",
                out.sources.len()
            )));
        }
        let mut before: u64 = out.sources[..first].iter().map(|s| s.size).sum();
        for (f, src) in out.sources.iter().enumerate().skip(first) {
            let file = open_unchanged(src)?;
            let hashes = unhex_vec(&src.hashes).unwrap_or_default();
            conn.send(HASHES, &hashes)?;
            let from = match (f == first, get.from) {
                (false, _) => 0,
                (true, Some(k)) => k,
                (true, None) => match conn.recv(control)? {
                    Some((FROM, b)) if b.len() == 8 => {
                        u64::from_be_bytes(b.try_into().unwrap_or_default())
                    }
                    Some(_) => return Err(Stop::Fatal("expected where to go on from".into())),
                    None => return Err(Stop::Cut("the recipient closed the connection".into())),
                },
            };
            let chunks = chunks_of(src.size);
            if from > chunks {
                return Err(Stop::Fatal(format!("asked for chunk {from} of {chunks}")));
            }
            for c in from..chunks {
                let len = chunk_len(src.size, c);
                buf.resize(len, 0);
                file.read_exact_at(&mut buf, c * CHUNK as u64)
                    .map_err(|e| Stop::Fatal(format!("cannot read {}: {e}", src.path.display())))?;
                conn.send(shared::transfer::fetch::CHUNK, &buf)?;
                t.progress(id, before + c * CHUNK as u64 + len as u64);
            }
            before += src.size;
        }
    }
}

/// The source file, if it is still what was offered.
fn open_unchanged(src: &Source) -> Result<File, Stop> {
    let name = src.path.display();
    let file = File::open(&src.path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Stop::Fatal(format!("{name} is gone")),
        _ => Stop::Fatal(format!("cannot open {name}: {e}")),
    })?;
    let meta = file
        .metadata()
        .map_err(|e| Stop::Fatal(format!("{name}: {e}")))?;
    if meta.len() != src.size || modified_ns(&meta) != src.modified {
        return Err(Stop::Fatal(format!("{name} changed since it was offered")));
    }
    Ok(file)
}
