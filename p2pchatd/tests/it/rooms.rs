//! Rooms and direct messages: a room's lines reach its members' links
//! only, a direct message reaches its recipient only (and a peer that
//! carries it on holds bytes it cannot read), both survive restarts and
//! partitions, and bad room input is refused or dropped without harm.

use std::net::SocketAddr;
use std::time::Duration;

use p2pchat_tui::client::ClientError;
use shared::api::{Call, RoomInfo, RoomParams, RoomResult, code};
use shared::authorship::CAP_SEALS;
use shared::event::{Event, EventBody};
use shared::rooms::CAP_ROOMS;
use shared::sync::CAP_SYNC;
use shared::wire::{MessageType, PeerMessage};
use testkit::relay::Relay;
use testkit::*;

const T: Duration = Duration::from_secs(10);

fn chat_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn is_message(e: &Event) -> bool {
    matches!(e.body, EventBody::Message { .. })
}

fn messages_of(events: &[Event]) -> Vec<&str> {
    events.iter().filter(|e| is_message(e)).map(text).collect()
}

/// A raw p2pchatd peer, eve, linked to `d` with `caps` in its hello.
async fn eve_at(d: &Daemon, caps: &[&str]) -> noise::NoiseLink {
    let port = d.status().await.port;
    noise::dial_with_caps(chat_addr(port), [9; 32], "eve", None, caps)
        .await
        .unwrap()
}

fn room_of(e: &Event) -> Option<&str> {
    match &e.body {
        EventBody::Message { room, .. } => room.as_deref(),
        _ => None,
    }
}

/// Waits until `d` sees the peer `nick` in `room`.
async fn sees_in_room(d: &Daemon, nick: &str, room: &str) {
    wait_until(
        &format!("{} to see {nick} in {room}", d.nick),
        T,
        || async {
            let rooms: Vec<RoomInfo> = d.client().await.call(&Call::Rooms).await.ok()?;
            rooms
                .iter()
                .any(|r| r.name == room && r.peers.iter().any(|p| p == nick))
                .then_some(())
        },
    )
    .await;
}

/// Three daemons; amy and bob join #ops, cat does not, and a raw p2pchatd
/// peer (eve, in no room) links to amy and counts what amy's link carries.
/// A line in #ops reaches bob's #ops subscription; cat and eve get none of
/// it; #general reaches all. A member that joins later gets the room's
/// lines from the others.
#[tokio::test]
async fn a_rooms_lines_go_to_its_members_links_only() {
    let net = TestNet::new();
    let [a, b, c] = net.linked(["amy", "bob", "cat"]).await;
    let mut eve = eve_at(&a, &[CAP_SEALS, CAP_ROOMS]).await;
    a.join("#ops").await;
    b.join("#Ops").await;
    sees_in_room(&a, "bob", "#ops").await;
    let mut at_b = b.subscribe_room("#ops").await;
    let mut at_c = c.subscribe(None).await;

    a.say_to(Some("#ops"), None, "deploy at noon")
        .await
        .unwrap();
    a.say_to(None, None, "hello everyone").await.unwrap();

    let got = at_b.messages(1, T).await;
    assert_eq!(text(&got[0]), "deploy at noon");
    assert_eq!(room_of(&got[0]), Some("#ops"));
    // The link to cat is ordered: the #general line comes after anything
    // of #ops that was sent on it.
    let got = at_c.messages(1, T).await;
    assert_eq!(text(&got[0]), "hello everyone");
    assert_eq!(room_of(&got[0]), Some("#general"));
    let mut carried = Vec::new();
    loop {
        let m: PeerMessage = eve.recv(T).await.unwrap();
        let general = m.kind == MessageType::Chat && m.content == "hello everyone";
        carried.push(m);
        if general {
            break;
        }
    }
    let of_ops: Vec<&PeerMessage> = carried
        .iter()
        .filter(|m| {
            m.room_id == "ops"
                || m.content.contains("deploy")
                || m.seal.as_ref().is_some_and(|s| s.room.is_some())
        })
        .collect();
    assert!(
        of_ops.is_empty(),
        "a non-member's link carried #ops lines: {of_ops:?}"
    );
    eprintln!(
        "eve's link carried {} lines, 0 of them #ops's",
        carried.len()
    );
    // cat knows who is in #ops (membership is no secret), not what it said.
    assert!(
        c.room_history("#ops", 100)
            .await
            .iter()
            .all(|e| !is_message(e)),
        "cat holds #ops lines"
    );
    assert!(
        c.history(100)
            .await
            .iter()
            .all(|e| !text(e).contains("deploy")),
        "cat shows an #ops line"
    );
    // bob's #general stays free of #ops.
    let general = b.room_history("#general", 100).await;
    assert!(general.iter().all(|e| !text(e).contains("deploy")));
    assert!(general.iter().any(|e| text(e) == "hello everyone"));

    // cat joins late: the room's lines come to it from its members.
    let mut at_c = c.subscribe_room("#ops").await;
    c.join("#ops").await;
    let got = at_c.messages(1, T).await;
    assert_eq!(text(&got[0]), "deploy at noon");
    assert!(matches!(got[0].body, EventBody::Message { late: true, .. }));
}

