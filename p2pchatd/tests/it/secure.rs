//! Identity and encryption: what an eavesdropper sees, what survives a
//! restart, who a network key keeps out, and what bad input on the Noise
//! path costs.

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use shared::event::EventBody;
use shared::secure::{PREAMBLE, frame_header};
use testkit::lan::forged_line;
use testkit::noise::{self, closed_within};
use testkit::relay::Relay;
use testkit::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

fn chat_addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// Bytes recorded between two daemons hold neither a line nor a nick; the
/// same relay in front of a Go-style plaintext peer shows its text.
#[tokio::test]
async fn an_eavesdropper_sees_ciphertext_between_daemons_and_plaintext_from_go() {
    let net = TestNet::new();
    let a = net.daemon_with("alice", &["--no-discovery"]).await;
    let port = a.status().await.port;
    let relay = Relay::start(chat_addr(port)).await;
    let b = net
        .daemon_with(
            "bob",
            &["--no-discovery", "--peer", &relay.addr.to_string()],
        )
        .await;
    wait_full_mesh(&[&a, &b], T).await;
    let mut at_a = a.subscribe(None).await;
    let mut at_b = b.subscribe(None).await;
    a.say("the launch code is 4711").await;
    b.say("bob whispers back").await;
    at_a.messages(2, T).await;
    at_b.messages(2, T).await;
    for clear in ["launch code", "whispers", "alice", "bob"] {
        assert!(!relay.saw(clear), "{clear:?} crossed the LAN in the clear");
    }
    let peers = a.peers().await;
    let p = peers.iter().find(|p| p.nick == "bob").unwrap();
    assert!(p.encrypted && p.fingerprint.is_some(), "{p:?}");

    // A Go peer through the same kind of relay: its words are plain.
    let go_relay = Relay::start(chat_addr(port)).await;
    let mut go = TcpStream::connect(go_relay.addr).await.unwrap();
    let join = forged_line("join", "gopher_1", "joined", false);
    let chat = forged_line("chat", "gopher_1", "go says hi", false);
    go.write_all((join + &chat).as_bytes()).await.unwrap();
    at_a.until("the go line", T, |e| text(e) == "go says hi")
        .await;
    assert!(
        go_relay.saw("go says hi"),
        "the test can fail: plaintext shows"
    );
    let peers = a.peers().await;
    let g = peers.iter().find(|p| p.peer_id == "gopher_1").unwrap();
    assert!(!g.encrypted && g.fingerprint.is_none(), "{g:?}");
    eprintln!(
        "{} bytes between the daemons held no line and no nick; the Go peer's line was plain",
        relay.seen().len()
    );
}

/// The key outlives the daemon: the same peer id and fingerprint after a
/// restart, a new instance. A damaged or exposed identity stops it, named.
#[tokio::test]
async fn the_identity_outlives_restarts_and_a_bad_one_stops_the_daemon() {
    use std::os::unix::fs::PermissionsExt;
    let net = TestNet::new();
    let mut a = net.daemon("alice").await;
    let before = a.status().await;
    assert!(
        shared::keys::is_key_id(&before.peer_id),
        "{}",
        before.peer_id
    );
    a.signal(Signal::SIGTERM);
    a.exit_within(T).await;
    let a = net.daemon("alice").await;
    let after = a.status().await;
    assert_eq!(
        (&after.peer_id, &after.fingerprint),
        (&before.peer_id, &before.fingerprint)
    );
    assert_ne!(after.instance, before.instance);
    drop(a);

    let file = net.dir.path().join("bad-identity");
    for (content, mode, says) in [
        ("not a key\n", 0o600, "is not a p2pchat identity"),
        ("", 0o640, "chmod 600"),
    ] {
        if content.is_empty() {
            std::fs::copy(net.home_of("alice").join("data/p2pchat/identity"), &file).unwrap();
        } else {
            std::fs::write(&file, content).unwrap();
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut d = net.spawn("eve", &["--identity", &file.display().to_string()]);
        let status = d.exit_within(T).await;
        let log = std::fs::read_to_string(&d.log).unwrap();
        assert_eq!(status.code(), Some(1), "{log}");
        assert!(
            log.contains(&file.display().to_string()) && log.contains(says),
            "{log}"
        );
    }
    eprintln!(
        "restart kept {} and its fingerprint; bad identities stopped the daemon",
        before.peer_id
    );
}

fn key_file(net: &TestNet, name: &str) -> String {
    use std::os::unix::fs::OpenOptionsExt;
    let path = net.dir.path().join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, &fastrand::u64(..).to_le_bytes().repeat(4)).unwrap();
    path.display().to_string()
}

