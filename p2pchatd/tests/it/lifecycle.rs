//! Stopping: clean (SIGTERM), crashed (SIGKILL) and frozen (SIGSTOP) peers.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shared::event::EventBody;

use testkit::*;

const T: Duration = Duration::from_secs(10);

fn is_leave_of(id: &str) -> impl Fn(&shared::event::Event) -> bool + '_ {
    move |e| matches!(&e.body, EventBody::Leave { peer_id, .. } if peer_id == id)
}

#[tokio::test]
async fn sigterm_says_goodbye_everywhere_and_cleans_up_within_2s() {
    let net = TestNet::new();
    let [a, mut b, c] = net.linked(["alice", "bob", "carol"]).await;
    let b_id = b.status().await.peer_id;
    let mut at_a = a.subscribe(None).await;
    let mut at_c = c.subscribe(None).await;

    let started = Instant::now();
    b.signal(Signal::SIGTERM);
    for sub in [&mut at_a, &mut at_c] {
        let e = sub
            .until("bob's leave", Duration::from_secs(2), is_leave_of(&b_id))
            .await;
        assert!(
            matches!(&e.body, EventBody::Leave { reason: Some(r), .. } if r == "quit"),
            "{e:?}"
        );
    }
    let status = b.exit_within(Duration::from_secs(2)).await;
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(!b.socket.exists(), "socket file removed");
    assert!(!b.socket.with_extension("pid").exists(), "pidfile removed");
    // The others stay linked with each other and forget bob.
    wait_until("bob to be forgotten or shown gone", T, || async {
        let peers = a.try_peers().await.ok()?;
        peers
            .iter()
            .all(|p| p.peer_id != b_id || !p.connected)
            .then_some(())
    })
    .await;
    a.say("still here").await;
    assert_eq!(text(&at_c.messages(1, T).await[0]), "still here");
}

#[tokio::test]
async fn a_killed_peer_is_seen_gone() {
    let net = TestNet::new();
    let [a, b, mut c] = net.linked(["alice", "bob", "carol"]).await;
    let c_id = c.status().await.peer_id;
    let mut at_a = a.subscribe(None).await;
    let mut at_b = b.subscribe(None).await;
    c.signal(Signal::SIGKILL);
    c.exit_within(T).await;
    for sub in [&mut at_a, &mut at_b] {
        sub.until("carol's leave", Duration::from_secs(10), is_leave_of(&c_id))
            .await;
    }
}

/// A frozen process keeps its sockets open: no FIN, no RST. Only missing
/// heartbeats tell, within 10 s; thawed, it links again.
#[tokio::test]
async fn a_peer_that_vanishes_without_a_fin_is_seen_gone_within_10s_and_relinks() {
    let net = TestNet::new();
    let [a, b] = net.linked(["alice", "bob"]).await;
    let b_id = b.status().await.peer_id;
    let mut at_a = a.subscribe(None).await;

    let started = Instant::now();
    b.signal(Signal::SIGSTOP);
    let e = at_a
        .until("bob's leave", Duration::from_secs(10), is_leave_of(&b_id))
        .await;
    eprintln!("a frozen peer was seen gone after {:?}", started.elapsed());
    assert!(
        matches!(&e.body, EventBody::Leave { reason: Some(r), .. } if r == "ping timeout"),
        "{e:?}"
    );

    b.signal(Signal::SIGCONT);
    at_a.until(
        "bob's return",
        T,
        |e| matches!(&e.body, EventBody::Join { peer_id, .. } if *peer_id == b_id),
    )
    .await;
    wait_full_mesh(&[&a, &b], T).await;
}
