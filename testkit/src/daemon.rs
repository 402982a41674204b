//! Real p2pchatd processes on a private loopback network: each [`TestNet`]
//! has a multicast group and port of its own and a temp folder, and each
//! daemon on it its own socket, log, and data, state and config folders
//! (so no two share a key or a store).

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use p2pchat_tui::client::{Client, ClientError};
use shared::api::{
    Call, HistoryParams, HistoryResult, PeerInfo, RoomParams, RoomResult, SayParams, SayResult,
    StatusInfo, SubscribeParams, SubscribeResult,
};
use shared::event::Event;

use crate::dir::TempDir;
use crate::wait::{Subscriber, subscribe_since, wait_full_mesh, wait_until};

/// How long a daemon may take to answer its socket after it was started.
const START_WAIT: Duration = Duration::from_secs(10);
/// How long a few daemons may take to link with each other.
const LINK_WAIT: Duration = Duration::from_secs(10);

/// A binary of the workspace, beside the running test or example
/// (`target/[<triple>/]release/deps/x` or `.../examples/x`): `make test`
/// builds the whole workspace first.
fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (make test does)",
        bin.display()
    );
    bin
}

/// The daemon, `p2pchatd`.
pub fn daemon_bin() -> PathBuf {
    workspace_bin("p2pchatd")
}

/// The client, `p2pchat`.
pub fn client_bin() -> PathBuf {
    workspace_bin("p2pchat")
}

/// A private network for one test: a multicast group and port nobody else
/// uses, and a temp folder for sockets, logs and the daemons' own folders.
pub struct TestNet {
    pub group: SocketAddrV4,
    pub dir: TempDir,
    /// Daemons log at debug (their logs print when a test fails).
    log_level: &'static str,
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
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

    /// The folder of everything that belongs to the daemon named `nick`.
    pub fn home_of(&self, nick: &str) -> PathBuf {
        self.dir.path().join(nick)
    }

    /// Where the daemon named `nick` puts files it accepts.
    pub fn downloads_of(&self, nick: &str) -> PathBuf {
        self.home_of(nick).join("downloads")
    }

    pub fn socket_for(&self, nick: &str) -> PathBuf {
        self.home_of(nick).join("p2pchatd.sock")
    }

    /// `XDG_DATA_HOME`, `XDG_STATE_HOME` and `XDG_CONFIG_HOME` for `nick`,
    /// the same across its restarts.
    pub fn xdg_env(&self, nick: &str) -> Vec<(&'static str, PathBuf)> {
        let home = self.home_of(nick);
        vec![
            ("XDG_DATA_HOME", home.join("data")),
            ("XDG_STATE_HOME", home.join("state")),
            ("XDG_CONFIG_HOME", home.join("config")),
        ]
    }

    /// A daemon on this net, with discovery.
    pub async fn daemon(&self, nick: &str) -> Daemon {
        self.daemon_with(nick, &[]).await
    }

    /// Daemons named `nicks`, started in turn; returns once each is linked
    /// with all the others.
    pub async fn linked<const N: usize>(&self, nicks: [&str; N]) -> [Daemon; N] {
        self.linked_with(nicks, &[]).await
    }