/// amy sends bob a direct message while bob is away; amy goes away too;
/// bob comes back and gets it from cat, who kept it sealed: cat's store,
/// journal and API hold no trace of the text, nor does what eve (a raw
/// peer that keeps runs for others) was handed.
#[tokio::test]
async fn a_direct_message_reaches_its_recipient_alone_through_a_third_peer() {
    // Not hex: ids and sealed bytes are hex, and could spell a number.
    const SECRET: &str = "the door code is tulip-zebra";
    const WORD: &str = "tulip-zebra";
    let net = TestNet::new();
    let [a, mut b, c] = net.linked(["amy", "bob", "cat"]).await;
    let mut eve = eve_at(&a, &[CAP_SEALS, CAP_ROOMS, CAP_SYNC]).await;

    // A DM while bob is linked: bob alone shows it.
    let mut at_b = b.subscribe(None).await;
    let mut at_c = c.subscribe(None).await;
    a.say_to(None, Some("bob"), "psst").await.unwrap();
    a.say("after the psst").await;
    let got = at_b.messages(1, T).await;
    assert_eq!(text(&got[0]), "psst");
    assert!(
        matches!(&got[0].body, EventBody::Message { to: Some(dm), .. } if dm.nick == "bob"),
        "{got:?}"
    );
    let got = at_c.messages(1, T).await;
    assert_eq!(text(&got[0]), "after the psst", "cat saw the DM");

    // bob goes; amy writes to him; amy goes.
    let mut at_a = a.subscribe(None).await;
    b.signal(nix::sys::signal::Signal::SIGTERM);
    b.exit_within(T).await;
    at_a.until("bob to leave", T, |e| {
        matches!(e.body, EventBody::Leave { .. })
    })
    .await;
    a.say_to(None, Some("bob"), SECRET).await.unwrap();
    let mut a = a;
    a.signal(nix::sys::signal::Signal::SIGTERM);
    a.exit_within(T).await;
    at_c.until(
        "amy to leave",
        T,
        |e| matches!(&e.body, EventBody::Leave { nick, .. } if nick == "amy"),
    )
    .await;

    // bob is back: cat passes the sealed run on.
    b = net.daemon("bob").await;
    let mut at_b = b.subscribe(Some(0)).await;
    let got = at_b
        .until("the direct message, through cat", T, |e| text(e) == SECRET)
        .await;
    assert!(matches!(
        &got.body,
        EventBody::Message { late: true, to: Some(_), nick, .. } if nick == "amy"
    ));

    // Nothing of it readable at cat.
    let state = net.home_of("cat").join("state").join("p2pchat");
    for f in std::fs::read_dir(&state).unwrap() {
        let path = f.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes())
                && !bytes.windows(WORD.len()).any(|w| w == WORD.as_bytes()),
            "{} holds the text",
            path.display()
        );
    }
    assert!(
        c.history(1000)
            .await
            .iter()
            .all(|e| !text(e).contains(WORD))
    );
    let log = std::fs::read_to_string(&c.log).unwrap();
    assert!(!log.contains(WORD), "cat's log shows the text");
    // What amy left with eve was sealed too.
    let mut handed = Vec::new();
    while let Ok(m) = eve.recv(Duration::from_millis(200)).await {
        handed.push(m);
    }
    let relays: Vec<_> = handed
        .iter()
        .filter_map(|m| m.relay.as_deref())
        .filter(|r| r.room.as_deref().is_some_and(|r| r.starts_with('@')))
        .collect();
    assert!(!relays.is_empty(), "amy left no sealed run with eve");
    let raw = serde_json::to_string(&relays).unwrap();
    assert!(!raw.contains(WORD) && !raw.contains("psst"));
}

