//! Wires discovery, the mesh, the history and the API together, and owns
//! the order in which they start and stop.
//!
//! Start: bind everything first (so a second daemon fails before it
//! announces anything), then serve. Stop (SIGTERM, SIGINT, SIGHUP or the
//! `shutdown` method): stop taking requests, say `leave` on every link,
//! flush and close the links, say `leave` on multicast, remove the socket
//! file and pidfile — well within 2 s.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use interprocess::local_socket::tokio::Listener;
use shared::event::EventBody;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::api::{self, ApiBindError, ApiContext, SocketGuard};
use crate::config::{Config, DEFAULT_PORTS};
use crate::discovery::{self, DiscoverySockets};
use crate::history::History;
use crate::identity::{Identity, IdentityError, NetworkKeyError, load_network_key};
use crate::mesh::{Local, Mesh, Secure, admission, journal};
use crate::store::{self, Opened, StoreError};
use crate::trust::{KnownPeers, TrustError};

/// Open files the daemon may hold at once, at most: every link, handshake,
/// dial and client the bounds allow, plus its own sockets, log and pidfile.
/// It stays inside the 1,024 a user service gets by default, so no flood
/// of peers, announces or clients can leave it without a descriptor (the
/// unit allows 2,048 all the same).
const FD_BUDGET: usize = admission::MAX_LINKS
    + admission::MAX_HANDSHAKES
    + admission::MAX_DIALS
    + api::MAX_CLIENTS
    + crate::transfer::MAX_FDS
    + OWN_FDS;
/// stdio, the runtime's epoll and wakers, the listeners, the discovery
/// sockets (one per interface), signals, the log and the pidfile.
const OWN_FDS: usize = 48;
const _: () = assert!(FD_BUDGET <= 1000);

/// The identity's file name in the data folder.
const IDENTITY_FILE: &str = "identity";
/// The known peers' file, beside the identity.
const KNOWN_PEERS_FILE: &str = "known_peers.json";

/// How long stopping waits for tasks after links were told to close.
const STOP_WAIT: Duration = Duration::from_millis(1200);

/// Everything bound, nothing served yet.
pub struct Bound {
    api: Listener,
    guard: SocketGuard,
    peers: TcpListener,
    /// The chat port `peers` listens on.
    port: u16,
    discovery: Option<DiscoverySockets>,
    identity: Identity,
    secure: Secure,
    known: KnownPeers,
    store: Opened,
}