    /// As [`TestNet::linked`], each daemon with `extra` flags.
    pub async fn linked_with<const N: usize>(
        &self,
        nicks: [&str; N],
        extra: &[&str],
    ) -> [Daemon; N] {
        let mut daemons = Vec::with_capacity(N);
        for nick in nicks {
            daemons.push(self.daemon_with(nick, extra).await);
        }
        let refs: Vec<&Daemon> = daemons.iter().collect();
        wait_full_mesh(&refs, LINK_WAIT).await;
        daemons
            .try_into()
            .unwrap_or_else(|_| unreachable!("{N} daemons were started"))
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
    pub fn spawn_with_env(&self, nick: &str, extra: &[&str], env: &[(&str, &OsStr)]) -> Daemon {
        self.spawn_as(nick, nick, extra, env, &Wrap::None)
    }

    /// Starts a daemon through `wrapper` (e.g. `unshare -m`), after the
    /// shell commands `prelude` ran in it; the daemon then replaces the
    /// shell, so its pid is the wrapper's.
    pub fn spawn_wrapped(
        &self,
        nick: &str,
        extra: &[&str],
        wrapper: &[&str],
        prelude: &str,
    ) -> Daemon {
        self.spawn_as(
            nick,
            nick,
            extra,
            &[],
            &Wrap::Shell {
                wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
                prelude: prelude.to_owned(),
            },
        )
    }

    /// A daemon in a mount namespace of its own where the shell commands
    /// `mount` ran first (a small disk of its own, say); `None` (said) where
    /// this run may not make one (it needs root and `unshare -m`).
    pub async fn daemon_with_own_mounts(
        &self,
        nick: &str,
        extra: &[&str],
        mount: &str,
    ) -> Option<Daemon> {
        if !mount_namespaces() {
            eprintln!("skipped: a disk of {nick}'s own needs root and unshare -m");
            return None;
        }
        let d = self.spawn_wrapped(
            nick,
            extra,
            &["unshare", "-m", "--propagation", "private"],
            mount,
        );
        d.wait_ready().await;
        Some(d)
    }

    /// A daemon whose folders (and key) are `home`'s but whose nick is
    /// `nick`: an impostor when another daemon holds that nick.
    pub async fn daemon_as(&self, home: &str, nick: &str, extra: &[&str]) -> Daemon {
        let d = self.spawn_as(home, nick, extra, &[], &Wrap::None);
        d.wait_ready().await;
        d
    }

    /// Starts a daemon that may open at most `files` descriptors (as a
    /// user service may), and waits until it answers.
    pub async fn daemon_with_file_limit(&self, nick: &str, files: u32) -> Daemon {
        let d = self.spawn_as(
            nick,
            nick,
            &[],
            &[],
            &Wrap::Shell {
                wrapper: Vec::new(),
                prelude: format!("ulimit -n {files}"),
            },
        );
        d.wait_ready().await;
        d
    }

    fn spawn_as(
        &self,
        home: &str,
        nick: &str,
        extra: &[&str],
        env: &[(&str, &OsStr)],
        wrap: &Wrap,
    ) -> Daemon {
        let socket = self.socket_for(home);
        let log = self.dir.path().join(format!("{home}.log"));
        let mut args = self.loopback_args();
        if extra.contains(&"--port") {
            let i = args.iter().position(|a| a == "--port").expect("--port");
            args.drain(i..i + 2);
        }
        // Files land in the daemon's own folder, not the user's.
        if !extra.contains(&"--download-dir") {
            let downloads = self.downloads_of(home);
            args.extend(["--download-dir".into(), downloads.display().to_string()]);
        }
        args.extend(["--nick".into(), nick.into(), "--socket".into()]);
        args.push(socket.display().to_string());
        args.extend(["--log-level".into(), self.log_level.into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        // The shell that sets things up then becomes the daemon (exec), so
        // the pid is the daemon's.
        let mut cmd = match wrap {
            Wrap::None => Command::new(daemon_bin()),
            Wrap::Shell { wrapper, prelude } => {
                let mut c = match wrapper.split_first() {
                    Some((first, rest)) => {
                        let mut c = Command::new(first);
                        c.args(rest).arg("sh");
                        c
                    }
                    None => Command::new("sh"),
                };
                c.arg("-c")
                    .arg(format!("{prelude} && exec \"$0\" \"$@\""))
                    .arg(daemon_bin());
                c
            }
        };
        let child = cmd
            .args(&args)
            .env_remove("P2PCHAT_SOCKET")
            .env_remove("NOTIFY_SOCKET")
            .envs(self.xdg_env(home))
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
            nick: home.to_owned(),
        }
    }
}

/// How a daemon is started.
enum Wrap {
    None,
    /// `wrapper... sh -c 'prelude && exec p2pchatd ...'`.
    Shell {
        wrapper: Vec<String>,
        prelude: String,
    },
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
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"))
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

    /// Waits until the daemon answers `status` on its socket.
    pub async fn wait_ready(&self) {
        let socket = self.socket.clone();
        wait_until(&format!("{} to answer", self.nick), START_WAIT, || {
            let socket = socket.clone();
            async move {
                let c = Client::connect(&socket).await.ok()?;
                c.call::<StatusInfo>(&Call::Status).await.ok()
            }
        })
        .await;
    }

    /// Runs `p2pchat ARGS` against this daemon; its stdout, or a panic
    /// with its stderr when it fails.
    pub async fn p2pchat(&self, args: &[&str]) -> String {
        let (code, out, err) = self.p2pchat_output(args).await;
        assert_eq!(code, 0, "p2pchat {args:?}: {err}");
        out
    }

    /// Runs `p2pchat ARGS` against this daemon: its exit code, stdout and
    /// stderr.
    pub async fn p2pchat_output(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(client_bin());
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("P2PCHAT_SOCKET");
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("p2pchat runs")
            .expect("run p2pchat");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
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

    /// The newest `limit` held events, oldest first.
    pub async fn history(&self, limit: usize) -> Vec<Event> {
        self.try_history(limit).await.expect("history")
    }

    pub async fn try_history(&self, limit: usize) -> Result<Vec<Event>, ClientError> {
        let h: HistoryResult = Client::connect(&self.socket)
            .await?
            .call(&Call::History(HistoryParams {
                limit: Some(limit),
                before: None,
                room: None,
            }))
            .await?;
        Ok(h.events)
    }

    /// Says `n` lines `"{tag} {i}"` on one pipelined client; returns once
    /// all were taken.
    pub async fn say_many(&self, tag: &str, n: usize) {
        let client = self.client().await;
        let mut pending = Vec::with_capacity(n);
        for i in 0..n {
            let say = Call::Say(SayParams {
                text: format!("{tag} {i}"),
                action: false,
                ..Default::default()
            });
            pending.push(client.send(&say).await.expect("say"));
        }
        for p in pending {
            p.wait::<SayResult>().await.expect("said");
        }
    }

    /// Joins `room`.
    pub async fn join(&self, room: &str) {
        let _: RoomResult = self
            .client()
            .await
            .call(&Call::Join(RoomParams { room: room.into() }))
            .await
            .expect("join");
    }

    /// Says `text` in `room` (or to `to`): the daemon's answer.
    pub async fn say_to(
        &self,
        room: Option<&str>,
        to: Option<&str>,
        text: &str,
    ) -> Result<SayResult, ClientError> {
        self.client()
            .await
            .call(&Call::Say(SayParams {
                text: text.into(),
                room: room.map(str::to_owned),
                to: to.map(str::to_owned),
                ..Default::default()
            }))
            .await
    }

    /// A person's client attached (`subscribe {attach}`), as the TUI is,
    /// until the subscriber is dropped; with the daemon's answer.
    pub async fn attach(&self) -> (Subscriber, SubscribeResult) {
        crate::wait::subscribed(
            &self.socket,
            SubscribeParams {
                attach: true,
                ..Default::default()
            },
        )
        .await
    }

    /// A live subscription to `room`'s events only.
    pub async fn subscribe_room(&self, room: &str) -> Subscriber {
        crate::wait::subscribe_with(
            &self.socket,
            SubscribeParams {
                room: Some(room.into()),
                ..Default::default()
            },
        )
        .await
    }

    /// The newest `limit` events of `room`, oldest first.
    pub async fn room_history(&self, room: &str, limit: usize) -> Vec<Event> {
        let h: HistoryResult = self
            .client()
            .await
            .call(&Call::History(HistoryParams {
                limit: Some(limit),
                before: None,
                room: Some(room.into()),
            }))
            .await
            .expect("history");
        h.events
    }

    pub async fn say(&self, text: &str) {
        let _: SayResult = self
            .client()
            .await
            .call(&Call::Say(SayParams {
                text: text.into(),
                action: false,
                ..Default::default()
            }))
            .await
            .expect("say");
    }
}

/// Asks a daemon for its status every 50 ms, on a thread and runtime of
/// its own (so a busy test does not slow it), until finished.
pub struct ApiProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Duration>,
}

impl ApiProbe {
    pub fn start(socket: &Path) -> Self {
        use std::sync::atomic::Ordering;
        let socket = socket.to_owned();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut worst = Duration::ZERO;
                while !stopped.load(Ordering::Relaxed) {
                    let t = std::time::Instant::now();
                    let answered = tokio::time::timeout(START_WAIT, async {
                        let c = Client::connect(&socket).await.ok()?;
                        c.call::<StatusInfo>(&Call::Status).await.ok()
                    })
                    .await;
                    assert!(matches!(answered, Ok(Some(_))), "an API call failed");
                    worst = worst.max(t.elapsed());
                    tokio::time::sleep(PROBE_EVERY).await;
                }
                worst
            })
        });
        Self { stop, thread }
    }

    /// Stops probing; returns the slowest answer.
    pub fn finish(self) -> Duration {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the probe thread")
    }
}

/// How often [`ApiProbe`] asks.
const PROBE_EVERY: Duration = Duration::from_millis(50);

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

/// Whether this run may make mount namespaces (root with `unshare`).
fn mount_namespaces() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("unshare")
            .args(["-m", "true"])
            .status()
            .is_ok_and(|s| s.success())
}

/// Runs `script` in the mount namespace of the daemon `pid`.
pub fn in_namespace_of(pid: u32, script: &str) -> std::process::Output {
    Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "--", "sh", "-c", script])
        .output()
        .expect("nsenter runs")
}

/// A TCP port that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free tcp port")
}

/// The permission bits of a file or folder.
pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}
