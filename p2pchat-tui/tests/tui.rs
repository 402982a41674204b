//! End to end: the real `p2pchat` TUI in tmux (`send-keys`, `capture-pane`)
//! against real daemons on loopback. Each test has a tmux server of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shared::event::EventBody;
use testkit::*;

const T: Duration = Duration::from_secs(10);
const P2PCHAT: &str = env!("CARGO_BIN_EXE_p2pchat");

fn ui(socket: &Path) -> String {
    format!("{P2PCHAT} --no-autostart --socket {}", socket.display())
}

#[tokio::test]
async fn chat_detach_reattach_and_survive_a_daemon_restart() {
    let Some(tmux) = Tmux::new() else { return };
    let net = TestNet::new();
    let [mut a, b] = net.linked(["alice", "bob"]).await;
    let mut at_b = b.subscribe(None).await;
    // `p2pchat tail -f` on the other daemon, read by a thread.
    let mut tail = Command::new(P2PCHAT)
        .arg("--socket")
        .arg(&b.socket)
        .args(["tail", "-n", "100", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tail_tx, tail_lines) = std::sync::mpsc::channel();
    let out = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tail_tx.send(line).is_err() {
                break;
            }
        }
    });

    tmux.start("ui", &ui(&a.socket));
    tmux.wait("ui", "the attached status bar", |s| {
        s.contains("alice │ 1 peer │ daemon: connected")
    });

    // A typed line reaches the other daemon's tail.
    tmux.enter("ui", "hello from the tui");
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tail_lines
            .recv_timeout(left)
            .expect("the line in bob's tail");
        if line.ends_with("<alice> hello from the tui") {
            break;
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();

    // A line from the other daemon appears.
    b.say("hi tui").await;
    tmux.wait("ui", "bob's line", |s| s.contains("<bob> hi tui"));

    // /nick reaches the others and shows.
    tmux.enter("ui", "/nick alicia");
    at_b.until(
        "the nick event",
        T,
        |e| matches!(&e.body, EventBody::Nick { new, .. } if new == "alicia"),
    )
    .await;
    tmux.wait("ui", "the rename", |s| {
        s.contains("alice is now known as alicia") && s.contains(" alicia │")
    });

    // /quit detaches; the daemon stays, linked, under the new nick.
    tmux.enter("ui", "/quit");
    tmux.wait_exit("ui");
    assert!(
        b.peers()
            .await
            .iter()
            .any(|p| p.nick == "alicia" && p.connected)
    );
    assert_eq!(a.status().await.peers, 1);

    // Attached again: the history, each line once.
    tmux.start("ui2", &ui(&a.socket));
    let screen = tmux.wait("ui2", "the history", |s| s.contains("<bob> hi tui"));
    assert_eq!(screen.matches("hello from the tui").count(), 1, "{screen}");
    assert_eq!(screen.matches("<bob> hi tui").count(), 1, "{screen}");
    assert_eq!(
        screen.matches("is now known as alicia").count(),
        1,
        "{screen}"
    );

    // The daemon goes: the client says so. It comes back: the client
    // re-attaches by itself and shows what happens next.
    a.signal(Signal::SIGTERM);
    assert!(a.exit_within(T).await.success());
    tmux.wait("ui2", "the lost daemon", |s| {
        s.contains("daemon: lost, reconnecting")
    });
    let a2 = net.daemon("alice").await;
    // Its store kept the cursors: the client resumes, nothing reloaded.
    let screen = tmux.wait("ui2", "the re-attach", |s| {
        s.contains("daemon: connected") && s.contains("p2pchatd was restarted; nothing was missed")
    });
    assert_eq!(screen.matches("<bob> hi tui").count(), 1, "{screen}");
    wait_full_mesh(&[&a2, &b], T).await;
    b.say("after the restart").await;
    tmux.wait("ui2", "a line after the restart", |s| {
        s.contains("<bob> after the restart")
    });
    tmux.enter("ui2", "/q");
    tmux.wait_exit("ui2");
}