/// With a network key, only its holders link; others, with another key or
/// none, neither link nor learn a nick or a line.
#[tokio::test]
async fn a_network_key_keeps_everyone_else_out() {
    let net = TestNet::new();
    let (k1, k2) = (key_file(&net, "k1"), key_file(&net, "k2"));
    let a = net.daemon_with("alice", &["--network-key", &k1]).await;
    let b = net.daemon_with("bob", &["--network-key", &k1]).await;
    let c = net.daemon_with("carol", &["--network-key", &k2]).await;
    let d = net.daemon("dave").await;
    wait_full_mesh(&[&a, &b], T).await;
    a.say("for key holders only").await;
    // Everyone heard everyone's announces by now; give dials a few rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (who, want) in [(&a, 1), (&b, 1), (&c, 0), (&d, 0)] {
        let peers = who.peers().await;
        let linked = peers.iter().filter(|p| p.connected).count();
        assert_eq!(linked, want, "{} linked with {peers:?}", who.nick);
    }
    for outsider in [&c, &d] {
        let peers = outsider.peers().await;
        assert!(
            peers.iter().all(|p| p.nick != "alice" && p.nick != "bob"),
            "{} learned a nick: {peers:?}",
            outsider.nick
        );
        let held = outsider.history(100).await;
        assert!(
            held.iter()
                .all(|e| !matches!(e.body, EventBody::Message { .. })),
            "{} got a line",
            outsider.nick
        );
    }
    eprintln!(
        "with a network key only its two holders linked; another key and none learned nothing"
    );
}

/// Bad input on the Noise path closes only that connection, in bounded
/// time; the daemon serves on and its links lose nothing.
#[tokio::test]
async fn bad_noise_input_costs_only_its_connection() {
    let net = TestNet::new();
    let [a, b] = net.linked(["alice", "bob"]).await;
    let to = chat_addr(a.status().await.port);
    let mut at_a = a.subscribe(None).await;
    let good = noise::dial(to, [7; 32], "mallory", None).await.unwrap();
    let replay = good.handshake_bytes.clone();
    drop(good);

    let garbage: Vec<u8> = (0..200).map(|_| fastrand::u8(..)).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage after the preamble",
            [PREAMBLE, &[0xff, 0xff], &garbage].concat(),
        ),
        (
            "a truncated handshake",
            [PREAMBLE, &frame_header(32)[..], &[1; 10]].concat(),
        ),
        ("a replayed handshake", replay),
        ("a stalled handshake", PREAMBLE.to_vec()),
    ];
    let mut tasks = Vec::new();
    for (what, bytes) in cases {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(to).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            (what, closed_within(&mut s, T).await)
        }));
    }
    for (what, payload) in [
        ("garbage after a good handshake", None),
        (
            "a line over 64 KiB after a good handshake",
            Some(vec![b'x'; 70_000]),
        ),
    ] {
        tasks.push(tokio::spawn(async move {
            let mut link = noise::dial(to, [8; 32], "mallory", None).await.unwrap();
            match payload {
                Some(p) => link.send(&p).await.unwrap(),
                None => link.send_raw(&[0, 40, 1, 2, 3]).await.unwrap(),
            }
            (what, closed_within(&mut link.stream, T).await)
        }));
    }
    for t in tasks {
        let (what, closed) = t.await.unwrap();
        assert!(closed, "{what}: the connection stayed open");
    }
    b.say_many("still flows", 50).await;
    let got = at_a.messages(50, T).await;
    assert!(got.iter().all(|e| text(e).starts_with("still flows")));
    eprintln!("six kinds of bad Noise input each closed their connection; 0 of 50 lines lost");
}

