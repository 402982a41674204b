//! An async client of the daemon's API, shared by the shell commands and the
//! TUI. Requests may be pipelined; a background task routes responses to
//! their callers by id and events to one bounded channel.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use interprocess::local_socket::tokio::{Stream, prelude::*};
use interprocess::local_socket::{GenericFilePath, ToFsName};
use serde::de::DeserializeOwned;
use serde_json::Value;
use shared::api::{Call, RpcError, ServerMessage, decode_server_message};
use shared::event::Event;
use shared::limits::MAX_RESPONSE_LINE;
use shared::line::LineReader;
use shared::paths::check_socket_folder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Bytes read from the daemon at once: events come in batches.
const READ_CHUNK: usize = 64 * 1024;
/// Events buffered for the consumer. When it lags, the client stops reading
/// the socket and the daemon, not this process, decides (it sends a gap).
const EVENT_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("p2pchatd is not running (socket {})", .0.display())]
    NotRunning(PathBuf),
    /// Someone else may own what answers on the socket: nothing was sent.
    #[error("refusing socket {}: {why}", .socket.display())]
    Untrusted { socket: PathBuf, why: String },
    #[error("{}", .0.message)]
    Rpc(RpcError),
    #[error("connection to p2pchatd lost")]
    Disconnected,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("unexpected reply from p2pchatd: {0}")]
    Decode(#[from] serde_json::Error),
}

type Waiter = oneshot::Sender<Result<Value, RpcError>>;

/// A connection to the daemon.
pub struct Client {
    stream: Arc<Stream>,
    write: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    pending: Arc<Mutex<HashMap<u64, Waiter>>>,
    events: Mutex<Option<mpsc::Receiver<Event>>>,
    reader: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A response on its way, for pipelined requests.
pub struct Pending {
    rx: oneshot::Receiver<Result<Value, RpcError>>,
}

impl Pending {
    pub async fn wait<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        match self.rx.await {
            Ok(Ok(v)) => Ok(serde_json::from_value(v)?),
            Ok(Err(e)) => Err(ClientError::Rpc(e)),
            Err(_) => Err(ClientError::Disconnected),
        }
    }
}

impl Client {
    /// Connects; a missing or dead socket is [`ClientError::NotRunning`].
    /// Nothing is sent unless the socket's folder is ours alone and the
    /// daemon on it runs as us: another user could have put a socket of
    /// theirs where ours should be ([`ClientError::Untrusted`]).
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let me = nix::unistd::geteuid().as_raw();
        let untrusted = |why: String| ClientError::Untrusted {
            socket: path.to_owned(),
            why,
        };
        let folder = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        match std::fs::metadata(folder) {
            Ok(m) => check_socket_folder(folder, m.uid(), m.mode(), me)
                .map_err(|why| untrusted(why.to_string()))?,
            // No folder, no daemon: connecting says so.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let name = path.to_fs_name::<GenericFilePath>()?;
        let stream = match Stream::connect(name).await {
            Ok(s) => Arc::new(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(ClientError::NotRunning(path.to_owned()));
            }
            Err(e) => return Err(e.into()),
        };
        match stream.peer_creds().map(|c| c.euid()) {
            Ok(Some(uid)) if uid == me => {}
            Ok(Some(uid)) => {
                return Err(untrusted(format!(
                    "the daemon on it runs as uid {uid}, not as you (uid {me})"
                )));
            }
            _ => return Err(untrusted("cannot tell who runs the daemon on it".into())),
        }
        let pending: Arc<Mutex<HashMap<u64, Waiter>>> = Arc::default();
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let reader = tokio::spawn(read_loop(stream.clone(), pending.clone(), tx));
        Ok(Self {
            stream,
            write: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            pending,
            events: Mutex::new(Some(rx)),
            reader,
        })
    }

    /// Sends a request without waiting for its response.
    pub async fn send(&self, call: &Call) -> Result<Pending, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let line = call.encode_request(id);
        let _w = self.write.lock().await;
        if let Err(e) = (&*self.stream).write_all(&line).await {
            lock(&self.pending).remove(&id);
            return Err(if e.kind() == io::ErrorKind::BrokenPipe {
                ClientError::Disconnected
            } else {
                e.into()
            });
        }
        Ok(Pending { rx })
    }

    /// Sends a request and waits for its result.
    pub async fn call<T: DeserializeOwned>(&self, call: &Call) -> Result<T, ClientError> {
        self.send(call).await?.wait().await
    }

    /// The event stream (after `subscribe`); there is one, taken once.
    pub fn take_events(&self) -> Option<mpsc::Receiver<Event>> {
        lock(&self.events).take()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn read_loop(
    stream: Arc<Stream>,
    pending: Arc<Mutex<HashMap<u64, Waiter>>>,
    events: mpsc::Sender<Event>,
) {
    let mut lines = LineReader::new(MAX_RESPONSE_LINE, READ_CHUNK);
    'read: loop {
        while let Some(line) = lines.next_line() {
            let Ok(line) = line else { break 'read };
            match decode_server_message(&line) {
                // Waits while the consumer lags (so the daemon, not this
                // process, buffers); a dropped receiver just discards.
                Ok(ServerMessage::Event(e)) => {
                    let _ = events.send(e).await;
                }
                Ok(ServerMessage::Response { id, outcome }) => {
                    let waiter = id.as_u64().and_then(|id| lock(&pending).remove(&id));
                    if let Some(w) = waiter {
                        let _ = w.send(outcome);
                    } else if let Err(e) = outcome {
                        // An error about no request of ours (a line too long,
                        // the daemon busy): fail everything waiting.
                        for (_, w) in lock(&pending).drain() {
                            let _ = w.send(Err(e.clone()));
                        }
                    }
                }
                Err(_) => break 'read,
            }
        }
        match (&*stream).read_buf(lines.space()).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Dropping the waiters tells every caller the connection is gone.
    lock(&pending).clear();
}
