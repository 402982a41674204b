//! Wires discovery, the mesh, the history and the API together, and owns
//! the order in which they start and stop.
//!
//! Start: bind everything first (so a second daemon fails before it
//! announces anything), then serve. Stop (SIGTERM, SIGINT, SIGHUP or the
//! `shutdown` method): stop taking requests, say `leave` on every link,
//! flush and close the links, say `leave` on multicast, remove the socket
//! file and pidfile — well within 2 s.

use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use interprocess::local_socket::tokio::Listener;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::api::{self, ApiContext, SocketGuard};
use crate::config::{Config, DEFAULT_PORTS};
use crate::discovery::{self, DiscoverySockets};
use crate::history::History;
use crate::mesh::{Mesh, new_peer_id};

/// How long stopping waits for tasks after links were told to close.
const STOP_WAIT: Duration = Duration::from_millis(1200);

/// Everything bound, nothing served yet.
pub struct Bound {
    api: Listener,
    guard: SocketGuard,
    peers: TcpListener,
    discovery: Option<DiscoverySockets>,
}

/// Binds the API socket (single instance), the chat port and the discovery
/// group, in that order. Needs a tokio runtime.
pub fn bind(config: &Config, own_socket_folder: bool) -> anyhow::Result<Bound> {
    let (api, guard) = api::bind(&config.socket, own_socket_folder)?;
    let peers = bind_chat_port(config.listen, config.port)?;
    let discovery = match &config.discovery {
        Some(d) => Some(
            discovery::bind(d)
                .map_err(|e| anyhow::anyhow!("cannot join discovery group {}: {e}", d.group))?,
        ),
        None => None,
    };
    Ok(Bound {
        api,
        guard,
        peers,
        discovery,
    })
}

/// `--port N`, else the first free port in 8080-8999, else any.
fn bind_chat_port(ip: IpAddr, port: Option<u16>) -> anyhow::Result<TcpListener> {
    let std = match port {
        Some(p) => StdTcpListener::bind((ip, p))
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", SocketAddr::new(ip, p)))?,
        None => DEFAULT_PORTS
            .map(|p| StdTcpListener::bind((ip, p)))
            .find_map(Result::ok)
            .map_or_else(|| StdTcpListener::bind((ip, 0)), Ok)
            .map_err(|e| anyhow::anyhow!("cannot listen on {ip}: {e}"))?,
    };
    std.set_nonblocking(true)?;
    Ok(TcpListener::from_std(std)?)
}

/// Serves until `shutdown` is cancelled, then stops in order. `ready` is
/// called once everything serves.
pub async fn serve(
    config: Config,
    bound: Bound,
    shutdown: CancellationToken,
    ready: impl FnOnce(&Mesh),
) -> anyhow::Result<()> {
    let started = Instant::now();
    let port = bound.peers.local_addr()?.port();
    let peer_id: Arc<str> = Arc::from(new_peer_id(&config.nick));
    let history = Arc::new(History::new(config.history));
    let tasks = TaskTracker::new();
    let mesh = Mesh::new(
        peer_id.clone(),
        &config.nick,
        port,
        history.clone(),
        config.timing.clone(),
        tasks.clone(),
        CancellationToken::new(),
    );
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

    let api_stop = CancellationToken::new();
    let ctx = Arc::new(ApiContext {
        mesh: mesh.clone(),
        history,
        started,
        socket: bound.guard.socket().to_owned(),
        multicast: config.discovery.as_ref().map(|d| d.group.to_string()),
        interfaces: config
            .discovery
            .as_ref()
            .map(|d| d.interfaces.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        listen: config.listen.to_string(),
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
    drop(bound.guard);
    info!(ms = shared::millis(stop_started.elapsed()), "stopped");
    Ok(())
}

/// Cancels `token` on SIGTERM, SIGINT or SIGHUP.
pub fn cancel_on_signals(token: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
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