/// Why the daemon could not start or serve. Each keeps its cause as its
/// `source`; `main` prints the chain and picks the exit status.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Api(#[from] ApiBindError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot join discovery group {group}")]
    Discovery {
        group: SocketAddrV4,
        #[source]
        source: io::Error,
    },
    #[error("cannot catch signals")]
    Signals(#[source] io::Error),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("neither XDG_DATA_HOME nor HOME is set; pass --identity")]
    NoDataDir,
    #[error("cannot set up encrypted links: {0}")]
    Noise(String),
    #[error(transparent)]
    NetworkKey(#[from] NetworkKeyError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Binds the API socket (single instance), loads the identity, binds the
/// chat port and the discovery group, in that order. Needs a tokio
/// runtime.
pub fn bind(config: &Config, own_socket_folder: bool) -> Result<Bound, StartError> {
    let (api, guard) = api::bind(&config.socket, own_socket_folder)?;
    let identity_file = match &config.identity {
        Some(p) => p.clone(),
        None => shared::cli::data_dir()
            .ok_or(StartError::NoDataDir)?
            .join(IDENTITY_FILE),
    };
    let identity = Identity::load_or_create(&identity_file)?;
    let known = KnownPeers::load(&identity_file.with_file_name(KNOWN_PEERS_FILE))?;
    let network_key = match &config.network_key {
        Some(path) => Some(load_network_key(path)?),
        None => None,
    };
    let secure =
        Secure::new(&identity, network_key).map_err(|e| StartError::Noise(e.to_string()))?;
    let peers = bind_chat_port(config.listen, config.port)?;
    let port = peers
        .local_addr()
        .map_err(|source| StartError::Listen {
            addr: config.listen.to_string(),
            source,
        })?
        .port();
    let discovery = match &config.discovery {
        Some(d) => Some(discovery::bind(d).map_err(|source| StartError::Discovery {
            group: d.group,
            source,
        })?),
        None => None,
    };
    let store = match &config.state_dir {
        Some(dir) => store::open(dir, config.retention)?,
        None => Opened::Off {
            path: PathBuf::new(),
            problem: "neither XDG_STATE_HOME nor HOME is set".into(),
        },
    };
    Ok(Bound {
        api,
        guard,
        peers,
        port,
        discovery,
        identity,
        secure,
        known,
        store,
    })
}

/// Connections the kernel holds for us until we accept them: a burst of a
/// thousand at once is not turned away at the door (the default is 128).
const BACKLOG: i32 = 1024;

/// `--port N`, else the first free port in 8080-8999, else any.
fn bind_chat_port(ip: IpAddr, port: Option<u16>) -> Result<TcpListener, StartError> {
    let listen = |p: u16| {
        let addr = SocketAddr::new(ip, p);
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(BACKLOG)?;
        s.set_nonblocking(true)?;
        TcpListener::from_std(s.into())
    };
    match port {
        Some(p) => listen(p).map_err(|source| StartError::Listen {
            addr: SocketAddr::new(ip, p).to_string(),
            source,
        }),
        None => DEFAULT_PORTS
            .map(listen)
            .find_map(Result::ok)
            .map_or_else(|| listen(0), Ok)
            .map_err(|source| StartError::Listen {
                addr: ip.to_string(),
                source,
            }),
    }
}

/// Serves until `shutdown` is cancelled, then stops in order. `ready` is
/// called once everything serves.
pub async fn serve(
    config: Config,
    bound: Bound,
    shutdown: CancellationToken,
    ready: impl FnOnce(&Mesh),
) {
    let started = Instant::now();
    let port = bound.port;
    let identity = Arc::new(bound.identity);
    let peer_id = identity.peer_id().to_owned();
    let (store, store_off) = match bound.store {
        Opened::Store(s) => (Some(s), None),
        Opened::Off { path, problem } => {
            let off = store::off_info(&path, &problem, config.retention);
            (None, Some((off, problem)))
        }
    };
    // Our lines the store lost in a crash go back first, at their cursors.
    let journal_last = match &store {
        Some(s) => {
            let last = journal::read_last(s.dir());
            if let Some(l) = &last {
                let fingerprint: Arc<str> = Arc::from(identity.fingerprint());
                // Our direct messages are sealed in the journal: opened
                // with the recipient's key, if it is known.
                let open_dm = |to: &str, content: &str| {
                    let (key, nick) = bound.known.by_id(to)?;
                    let text = crate::direct::open(&identity, &key, &peer_id, to, content)?;
                    Some((text, nick))
                };
                journal::restore_events(l, s, &peer_id, &fingerprint, &open_dm).await;
            }
            last
        }
        None => None,
    };
    let history = Arc::new(History::with_store(config.history, store));
    if let Some((_, problem)) = &store_off {
        history.append(EventBody::Alert {
            peer_id: peer_id.clone(),
            text: format!("history is not being stored: {problem}"),
        });
    }
    let tasks = TaskTracker::new();
    // The notify command runs on its own task; it ends with the mesh.
    let notifier = config.notify.command.clone().map(|command| {
        let (n, runner) =
            crate::notify::Notifier::new(command, config.notify.highlight.clone(), &config.nick);
        tokio::spawn(runner);
        n
    });
    let local = Local {
        identity,
        nick: config.nick.clone(),
        port,
        secure: bound.secure,
        known: bound.known,
        require_encryption: config.require_encryption,
        plaintext_links: config.plaintext_links,
        retain_days: Some(config.retention.days),
        journal_last,
        notifier,
        rooms: crate::rooms::Joined::load(config.state_dir.as_deref()),
        transfers: crate::transfer::Transfers::load(
            config.state_dir.as_deref(),
            config.files.clone(),
        ),
    };
    let mesh = Mesh::new(
        local,
        history.clone(),
        config.timing.clone(),
        tasks.clone(),
        CancellationToken::new(),
    );
    // What the last life left is stored before this one's journal starts.
    mesh.open_journal().await;
    tasks.spawn(mesh.clone().run_beats());
    tasks.spawn(mesh.clone().serve_peers(bound.peers));

    let discovery_stop = CancellationToken::new();
    if let Some(sockets) = bound.discovery {
        let address = SocketAddr::new(config.listen, port).to_string();
        tasks.spawn(discovery::run(
            sockets,
            mesh.clone(),
            address,
            discovery_stop.clone(),
        ));
    }
    for target in &config.static_peers {
        mesh.add_static_peer(target.clone());
    }
    crate::transfer::resume(&mesh);

    let api_stop = CancellationToken::new();
    tasks.spawn(history.clone().pump(api_stop.clone()));
    let ctx = Arc::new(ApiContext {
        mesh: mesh.clone(),
        history: history.clone(),
        started,
        socket: bound.guard.socket().to_owned(),
        multicast: config.discovery.as_ref().map(|d| d.group.to_string()),
        interfaces: config
            .discovery
            .as_ref()
            .map(|d| d.interfaces.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        listen: config.listen.to_string(),
        retention: config.retention,
        config_file: config.config_file.clone(),
        store_off: store_off.map(|(info, _)| info),
        shutdown: shutdown.clone(),
    });
    let api_task = tokio::spawn(api::serve(bound.api, ctx, api_stop.clone()));

    info!(%peer_id, nick = %config.nick, port, socket = %bound.guard.socket().display(), "p2pchatd ready");
    ready(&mesh);
    shutdown.cancelled().await;

    info!("stopping");
    let stop_started = Instant::now();
    api_stop.cancel();
    mesh.leave_all().await;
    mesh.close();
    discovery_stop.cancel();
    tasks.close();
    let waited = tokio::time::timeout(STOP_WAIT, async {
        tasks.wait().await;
        let _ = api_task.await;
    })
    .await;
    if waited.is_err() {
        warn!("some tasks did not stop in time");
    }
    // Off the runtime: the writer may still have a batch to commit.
    let closing = history.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    // Where transfers stand is on disk before we go.
    let transfers = mesh.transfers().clone();
    let _ = tokio::task::spawn_blocking(move || transfers.flush()).await;
    // All is stored: the journal of our lines has nothing left to keep.
    mesh.close_journal().await;
    drop(bound.guard);
    info!(ms = shared::millis(stop_started.elapsed()), "stopped");
}

/// Cancels `token` on SIGTERM, SIGINT or SIGHUP.
pub fn cancel_on_signals(token: CancellationToken) -> Result<(), StartError> {
    use tokio::signal::unix::{SignalKind, signal};
    let catch = |kind| signal(kind).map_err(StartError::Signals);
    let mut term = catch(SignalKind::terminate())?;
    let mut int = catch(SignalKind::interrupt())?;
    let mut hup = catch(SignalKind::hangup())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        };
        info!(signal = name, "signal received");
        token.cancel();
    });
    Ok(())
}
