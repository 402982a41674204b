//! The local API (DESIGN §3): JSON-RPC over a Unix socket that only our own
//! user may use.
//!
//! This module owns the socket file: its folder (0700), the socket (0600),
//! the locked pidfile beside it that makes the daemon single-instance, and
//! the reclaiming of a socket left behind by a crash. Connections are served
//! in [`conn`]; requests are answered in [`methods`].

mod conn;
mod methods;

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use interprocess::local_socket::tokio::{Listener, prelude::*};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use shared::paths::{UntrustedFolder, check_socket_folder};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::ACCEPT_RETRY;
use crate::history::History;
use crate::mesh::Mesh;

/// Clients served at once. Each costs two small buffers; more than this
/// from one user is a runaway script.
pub(crate) const MAX_CLIENTS: usize = 64;

/// Why the API socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ApiBindError {
    #[error("p2pchatd already running (socket {})", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("socket folder {}: {reason}", .path.display())]
    Folder { path: PathBuf, reason: String },
    #[error("refusing socket {}: {why}; remove that folder or choose another --socket", .socket.display())]
    Untrusted {
        socket: PathBuf,
        why: UntrustedFolder,
    },
    #[error("{what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ApiBindError + 'a {
    move |source| ApiBindError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Removes the socket file and the pidfile when the daemon stops. Holding
/// it holds the pidfile lock.
#[derive(Debug)]
pub(crate) struct SocketGuard {
    socket: PathBuf,
    pidfile: PathBuf,
    _lock: File,
}

impl SocketGuard {
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        for p in [&self.socket, &self.pidfile] {
            if let Err(e) = fs::remove_file(p)
                && e.kind() != io::ErrorKind::NotFound
            {
                warn!(path = %p.display(), error = %e, "could not remove");
            }
        }
    }
}

/// The pidfile that sits beside the socket: `p2pchatd.sock` → `p2pchatd.pid`.
pub(crate) fn pidfile_for(socket: &Path) -> PathBuf {
    socket.with_extension("pid")
}

/// Creates the folder, takes the pidfile lock, reclaims a stale socket and
/// binds. `own_folder`: the folder is ours alone (the default location), so
/// an existing one must belong to us and is set to 0700.
pub(crate) fn bind(
    socket: &Path,
    own_folder: bool,
) -> Result<(Listener, SocketGuard), ApiBindError> {
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    prepare_folder(socket, dir, own_folder)?;
    let pidfile = pidfile_for(socket);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&pidfile)
        .map_err(io_err("cannot open pidfile", &pidfile))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(ApiBindError::AlreadyRunning(socket.to_owned()));
        }
        Err(TryLockError::Error(e)) => return Err(io_err("cannot lock pidfile", &pidfile)(e)),
    }
    write_pid(&lock).map_err(io_err("cannot write pidfile", &pidfile))?;
    if socket.exists() {
        // A live daemon without our lock (another version?) still answers.
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(ApiBindError::AlreadyRunning(socket.to_owned()));
        }
        info!(path = %socket.display(), "reclaiming a stale socket file");
        fs::remove_file(socket).map_err(io_err("cannot remove stale socket", socket))?;
    }
    let name = socket
        .to_fs_name::<GenericFilePath>()
        .map_err(io_err("bad socket path", socket))?;
    let listener = ListenerOptions::new()
        .name(name)
        .mode(0o600)
        .reclaim_name(false)
        .create_tokio()
        .map_err(io_err("cannot bind socket", socket))?;
    Ok((
        listener,
        SocketGuard {
            socket: socket.to_owned(),
            pidfile,
            _lock: lock,
        },
    ))
}

fn write_pid(mut f: &File) -> io::Result<()> {
    f.set_len(0)?;
    writeln!(f, "{}", std::process::id())?;
    f.sync_data()
}

fn prepare_folder(socket: &Path, dir: &Path, own_folder: bool) -> Result<(), ApiBindError> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("cannot create socket folder", dir))?;
            // Someone may have made it between the look and the create.
            let m = fs::metadata(dir).map_err(io_err("cannot read socket folder", dir))?;
            check_socket_folder(dir, m.uid(), m.mode(), me()).map_err(|why| {
                ApiBindError::Untrusted {
                    socket: socket.to_owned(),
                    why,
                }
            })
        }
        Err(e) => Err(io_err("cannot read socket folder", dir)(e)),
        Ok(m) if !m.is_dir() => Err(ApiBindError::Folder {
            path: dir.to_owned(),
            reason: "not a folder".into(),
        }),
        Ok(m) => {
            // Our own folder (the default) is made 0700; any other must
            // already be ours alone, as clients check too.
            let mode = if own_folder && m.uid() == me() && m.mode() & 0o777 != 0o700 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_err("cannot set mode 0700 on", dir))?;
                0o700
            } else {
                m.mode()
            };
            check_socket_folder(dir, m.uid(), mode, me()).map_err(|why| ApiBindError::Untrusted {
                socket: socket.to_owned(),
                why,
            })
        }
    }
}

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// What the API serves from; shared by all connections.
pub(crate) struct ApiContext {
    pub mesh: Mesh,
    pub history: Arc<History>,
    pub started: Instant,
    pub socket: PathBuf,
    pub multicast: Option<String>,
    pub interfaces: Vec<String>,
    pub listen: String,
    pub retention: crate::store::Retention,
    /// Where `nick` saves the nick.
    pub config_file: Option<PathBuf>,
    /// Why there is no store, when there is none.
    pub store_off: Option<shared::api::StoreInfo>,
    /// Cancelled by the `shutdown` method.
    pub shutdown: CancellationToken,
}

/// Accepts clients until `cancel`; every connection ends with it.
pub(crate) async fn serve(listener: Listener, ctx: Arc<ApiContext>, cancel: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_RETRY) => continue,
                    }
                }
            },
        };
        match stream.peer_creds().map(|c| c.euid()) {
            Ok(Some(uid)) if uid == me() => {}
            other => {
                warn!(peer = ?other, "refused a client of another user");
                continue;
            }
        }
        let slot = slots.clone().try_acquire_owned();
        let (ctx, cancel) = (ctx.clone(), cancel.clone());
        tasks.spawn(async move {
            match slot {
                Ok(_slot) => conn::serve(stream, &ctx, &cancel).await,
                Err(_) => conn::refuse_busy(stream).await,
            }
        });
    }
    tasks.close();
    tasks.wait().await;
    debug!("api stopped");
}