/// What a third peer passes on counts as its author's only when the
/// author's seal covers it: carol, linked to alice, relays alice's lines
/// to bob (who has no link to alice). An altered line and a run carol
/// sealed herself in alice's name are dropped and logged; alice's own
/// runs are taken, shown as alice's.
#[tokio::test]
async fn a_relayed_line_counts_only_if_its_author_sealed_it() {
    use ed25519_dalek::{Signer, SigningKey};
    use shared::authorship::{Relay, RelayedLine, Seal, chain, leaf};
    use shared::keys::{hex, peer_id_of};
    use shared::wire::{MessageType, PeerMessage};

    let net = TestNet::new();
    let a = net.daemon_with("alice", &["--no-discovery"]).await;
    let b = net.daemon_with("bob", &["--no-discovery"]).await;
    let alice = a.status().await;
    let carol = SigningKey::from_bytes(&[7; 32]);
    let carol_id = peer_id_of(&carol.verifying_key().to_bytes());

    // Carol hears alice's lines and alice's seals over them.
    let mut from_a = noise::dial(chat_addr(alice.port), carol.to_bytes(), "carol", None)
        .await
        .unwrap();
    for text in ["one", "two", "three"] {
        a.say(text).await;
    }
    let (mut lines, mut seals) = (Vec::new(), Vec::new());
    while seals.iter().map(|s: &Seal| s.count as usize).sum::<usize>() < 3 {
        let m = from_a.recv(T).await.unwrap();
        match m.kind {
            MessageType::Chat => lines.push(m),
            MessageType::Seal => seals.push(m.seal.unwrap()),
            _ => {}
        }
    }
    assert_eq!(lines.len(), 3);
    let mut runs = Vec::new();
    let mut at = 0;
    for seal in seals {
        let n = seal.count as usize;
        runs.push(Relay {
            // Alice's identity key, from her hello.
            key: from_a.theirs.key.clone(),
            seal,
            lines: lines[at..at + n]
                .iter()
                .map(|l| RelayedLine::of(l).unwrap())
                .collect(),
            room: None,
        });
        at += n;
    }

    let mut to_b = noise::dial(
        chat_addr(b.status().await.port),
        carol.to_bytes(),
        "carol",
        None,
    )
    .await
    .unwrap();
    let relay_line = |run: Relay| {
        let mut m = PeerMessage::new(
            MessageType::Relay,
            format!("{:016x}", fastrand::u64(..)),
            &carol_id,
            "carol",
            String::new(),
            chrono::Utc::now(),
            0,
        );
        m.relay = Some(Box::new(run));
        m.encode()
    };
    // Alice's run with a line altered.
    let mut altered = runs[0].clone();
    altered.lines[0].content = "send the keys to carol".into();
    // A run carol sealed herself, in alice's name.
    let mut forged = runs[0].clone();
    forged.lines.truncate(1);
    forged.lines[0].content = "carol is to be trusted".into();
    forged.seal.first = forged.lines[0].sequence;
    forged.seal.last = forged.lines[0].sequence;
    forged.seal.count = 1;
    let prev = shared::keys::unhex::<32>(&forged.seal.prev).unwrap();
    let as_alice = forged.open().err();
    assert!(as_alice.is_some(), "the old end no longer matches");
    let msg = {
        let mut m = lines[0].clone();
        m.content = "carol is to be trusted".into();
        m
    };
    let end = chain(&prev, &leaf(&msg));
    forged.seal.end = hex(&end);
    let signed = Seal::signed_bytes(
        &alice.peer_id,
        &forged.seal.instance,
        (forged.seal.first, forged.seal.last, 1),
        &prev,
        &end,
    );
    forged.seal.sig = hex(&carol.sign(&signed).to_bytes());

    let mut at_b = b.subscribe(None).await;
    to_b.send(&relay_line(altered)).await.unwrap();
    to_b.send(&relay_line(forged)).await.unwrap();
    for run in runs {
        to_b.send(&relay_line(run)).await.unwrap();
    }
    let got = at_b.messages(3, T).await;
    for (e, want) in got.iter().zip(["one", "two", "three"]) {
        let EventBody::Message {
            peer_id,
            nick,
            text,
            fingerprint,
            ..
        } = &e.body
        else {
            unreachable!()
        };
        assert_eq!(
            (peer_id.as_str(), nick.as_str(), text.as_str()),
            (alice.peer_id.as_str(), "alice", want)
        );
        assert_eq!(fingerprint.as_deref(), Some(alice.fingerprint.as_str()));
    }
    let held = b.history(100).await;
    assert!(
        held.iter().all(|e| !text(e).contains("carol")),
        "a forged line was taken: {held:?}"
    );
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(
        log.contains("dropped a relayed run: the lines do not hash to the sealed chain"),
        "{log}"
    );
    assert!(
        log.contains("dropped a relayed run: the seal's signature is not the author's"),
        "{log}"
    );
}