#[tokio::test]
async fn it_starts_a_daemon_with_its_flags_and_shutdown_stops_it() {
    let Some(tmux) = Tmux::new() else { return };
    let net = TestNet::new();
    let socket = net.socket_for("carol");
    let _reaper = Reaper(socket.with_extension("pid"));
    let cmd = format!(
        "env XDG_STATE_HOME={state} XDG_DATA_HOME={data} XDG_CONFIG_HOME={config} {P2PCHAT} --socket {sock} --nick carol --interface 127.0.0.1 --listen 127.0.0.1 --port 0 --multicast {group}",
        state = net.dir.path().join("state").display(),
        data = net.dir.path().join("data").display(),
        config = net.dir.path().join("config").display(),
        sock = socket.display(),
        group = net.group,
    );
    tmux.start("ui", &cmd);
    tmux.wait("ui", "the started daemon", |s| {
        s.contains("carol │ 0 peers │ daemon: connected") && s.contains("started p2pchatd")
    });
    // A peer on the same private net links with it.
    let d = net.daemon("dave").await;
    tmux.wait("ui", "dave", |s| {
        s.contains("dave (k") && s.contains("1 peer │")
    });
    tmux.enter("ui", "/shutdown");
    tmux.wait_exit("ui");
    wait_until("the daemon to be gone", T, || async {
        (!socket.exists()).then_some(())
    })
    .await;
    drop(d);
}

