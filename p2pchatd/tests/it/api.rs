//! The local API: resuming by cursor, slow subscribers, errors, the socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::api::{Call, SayParams, SayResult, StoreState, code};
use shared::event::EventBody;

use testkit::*;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_client_that_resumes_from_its_cursor_gets_exactly_what_it_missed() {
    let net = TestNet::new();
    let a = net.daemon("alice").await;
    let b = net.daemon_with("bob", &["--history", "5000"]).await;
    wait_full_mesh(&[&a, &b], T).await;

    let mut sub = b.subscribe(None).await;
    for i in 0..5 {
        a.say(&format!("before {i}")).await;
    }
    let seen = sub.messages(5, T).await;
    let last = seen.last().unwrap().cursor;
    drop(sub);

    let client = a.client().await;
    let mut pending = Vec::new();
    for i in 0..1000 {
        pending.push(
            client
                .send(&Call::Say(SayParams {
                    text: format!("missed {i}"),
                    action: false,
                    ..Default::default()
                }))
                .await
                .unwrap(),
        );
    }
    for p in pending {
        p.wait::<SayResult>().await.unwrap();
    }
    // All 1000 have reached bob before the client comes back.
    wait_until("bob to hold the 1000", T, || async {
        let h: shared::api::HistoryResult = b
            .client()
            .await
            .call(&Call::History(shared::api::HistoryParams {
                limit: Some(1),
                before: None,
                room: None,
            }))
            .await
            .ok()?;
        (h.events.first().map(|e| text(e).to_owned()) == Some("missed 999".into())).then_some(())
    })
    .await;

    let mut back = b.subscribe(Some(last)).await;
    a.say("marker").await;
    let got = back.messages(1001, T).await;
    let texts: Vec<&str> = got.iter().map(text).collect();
    let want: Vec<String> = (0..1000)
        .map(|i| format!("missed {i}"))
        .chain(["marker".into()])
        .collect();
    assert_eq!(texts, want, "none lost, none twice");
    assert!(got[0].cursor > last);
}

/// Raw socket helpers, for what the typed client would never send.
fn raw(socket: &std::path::Path) -> (UnixStream, BufReader<UnixStream>) {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn roundtrip(w: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &[u8]) -> Value {
    w.write_all(line).unwrap();
    w.write_all(b"\n").unwrap();
    let mut reply = String::new();
    r.read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"))
}

#[tokio::test]
async fn a_subscriber_that_never_reads_slows_nobody_and_later_reads_all_from_the_store() {
    let (net, a, mut stuck_r) = stuck_subscriber(true).await;
    // The stuck subscriber reads at last: every line, in order, the older
    // ones from the store, none lost.
    let mut next = 0;
    let mut line = String::new();
    while next < FLOOD {
        line.clear();
        stuck_r.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        let p = &v["params"];
        assert_ne!(p["kind"], "gap", "{p}");
        if let Some(t) = p["text"].as_str().filter(|t| t.starts_with("flood ")) {
            assert_eq!(t, flood_line(next), "in order");
            next += 1;
        }
    }
    assert_eq!(a.status().await.nick, "alice");
    drop(net);
}

#[tokio::test]
async fn without_a_store_a_subscriber_that_never_reads_later_gets_a_gap() {
    let (_net, a, stuck_r) = stuck_subscriber(false).await;
    // What fit in its socket, then a gap.
    let mut found_gap = None;
    for line in stuck_r.lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["params"]["kind"] == "gap" {
            found_gap = Some(v["params"].clone());
            break;
        }
    }
    let gap = found_gap.expect("a gap event");
    assert!(gap["missed"].as_u64().unwrap() > 0, "{gap}");
    // alice still answers.
    assert_eq!(a.status().await.nick, "alice");
}

const FLOOD: usize = 20_000;

fn flood_line(i: usize) -> String {
    format!("flood {i} {}", "x".repeat(100))
}

