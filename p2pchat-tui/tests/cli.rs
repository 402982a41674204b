//! The `p2pchat` shell commands against real daemons on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use shared::event::{Event, EventBody};
use testkit::*;

const T: Duration = Duration::from_secs(10);
const P2PCHAT: &str = env!("CARGO_BIN_EXE_p2pchat");

fn p2pchat(d: &Daemon, args: &[&str]) -> Output {
    Command::new(P2PCHAT)
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .unwrap()
}

/// Waits for a child within `T`, so a hung command fails the test instead
/// of hanging it.
fn wait_child(c: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + T;
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s;
        }
        if std::time::Instant::now() > deadline {
            let _ = c.kill();
            panic!("a p2pchat command did not finish within {T:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn without_a_daemon_commands_say_so_and_exit_2() {
    let dir = TempDir::new("p2pchat-cli-");
    let sock = dir.path().join("none.sock");
    for args in [
        &["say", "hi"][..],
        &["tail"],
        &["peers"],
        &["status"],
        &["nick", "x"],
        &["stop"],
    ] {
        let o = Command::new(P2PCHAT)
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            err.trim(),
            format!(
                "p2pchat: p2pchatd is not running (socket {})",
                sock.display()
            )
        );
    }
    // P2PCHAT_SOCKET works like --socket.
    let o = Command::new(P2PCHAT)
        .env("P2PCHAT_SOCKET", &sock)
        .args(["status"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains(&sock.display().to_string()));
}

#[tokio::test]
async fn say_tail_peers_status_nick_and_stop() {
    let net = TestNet::new();
    let [a, mut b] = net.linked(["alice", "bob"]).await;

    // tail -f --json on bob: held events, then live ones, none lost
    // whenever it subscribes. A thread reads it, so waits have a bound.
    let mut tail = Command::new(P2PCHAT)
        .arg("--socket")
        .arg(&b.socket)
        .args(["tail", "-n", "100", "-f", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next_event = || -> Event {
        let line = rx
            .recv_timeout(T)
            .expect("tail -f printed an event in time");
        serde_json::from_str(&line).unwrap()
    };

    stdout(&p2pchat(&a, &["say", "hello", "from", "alice"]));
    let mut say = Command::new(P2PCHAT)
        .arg("--socket")
        .arg(&a.socket)
        .args(["say", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    say.stdin
        .take()
        .unwrap()
        .write_all(b"one\n\ntwo\r\nthree")
        .unwrap();
    assert!(wait_child(&mut say).success());
    let refused = Command::new(P2PCHAT)
        .arg("--socket")
        .arg(&a.socket)
        .args(["say", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = refused;
    r.stdin
        .take()
        .unwrap()
        .write_all(b"ok\nbad\x1b[2J\n\xff\xfe\nfine\n")
        .unwrap();
    let out = r.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2 not sent") && err.contains("line 3 not sent"),
        "{err}"
    );

    let mut texts = Vec::new();
    while texts.len() < 6 {
        if let EventBody::Message { text, nick, .. } = next_event().body {
            assert_eq!(nick, "alice");
            texts.push(text);
        }
    }
    assert_eq!(
        texts,
        ["hello from alice", "one", "two", "three", "ok", "fine"]
    );

    // tail -n prints held events as IRC-style lines.
    let held = stdout(&p2pchat(&b, &["tail", "-n", "2"]));
    let held: Vec<&str> = held.lines().collect();
    assert_eq!(held.len(), 2);
    assert!(
        held[0].ends_with("<alice> ok") && held[1].ends_with("<alice> fine"),
        "{held:?}"
    );

    let peers: Value = serde_json::from_str(&stdout(&p2pchat(&b, &["peers", "--json"]))).unwrap();
    let p = &peers.as_array().unwrap()[0];
    assert_eq!(p["nick"], "alice");
    assert_eq!(p["connected"], true);
    assert!(p["peer_id"].is_string() && p["addr"].is_string());
    assert!(["dialed", "accepted"].contains(&p["link"].as_str().unwrap()));
    let table = stdout(&p2pchat(&b, &["peers"]));
    assert!(
        table.starts_with("NICK") && table.contains("alice"),
        "{table}"
    );

    let st: Value = serde_json::from_str(&stdout(&p2pchat(&b, &["status", "--json"]))).unwrap();
    for f in ["peer_id", "nick", "port", "peers", "version", "socket"] {
        assert!(!st[f].is_null(), "{f} in {st}");
    }
    assert_eq!(st["peers"], 1);
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert!(stdout(&p2pchat(&b, &["status"])).contains("1 connected"));

    assert_eq!(
        stdout(&p2pchat(&a, &["nick", "alicia"])).trim(),
        "alice is now known as alicia"
    );
    let bad = p2pchat(&a, &["nick", "two words"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("whitespace"));
    loop {
        if let EventBody::Nick { old, new, .. } = next_event().body {
            assert_eq!((old.as_str(), new.as_str()), ("alice", "alicia"));
            break;
        }
    }

    // stop: the daemon ends cleanly, and tail -f ends with it.
    assert_eq!(stdout(&p2pchat(&b, &["stop"])).trim(), "p2pchatd stopped");
    assert!(b.exit_within(T).await.success());
    assert!(!b.socket.exists());
    let status = wait_child(&mut tail);
    assert_eq!(status.code(), Some(1), "tail -f reports the lost daemon");
}

#[tokio::test]
async fn tail_ends_quietly_when_its_reader_goes_away() {
    let net = TestNet::new();
    let a = net.daemon("alice").await;
    a.say("one").await;
    let mut tail = Command::new(P2PCHAT)
        .arg("--socket")
        .arg(&a.socket)
        .args(["tail", "-n", "10", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line and close the pipe, as `| head -n 1` does.
    let mut out = BufReader::new(tail.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.ends_with("<alice> one\n"), "{first:?}");
    drop(out);
    // The next line finds no reader: status 0, nothing said. A child that
    // another test forks at this moment may hold the pipe's read end until
    // it execs, so the first line may still fit in the pipe: say lines
    // until the tail notices.
    let deadline = std::time::Instant::now() + T;
    let status = loop {
        a.say("two").await;
        if let Some(s) = tail.try_wait().unwrap() {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(s) = tail.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tail -f did not end within {T:?} of its reader going away"
        );
    };
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut tail.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(err, "");
}

/// `p2pchat config` prints the example, checks a file and names what is
/// wrong in it; the daemon refuses a bad value (file, line, key), warns
/// about an unknown key and runs; `p2pchat nick` writes the nick into it.
#[tokio::test]
async fn the_settings_file_is_checked_and_the_nick_lasts() {
    let net = TestNet::new();
    let dir = net.dir.path().join("cfg");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    let config = |args: &[&str]| {
        Command::new(P2PCHAT)
            .arg("--config")
            .arg(&file)
            .arg("config")
            .args(args)
            .output()
            .unwrap()
    };
    let example = stdout(&config(&["--print-default"]));
    assert!(example.starts_with("# p2pchat settings"));
    assert!(example.contains("# highlight = ["));

    std::fs::write(&file, "[network]\n\nport = \"eighty\"\n").unwrap();
    let o = config(&[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}:3: network.port: invalid type", file.display())),
        "{err}"
    );
    // The daemon says the same and does not start.
    let home = net.home_of("d");
    let o = Command::new(daemon_bin())
        .arg("--config")
        .arg(&file)
        .arg("--socket")
        .arg(home.join("s.sock"))
        .envs(net.xdg_env("d"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(":3: network.port:"), "{err}");

    // An unknown key: a warning, and the daemon runs with the rest.
    std::fs::write(&file, "nick = \"fromfile\"\nnik = \"typo\"\n").unwrap();
    let o = config(&[]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(":2: unknown key `nik`"));
    let d = net.spawn_with_env(
        "ignored",
        &[],
        &[(shared::config::CONFIG_ENV, file.as_os_str())],
    );
    d.wait_ready().await;
    assert_eq!(
        d.status().await.nick,
        "ignored",
        "a flag wins over the file"
    );
    drop(d);

    // `p2pchat nick` lasts: it is written into the daemon's settings file.
    let e = net.daemon("erin").await;
    let o = p2pchat(&e, &["nick", "erin2"]);
    assert_eq!(stdout(&o), "erin is now known as erin2\n");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let saved = net.home_of("erin").join("config/p2pchat/config.toml");
    assert_eq!(
        std::fs::read_to_string(saved).unwrap(),
        "nick = \"erin2\"\n"
    );
}

/// Where it works (a linked daemon on loopback, the group routed), doctor
/// passes and lists the peers heard; a running daemon is not disturbed by
/// its self-test on the daemon's own group.
#[tokio::test]
async fn doctor_passes_where_peers_are_found() {
    let net = TestNet::new();
    let [a, _b] = net.linked(["alice", "bob"]).await;
    let o = Command::new(P2PCHAT)
        .arg("--socket")
        .arg(&a.socket)
        .args(["doctor", "--json"])
        .envs(net.xdg_env("alice"))
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["peers"][0]["nick"], "bob");
    assert_eq!(report["peers"][0]["linked"], true);
    let lo = report["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "lo")
        .unwrap();
    assert_eq!(
        (lo["kind"].as_str(), lo["used"].as_bool()),
        (Some("loopback"), Some(true))
    );
    let checks = report["checks"].as_array().unwrap();
    let named = |n: &str| checks.iter().find(|c| c["name"] == n).unwrap();
    assert!(
        named("multicast")["detail"]
            .as_str()
            .unwrap()
            .contains("came back")
    );
    assert_eq!(named("chat port")["ok"], true);
    // The daemon is still well.
    assert_eq!(a.status().await.peers, 1);
    let text = stdout(
        &Command::new(P2PCHAT)
            .arg("--socket")
            .arg(&a.socket)
            .arg("doctor")
            .envs(net.xdg_env("alice"))
            .output()
            .unwrap(),
    );
    assert!(
        text.contains("all checks passed") && text.contains("bob (linked)"),
        "{text}"
    );
}

/// In a network namespace of its own with no route for multicast, and a
/// bridge, a veth pair and a macvlan: doctor says multicast cannot leave,
/// names the fix, exits 1; the bridge and the veth are reported as such and
/// not used, the macvlan is. Needs root (namespaces).
#[test]
fn doctor_explains_a_namespace_without_a_multicast_route() {
    if !nix::unistd::geteuid().is_root()
        || !Command::new("unshare")
            .args(["-n", "-m", "true"])
            .status()
            .is_ok_and(|s| s.success())
    {
        eprintln!("skipped: needs root and unshare for a network namespace");
        return;
    }
    let dir = TempDir::new("p2pchat-doctor-");
    let private = dir.path().join("run");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    // Exit 97: this kernel lacks a link type the test needs.
    let script = format!(
        "{{ mount -t sysfs sysfs /sys && ip link set lo up && \
         ip link add br0 type bridge && ip addr add 10.9.0.1/24 dev br0 && ip link set br0 up && \
         ip link add v0 type veth peer name v1 && ip addr add 10.8.0.1/24 dev v0 && \
         ip link set v0 up && ip link set v1 up && \
         ip link add mv0 link v1 type macvlan && ip addr add 10.7.0.1/24 dev mv0 && ip link set mv0 up; \
         }} >/dev/null 2>&1 || exit 97; \
         exec {P2PCHAT} --socket {}/p2pchatd.sock doctor --json",
        private.display()
    );
    let o = Command::new("unshare")
        .args(["-n", "-m", "sh", "-c", &script])
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .output()
        .unwrap();
    if o.status.code() == Some(97) {
        eprintln!("skipped: this kernel cannot make a bridge, a veth pair and a macvlan");
        return;
    }
    let report: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&o.stderr));
    });
    assert_eq!(o.status.code(), Some(1), "{report:#}");
    let iface = |name: &str| {
        report["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {report:#}"))
            .clone()
    };
    assert_eq!(iface("br0")["kind"], "bridge");
    assert_eq!(iface("br0")["used"], false);
    assert!(
        iface("br0")["why"]
            .as_str()
            .unwrap()
            .contains("skipped unless named")
    );
    assert_eq!(iface("v0")["kind"], "veth");
    assert_eq!(iface("v0")["used"], false);
    assert_eq!(iface("mv0")["used"], true, "{report:#}");
    let route = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "route")
        .unwrap();
    assert_eq!(route["ok"], false);
    assert!(
        route["detail"]
            .as_str()
            .unwrap()
            .contains("cannot leave this machine")
    );
    assert!(
        route["fix"]
            .as_str()
            .unwrap()
            .contains("ip route add 224.0.0.0/4 dev mv0"),
        "{route:#}"
    );
    let daemon = &report["checks"][0];
    assert_eq!(
        (daemon["name"].as_str(), daemon["ok"].as_bool()),
        (Some("daemon"), Some(false))
    );
}

/// Rooms and direct messages from a shell: `join`, `say -r`, `tail -r`
/// (and `tail` still reads #general alone), `msg`, `rooms --json`,
/// `part`; bad names fail with the daemon's reason and exit 1.
#[tokio::test]
async fn rooms_and_direct_messages_from_a_shell() {
    let net = TestNet::new();
    let [a, b] = net.linked(["amy", "bob"]).await;
    assert_eq!(a.p2pchat(&["join", "#ops"]).await, "joined #ops\n");
    assert_eq!(a.p2pchat(&["join", "ops"]).await, "already in #ops\n");
    assert_eq!(b.p2pchat(&["join", "#Ops"]).await, "joined #ops\n");
    wait_until("amy to see bob in #ops", T, || async {
        let o = a.p2pchat(&["rooms", "--json"]).await;
        let rooms: Vec<shared::api::RoomInfo> = serde_json::from_str(&o).ok()?;
        rooms
            .iter()
            .any(|r| r.name == "#ops" && r.joined && r.members == 2 && r.peers == ["bob"])
            .then_some(())
    })
    .await;
    let table = a.p2pchat(&["rooms"]).await;
    assert!(table.starts_with("ROOM"), "{table}");
    assert!(table.contains("#ops") && table.contains("bob"), "{table}");

    let mut at_b = b.subscribe(None).await;
    a.p2pchat(&["say", "-r", "#ops", "in", "ops"]).await;
    a.p2pchat(&["msg", "bob", "just", "for", "bob"]).await;
    a.p2pchat(&["say", "for all"]).await;
    at_b.messages(3, T).await;

    // bob's shell: tail -r shows the room, plain tail #general only, --all
    // everything, marked.
    let ops = b.p2pchat(&["tail", "-r", "#ops", "-n", "10"]).await;
    assert!(
        ops.contains("<amy> in ops") && !ops.contains("for all"),
        "{ops}"
    );
    let general = b.p2pchat(&["tail", "-n", "10"]).await;
    assert!(general.contains("<amy> for all"), "{general}");
    assert!(
        !general.contains("in ops") && !general.contains("just for bob"),
        "{general}"
    );
    let all = b.p2pchat(&["tail", "--all", "-n", "10"]).await;
    assert!(all.contains("#ops <amy> in ops"), "{all}");
    assert!(all.contains("→bob <amy> just for bob"), "{all}");
    let json = b.p2pchat(&["tail", "--all", "--json", "-n", "10"]).await;
    let dm: Vec<Event> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Event| matches!(&e.body, EventBody::Message { to: Some(_), .. }))
        .collect();
    assert_eq!(dm.len(), 1, "{json}");
    let v: Value =
        serde_json::from_str(json.lines().find(|l| l.contains("just for bob")).unwrap()).unwrap();
    assert_eq!(v["to_nick"], "bob");
    assert!(v.get("room").is_none(), "{v}");

    // Refused, with the reason.
    for (args, why) in [
        (&["say", "-r", "#nope", "x"][..], "not in #nope"),
        (&["join", "#a b"], "may hold only"),
        (&["part", "#general"], "cannot be left"),
        (&["msg", "nobody", "x"], "no peer is known as nobody"),
    ] {
        let (code, _, err) = a.p2pchat_output(args).await;
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    assert_eq!(a.p2pchat(&["part", "#ops"]).await, "left #ops\n");
    assert_eq!(a.p2pchat(&["part", "#ops"]).await, "not in #ops\n");
}