#[test]
fn failing_to_start_leaves_the_terminal_alone() {
    let net = TestNet::new();
    let socket = net.socket_for("nobody");
    // Not running, and told not to start one: exit 2, nothing on stdout
    // (no escape sequences: the terminal was never taken over).
    let out = Command::new(P2PCHAT)
        .args(["--no-autostart", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "p2pchat: p2pchatd is not running (socket {})",
            socket.display()
        )
    );
    // A daemon that cannot start: its reason, exit 1.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(P2PCHAT)
        .args(["--socket"])
        .arg(&socket)
        .args([
            "--nick",
            "x",
            "--interface",
            "127.0.0.1",
            "--listen",
            "127.0.0.1",
            "--port",
            &port,
            "--multicast",
        ])
        .arg(net.group.to_string())
        .envs(net.xdg_env("x"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on 127.0.0.1:"), "{err}");
    // Daemon flags with a subcommand are refused.
    let out = Command::new(P2PCHAT)
        .args(["--nick", "x", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// An impostor of a verified nick: the pane flags it, its lines carry a
/// mark, and the alert sits on its own row until Esc.
#[tokio::test]
async fn an_impostor_is_flagged_in_the_pane_its_lines_and_an_alert() {
    let Some(tmux) = Tmux::new() else { return };
    let net = TestNet::new();
    let [alice, bob] = net.linked(["alice", "bob"]).await;
    bob.p2pchat(&["trust", "alice"]).await;
    tmux.start("ui", &ui(&bob.socket));
    tmux.wait("ui", "alice verified in the pane", |s| {
        s.contains("●✓ alice")
    });

    let rogue = net.daemon_as("mallory", "alice", &[]).await;
    wait_full_mesh(&[&alice, &bob, &rogue], T).await;
    let apart = format!("alice~{}", &rogue.status().await.peer_id[1..5]);
    rogue.say("send me the keys").await;
    alice.say("that was not me").await;
    let screen = tmux.wait("ui", "the impostor flagged", |s| {
        s.contains(&format!("●! {apart}"))
            && s.contains(&format!("! <{apart}> send me the keys"))
            && s.contains("<alice> that was not me")
            && s.contains("⚠ alice is verified, but a peer with another key")
    });
    assert!(
        !screen.contains("<alice> send me the keys"),
        "shown as alice:\n{screen}"
    );
    tmux.press("ui", "Escape");
    tmux.wait("ui", "the alert dismissed", |s| {
        !s.contains("⚠") && s.contains("!! alice is verified")
    });
}

/// The settings file sets the nick, the interfaces and a highlight word for
/// the daemon the TUI starts; a typo'd key is named. Then what a user does
/// every day: a line naming a highlight word stands out and rings, a URL is
/// an OSC 8 link, Tab completes a nick and a command, and /nick is saved.
/// The mouse is never captured unless asked.
#[tokio::test]
async fn settings_mentions_links_and_completion() {
    let Some(tmux) = Tmux::new() else { return };
    let net = TestNet::new();
    let socket = net.socket_for("carol");
    let _reaper = Reaper(socket.with_extension("pid"));
    let config_home = net.dir.path().join("config");
    let config = config_home.join("p2pchat").join("config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            "# mine\nnick = \"carol\"\n\n[network]\ninterfaces = [\"127.0.0.1\"]\n\
             listen = \"127.0.0.1\"\nport = 0\nmulticast = \"{}\"\n\n\
             [notify]\nhighlight = [\"deploy\"]\n\n[tui]\ncolr = false\n",
            net.group
        ),
    )
    .unwrap();
    let log = net.dir.path().join("tui.out");
    let cmd = format!(
        "env XDG_STATE_HOME={state} XDG_DATA_HOME={data} XDG_CONFIG_HOME={config} {P2PCHAT} --socket {sock}",
        state = net.dir.path().join("state").display(),
        data = net.dir.path().join("data").display(),
        config = config_home.display(),
        sock = socket.display(),
    );
    tmux.start_recorded("ui", &cmd, &log);
    tmux.wait("ui", "the daemon started with the file's nick", |s| {
        s.contains("carol │ 0 peers │ daemon: connected")
    });
    tmux.wait("ui", "the typo named", |s| {
        s.contains("unknown key `tui.colr` (ignored); did you mean `color`?")
    });
    let dave = net.daemon("dave").await;
    tmux.wait("ui", "dave linked on the file's interface and group", |s| {
        s.contains("1 peer │")
    });

    dave.say("ship it: deploy https://example.com/x now").await;
    let screen = tmux.wait("ui", "the line", |s| s.contains("<dave> ship it"));
    assert!(!screen.contains("@ 1 mention"), "seen at once: no count");
    let styled = tmux.screen_styled("ui");
    let line = styled
        .lines()
        .find(|l| l.contains("ship it"))
        .expect("the line, styled");
    let before_word = &line[..line.find("deploy").unwrap()];
    assert!(
        before_word.ends_with('m') && before_word.rfind('\x1b') > before_word.rfind("ship it"),
        "the highlight word has a style of its own: {line:?}"
    );
    let out = wait_for_bytes(&log, b"\x1b]8;;https://example.com/x\x1b\\").await;
    assert!(out.contains(&0x07), "a mention rings the bell");
    for capture in ["\x1b[?1000h", "\x1b[?1002h", "\x1b[?1003h", "\x1b[?1006h"] {
        assert!(
            !out.windows(capture.len()).any(|w| w == capture.as_bytes()),
            "no mouse capture by default ({capture:?})"
        );
    }

    // A line naming us (the file's nick) stands out and rings too.
    let bells = |out: &[u8]| out.iter().filter(|&&b| b == 0x07).count();
    let before = bells(&std::fs::read(&log).unwrap());
    dave.say("CAROL, lunch?").await;
    tmux.wait("ui", "the nick line", |s| {
        s.contains("<dave> CAROL, lunch?")
    });
    let styled = tmux.screen_styled("ui");
    let line = styled.lines().find(|l| l.contains("lunch?")).unwrap();
    let before_nick = &line[..line.find("CAROL").unwrap()];
    assert!(
        before_nick.ends_with('m') && before_nick.rfind('\x1b') > before_nick.rfind("<dave>"),
        "the nick has a style of its own: {line:?}"
    );
    wait_until("a second bell", T, || async {
        (bells(&std::fs::read(&log).unwrap()) > before).then_some(())
    })
    .await;

    // Tab completes a nick at the line start with ": ", and a command.
    let mut at_dave = dave.subscribe(None).await;
    tmux.keys("ui", "da");
    tmux.press("ui", "Tab");
    tmux.wait("ui", "the completed nick", |s| s.contains("> dave:"));
    tmux.keys("ui", "hi");
    tmux.press("ui", "Enter");
    at_dave
        .until(
            "the completed line",
            T,
            |e| matches!(&e.body, EventBody::Message { text, .. } if text == "dave: hi"),
        )
        .await;
    tmux.keys("ui", "/ni");
    tmux.press("ui", "Tab");
    tmux.wait("ui", "the completed command", |s| s.contains("> /nick"));
    tmux.keys("ui", "carla");
    tmux.press("ui", "Enter");
    tmux.wait("ui", "the new nick", |s| s.contains(" carla │"));
    // The daemon writes the settings after it changed the nick (and the
    // UI showed it).
    let saved = wait_until("the nick in the settings", T, || async {
        let saved = std::fs::read_to_string(&config).ok()?;
        saved.contains("nick = \"carla\"").then_some(saved)
    })
    .await;
    assert!(saved.starts_with("# mine\n"), "{saved}");
    assert!(
        saved.contains("highlight = [\"deploy\"]"),
        "the rest kept: {saved}"
    );

    tmux.enter("ui", "/shutdown");
    tmux.wait_exit("ui");
    drop(dave);
}

/// Waits until the recorded terminal output holds `needle`; returns it all.
/// The terminal output recorded in `log`, once it holds `needle`.
async fn wait_for_bytes(log: &Path, needle: &[u8]) -> Vec<u8> {
    let what = format!(
        "{:?} in the terminal output",
        String::from_utf8_lossy(needle)
    );
    wait_until(&what, T, || async {
        let out = std::fs::read(log).unwrap_or_default();
        out.windows(needle.len())
            .any(|w| w == needle)
            .then_some(out)
    })
    .await
}

/// Quit, lines arrive, attach again: a rule shows where you left off, and
/// while no UI is attached the peers see you away.
#[tokio::test]
async fn the_unread_rule_shows_where_you_left_off() {
    let Some(tmux) = Tmux::new() else { return };
    let net = TestNet::new();
    let [a, b] = net.linked(["alice", "bob"]).await;
    let alice_id = a.status().await.peer_id;
    tmux.start("ui", &ui(&a.socket));
    tmux.wait("ui", "attached", |s| s.contains("alice │ 1 peer │"));
    b.say("read before quitting").await;
    tmux.wait("ui", "the first line", |s| {
        s.contains("read before quitting")
    });
    tmux.enter("ui", "/q");
    tmux.wait_exit("ui");
    wait_until("alice away to bob", T, || async {
        let p = b.peers().await;
        p.iter()
            .any(|p| p.peer_id == alice_id && p.away.is_some())
            .then_some(())
    })
    .await;
    b.say("said while you were gone").await;
    tmux.start("ui2", &ui(&a.socket));
    let s = tmux.wait("ui2", "the unread rule", |s| {
        s.contains("said while you were gone") && s.contains("new since you left")
    });
    let at = |needle: &str| s.find(needle).unwrap();
    assert!(
        at("read before quitting") < at("new since you left")
            && at("new since you left") < at("said while you were gone"),
        "{s}"
    );
    tmux.enter("ui2", "/q");
    tmux.wait_exit("ui2");
}

/// Rooms and direct messages in the real TUI: /join opens the room's
/// buffer, lines of a buffer not on screen count as unread in the buffer
/// list until it is shown (Alt-N, Ctrl-N), a direct message opens a buffer
/// of its own with a mention mark, and what is typed there goes to that
/// peer alone.
#[tokio::test]
async fn rooms_and_direct_messages_get_buffers() {
    let Some(tmux) = Tmux::new() else { return };
    let net = TestNet::new();
    let [a, b, c] = net.linked(["alice", "bob", "carol"]).await;
    b.join("#ops").await;
    tmux.start("ui", &ui(&a.socket));
    tmux.wait("ui", "the attached status bar", |s| {
        s.contains("alice │ 2 peers │ daemon: connected")
    });

    tmux.enter("ui", "/join #ops");
    tmux.wait("ui", "the #ops buffer, on screen", |s| {
        s.contains(" 1 #general  2 #ops") && s.contains("alice joined #ops")
    });
    let mut at_b = b.subscribe_room("#ops").await;
    tmux.enter("ui", "to ops from the tui");
    let got = at_b.messages(1, T).await;
    assert_eq!(text(&got[0]), "to ops from the tui");

    // Back to #general: #ops lines now count as unread (once the switch
    // is on screen: a line that comes before it is read in #ops).
    tmux.press("ui", "M-1");
    tmux.wait("ui", "#general, on screen", |s| {
        s.contains("--> carol") && !s.contains("to ops from the tui")
    });
    b.say_to(Some("#ops"), None, "ops one").await.unwrap();
    b.say_to(Some("#ops"), None, "ops two").await.unwrap();
    b.say("general line").await;
    let screen = tmux.wait("ui", "two unread in #ops", |s| {
        s.contains(" 2 #ops 2") && s.contains("<bob> general line")
    });
    assert!(
        !screen.contains("ops one"),
        "an #ops line in #general: {screen}"
    );
    tmux.press("ui", "M-2");
    tmux.wait("ui", "the unread lines, read", |s| {
        s.contains("new since you left") && s.contains("<bob> ops one") && !s.contains(" 2 #ops 2")
    });

    // A direct message from carol: a buffer of its own, marked.
    c.say_to(None, Some("alice"), "psst alice").await.unwrap();
    tmux.wait("ui", "carol's conversation in the list", |s| {
        s.contains(" 3 @carol 1!")
    });
    tmux.press("ui", "C-n");
    tmux.wait("ui", "carol's conversation, on screen", |s| {
        s.contains("<carol> psst alice") && !s.contains("@carol 1!")
    });
    let mut at_c = c.subscribe(None).await;
    let mut at_b_all = b.subscribe(None).await;
    tmux.enter("ui", "just between us");
    let got = at_c.messages(1, T).await;
    assert_eq!(text(&got[0]), "just between us");
    assert!(matches!(
        &got[0].body,
        EventBody::Message { to: Some(_), .. }
    ));
    // With the mouse on, a click on a label shows its buffer (an SGR
    // report, as a terminal sends it: button 0 at column 3, row 1).
    tmux.press("ui", "M-m");
    tmux.keys("ui", "\x1b[<0;3;1M\x1b[<0;3;1m");
    tmux.wait("ui", "#general, clicked", |s| {
        s.contains("<bob> general line")
    });
    tmux.press("ui", "M-m");
    // bob gets nothing of it (a line after it reaches him first).
    tmux.enter("ui", "after the secret");
    let got = at_b_all.messages(1, T).await;
    assert_eq!(text(&got[0]), "after the secret");
}

/// A file offered to the TUI's user: the offer shows with how to answer,
/// `/accept` takes it, a bar grows in the panel while it arrives (through
/// a slow relay), and a line says when it is whole. `/send` offers one.
#[tokio::test]
async fn file_offers_progress_and_send_show_in_the_tui() {
    use shared::api::{Call, SendParams, TransferInfo, TransferParams, TransferState};
    let Some(tmux) = Tmux::new() else { return };
    let net = TestNet::new();
    let b = net.daemon_with("bob", &["--no-discovery"]).await;
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], b.status().await.port));
    // The test's thread blocks on tmux: the relay runs on one of its own.
    let relay = relay::Relay::start_on_own_thread(target);
    relay.forget();
    relay.limit(2 << 20);
    let peer = relay.addr.to_string();
    let a = net
        .daemon_with("alice", &["--no-discovery", "--peer", &peer])
        .await;
    wait_full_mesh(&[&a, &b], T).await;
    tmux.start("ui", &ui(&a.socket));
    tmux.wait("ui", "the attached status bar", |s| {
        s.contains("alice │ 1 peer │ daemon: connected")
    });

    let file = net.dir.path().join("disk.img");
    let bytes: Vec<u8> = (0..6u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let offer: TransferInfo = b
        .client()
        .await
        .call(&Call::Send(SendParams {
            paths: vec![file.display().to_string()],
            to: "alice".into(),
        }))
        .await
        .unwrap();
    tmux.wait("ui", "the offer, with how to answer it", |s| {
        s.contains("disk.img (6.0 MiB) from bob: waiting for you to accept")
            && s.contains(&format!("/accept {}", &offer.id[..6]))
    });
    tmux.enter("ui", "/accept");
    tmux.wait("ui", "a bar in the transfers panel", |s| {
        s.lines().any(|l| {
            l.contains("↓ disk.img (6.0 MiB) from bob") && l.contains('█') && l.contains('%')
        })
    });
    tmux.wait("ui", "the file, whole", |s| {
        s.contains("disk.img (6.0 MiB): whole and verified")
    });
    let landed = net.downloads_of("alice").join("disk.img");
    assert_eq!(std::fs::read(landed).unwrap(), bytes);

    // /send from the TUI: bob hears the offer and declines it.
    let mut at_b = b.subscribe(None).await;
    tmux.enter("ui", &format!("/send {} bob", file.display()));
    let e = at_b
        .until(
            "alice's offer",
            T,
            |e| matches!(&e.body, EventBody::Transfer(t) if t.state == TransferState::Offered),
        )
        .await;
    let EventBody::Transfer(t) = e.body else {
        unreachable!()
    };
    let _: TransferInfo = b
        .client()
        .await
        .call(&Call::Decline(TransferParams { id: t.id }))
        .await
        .unwrap();
    tmux.wait("ui", "bob's answer", |s| s.contains("bob declined"));
}
