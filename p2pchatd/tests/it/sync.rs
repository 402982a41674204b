//! Catch-up: what was said while peers were apart (a partition, a frozen
//! peer) reaches them once they are linked again, verified, once each, in
//! each author's order, marked late.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shared::event::{Event, EventBody};
use testkit::relay::Relay;
use testkit::*;

const T: Duration = Duration::from_secs(10);
/// How long catch-up may take once links are back, on a busy machine (the
/// goal is 1 s; `make bench` measures it).
const CATCH_UP: Duration = Duration::from_secs(10);

/// Reads messages from `sub` until it has seen every text in `want`;
/// returns every message it read. Fails on a gap.
async fn until_all(sub: &mut Subscriber, want: &HashSet<String>, limit: Duration) -> Vec<Event> {
    let mut got = Vec::new();
    let mut missing = want.clone();
    while !missing.is_empty() {
        let e = sub
            .until(
                &format!(
                    "{} more lines (e.g. {:?})",
                    missing.len(),
                    missing.iter().next()
                ),
                limit,
                |e| matches!(e.body, EventBody::Message { .. } | EventBody::Gap { .. }),
            )
            .await;
        assert!(
            !matches!(e.body, EventBody::Gap { .. }),
            "lost lines: {e:?}"
        );
        missing.remove(text(&e));
        got.push(e);
    }
    got
}

/// No line twice, and each author's lines in the order it said them: the
/// live ones, and the late ones (a live line of the author's next life may
/// come before catch-up brings the last life's; those are marked late).
fn once_each_in_order(events: &[Event]) {
    let mut ids = HashSet::new();
    let mut last_seq: HashMap<(&str, bool), u64> = HashMap::new();
    for e in events {
        let EventBody::Message {
            id,
            peer_id,
            seq,
            late,
            ..
        } = &e.body
        else {
            continue;
        };
        assert!(ids.insert(id.clone()), "a line came twice: {e:?}");
        let seq = seq.expect("p2pchatd lines carry a sequence number");
        let before = last_seq.insert((peer_id, *late), seq).unwrap_or(0);
        assert!(
            seq > before,
            "{peer_id}'s lines out of order: {seq} after {before}"
        );
    }
}

fn is_late(e: &Event) -> bool {
    matches!(e.body, EventBody::Message { late: true, .. })
}

fn lines(tag: &str, n: usize) -> HashSet<String> {
    (0..n).map(|i| format!("{tag} {i}")).collect()
}

