//! Real daemons on loopback for the integration tests: each test gets its
//! own multicast group and port, and each daemon its own temp socket.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use p2pchat_tui::client::{Client, ClientError};
use shared::api::{Call, PeerInfo, StatusInfo, SubscribeParams, SubscribeResult};
use shared::event::{Event, EventBody};
use tokio::sync::mpsc;

/// The daemon binary: cargo names it for p2pchatd's own tests; the
/// client's tests find it beside their own binaries (`make test` builds
/// the whole workspace first).
pub fn daemon_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_p2pchatd") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("p2pchatd");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (make test does)",
        bin.display()
    );
    bin
}

/// Polls `check` every 10 ms until it yields a value; panics after `limit`
/// saying what was awaited.
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fresh folder under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "{prefix}{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir(&dir).expect("temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private network for one test: a multicast group and port nobody else
/// uses, and a temp folder for sockets and logs.
pub struct TestNet {
    pub group: SocketAddrV4,
    pub dir: TempDir,
    /// Daemons log at debug (their logs print when a test fails).
    log_level: &'static str,
}

impl TestNet {
    pub fn new() -> Self {
        // A free UDP port, and a random administratively scoped group.
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("free udp port");
        let group = Ipv4Addr::new(239, 255, fastrand::u8(1..255), fastrand::u8(1..255));
        Self {
            group: SocketAddrV4::new(group, port),
            dir: TempDir::new("p2pchat-it-"),
            log_level: "debug",
        }
    }

    /// Daemons that log as users' do (info), for measurements.
    #[allow(dead_code)]
    pub fn quiet(mut self) -> Self {
        self.log_level = "info";
        self
    }

    /// Arguments that pin a daemon to loopback and this net.
    pub fn loopback_args(&self) -> Vec<String> {
        [
            "--interface",
            "127.0.0.1",
            "--listen",
            "127.0.0.1",
            "--port",
            "0",
            "--multicast",
            &self.group.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    pub fn socket_for(&self, nick: &str) -> PathBuf {
        self.dir.path().join(nick).join("p2pchatd.sock")
    }

    /// A daemon on this net, with discovery.
    #[allow(dead_code)]
    pub async fn daemon(&self, nick: &str) -> Daemon {
        self.daemon_with(nick, &[]).await
    }

    /// A daemon on this net with extra flags (which may repeat ours).
    pub async fn daemon_with(&self, nick: &str, extra: &[&str]) -> Daemon {
        let d = self.spawn(nick, extra);
        d.wait_ready().await;
        d
    }

    /// Starts a daemon without waiting for it to answer.
    pub fn spawn(&self, nick: &str, extra: &[&str]) -> Daemon {
        self.spawn_with_env(nick, extra, &[])
    }

    /// Starts a daemon with extra environment, without waiting for it.
    pub fn spawn_with_env(
        &self,
        nick: &str,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Daemon {
        let socket = self.socket_for(nick);
        let log = self.dir.path().join(format!("{nick}.log"));
        let mut args = self.loopback_args();
        if extra.contains(&"--port") {
            let i = args.iter().position(|a| a == "--port").expect("--port");
            args.drain(i..i + 2);
        }
        args.extend(["--nick".into(), nick.into(), "--socket".into()]);
        args.push(socket.display().to_string());
        args.extend(["--log-level".into(), self.log_level.into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(daemon_bin())
            .args(&args)
            .env_remove("P2PCHAT_SOCKET")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn p2pchatd");
        Daemon {
            child,
            socket,
            log,
            nick: nick.to_owned(),
        }
    }
}

/// A p2pchatd process; killed when dropped (its log is printed if the test
/// failed).
pub struct Daemon {
    child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub nick: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("----- log of {} -----\n{log}", self.nick);
        }
    }
}

impl Daemon {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, s: Signal) {
        kill(self.pid(), s).expect("signal");
    }

    /// Waits for the process to exit, up to `limit`.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let child = &mut self.child;
        wait_until("the daemon to exit", limit, || {
            let r = child.try_wait().expect("try_wait");
            async move { r }
        })
        .await
    }

    async fn wait_ready(&self) {
        let socket = self.socket.clone();
        wait_until(
            &format!("{} to answer", self.nick),
            Duration::from_secs(10),
            || {
                let socket = socket.clone();
                async move {
                    let c = Client::connect(&socket).await.ok()?;
                    c.call::<StatusInfo>(&Call::Status).await.ok()
                }
            },
        )
        .await;
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.socket).await.expect("connect")
    }

