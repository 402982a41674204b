//! Someone on the LAN or the machine who means harm: each test plays one
//! attack the adversarial probe found, against real daemons, and says what
//! it measured. None of them may cut a peer off, lock it out, exhaust the
//! daemon or make it lose what it already holds.

use std::time::Duration;

use shared::api::{Call, SayParams, SayResult};
use shared::discovery::DatagramType;
use shared::event::{Event, EventBody};
use testkit::lan::{Forger, loopback};
use testkit::*;

const T: Duration = Duration::from_secs(10);

/// Says `n` numbered lines from `from` on one pipelined client.
async fn say_many(from: &Daemon, tag: &str, n: usize) {
    let client = from.client().await;
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let say = Call::Say(SayParams {
            text: format!("{tag} {i}"),
            action: false,
        });
        pending.push(client.send(&say).await.expect("say"));
    }
    for p in pending {
        p.wait::<SayResult>().await.expect("said");
    }
}

/// Reads `sub` until `n` messages tagged `tag` arrived; fails on a gap or
/// a leave of `peer`, or when they do not all come.
async fn all_arrive(sub: &mut Subscriber, peer: &str, tag: &str, n: usize) {
    let mut got = 0;
    while got < n {
        let e: Event = sub.until(&format!("{tag} {got} of {n}"), T, |_| true).await;
        match &e.body {
            EventBody::Message { text, .. } if text.starts_with(tag) => got += 1,
            EventBody::Leave { peer_id, .. } if peer_id == peer => {
                panic!("the victim was cut off after {got} of {n} lines: {e:?}")
            }
            EventBody::Gap { .. } => panic!("lines lost: {e:?}"),
            _ => {}
        }
    }
}

/// One datagram `{"type":"leave","peer_id":VICTIM}` once made every peer
/// drop the victim for 39 s. Now a datagram never ends a link.
#[tokio::test]
async fn a_forged_leave_datagram_cuts_nobody_off() {
    let net = TestNet::new();
    let [a, b] = net.linked(["alice", "bob"]).await;
    let victim = b.status().await.peer_id;
    let mut at_a = a.subscribe(None).await;
    let forger = Forger::new(net.group, loopback(2));
    let n = 300;
    let talk = say_many(&b, "line", n);
    let forge = async {
        for _ in 0..30 {
            forger.send(DatagramType::Leave, &victim, 1, true);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::join!(talk, forge);
    all_arrive(&mut at_a, &victim, "line", n).await;
    let peers = a.peers().await;
    assert!(
        peers.iter().any(|p| p.peer_id == victim && p.connected),
        "{peers:?}"
    );
    eprintln!("the victim kept its link through 30 forged leaves; 0 of {n} lines lost");
}