/// Alice (holding 100 events in memory; with or without a store) with a
/// subscriber that never reads, flooded with far more than its socket and
/// her ring hold, while bob reads along: bob gets every line.
async fn stuck_subscriber(store: bool) -> (TestNet, Daemon, BufReader<UnixStream>) {
    let net = TestNet::new();
    if !store {
        // Her state folder cannot be made: she chats on without a store.
        let state = net.home_of("alice").join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("p2pchat"), b"in the way").unwrap();
    }
    let a = net.daemon_with("alice", &["--history", "100"]).await;
    let has_store = a.status().await.store.unwrap().state == StoreState::Ok;
    assert_eq!(has_store, store);
    let b = net.daemon("bob").await;
    wait_full_mesh(&[&a, &b], T).await;
    // Bob's subscriber reads all along, on a thread of its own, while this
    // test floods alice.
    let n = FLOOD;
    let reader = on_own_thread(&b.socket, move |mut at_b| async move {
        at_b.messages(n, Duration::from_secs(60)).await
    })
    .await;

    // A subscriber on alice that never reads.
    let (mut stuck, mut stuck_r) = raw(&a.socket);
    let ok = roundtrip(
        &mut stuck,
        &mut stuck_r,
        br#"{"jsonrpc":"2.0","id":1,"method":"subscribe"}"#,
    );
    assert!(ok["result"]["cursor"].is_u64(), "{ok}");

    // Far more than its socket buffer and alice's ring hold.
    let started = Instant::now();
    let client = a.client().await;
    let mut window = std::collections::VecDeque::new();
    for i in 0..n {
        window.push_back(
            client
                .send(&Call::Say(SayParams {
                    text: flood_line(i),
                    action: false,
                    ..Default::default()
                }))
                .await
                .unwrap(),
        );
        if window.len() == 256 {
            window
                .pop_front()
                .unwrap()
                .wait::<SayResult>()
                .await
                .unwrap();
        }
    }
    for p in window {
        p.wait::<SayResult>().await.unwrap();
    }
    eprintln!(
        "{n} says with a stuck subscriber took {:?}",
        started.elapsed()
    );
    // The mesh kept flowing: bob got every one.
    let got = reader.join().unwrap();
    assert_eq!(text(&got[n - 1]), flood_line(n - 1));
    // The reading half is a second descriptor: the connection stays.
    drop(stuck);
    (net, a, stuck_r)
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_connection_keeps_serving() {
    let net = TestNet::new();
    let a = net.daemon("alice").await;
    let (mut w, mut r) = raw(&a.socket);
    let err = |v: &Value| {
        v["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("not an error: {v}"))
    };

    let cases: Vec<(Vec<u8>, i64)> = vec![
        (b"{ this is not json".to_vec(), code::PARSE_ERROR),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\",".to_vec(),
            code::PARSE_ERROR,
        ),
        (b"\xff\xfe garbage".to_vec(), code::PARSE_ERROR),
        (br#"[1,2,3]"#.to_vec(), code::INVALID_REQUEST),
        (
            br#"{"id":1,"method":"status"}"#.to_vec(),
            code::INVALID_REQUEST,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1}"#.to_vec(),
            code::INVALID_REQUEST,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"launch"}"#.to_vec(),
            code::METHOD_NOT_FOUND,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"say"}"#.to_vec(),
            code::INVALID_PARAMS,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"say","params":{"txt":"hi"}}"#.to_vec(),
            code::INVALID_PARAMS,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"history","params":{"limit":"ten"}}"#.to_vec(),
            code::INVALID_PARAMS,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"say","params":{"text":""}}"#.to_vec(),
            code::INVALID_TEXT,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"say","params":{"text":"a\u001b[2Jb"}}"#.to_vec(),
            code::INVALID_TEXT,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"say","params":{"text":"two\nlines"}}"#.to_vec(),
            code::INVALID_TEXT,
        ),
        (
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"say","params":{{"text":"{}"}}}}"#,
                "x".repeat(4097)
            )
            .into_bytes(),
            code::INVALID_TEXT,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"nick","params":{"name":"two words"}}"#.to_vec(),
            code::INVALID_NICK,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"nick","params":{"name":""}}"#.to_vec(),
            code::INVALID_NICK,
        ),
        (
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"nick","params":{{"name":"{}"}}}}"#,
                "n".repeat(21)
            )
            .into_bytes(),
            code::INVALID_NICK,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"since":99999}}"#.to_vec(),
            code::CURSOR_AHEAD,
        ),
        (vec![b'x'; 100 * 1024], code::INVALID_REQUEST),
    ];
    for (line, want) in &cases {
        let v = roundtrip(&mut w, &mut r, line);
        assert_eq!(
            err(&v),
            *want,
            "{}: {v}",
            String::from_utf8_lossy(&line[..line.len().min(80)])
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // A batch gets one error with a null id, never an answer to one of its
    // members (once, `[1,2,3]` was answered as a request with id 2).
    for batch in [
        &b"[1,2,3]"[..],
        br#"[{"jsonrpc":"2.0","id":5,"method":"status"}]"#,
    ] {
        let v = roundtrip(&mut w, &mut r, batch);
        assert_eq!(
            (err(&v), &v["id"]),
            (code::INVALID_REQUEST, &Value::Null),
            "{v}"
        );
    }
    // Same connection, still serving; the id comes back as sent.
    let v = roundtrip(
        &mut w,
        &mut r,
        br#"{"jsonrpc":"2.0","id":"abc","method":"status"}"#,
    );
    assert_eq!(v["id"], json!("abc"));
    assert_eq!(v["result"]["nick"], json!("alice"));
    // A notification gets no answer; the next request's does come.
    w.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"peers\"}\n")
        .unwrap();
    let v = roundtrip(
        &mut w,
        &mut r,
        br#"{"jsonrpc":"2.0","id":7,"method":"peers"}"#,
    );
    assert_eq!(v["id"], json!(7));
    assert!(v["result"].is_array());
    // Pipelined requests are answered in order.
    w.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"peers\"}\n{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"history\"}\n").unwrap();
    for want in 1..=3 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], json!(want));
    }
    // Nothing was said.
    let h: shared::api::HistoryResult = a
        .client()
        .await
        .call(&Call::History(Default::default()))
        .await
        .unwrap();
    assert!(
        h.events
            .iter()
            .all(|e| !matches!(e.body, EventBody::Message { .. }))
    );
}

