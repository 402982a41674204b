//! Discovery, the one-link-per-pair mesh, chat delivery, nicks.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use shared::api::LinkDirection;
use shared::event::EventBody;

use testkit::procfs::established_on;
use testkit::*;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn three_find_each_other_with_one_link_per_pair_and_a_fourth_joins_fast() {
    let net = TestNet::new();
    let [a, b, c] = net.linked(["alice", "bob", "carol"]).await;

    let started = Instant::now();
    let d = net.spawn("dave", &[]);
    let all = [&a, &b, &c, &d];
    wait_until("dave to be fully linked", T, || async {
        for x in &all {
            let peers = x.try_peers().await.ok()?;
            (peers.iter().filter(|p| p.connected).count() == 3).then_some(())?;
        }
        Some(())
    })
    .await;
    let joined = started.elapsed();
    eprintln!("a 4th daemon was fully linked {joined:?} after it was started");
    assert!(joined < Duration::from_secs(1), "took {joined:?}");

    // Every pair: the smaller id dialed, the other accepted, once.
    let mut ids = Vec::new();
    for x in &all {
        ids.push((x.status().await, x.peers().await));
    }
    for (me, peers) in &ids {
        assert_eq!(peers.len(), 3, "{} knows {peers:?}", me.nick);
        for p in peers {
            let want = if me.peer_id < p.peer_id {
                LinkDirection::Dialed
            } else {
                LinkDirection::Accepted
            };
            assert_eq!(p.link, Some(want), "{} -> {}", me.peer_id, p.peer_id);
        }
    }
    // And the kernel agrees: each daemon accepted exactly one connection
    // per smaller peer, six in all.
    let accepted: usize = ids.iter().map(|(s, _)| established_on(s.port)).sum();
    assert_eq!(accepted, 6);
}

#[tokio::test]
async fn say_reaches_every_peer_exactly_once_in_order() {
    let net = TestNet::new();
    let [a, b, c] = net.linked(["alice", "bob", "carol"]).await;
    let mut at_b = b.subscribe(None).await;
    let mut at_c = c.subscribe(None).await;

    let client = a.client().await;
    let n = 500;
    let mut pending = Vec::new();
    for i in 0..n {
        pending.push(
            client
                .send(&shared::api::Call::Say(shared::api::SayParams {
                    text: format!("m{i}"),
                    action: false,
                    ..Default::default()
                }))
                .await
                .unwrap(),
        );
    }
    for p in pending {
        p.wait::<shared::api::SayResult>().await.unwrap();
    }
    a.say("end").await;

    for sub in [&mut at_b, &mut at_c] {
        let got = sub.messages(n + 1, T).await;
        let texts: Vec<&str> = got.iter().map(text).collect();
        let want: Vec<String> = (0..n)
            .map(|i| format!("m{i}"))
            .chain(["end".into()])
            .collect();
        assert_eq!(texts, want, "all, once, in order, nothing between");
        let ids: HashSet<&str> = got
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Message { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(ids.len(), n + 1);
        assert!(got.windows(2).all(|w| w[0].cursor < w[1].cursor));
    }
}

#[tokio::test]
async fn a_static_peer_links_without_discovery_and_crossed_dials_keep_one_link() {
    let net = TestNet::new();
    let a = net.daemon_with("alice", &["--no-discovery"]).await;
    let a_port = a.status().await.port.to_string();
    let target = format!("127.0.0.1:{a_port}");
    let b = net
        .daemon_with("bob", &["--no-discovery", "--peer", &target])
        .await;
    wait_full_mesh(&[&a, &b], T).await;
    let mut at_a = a.subscribe(None).await;
    let mut at_b = b.subscribe(None).await;
    b.say("from bob").await;
    a.say("from alice").await;
    // Each sees its own line and the other's (order across two senders is
    // not defined; per sender it is, see the test above).
    let texts = |v: Vec<shared::event::Event>| {
        let mut t: Vec<String> = v.iter().map(|e| text(e).to_owned()).collect();
        t.sort();
        t
    };
    assert_eq!(texts(at_a.messages(2, T).await), ["from alice", "from bob"]);
    assert_eq!(texts(at_b.messages(2, T).await), ["from alice", "from bob"]);

    // Two daemons that each dial the other end up with one link.
    let (cp, dp) = (free_tcp_port(), free_tcp_port());
    let c = net.spawn(
        "carol",
        &[
            "--no-discovery",
            "--port",
            &cp.to_string(),
            "--peer",
            &format!("127.0.0.1:{dp}"),
        ],
    );
    let d = net.spawn(
        "dave",
        &[
            "--no-discovery",
            "--port",
            &dp.to_string(),
            "--peer",
            &format!("127.0.0.1:{cp}"),
        ],
    );
    wait_full_mesh(&[&c, &d], T).await;
    wait_until("a single link between carol and dave", T, || async {
        (established_on(cp) + established_on(dp) == 1).then_some(())
    })
    .await;
    let (cs, ds) = (c.peers().await, d.peers().await);
    assert!(cs[0].connected && ds[0].connected);
    assert_ne!(cs[0].link, ds[0].link, "one end dialed, the other accepted");
}

#[tokio::test]
async fn a_nick_change_is_seen_by_the_others() {
    let net = TestNet::new();
    let [a, b] = net.linked(["alice", "bob"]).await;
    let mut at_a = a.subscribe(None).await;
    let mut at_b = b.subscribe(None).await;
    let a_id = a.status().await.peer_id;

    let r: shared::api::NickResult = a
        .client()
        .await
        .call(&shared::api::Call::Nick(shared::api::NickParams {
            name: "alicia".into(),
        }))
        .await
        .unwrap();
    assert_eq!((r.old.as_str(), r.new.as_str()), ("alice", "alicia"));

    for sub in [&mut at_a, &mut at_b] {
        let e = sub
            .until("a nick event", T, |e| {
                matches!(e.body, EventBody::Nick { .. })
            })
            .await;
        assert_eq!(
            e.body,
            EventBody::Nick {
                peer_id: a_id.clone(),
                old: "alice".into(),
                new: "alicia".into()
            }
        );
    }
    let peers = b.peers().await;
    assert_eq!(peers[0].nick, "alicia");
    a.say("hi").await;
    match at_b.messages(1, T).await.remove(0).body {
        EventBody::Message { nick, .. } => assert_eq!(nick, "alicia"),
        other => panic!("{other:?}"),
    }
}
