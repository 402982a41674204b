//! The sender's end of a fetch connection: the recipient dialed our chat
//! port with a hello naming an offer we made to its key. We send the
//! listing, then what it asks for, read from the source files as they are
//! now (a file changed or gone since the offer fails the transfer).

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use shared::api::TransferState;
use shared::transfer::fetch::{
    CHUNK as CHUNK_MSG, DONE, ERROR, FROM, GET, Get, HASHES, LISTING, MAX_CONTROL,
};
use shared::transfer::{CHUNK, chunk_len, chunks_of};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::conn::{Conn, IDLE, Stop, said};
use super::offer::modified_ns;
use super::{Outgoing, Report, Source, Transfers, in_idle_class, on_own_thread};
use crate::mesh::Mesh;
use crate::mesh::secure::Established;

/// How long we wait for a recipient that checks its partial file on disk
/// before it says where to go on (it hashes up to the whole file).
const CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Serves an accepted fetch connection of offer `id`, whose handshake is
/// done.
pub(crate) async fn serve(
    mesh: Mesh,
    mut stream: TcpStream,
    remote: SocketAddr,
    mut est: Established,
    id: String,
) {
    let t = mesh.transfers().clone();
    let key = est.peer.key;
    let Some(out) = t.outgoing(&id, &key) else {
        // Said on the runtime: one small write to a fresh connection.
        let mut bytes = Vec::new();
        let why = b"no such offer: it was never made to you, or it is over";
        let head = shared::transfer::fetch::head(ERROR, why.len());
        if est
            .sealer
            .seal(&[&head[..], why].concat(), &mut bytes)
            .is_ok()
        {
            let _ = tokio::time::timeout(IDLE, stream.write_all(&bytes)).await;
        }
        return debug!(%remote, id, "a fetch of no offer of ours to that key");
    };
    let Some(place) = t.serving() else {
        return debug!(%remote, "too many transfers at once; the recipient comes back");
    };
    let conn = match Conn::new(stream, est) {
        Ok(c) => c,
        Err(e) => return debug!(%remote, "cannot take a fetch connection: {e}"),
    };
    let r = on_own_thread(move || {
        let _place = place;
        run(&t, conn, &id, out);
    })
    .await;
    if let Err(e) = r {
        warn!(%remote, "a transfer stopped: {e}");
    }
}

/// Blocking: one fetch connection, from the listing to its end.
fn run(t: &Transfers, conn: Conn, id: &str, out: Arc<Outgoing>) {
    let Some(reg) = conn.cutter().ok().and_then(|c| t.register(id, c)) else {
        return;
    };
    t.set_state(id, TransferState::Active, None);
    let bulk = in_idle_class(t, id, move |report| {
        let mut conn = conn;
        let r = stream(report, &mut conn, &out);
        (conn, r)
    });
    let others = t.unregister(id, reg);
    let (mut conn, result) = match bulk {
        Ok(done) => done,
        Err(why) => {
            warn!(id, "a transfer stopped: {why}");
            t.set_state(id, TransferState::Failed, Some(why));
            return;
        }
    };
    match result {
        Ok(()) => {
            info!(id, "files sent, whole and verified");
            t.set_state(id, TransferState::Done, None);
        }
        Err(Stop::Cut(why)) => {
            debug!(
                id,
                "a transfer was cut ({why}); it resumes when the recipient comes back"
            );
            if !others {
                t.set_state(id, TransferState::Waiting, None);
            }
        }
        Err(Stop::Fatal(why)) => {
            warn!(id, "a transfer failed: {why}");
            conn.fail(&why);
            t.set_state(id, TransferState::Failed, Some(why));
        }
        Err(Stop::Theirs(why)) => {
            warn!(id, "the recipient stopped a transfer: {why}");
            t.set_state(
                id,
                TransferState::Failed,
                Some(format!("the recipient: {why}")),
            );
        }
    }
}

fn control(kind: u8) -> usize {
    match kind {
        GET | FROM | DONE => MAX_CONTROL,
        _ => 0,
    }
}

/// Sends the listing, then what the recipient asks for, until it says
/// every file is whole.
fn stream(r: &Report, conn: &mut Conn, out: &Outgoing) -> Result<(), Stop> {
    conn.send(LISTING, &out.listing)?;
    let mut buf = Vec::with_capacity(CHUNK);
    loop {
        let get = match conn.recv(control)? {
            None => return Err(Stop::Cut("the recipient closed the connection".into())),
            Some((DONE, _)) => {
                // Said back, so the recipient knows we know.
                conn.send(DONE, &[])?;
                return Ok(());
            }
            Some((ERROR, body)) => return Err(Stop::Theirs(said(body))),
            Some((GET, body)) => serde_json::from_slice::<Get>(body)
                .map_err(|e| Stop::Fatal(format!("a malformed request: {e}")))?,
            Some((kind, _)) => return Err(Stop::Fatal(format!("an unexpected message ({kind})"))),
        };
        // Waiting for the recipient is over: silence is 60 s again.
        conn.idle(IDLE)?;
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
            conn.send(HASHES, &src.hashes)?;
            let from = match (f == first, get.from) {
                (false, _) => 0,
                (true, Some(k)) => k,
                (true, None) => {
                    conn.idle(CHECK_WAIT)?;
                    let b = conn.expect(FROM, 8)?;
                    let k = u64::from_be_bytes(
                        b.try_into()
                            .map_err(|_| Stop::Fatal("expected where to go on from".into()))?,
                    );
                    conn.idle(IDLE)?;
                    k
                }
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
                conn.stopped()?;
                conn.send(CHUNK_MSG, &buf)?;
                r.progress(before + c * CHUNK as u64 + len as u64);
            }
            before += src.size;
        }
        // The recipient forces the last files to disk before it says
        // DONE: on a slow disk that takes a while.
        conn.idle(CHECK_WAIT)?;
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
