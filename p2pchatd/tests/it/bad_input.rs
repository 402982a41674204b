//! Hostile and broken input from the network: each bad connection or
//! datagram costs at most itself; the daemon serves on and healthy links
//! lose nothing.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use shared::discovery::DatagramType;
use testkit::lan::{Forger, loopback};
use testkit::*;

const T: Duration = Duration::from_secs(10);

/// Sends `n` numbered lines from `from` and checks `sub` gets all, in order.
async fn still_flows(from: &Daemon, sub: &mut Subscriber, tag: &str, n: usize) {
    for i in 0..n {
        from.say(&format!("{tag} {i}")).await;
    }
    let got = sub.messages(n, T).await;
    let want: Vec<String> = (0..n).map(|i| format!("{tag} {i}")).collect();
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), want);
}

/// Reads until the daemon closes the connection; true if it did in time.
async fn closed_by_daemon(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(T, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

#[tokio::test]
async fn garbage_on_a_peer_connection_costs_only_that_connection() {
    let net = TestNet::new();
    let [a, b] = net.linked(["alice", "bob"]).await;
    let mut at_a = a.subscribe(None).await;
    let port = a.status().await.port;

    // Not a join first: closed.
    for first in [
        &b"garbage\n"[..],
        b"{\"id\":\"1\",\"type\":\"join\"\n",
        b"\xff\xfe\xfd\n",
        b"{\"id\":\"1\",\"type\":\"chat\",\"sender_id\":\"x\"}\n",
        b"{\"type\":\"join\",\"sender_id\":\"x\"}\n",
        b"{\"id\":\"1\",\"sender_id\":\"x\"}\n",
        b"{\"id\":\"1\",\"type\":\"join\"}\n",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(first).await.unwrap();
        assert!(
            closed_by_daemon(&mut s).await,
            "{:?}",
            String::from_utf8_lossy(first)
        );
    }

    // Identified, then garbage: each bad line is dropped, the link lives
    // and its good lines count; an over-long line closes it.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(
        br#"{"id":"j0","type":"join","sender_id":"evil_1","username":"evil","sequence":0}"#,
    )
    .await
    .unwrap();
    s.write_all(b"\n").await.unwrap();
    for bad in [
        &b"not json at all"[..],
        b"{\"id\":\"x\",\"type\":\"chat\"",
        b"\xc3\x28\xa0\xa1",
        b"{\"type\":\"chat\",\"sender_id\":\"evil_1\",\"content\":\"no id\"}",
        b"{\"id\":\"x\",\"sender_id\":\"evil_1\",\"content\":\"no type\"}",
        b"{\"id\":\"x\",\"type\":\"chat\",\"content\":\"no sender\"}",
        b"{\"id\":\"x\",\"type\":\"chat\",\"sender_id\":\"someone_else\",\"content\":\"spoof\"}",
        b"{\"id\":\"\",\"type\":\"chat\",\"sender_id\":\"evil_1\",\"content\":\"empty id\"}",
        b"[]",
        b"null",
    ] {
        s.write_all(bad).await.unwrap();
        s.write_all(b"\n").await.unwrap();
    }
    s.write_all(b"{\"id\":\"ok1\",\"type\":\"chat\",\"sender_id\":\"evil_1\",\"username\":\"evil\",\"content\":\"still heard \\u001b[2J\"}\n").await.unwrap();
    let m = at_a.messages(1, T).await;
    assert_eq!(
        text(&m[0]),
        "still heard \u{FFFD}[2J",
        "control characters are defused"
    );
    still_flows(&b, &mut at_a, "during", 50).await;
    s.write_all(&vec![b'{'; 70 * 1024]).await.unwrap();
    assert!(
        closed_by_daemon(&mut s).await,
        "an over-long line closes the link"
    );

    // A half-open connection that never identifies is closed in time too;
    // meanwhile nothing else suffers.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    still_flows(&b, &mut at_a, "after", 50).await;
    assert!(closed_by_daemon(&mut silent).await);
    assert!(
        b.peers()
            .await
            .iter()
            .any(|p| p.nick == "alice" && p.connected)
    );
}

#[tokio::test]
async fn bad_datagrams_are_ignored() {
    let net = TestNet::new();
    let [a, b] = net.linked(["alice", "bob"]).await;
    let mut at_a = a.subscribe(None).await;

    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Loopback only, like everything in these tests.
    socket2::SockRef::from(&s)
        .set_multicast_if_v4(&Ipv4Addr::LOCALHOST)
        .unwrap();
    s.set_multicast_ttl_v4(1).unwrap();
    let stale = (chrono::Utc::now() - chrono::Duration::seconds(60)).to_rfc3339();
    let now = chrono::Utc::now().to_rfc3339();
    let bad: Vec<Vec<u8>> = vec![
        vec![b'x'; 64 * 1024 - 100],
        format!(r#"{{"type":"announce","peer_id":"big","port":1,"timestamp":"{now}","pad":"{}"}}"#, "p".repeat(1100)).into_bytes(),
        b"garbage".to_vec(),
        b"\xff\xfe".to_vec(),
        b"{\"type\":\"announce\"".to_vec(),
        format!(r#"{{"type":"announce","peer_id":"old_1","username":"old","address":"","port":9,"timestamp":"{stale}","sequence":0}}"#).into_bytes(),
        format!(r#"{{"type":"announce","peer_id":"","username":"x","address":"","port":9,"timestamp":"{now}","sequence":0}}"#).into_bytes(),
        format!(r#"{{"type":"announce","peer_id":"noport_1","username":"x","address":"","port":0,"timestamp":"{now}","sequence":0}}"#).into_bytes(),
        br#"{"type":"announce","peer_id":"nots_1","username":"x","address":"","port":9}"#.to_vec(),
        format!(r#"{{"type":"dance","peer_id":"odd_1","username":"x","address":"","port":9,"timestamp":"{now}","sequence":0}}"#).into_bytes(),
        // A leave for a peer nobody knows.
        format!(r#"{{"type":"leave","peer_id":"ghost_1","username":"x","address":"","port":9,"timestamp":"{now}","sequence":0}}"#).into_bytes(),
    ];
    for d in &bad {
        s.send_to(d, net.group).unwrap();
    }
    // A well-formed newcomer after the junk is still heard: the receive
    // loop is alive.
    let good = format!(
        r#"{{"type":"announce","peer_id":"zz_fine","username":"fine","address":"0.0.0.0:9","port":9,"timestamp":"{now}","sequence":0}}"#
    );
    s.send_to(good.as_bytes(), net.group).unwrap();
    let peers = wait_until("the good announce to be heard", T, || async {
        let p = a.try_peers().await.ok()?;
        p.iter().any(|p| p.peer_id == "zz_fine").then_some(p)
    })
    .await;
    for ghost in ["big", "old_1", "noport_1", "nots_1", "odd_1", "ghost_1"] {
        assert!(
            peers.iter().all(|p| p.peer_id != ghost),
            "{ghost} in {peers:?}"
        );
    }
    still_flows(&b, &mut at_a, "fine", 20).await;
}

/// A peer that stops reading is dropped, and holds up the others only
/// briefly: its link's queue is bounded and the wait for it too.
#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped_without_stalling_the_others() {
    let net = TestNet::new();
    let a = net.daemon_with("mmm", &["--history", "30000"]).await;
    let b = net.daemon("nnn").await;
    wait_full_mesh(&[&a, &b], T).await;
    let port = a.status().await.port;

    // A Go-like peer announces, then links with a tiny receive buffer and
    // never reads.
    Forger::new(net.group, loopback(1)).send(DatagramType::Announce, "aaa_1", 1, false);
    wait_until("the stuck peer to be heard", T, || async {
        let p = a.try_peers().await.ok()?;
        p.iter().any(|p| p.peer_id == "aaa_1").then_some(())
    })
    .await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stuck = sock.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    stuck
        .write_all(b"{\"id\":\"j1\",\"type\":\"join\",\"sender_id\":\"aaa_1\",\"username\":\"stuck\",\"content\":\"stuck joined the chat\",\"sequence\":0,\"room_id\":\"general\"}\n")
        .await
        .unwrap();
    wait_until("the stuck peer to be linked", T, || async {
        let p = a.try_peers().await.ok()?;
        p.iter()
            .any(|p| p.peer_id == "aaa_1" && p.connected)
            .then_some(())
    })
    .await;

    // Bob's arrivals are timed on a thread of their own.
    let n = 20_000;
    let timing = on_own_thread(&b.socket, move |mut at_b| async move {
        let mut last = std::time::Instant::now();
        let mut worst = Duration::ZERO;
        for _ in 0..n {
            at_b.messages(1, Duration::from_secs(30)).await;
            worst = worst.max(last.elapsed());
            last = std::time::Instant::now();
        }
        worst
    })
    .await;

    // Far more than the stuck peer's buffers and queue hold.
    let client = a.client().await;
    let text = "x".repeat(1000);
    let mut window = std::collections::VecDeque::new();
    for i in 0..n {
        let call = shared::api::Call::Say(shared::api::SayParams {
            text: format!("{i} {text}"),
            action: false,
            ..Default::default()
        });
        window.push_back(client.send(&call).await.unwrap());
        if window.len() == 256 {
            window
                .pop_front()
                .unwrap()
                .wait::<shared::api::SayResult>()
                .await
                .unwrap();
        }
    }
    for p in window {
        p.wait::<shared::api::SayResult>().await.unwrap();
    }
    let worst = timing.join().unwrap();
    eprintln!("the longest pause bob saw while a peer was stuck: {worst:?}");
    assert!(worst < Duration::from_secs(2), "bob waited {worst:?}");

    // Alice dropped the link, saying why.
    let h: shared::api::HistoryResult = a
        .client()
        .await
        .call(&shared::api::Call::History(shared::api::HistoryParams {
            limit: Some(30_000),
            before: None,
            room: None,
        }))
        .await
        .unwrap();
    let leave = h.events.iter().find_map(|e| match &e.body {
        shared::event::EventBody::Leave {
            peer_id, reason, ..
        } if peer_id == "aaa_1" => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(leave, Some(Some("stopped reading".to_owned())));
    drop(stuck);
}