/// The rooms joined and what was said in them outlive a restart.
#[tokio::test]
async fn rooms_and_their_history_survive_a_restart() {
    let net = TestNet::new();
    let mut a = net.daemon("amy").await;
    a.join("#ops").await;
    a.say_to(Some("#ops"), None, "before the restart")
        .await
        .unwrap();
    a.signal(nix::sys::signal::Signal::SIGTERM);
    a.exit_within(T).await;
    let a = net.daemon("amy").await;
    let rooms: Vec<RoomInfo> = a.client().await.call(&Call::Rooms).await.unwrap();
    assert!(
        rooms.iter().any(|r| r.name == "#ops" && r.joined),
        "{rooms:?}"
    );
    let h = a.room_history("#ops", 10).await;
    assert_eq!(messages_of(&h), ["before the restart"]);
    a.say_to(Some("#ops"), None, "after").await.unwrap();
    assert_eq!(
        messages_of(&a.room_history("#ops", 10).await),
        ["before the restart", "after"]
    );
    assert!(
        messages_of(&a.room_history("#general", 10).await).is_empty(),
        "#general shows #ops lines"
    );
    // Leaving is kept too.
    let r: RoomResult = a
        .client()
        .await
        .call(&Call::Part(RoomParams {
            room: "#ops".into(),
        }))
        .await
        .unwrap();
    assert!(r.changed);
    let e = a.say_to(Some("#ops"), None, "gone").await;
    refused(e, code::NOT_IN_ROOM);
}

/// amy and bob, both in #ops, linked through a relay that is cut: what
/// amy says in #ops and to bob meanwhile reaches bob after the heal.
#[tokio::test]
async fn catch_up_after_a_partition_brings_room_lines_and_direct_messages() {
    let net = TestNet::new();
    let b = net.daemon_with("bob", &["--no-discovery"]).await;
    let relay = Relay::start(chat_addr(b.status().await.port)).await;
    let peer = relay.addr.to_string();
    let a = net
        .daemon_with("amy", &["--no-discovery", "--peer", &peer])
        .await;
    wait_full_mesh(&[&a, &b], T).await;
    a.join("#ops").await;
    b.join("#ops").await;
    sees_in_room(&a, "bob", "#ops").await;
    let mut at_b = b.subscribe(None).await;
    relay.cut();
    at_b.until("amy's link to drop", T, |e| {
        matches!(e.body, EventBody::Leave { .. })
    })
    .await;
    a.say_to(Some("#ops"), None, "ops while apart")
        .await
        .unwrap();
    a.say_to(None, Some("bob"), "dm while apart").await.unwrap();
    relay.heal();
    let mut want: std::collections::HashSet<&str> = ["ops while apart", "dm while apart"].into();
    while !want.is_empty() {
        let e = at_b
            .until("the lines said apart", T, |e| {
                matches!(e.body, EventBody::Message { .. })
            })
            .await;
        assert!(
            matches!(e.body, EventBody::Message { late: true, .. }),
            "{e:?}"
        );
        want.remove(text(&e));
    }
}