    pub async fn status(&self) -> StatusInfo {
        self.client()
            .await
            .call(&Call::Status)
            .await
            .expect("status")
    }

    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.client().await.call(&Call::Peers).await.expect("peers")
    }

    pub async fn try_peers(&self) -> Result<Vec<PeerInfo>, ClientError> {
        Client::connect(&self.socket)
            .await?
            .call(&Call::Peers)
            .await
    }

    /// A live subscription (optionally resuming after `since`).
    pub async fn subscribe(&self, since: Option<u64>) -> Subscriber {
        subscribe_since(&self.socket, since).await
    }

    pub async fn say(&self, text: &str) {
        let _: shared::api::SayResult = self
            .client()
            .await
            .call(&Call::Say(shared::api::SayParams {
                text: text.into(),
                action: false,
            }))
            .await
            .expect("say");
    }
}

/// Subscribes to the daemon at `socket` and hands the subscription to
/// `work` on a thread and runtime of its own, so what it reads and times
/// does not wait on the test's own thread. Returns once subscribed.
pub async fn on_own_thread<T, F, Fut>(socket: &Path, work: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce(Subscriber) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let socket = socket.to_owned();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let sub = subscribe_at(&socket).await;
            let _ = ready_tx.send(());
            work(sub).await
        })
    });
    ready_rx.await.expect("subscribed");
    handle
}

/// A live subscription on the daemon at `socket`.
pub async fn subscribe_at(socket: &Path) -> Subscriber {
    subscribe_since(socket, None).await
}

async fn subscribe_since(socket: &Path, since: Option<u64>) -> Subscriber {
    let client = Client::connect(socket).await.expect("connect");
    let events = client.take_events().expect("events");
    let _: SubscribeResult = client
        .call(&Call::Subscribe(SubscribeParams { since }))
        .await
        .expect("subscribe");
    Subscriber {
        _client: client,
        events,
    }
}

/// A subscription's event stream.
pub struct Subscriber {
    /// Keeps the connection open.
    _client: Client,
    pub events: mpsc::Receiver<Event>,
}

impl Subscriber {
    /// Skips events until one matches `pred`, within `limit`.
    pub async fn until(
        &mut self,
        what: &str,
        limit: Duration,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Event {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let e = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
                .expect("stream open");
            if pred(&e) {
                return e;
            }
        }
    }

    /// Collects `n` chat messages, skipping joins and the like; a gap
    /// means messages were lost and fails the test.
    pub async fn messages(&mut self, n: usize, limit: Duration) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let e = self
                .until(&format!("message {} of {n}", out.len() + 1), limit, |e| {
                    matches!(e.body, EventBody::Message { .. } | EventBody::Gap { .. })
                })
                .await;
            assert!(
                !matches!(e.body, EventBody::Gap { .. }),
                "lost messages: {e:?}"
            );
            out.push(e);
        }
        out
    }
}

/// Text of a message event.
pub fn text(e: &Event) -> &str {
    match &e.body {
        EventBody::Message { text, .. } => text,
        _ => "",
    }
}

/// Waits until every daemon sees all the others connected.
pub async fn wait_full_mesh(daemons: &[&Daemon], limit: Duration) {
    let want = daemons.len() - 1;
    for d in daemons {
        wait_until(
            &format!("{} to link with {want} peers", d.nick),
            limit,
            || async {
                let peers = d.try_peers().await.ok()?;
                (peers.iter().filter(|p| p.connected).count() == want).then_some(())
            },
        )
        .await;
    }
}

/// Established TCP connections whose local port is `port` (links a daemon
/// accepted), read from /proc/net/tcp.
pub fn established_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3
                && cols[3] == "01"
                && cols[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

/// Kills a background daemon by its pidfile if a test leaves it running.
pub struct Reaper(pub PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0)
            && let Ok(pid) = pid.trim().parse()
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A TCP port that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free tcp port")
}

pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}