#[tokio::test]
async fn the_socket_is_private_single_instance_and_reclaimed_after_a_crash() {
    let net = TestNet::new();
    let mut a = net.daemon("alice").await;
    let folder = a.socket.parent().unwrap().to_owned();
    assert_eq!(mode_of(&folder), 0o700);
    assert_eq!(mode_of(&a.socket), 0o600);

    // A second daemon on the same socket says so and exits 1.
    let out = std::process::Command::new(daemon_bin())
        .envs(net.xdg_env("again"))
        .args(net.loopback_args())
        .args(["--nick", "again", "--socket"])
        .arg(&a.socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!("p2pchatd already running (socket {})", a.socket.display()),
        "said once, and nothing else"
    );
    assert_eq!(a.status().await.nick, "alice", "the first one is unharmed");

    // kill -9 leaves the socket file; the next daemon reclaims it.
    a.signal(nix::sys::signal::Signal::SIGKILL);
    a.exit_within(T).await;
    assert!(a.socket.exists(), "a crash leaves the socket file");
    let b = net.daemon("alice").await;
    assert_eq!(b.socket, a.socket);
    assert_eq!(b.status().await.nick, "alice");
    assert_eq!(mode_of(&b.socket), 0o600);
}

/// Another local user who made the socket folder first once received the
/// victim's `say` while `say` exited 0. Now neither end uses a folder that
/// is not the user's alone, and the client sends nothing to a daemon that
/// runs as someone else. Playing the other user needs root (chown).
#[tokio::test]
async fn a_socket_another_user_could_own_is_refused_by_both_ends() {
    use std::os::unix::fs::{PermissionsExt, chown};
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: playing another user needs root");
        return;
    }
    const NOBODY: u32 = 65534;
    let net = TestNet::new();
    // The daemon refuses a folder another user owns, and one others may
    // write in, and names the fix.
    let theirs = net.dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let open = net.dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    for (folder, why) in [
        (&theirs, "belongs to uid 65534"),
        (&open, "others may write"),
    ] {
        let socket = folder.join("p2pchatd.sock");
        let out = std::process::Command::new(daemon_bin())
            .envs(net.xdg_env("victim"))
            .args(net.loopback_args())
            .args(["--nick", "victim", "--socket"])
            .arg(&socket)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&socket.display().to_string()) && stderr.contains(why),
            "{stderr}"
        );
    }

    // A squatter listens in a folder of its own; the victim's client
    // refuses it, says why, and sends nothing.
    let squat = |folder: &std::path::Path| {
        let socket = folder.join("p2pchatd.sock");
        let l = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
        l.set_nonblocking(true).unwrap();
        (socket, l)
    };
    let heard = |l: &std::os::unix::net::UnixListener| -> usize {
        let mut n = 0;
        while let Ok((mut s, _)) = l.accept() {
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(k) = std::io::Read::read(&mut s, &mut buf) {
                if k == 0 {
                    break;
                }
                n += k;
            }
        }
        n
    };
    let say_as = |uid: u32, socket: &std::path::Path| {
        let mut cmd = std::process::Command::new(client_bin());
        cmd.arg("--socket").arg(socket).args(["say", "a secret"]);
        if uid != 0 {
            cmd.uid(uid).gid(uid);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Its folder belongs to someone else (root here, the victim nobody).
    let (socket, l) = squat(&theirs);
    let (code, stderr) = say_as(0, &socket);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("belongs to uid 65534, not to you"),
        "{stderr}"
    );
    assert_eq!(heard(&l), 0, "the squatter heard something");
    // The victim's own folder, but the daemon on it is someone else.
    let victims = net.dir.path().join("victims");
    std::fs::create_dir(&victims).unwrap();
    let (socket, l) = squat(&victims);
    chown(&victims, Some(NOBODY), Some(NOBODY)).unwrap();
    let (code, stderr) = say_as(NOBODY, &socket);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("runs as uid 0, not as you (uid 65534)"),
        "{stderr}"
    );
    assert_eq!(heard(&l), 0, "the squatter heard something");
    eprintln!("both ends refused a socket another user could own; 0 bytes reached the squatter");
}
