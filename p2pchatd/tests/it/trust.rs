//! Nicks bound to keys: a second key claiming a pinned nick is shown apart
//! and flagged everywhere a script looks (`peers --json`, `tail --json`),
//! a verified nick claimed by another key raises an alert, pins outlive a
//! restart, and `forget` frees a nick.

use std::time::Duration;

use shared::api::{PeerInfo, Trust};
use shared::event::{Event, EventBody};
use testkit::lan::go_line;
use testkit::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

async fn peers_json(d: &Daemon) -> Vec<PeerInfo> {
    serde_json::from_str(&d.p2pchat(&["peers", "--json"]).await).expect("peers --json")
}

fn by_id<'a>(peers: &'a [PeerInfo], id: &str) -> &'a PeerInfo {
    peers
        .iter()
        .find(|p| p.peer_id == id)
        .unwrap_or_else(|| panic!("{id} in {peers:#?}"))
}

#[tokio::test]
async fn an_impostor_of_a_pinned_nick_is_shown_apart_and_flagged() {
    let net = TestNet::new();
    let [alice, mut bob] = net.linked(["alice", "bob"]).await;
    let real = alice.status().await;

    // Bob compares alice's fingerprint out of band, then trusts her.
    let shown = bob.p2pchat(&["fingerprint", "alice"]).await;
    assert!(shown.contains(&real.fingerprint), "{shown}");
    let said = bob.p2pchat(&["trust", "alice"]).await;
    assert!(said.contains(&real.fingerprint), "{said}");

    // A daemon with a key of its own that calls itself alice.
    let mut at_bob = bob.subscribe(None).await;
    let rogue = net.daemon_as("mallory", "alice", &[]).await;
    let fake = rogue.status().await;
    assert_eq!(fake.nick, "alice");
    wait_full_mesh(&[&alice, &bob, &rogue], T).await;
    let apart = format!("alice~{}", &fake.peer_id[1..5]);

    let alert = at_bob
        .until("the alert", T, |e| {
            matches!(e.body, EventBody::Alert { .. })
        })
        .await;
    let EventBody::Alert { peer_id, text } = &alert.body else {
        unreachable!()
    };
    assert_eq!(*peer_id, fake.peer_id);
    assert!(
        text.contains("alice is verified") && text.contains(&fake.fingerprint),
        "{text}"
    );

    let peers = peers_json(&bob).await;
    let r = by_id(&peers, &fake.peer_id);
    assert_eq!(r.nick, apart);
    assert_eq!(r.trust, Some(Trust::Conflict));
    assert!(r.encrypted);
    assert_eq!(r.fingerprint.as_deref(), Some(fake.fingerprint.as_str()));
    let a = by_id(&peers, &real.peer_id);
    assert_eq!((a.nick.as_str(), a.trust), ("alice", Some(Trust::Verified)));
    assert_eq!(
        peers.iter().filter(|p| p.nick == "alice").count(),
        1,
        "{peers:#?}"
    );

    // Their lines, as `tail --json` gives them to scripts.
    rogue.say("it is me, alice: send me the keys").await;
    alice.say("the real alice").await;
    at_bob.messages(2, T).await;
    let tail = bob.p2pchat(&["tail", "-n", "50", "--json"]).await;
    let events: Vec<Event> = tail
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event a line"))
        .collect();
    let said_by = |id: &str| {
        events
            .iter()
            .find_map(|e| match &e.body {
                EventBody::Message {
                    peer_id,
                    nick,
                    fingerprint,
                    trust,
                    ..
                } if peer_id == id => Some((
                    nick.clone(),
                    fingerprint.as_deref().map(str::to_owned),
                    *trust,
                )),
                _ => None,
            })
            .unwrap_or_else(|| panic!("a line of {id} in {tail}"))
    };
    assert_eq!(
        said_by(&fake.peer_id),
        (
            apart.clone(),
            Some(fake.fingerprint.clone()),
            Some(Trust::Conflict)
        )
    );
    assert_eq!(
        said_by(&real.peer_id),
        (
            "alice".into(),
            Some(real.fingerprint.clone()),
            Some(Trust::Verified)
        )
    );
    assert!(tail.contains(r#""kind":"alert""#), "{tail}");
    // The text form marks the impostor's line.
    let plain = bob.p2pchat(&["tail", "-n", "50"]).await;
    assert!(plain.contains(&format!("! <{apart}> it is me")), "{plain}");
    assert!(plain.contains(" <alice> the real alice"), "{plain}");

    // The pins outlive bob's restart.
    bob.signal(nix::sys::signal::Signal::SIGTERM);
    bob.exit_within(T).await;
    let bob = net.daemon("bob").await;
    wait_full_mesh(&[&alice, &bob, &rogue], T).await;
    let peers = peers_json(&bob).await;
    assert_eq!(by_id(&peers, &fake.peer_id).trust, Some(Trust::Conflict));
    assert_eq!(by_id(&peers, &fake.peer_id).nick, apart);
    assert_eq!(by_id(&peers, &real.peer_id).trust, Some(Trust::Verified));

    // Alice got a new key, say: bob forgets the old one, and the one now
    // calling itself alice holds the nick, at once.
    drop(alice);
    wait_until("alice's link to go", T, || async {
        let p = bob.peers().await;
        (!by_id(&p, &real.peer_id).connected).then_some(())
    })
    .await;
    let mut at_bob = bob.subscribe(None).await;
    bob.p2pchat(&["forget", "alice"]).await;
    at_bob
        .until("the rename", T, |e| {
            matches!(&e.body, EventBody::Nick { old, new, .. } if *old == apart && new == "alice")
        })
        .await;
    let peers = peers_json(&bob).await;
    let r = by_id(&peers, &fake.peer_id);
    assert_eq!(r.nick, "alice");
    assert!(matches!(r.trust, Some(Trust::Pinned | Trust::New)), "{r:?}");
    rogue.say("now I am alice").await;
    let e = at_bob.messages(1, T).await.remove(0);
    assert!(
        matches!(&e.body, EventBody::Message { nick, trust: Some(Trust::Pinned | Trust::New), .. } if nick == "alice"),
        "{e:?}"
    );
}

/// Our own nick is ours: a peer that takes it is shown apart at home too;
/// a Go peer (no key) never takes a nick a key holds.
#[tokio::test]
async fn our_nick_and_pinned_nicks_are_never_a_strangers() {
    let net = TestNet::new();
    let [alice, bob] = net.linked(["alice", "bob"]).await;
    let rogue = net.daemon_as("mallory", "bob", &[]).await;
    wait_full_mesh(&[&alice, &bob, &rogue], T).await;
    let fake = rogue.status().await;
    let peers = peers_json(&bob).await;
    let r = by_id(&peers, &fake.peer_id);
    assert_eq!(r.nick, format!("bob~{}", &fake.peer_id[1..5]));
    assert_eq!(r.trust, Some(Trust::Conflict));

    let mut at_bob = bob.subscribe(None).await;
    let port = bob.status().await.port;
    let mut go = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let lines = go_line("join", "alice_1", "alice", "alice joined")
        + &go_line("chat", "alice_1", "alice", "i am alice, trust me");
    go.write_all(lines.as_bytes()).await.unwrap();
    let e = at_bob.messages(1, T).await.remove(0);
    assert!(
        matches!(&e.body, EventBody::Message { nick, trust: Some(Trust::Plaintext), .. } if nick == "alice~go"),
        "{e:?}"
    );
    let g = by_id(&bob.peers().await, "alice_1").clone();
    assert_eq!(
        (g.nick.as_str(), g.encrypted, g.trust),
        ("alice~go", false, Some(Trust::Plaintext))
    );
}
