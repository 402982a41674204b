//! Away and where you left off: a daemon with no person's client attached
//! shows as away to its peers, within a beat of the last one leaving;
//! `away` sets a reason by hand; what the last attached client was sent is
//! where the next one's unread lines begin.

use std::time::Duration;

use shared::api::{AwayParams, AwayResult, Call, DETACHED_AWAY, SubscribeParams, SubscribeResult};
use testkit::*;

const T: Duration = Duration::from_secs(10);
/// A beat (2 s) and some room on a busy machine.
const BEAT: Duration = Duration::from_secs(3);

/// How `watcher` shows `peer_id`'s away message, once it is `want`.
async fn shows_away(watcher: &Daemon, peer_id: &str, want: Option<&str>, within: Duration) {
    wait_until(
        &format!("{peer_id} shown away as {want:?}"),
        within,
        || async {
            let peers = watcher.peers().await;
            let p = peers.iter().find(|p| p.peer_id == peer_id)?;
            (p.connected && p.away.as_deref() == want).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn away_follows_attached_clients_and_reasons() {
    let net = TestNet::new();
    let [alice, bob] = net.linked(["alice", "bob"]).await;
    let id = alice.status().await.peer_id;
    // Nobody is attached to alice: away, also to a peer that linked since.
    shows_away(&bob, &id, Some(DETACHED_AWAY), T).await;
    assert_eq!(alice.status().await.away.as_deref(), Some(DETACHED_AWAY));

    // A person's client attaches: back.
    let (ui, _) = alice.attach().await;
    shows_away(&bob, &id, None, T).await;
    // A script's subscription (tail -f) is no person.
    let _tail = alice.subscribe(None).await;
    // The last one leaves: away again within a heartbeat.
    drop(ui);
    shows_away(&bob, &id, Some(DETACHED_AWAY), BEAT).await;

    // By hand, with a reason; then no reason: detached again.
    let c = alice.client().await;
    let r: AwayResult = c
        .call(&Call::Away(AwayParams {
            reason: Some("lunch, back at 2".into()),
        }))
        .await
        .unwrap();
    assert_eq!(r.away.as_deref(), Some("lunch, back at 2"));
    shows_away(&bob, &id, Some("lunch, back at 2"), BEAT).await;
    let out = alice.p2pchat(&["away"]).await;
    assert!(out.contains("while no chat UI is attached"), "{out}");
    shows_away(&bob, &id, Some(DETACHED_AWAY), BEAT).await;
    let table = bob.p2pchat(&["peers"]).await;
    assert!(table.contains("away: detached"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&bob.p2pchat(&["peers", "--json"]).await).unwrap();
    assert_eq!(json[0]["away"], DETACHED_AWAY, "{json}");
}

#[tokio::test]
async fn the_next_attach_learns_where_the_last_one_left_off() {
    let net = TestNet::new();
    let [alice, bob] = net.linked(["alice", "bob"]).await;
    let (mut ui, first) = alice.attach().await;
    assert_eq!(first.read, None, "never attached before");
    bob.say("seen 1").await;
    bob.say("seen 2").await;
    let last = ui.until("seen 2", T, |e| text(e) == "seen 2").await.cursor;
    drop(ui);
    // Once alice knows her client left (she shows away), what is said is
    // unread.
    let alice_id = alice.status().await.peer_id;
    shows_away(&bob, &alice_id, Some(DETACHED_AWAY), T).await;
    bob.say("unseen").await;
    // Asked on one connection that is no person's client (asking does
    // not move the mark).
    let probe = alice.client().await;
    let _events = probe.take_events();
    wait_until("the left-off mark", T, || async {
        let r: SubscribeResult = probe
            .call(&Call::Subscribe(SubscribeParams::default()))
            .await
            .unwrap();
        (r.read == Some(last)).then_some(())
    })
    .await;
}
