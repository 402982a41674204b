//! Running as a service: sd-notify readiness, `--daemon`, `make install`
//! and the systemd unit.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::unistd::Pid;
use p2pchat_tui::client::Client;
use shared::api::{Call, ShutdownResult, StatusInfo};

use testkit::*;

const T: Duration = Duration::from_secs(10);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `make TARGET` on the built binaries, without a nested cargo build.
fn make(args: &[&str]) -> std::process::Output {
    let bin = daemon_bin();
    Command::new("make")
        .arg("-C")
        .arg(workspace())
        .args(args)
        .arg("CARGO=true")
        .arg(format!("BIN={}", bin.parent().unwrap().display()))
        .output()
        .expect("make")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn make_install_then_uninstall_leaves_the_prefix_as_it_was() {
    let prefix = TempDir::new("p2pchat-prefix-");
    let p = prefix.path().display().to_string();
    let out = make(&["install", &format!("PREFIX={p}")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = prefix.path();
    for f in [
        "bin/p2pchatd",
        "bin/p2pchat",
        "share/man/man1/p2pchatd.1",
        "share/man/man1/p2pchat.1",
        "share/man/man1/p2pchat-say.1",
        "share/bash-completion/completions/p2pchat",
        "share/bash-completion/completions/p2pchatd",
        "share/zsh/site-functions/_p2pchat",
        "share/zsh/site-functions/_p2pchatd",
        "share/fish/vendor_completions.d/p2pchat.fish",
        "share/fish/vendor_completions.d/p2pchatd.fish",
    ] {
        let meta = std::fs::metadata(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(meta.len() > 0, "{f} is empty");
    }
    for prog in ["p2pchatd", "p2pchat"] {
        let v = Command::new(root.join("bin").join(prog))
            .arg("--version")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&v.stdout).trim(),
            format!("{prog} {}", env!("CARGO_PKG_VERSION"))
        );
    }
    if Command::new("man").arg("--version").output().is_ok() {
        for page in ["p2pchatd.1", "p2pchat.1", "p2pchat-tail.1"] {
            let r = Command::new("man")
                .arg("-l")
                .arg(root.join("share/man/man1").join(page))
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "80")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&r.stdout);
            assert!(
                r.status.success() && text.contains("NAME") && text.contains("SYNOPSIS"),
                "{page}: {text}"
            );
        }
    } else {
        eprintln!("skipped rendering the man pages: man is not installed");
    }
    let out = make(&["uninstall", &format!("PREFIX={p}")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        files_under(root),
        Vec::<PathBuf>::new(),
        "uninstall left files behind"
    );
}

#[test]
fn systemd_analyze_verifies_the_installed_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let dir = TempDir::new("p2pchat-unit-");
    let prefix = dir.path().join("prefix");
    let units = dir.path().join("units");
    let out = make(&[
        "install-service",
        &format!("PREFIX={}", prefix.display()),
        &format!("UNITDIR={}", units.display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = units.join("p2pchatd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!("ExecStart={}/bin/p2pchatd", prefix.display())),
        "{text}"
    );
    // The man page of Documentation= is found where install put it.
    let r = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env(
            "MANPATH",
            format!("{}:", prefix.join("share/man").display()),
        )
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&r.stderr);
    assert!(
        r.status.success() && errors.trim().is_empty(),
        "systemd-analyze verify: {errors}"
    );
}

/// Reads notify datagrams until one contains `want`.
fn notified(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> String {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + T;
    loop {
        assert!(Instant::now() < deadline, "no {want} in {seen:?}");
        let n = sock.recv(&mut buf).expect("a notification in time");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(msg.clone());
        if msg.contains(want) {
            return msg;
        }
    }
}

#[tokio::test]
async fn systemd_hears_ready_only_once_the_api_answers_then_the_peer_count() {
    let net = TestNet::new();
    let notify_path = net.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(T)).unwrap();
    let socket = net.socket_for("alice");
    let _d = net.spawn_with_env("alice", &[], &[("NOTIFY_SOCKET", notify_path.as_os_str())]);
    let mut seen = Vec::new();
    let ready = notified(&notify, "READY=1", &mut seen);
    assert_eq!(seen.len(), 1, "READY=1 is the first thing systemd hears");
    // At this very moment the API must answer.
    let c = Client::connect(&socket)
        .await
        .expect("API answers at READY=1");
    let st: StatusInfo = c.call(&Call::Status).await.unwrap();
    assert!(ready.contains("STATUS=0 peers connected"), "{ready}");
    assert_eq!(st.peers, 0);

    let _b = net.daemon("bob").await;
    notified(&notify, "STATUS=1 peers connected", &mut seen);
    let _: ShutdownResult = c.call(&Call::Shutdown).await.unwrap();
    notified(&notify, "STOPPING=1", &mut seen);
}

#[tokio::test]
async fn daemon_mode_detaches_once_ready_and_stops_cleanly() {
    let net = TestNet::new();
    let socket = net.socket_for("alice");
    let pidfile = socket.with_extension("pid");
    let _reaper = Reaper(pidfile.clone());
    let state = net.dir.path().join("state");
    let run = |extra: &[&str]| {
        Command::new(daemon_bin())
            .envs(net.xdg_env("alice"))
            .args(net.loopback_args())
            .args(["--nick", "alice", "--daemon", "--socket"])
            .arg(&socket)
            .args(extra)
            .env("XDG_STATE_HOME", &state)
            .output()
            .unwrap()
    };

    // Returns once the daemon serves, exit 0.
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = Client::connect(&socket)
        .await
        .expect("it answers as soon as --daemon returned");
    let st: StatusInfo = c.call(&Call::Status).await.unwrap();
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, st.pid, "the pidfile names the daemon");
    let log = std::fs::read_to_string(state.join("p2pchat/p2pchatd.log")).unwrap();
    assert!(log.contains("p2pchatd ready"), "{log}");

    // A second one on the same socket fails, saying why.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("p2pchatd already running (socket {})", socket.display())
    );

    // Stop ends it and removes socket and pidfile.
    let _: ShutdownResult = c.call(&Call::Shutdown).await.unwrap();
    wait_until("the daemon to exit", T, || async {
        kill(Pid::from_raw(pid as i32), None).is_err().then_some(())
    })
    .await;
    assert!(!socket.exists() && !pidfile.exists());

    // A daemon that cannot start reports why to the waiting parent.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(daemon_bin())
        .envs(net.xdg_env("alice"))
        .args([
            "--interface",
            "127.0.0.1",
            "--listen",
            "127.0.0.1",
            "--multicast",
        ])
        .arg(net.group.to_string())
        .args(["--nick", "alice", "--daemon", "--port", &port, "--socket"])
        .arg(&socket)
        .env("XDG_STATE_HOME", &state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on 127.0.0.1:"), "{err}");
}

/// Under systemd, stderr is the journal stream (`JOURNAL_STREAM` names its
/// device and inode). Here there is no journal, so the daemon must notice
/// the stream, fail to reach the journal socket, and log plain lines.
#[tokio::test]
async fn journal_stream_is_recognised_and_falls_back_without_a_journal() {
    use std::os::unix::fs::MetadataExt;
    if Path::new("/run/systemd/journal/socket").exists() {
        eprintln!("skipped: a journal runs here, the fallback cannot be shown");
        return;
    }
    let net = TestNet::new();
    let log = net.dir.path().join("alice.log");
    std::fs::write(&log, b"").unwrap();
    let m = std::fs::metadata(&log).unwrap();
    let stream = format!("{}:{}", m.dev(), m.ino());
    let d = net.spawn_with_env(
        "alice",
        &[],
        &[("JOURNAL_STREAM", std::ffi::OsStr::new(&stream))],
    );
    wait_until("the daemon to log that it is ready", T, || async {
        let text = std::fs::read_to_string(&d.log).unwrap_or_default();
        text.contains("p2pchatd ready").then_some(text)
    })
    .await;
    let text = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        text.contains("stderr is the journal stream but its socket is unavailable"),
        "{text}"
    );
    // A stream that is not ours is just stderr: no such line.
    let other = net.spawn_with_env(
        "bob",
        &[],
        &[("JOURNAL_STREAM", std::ffi::OsStr::new("1:2"))],
    );
    let text = wait_until("bob to be ready", T, || async {
        let text = std::fs::read_to_string(&other.log).unwrap_or_default();
        text.contains("p2pchatd ready").then_some(text)
    })
    .await;
    assert!(!text.contains("journal stream"), "{text}");
}