/// Five daemons, each pair linked through a relay that can be cut, split
/// {A,B} | {C,D,E}: lines said on both sides meanwhile reach everyone after
/// the heal.
#[tokio::test]
async fn a_partition_heals_with_every_line_everywhere_once_in_order() {
    const N: usize = 5;
    const SAID: usize = 30;
    let net = TestNet::new();
    let ports: Vec<u16> = (0..N).map(|_| free_tcp_port()).collect();
    // Pair (i, j), i < j: i dials j through relays[(i, j)].
    let mut relays = HashMap::new();
    for (j, &port) in ports.iter().enumerate() {
        for i in 0..j {
            let target: SocketAddr = ([127, 0, 0, 1], port).into();
            relays.insert((i, j), Relay::start(target).await);
        }
    }
    let names = ["amy", "ben", "cat", "dan", "eve"];
    let mut daemons = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let port = port.to_string();
        let mut args = vec!["--no-discovery".to_owned(), "--port".into(), port];
        for j in i + 1..N {
            args.push("--peer".into());
            args.push(relays[&(i, j)].addr.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        daemons.push(net.daemon_with(names[i], &args).await);
    }
    let refs: Vec<&Daemon> = daemons.iter().collect();
    wait_full_mesh(&refs, T).await;
    let mut subs = Vec::new();
    for d in &daemons {
        subs.push(d.subscribe(None).await);
    }

    let left = |i: usize| i < 2;
    for (&(i, j), r) in &relays {
        if left(i) != left(j) {
            r.cut();
        }
    }
    for (i, d) in daemons.iter().enumerate() {
        let want = if left(i) { 1 } else { 2 };
        wait_until(&format!("{} to see the partition", d.nick), T, || async {
            let p = d.try_peers().await.ok()?;
            (p.iter().filter(|p| p.connected).count() == want).then_some(())
        })
        .await;
    }
    // Both sides talk; each side hears its own.
    daemons[0].say_many("amy", SAID).await;
    daemons[2].say_many("cat", SAID).await;
    daemons[3].say_many("dan", SAID).await;
    let (amy, cat, dan) = (lines("amy", SAID), lines("cat", SAID), lines("dan", SAID));
    let mut seen: Vec<Vec<Event>> = Vec::new();
    for (i, sub) in subs.iter_mut().enumerate() {
        let side = if left(i) {
            amy.clone()
        } else {
            cat.union(&dan).cloned().collect()
        };
        seen.push(until_all(sub, &side, T).await);
    }

    for r in relays.values() {
        r.heal();
    }
    // Dialers back off while the relays refuse them (up to 5 s).
    wait_full_mesh(&refs, T + T).await;
    let back = Instant::now();
    let everything: HashSet<String> = amy.iter().chain(&cat).chain(&dan).cloned().collect();
    for (i, sub) in subs.iter_mut().enumerate() {
        let other = if left(i) {
            cat.union(&dan).cloned().collect()
        } else {
            amy.clone()
        };
        let late = until_all(sub, &other, CATCH_UP).await;
        assert!(
            late.iter().filter(|e| other.contains(text(e))).all(is_late),
            "lines from the other side are marked late"
        );
        seen[i].extend(late);
        once_each_in_order(&seen[i]);
        let all: HashSet<&str> = seen[i].iter().map(text).collect();
        assert!(everything.iter().all(|t| all.contains(t.as_str())));
    }
    eprintln!(
        "every daemon held every line {:?} after the mesh was whole again",
        back.elapsed()
    );
    // Nothing more comes: no line twice, late or not.
    daemons[4].say("the end").await;
    for sub in &mut subs {
        let e = sub
            .until("the end", T, |e| {
                matches!(e.body, EventBody::Message { .. })
            })
            .await;
        assert_eq!(text(&e), "the end", "nothing came twice after catch-up");
    }
}

/// C is frozen past the heartbeat timeout while A says 100 lines, then A
/// stops for good: C, thawed, gets all 100 from B, as A's, verified.
#[tokio::test]
async fn a_frozen_peer_gets_what_it_missed_from_a_third_when_the_author_is_gone() {
    let net = TestNet::new();
    let [mut a, b, c] = net.linked(["amy", "ben", "cat"]).await;
    let a_id = a.status().await.peer_id;
    let c_id = c.status().await.peer_id;
    let mut at_b = b.subscribe(None).await;
    let mut at_c = c.subscribe(None).await;
    c.signal(Signal::SIGSTOP);
    for d in [&a, &b] {
        wait_until(&format!("{} to see cat gone", d.nick), T, || async {
            let p = d.try_peers().await.ok()?;
            (!p.iter().any(|p| p.peer_id == c_id && p.connected)).then_some(())
        })
        .await;
    }
    a.say_many("while away", 100).await;
    let want = lines("while away", 100);
    until_all(&mut at_b, &want, T).await;
    a.signal(Signal::SIGTERM);
    a.exit_within(T).await;
    at_b.until(
        "amy's leave",
        T,
        |e| matches!(&e.body, EventBody::Leave { peer_id, .. } if *peer_id == a_id),
    )
    .await;

    c.signal(Signal::SIGCONT);
    let got = until_all(&mut at_c, &want, CATCH_UP + T).await;
    let caught: Vec<&Event> = got.iter().filter(|e| want.contains(text(e))).collect();
    assert_eq!(caught.len(), 100);
    assert!(caught.iter().all(|e| is_late(e)), "marked late");
    assert!(
        caught.iter().all(|e| matches!(&e.body,
            EventBody::Message { peer_id, nick, fingerprint: Some(_), .. }
                if *peer_id == a_id && nick == "amy")),
        "shown as amy's, with her key's fingerprint"
    );
    once_each_in_order(&got);
    // In the store too: a restart of C still shows them.
    let held = c.history(200).await;
    let stored: HashSet<&str> = held.iter().map(text).collect();
    assert!(want.iter().all(|t| stored.contains(t.as_str())));
}

/// Carol is stopped while Alice talks; started again, she has every line,
/// the last run (sealed after she was back) included, each once.
#[tokio::test]
async fn a_restarted_peer_gets_what_was_said_while_it_was_down() {
    let net = TestNet::new();
    let [a, mut c] = net.linked(["amy", "cat"]).await;
    let before = c.history(1).await.last().map_or(0, |e| e.cursor);
    c.signal(Signal::SIGTERM);
    c.exit_within(T).await;
    drop(c);
    // Not a whole number of runs: the last one is sealed after a delay.
    a.say_many("while down", 300).await;
    let c = net.daemon("cat").await;
    let mut at_c = c.subscribe(Some(before)).await;
    let want = lines("while down", 300);
    let got = until_all(&mut at_c, &want, CATCH_UP).await;
    assert!(got.iter().filter(|e| want.contains(text(e))).all(is_late));
    once_each_in_order(&got);
}

/// `say --wait` returns once every linked peer holds the line, and fails
/// naming a peer that is linked but does not confirm (frozen).
#[tokio::test]
async fn say_wait_returns_once_every_peer_holds_the_line() {
    let net = TestNet::new();
    let [a, b, c] = net.linked(["amy", "ben", "cat"]).await;
    let client = a.client().await;
    let said: shared::api::SayResult = client
        .call(&shared::api::Call::Say(shared::api::SayParams {
            text: "did you get this?".into(),
            wait: true,
            ..Default::default()
        }))
        .await
        .expect("confirmed");
    let mut confirmed = said.confirmed.expect("who confirmed");
    confirmed.sort();
    let mut want = vec![b.status().await.peer_id, c.status().await.peer_id];
    want.sort();
    assert_eq!(confirmed, want);
    // Each holds it already: no waiting on a subscription needed.
    for d in [&b, &c] {
        assert!(
            d.history(5)
                .await
                .iter()
                .any(|e| text(e) == "did you get this?")
        );
    }
    let (code, _, err) = a.p2pchat_output(&["say", "--wait", "and this?"]).await;
    assert_eq!(code, 0, "{err}");

    // Cat is frozen but still linked: she cannot confirm.
    c.signal(Signal::SIGSTOP);
    let started = Instant::now();
    let (code, _, err) = a
        .p2pchat_output(&["say", "--wait", "--timeout", "0.5", "anyone there?"])
        .await;
    c.signal(Signal::SIGCONT);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cat") && !err.contains("ben"), "{err}");
    assert!(started.elapsed() < T, "gave up in time");
    // The line was sent: ben has it.
    assert!(
        b.history(5)
            .await
            .iter()
            .any(|e| text(e) == "anyone there?")
    );
}

/// Every (author, sequence) pair names one line, across every daemon's
/// history.
fn one_line_per_sequence(histories: &[Vec<Event>]) {
    let mut seen: HashMap<(String, u64), String> = HashMap::new();
    for e in histories.iter().flatten() {
        if let EventBody::Message {
            id,
            peer_id,
            seq: Some(seq),
            ..
        } = &e.body
        {
            let was = seen.insert((peer_id.clone(), *seq), id.clone());
            assert!(
                was.as_ref().is_none_or(|w| w == id),
                "{peer_id} sequence {seq} names two lines: {was:?} and {id}"
            );
        }
    }
}

/// Amy is killed (-9) in the middle of a burst; once she is back, every
/// line any daemon holds is in every daemon's store, and no sequence number
/// of hers names two lines.
#[tokio::test]
async fn a_sender_killed_mid_burst_loses_no_line_anyone_holds() {
    const BURST: usize = 10_000;
    let net = TestNet::new();
    // Each holds the whole burst in memory too, so `history` shows it all.
    let args = ["--history", "20000"];
    let [mut a, b, c] = net.linked_with(["amy", "ben", "cat"], &args).await;
    let mut at_b = b.subscribe(None).await;
    let client = a.client().await;
    let flood = tokio::spawn(async move {
        for i in 0..BURST {
            let say = shared::api::Call::Say(shared::api::SayParams {
                text: format!("burst {i}"),
                ..Default::default()
            });
            if client.send(&say).await.is_err() {
                break;
            }
        }
    });
    // Well into the burst: kill her.
    at_b.messages(2_000, T).await;
    a.signal(Signal::SIGKILL);
    a.exit_within(T).await;
    let _ = flood.await;
    drop(a);
    let a = net.daemon_with("amy", &args).await;
    wait_full_mesh(&[&a, &b, &c], T).await;
    a.say("back again").await;

    let burst = |h: &[Event]| -> HashSet<String> {
        h.iter()
            .map(text)
            .filter(|t| t.starts_with("burst ") || *t == "back again")
            .map(str::to_owned)
            .collect()
    };
    let (histories, all) = wait_until(
        "every line held anywhere to be everywhere",
        CATCH_UP,
        || async {
            let mut hs = Vec::new();
            for d in [&a, &b, &c] {
                hs.push(d.try_history(BURST + 100).await.ok()?);
            }
            let sets: Vec<HashSet<String>> = hs.iter().map(|h| burst(h)).collect();
            let all: HashSet<String> = sets.iter().flatten().cloned().collect();
            sets.iter()
                .all(|s| s.len() == all.len())
                .then_some((hs, all))
        },
    )
    .await;
    assert!(all.len() > 2_000, "{} lines held", all.len());
    eprintln!(
        "{} of {BURST} lines were said before the kill; all everywhere",
        all.len() - 1
    );
    for h in &histories {
        once_each_in_order(h);
    }
    one_line_per_sequence(&histories);
}

/// The journal of our lines starts again past 8 MiB (once the store holds
/// it all), and a crash after that still loses nothing: what came after
/// the restart of the journal is sealed and stored on the next start.
#[tokio::test]
async fn the_journal_starts_again_when_large_and_still_covers_a_crash() {
    const SAID: usize = 40_000;
    let net = TestNet::new();
    let args = ["--history", "60000"];
    let [mut a, b] = net.linked_with(["amy", "ben"], &args).await;
    // ~250 bytes a line: past 8 MiB once.
    a.say_many("many", SAID).await;
    let journal = net
        .home_of("amy")
        .join("state")
        .join("p2pchat")
        .join("outbox.journal");
    let size = std::fs::metadata(&journal).expect("the journal").len();
    // Started again at a seal: its header goes on from that seal's hash,
    // not from the life's start (`-`).
    let written = std::fs::read_to_string(&journal).expect("the journal");
    let header: Vec<&str> = written.lines().next().unwrap_or("").split(' ').collect();
    assert_ne!(
        header.get(3),
        Some(&"-"),
        "the journal started again: {header:?}"
    );
    a.signal(Signal::SIGKILL);
    a.exit_within(T).await;
    drop(a);
    assert!(
        size < 8 * 1024 * 1024,
        "the journal started again ({size} bytes)"
    );
    let a = net.daemon_with("amy", &args).await;
    wait_full_mesh(&[&a, &b], T).await;
    let want = lines("many", SAID);
    for d in [&a, &b] {
        wait_until(
            &format!("{} to hold all {SAID}", d.nick),
            CATCH_UP,
            || async {
                let h = d.try_history(SAID + 100).await.ok()?;
                let got: HashSet<&str> = h.iter().map(text).collect();
                want.iter().all(|t| got.contains(t.as_str())).then_some(())
            },
        )
        .await;
        once_each_in_order(&d.history(SAID + 100).await);
    }
}