/// Bad room input, from the API and from a peer: each refused with a
/// clear error or dropped, and nothing else lost.
#[tokio::test]
async fn bad_room_input_is_refused_or_dropped() {
    let net = TestNet::new();
    let a = net.daemon("amy").await;
    let client = a.client().await;
    // A name without its `#` is taken as the room's.
    let r: RoomResult = client
        .call(&Call::Join(RoomParams { room: "Ops".into() }))
        .await
        .unwrap();
    assert_eq!(r.room, "#ops");
    for bad in ["", "#", "#a b", "#é", &format!("#{}", "x".repeat(33))] {
        let r: Result<RoomResult, _> = client
            .call(&Call::Join(RoomParams { room: bad.into() }))
            .await;
        let why = refused(r, code::INVALID_ROOM);
        eprintln!("join {bad:?}: {why}");
    }
    let r: Result<RoomResult, _> = client
        .call(&Call::Part(RoomParams {
            room: "#general".into(),
        }))
        .await;
    refused(r, code::INVALID_ROOM);
    // Thousands of joins: the first 64 rooms, then a clear refusal each.
    let mut joined = 0;
    let mut full = 0;
    for i in 0..2000 {
        let r: Result<RoomResult, _> = client
            .call(&Call::Join(RoomParams {
                room: format!("#r{i}"),
            }))
            .await;
        match r {
            Ok(_) => joined += 1,
            Err(ClientError::Rpc(e)) if e.code == code::INVALID_ROOM => full += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((joined, full), (63, 1937), "64 rooms with #ops");
    refused(a.say_to(Some("#nope"), None, "x").await, code::NOT_IN_ROOM);
    refused(
        a.say_to(Some("bad room"), None, "x").await,
        code::INVALID_ROOM,
    );
    refused(a.say_to(None, Some("nobody"), "x").await, code::CANNOT_DM);
    refused(a.say_to(None, Some("amy"), "x").await, code::CANNOT_DM);
    refused(
        a.say_to(Some("#r1"), Some("amy"), "x").await,
        code::INVALID_PARAMS,
    );

    // From a peer: lines for a room we are not in, DMs to someone else,
    // room ids that are neither, a rooms line over its limit. Dropped;
    // the link stays and its next line shows.
    let mut events = a.subscribe(None).await;
    let mut eve = eve_at(&a, &[CAP_SEALS, CAP_ROOMS]).await;
    let eve_id = shared::keys::peer_id_of(
        &ed25519_dalek::SigningKey::from_bytes(&[9; 32])
            .verifying_key()
            .to_bytes(),
    );
    let other = format!("@k{}", "0".repeat(24));
    let line = |room: &str, text: &str| {
        let mut m = PeerMessage::new(
            MessageType::Chat,
            format!("{:016x}", fastrand::u64(..)),
            &eve_id,
            "eve",
            text.into(),
            chrono::Utc::now(),
            1,
        );
        m.room_id = room.into();
        m.encode()
    };
    for (room, text) in [
        ("secret-room", "not for amy"),
        (other.as_str(), "for someone else"),
        ("@bob_1", "to no key"),
        ("Ops", "bad spelling"),
        ("a b", "no room at all"),
    ] {
        eve.send(&line(room, text)).await.unwrap();
    }
    let mut too_many = PeerMessage::new(
        MessageType::Rooms,
        "r1".into(),
        &eve_id,
        "eve",
        String::new(),
        chrono::Utc::now(),
        0,
    );
    too_many.rooms = Some((0..65).map(|i| format!("r{i}")).collect());
    eve.send(&too_many.encode()).await.unwrap();
    eve.send(&line("general", "still here")).await.unwrap();
    let got = events
        .until("eve's good line", T, |e| {
            matches!(e.body, EventBody::Message { .. })
        })
        .await;
    assert_eq!(text(&got), "still here", "a bad line was shown");
    let peers = a.peers().await;
    let eve = peers.iter().find(|p| p.nick == "eve").unwrap();
    assert!(eve.connected && eve.rooms.is_empty(), "{eve:?}");
}

/// A direct message to a nick goes to the key that holds it, never to a
/// peer shown apart under it: with an impostor calling itself bob, `bob`
/// is the real bob, and `bob~tag` (the impostor, in conflict) is refused.
#[tokio::test]
async fn a_direct_message_never_goes_to_a_nick_in_conflict() {
    let net = TestNet::new();
    let [a, b] = net.linked(["amy", "bob"]).await;
    let rogue = net.daemon_as("mallory", "bob", &[]).await;
    wait_full_mesh(&[&a, &b, &rogue], T).await;
    let fake = rogue.status().await;
    let apart = format!("bob~{}", &fake.peer_id[1..5]);
    wait_until("amy to show the impostor apart", T, || async {
        let peers = a.try_peers().await.ok()?;
        peers.iter().any(|p| p.nick == apart).then_some(())
    })
    .await;
    let why = refused(a.say_to(None, Some(&apart), "x").await, code::CANNOT_DM);
    assert!(why.contains("shown apart"), "{why}");
    // Nor do files.
    let file = net.dir.path().join("plan.txt");
    std::fs::write(&file, b"the plan").unwrap();
    let offer = a
        .client()
        .await
        .call::<shared::api::TransferInfo>(&Call::Send(shared::api::SendParams {
            paths: vec![file.display().to_string()],
            to: apart.clone(),
        }))
        .await;
    let why = refused(offer, code::CANNOT_SEND);
    assert!(why.contains("shown apart"), "{why}");
    let mut at_b = b.subscribe(None).await;
    let mut at_rogue = rogue.subscribe(None).await;
    a.say_to(None, Some("bob"), "for the real bob")
        .await
        .unwrap();
    a.say("after it").await;
    assert_eq!(text(&at_b.messages(1, T).await[0]), "for the real bob");
    assert_eq!(text(&at_rogue.messages(1, T).await[0]), "after it");
}

/// A room's topic: set by a member, heard by the members only, told to
/// one that joins later, kept across a restart; the newest wins.
#[tokio::test]
async fn a_rooms_topic_reaches_its_members_and_lasts() {
    use shared::api::{TopicParams, TopicResult};
    let topic_of = |d: &Daemon| {
        let socket = d.socket.clone();
        async move {
            let r: TopicResult = p2pchat_tui::client::Client::connect(&socket)
                .await
                .unwrap()
                .call(&Call::Topic(TopicParams {
                    room: "#ops".into(),
                    text: None,
                }))
                .await
                .unwrap();
            r.topic.map(|t| t.text)
        }
    };
    let is_topic = |e: &Event| matches!(e.body, EventBody::Topic { .. });
    let net = TestNet::new();
    let [a, mut b, c] = net.linked(["amy", "bob", "cat"]).await;
    a.join("#ops").await;
    b.join("#ops").await;
    sees_in_room(&a, "bob", "#ops").await;
    let mut at_b = b.subscribe_room("#ops").await;
    let mut at_c = c.subscribe(None).await;
    let set: Result<TopicResult, _> = a
        .client()
        .await
        .call(&Call::Topic(TopicParams {
            room: "#ops".into(),
            text: Some("deploys on Fridays".into()),
        }))
        .await;
    assert_eq!(set.unwrap().topic.unwrap().text, "deploys on Fridays");
    let e = at_b.until("the topic", T, is_topic).await;
    assert!(matches!(&e.body, EventBody::Topic { nick, text, room, .. }
        if nick == "amy" && text == "deploys on Fridays" && room == "#ops"));
    // cat, not in #ops, hears nothing of it (a line after it comes first).
    a.say("after the topic").await;
    let e = at_c
        .until("amy's next line", T, |e| is_topic(e) || is_message(e))
        .await;
    assert_eq!(text(&e), "after the topic");
    refused(
        c.client()
            .await
            .call::<TopicResult>(&Call::Topic(TopicParams {
                room: "#ops".into(),
                text: Some("x".into()),
            }))
            .await,
        code::NOT_IN_ROOM,
    );
    // cat joins: a member tells it the topic.
    c.join("#ops").await;
    let e = at_c.until("the topic, on joining", T, is_topic).await;
    assert!(matches!(&e.body, EventBody::Topic { text, .. } if text == "deploys on Fridays"));
    // bob restarts and keeps it; he sets a newer one, amy takes it.
    b.signal(nix::sys::signal::Signal::SIGTERM);
    b.exit_within(T).await;
    b = net.daemon("bob").await;
    assert_eq!(topic_of(&b).await.as_deref(), Some("deploys on Fridays"));
    wait_full_mesh(&[&a, &b, &c], T).await;
    let mut at_a = a.subscribe(None).await;
    let _: TopicResult = b
        .client()
        .await
        .call(&Call::Topic(TopicParams {
            room: "#ops".into(),
            text: Some("freeze until Monday".into()),
        }))
        .await
        .unwrap();
    at_a.until("bob's topic", T, is_topic).await;
    assert_eq!(topic_of(&a).await.as_deref(), Some("freeze until Monday"));
}
