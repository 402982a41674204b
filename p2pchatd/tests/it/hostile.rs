//! Someone on the LAN or the machine who means harm: each test plays one
//! attack the adversarial probe found, against real daemons, and says what
//! it measured. None of them may cut a peer off, lock it out, exhaust the
//! daemon or make it lose what it already holds.

use std::time::Duration;

use shared::discovery::DatagramType;
use shared::event::{Event, EventBody};
use testkit::lan::{Forger, announce_flood, connect_from, forged_line, hostile_crowd, loopback};
use testkit::*;

const T: Duration = Duration::from_secs(10);

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
    let talk = b.say_many("line", n);
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

/// A `join` in a live peer's name once replaced its link (206 of 228 lines
/// lost) or held a fake one (all lost), and forged text showed as the
/// victim's. Now a healthy link is never given up for a claimant, and
/// nothing it sends is shown as the peer.
#[tokio::test]
async fn a_join_in_a_live_peers_name_takes_nothing_over() {
    let net = TestNet::new();
    let [a, b] = net.linked(["alice", "bob"]).await;
    let (a_id, b_id) = (a.status().await.peer_id, b.status().await.peer_id);
    // Attack the larger id in the smaller one's name: the link offered is
    // then the canonical direction, which the old rule let win.
    let (target, victim, victim_id) = if a_id > b_id {
        (&a, &b, b_id)
    } else {
        (&b, &a, a_id)
    };
    let port = target.status().await.port;
    let mut at_target = target.subscribe(None).await;
    let n = 300;
    let attempts = 20;
    let attack = async {
        let mut held = Vec::new();
        for i in 0..attempts {
            let to = ([127, 0, 0, 1], port).into();
            let Ok(mut s) = connect_from(loopback(3), to).await else {
                continue;
            };
            let p2pchatd = i % 2 == 0;
            let forged = forged_line("join", &victim_id, "joined", p2pchatd)
                + &forged_line("chat", &victim_id, &format!("forged {i}"), p2pchatd);
            let _ = tokio::io::AsyncWriteExt::write_all(&mut s, forged.as_bytes()).await;
            held.push(s);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        held
    };
    let (_held, ()) = tokio::join!(attack, victim.say_many("real", n));
    all_arrive(&mut at_target, &victim_id, "real", n).await;
    let h = target.history(1000).await;
    let forged = h.iter().filter(|e| text(e).starts_with("forged")).count();
    assert_eq!(forged, 0, "forged lines shown");
    let peers = target.peers().await;
    let p = peers.iter().find(|p| p.peer_id == victim_id).unwrap();
    assert!(p.connected && p.nick != "mallory", "{p:?}");
    eprintln!(
        "the victim kept its link through {attempts} claims on it; 0 of {n} lines lost, 0 forged lines shown"
    );
}

/// About 200 idle connections once filled the handshake slots and the
/// backlog, and 520 Go-style joins the link table, for good: a new peer
/// could not link for 30 s or more. Now they cost their own addresses'
/// shares and no more.
#[tokio::test]
async fn idle_and_squatting_connections_cannot_lock_a_new_peer_out() {
    let net = TestNet::new();
    // "zed" is dialed by the newcomer "amy" (the smaller id dials): zed
    // must accept it through the crowd.
    let zed = net.daemon("zed").await;
    let to = ([127, 0, 0, 1], zed.status().await.port).into();
    let mut held = Vec::new();
    let mut squatters = 0;
    for i in 0..600u32 {
        let from = loopback(10 + u8::try_from(i % 4).unwrap());
        let connect = connect_from(from, to);
        let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_millis(200), connect).await else {
            continue;
        };
        if i % 2 == 1 {
            let join = forged_line("join", &format!("sq{i}_1"), "joined", false);
            if tokio::io::AsyncWriteExt::write_all(&mut s, join.as_bytes())
                .await
                .is_ok()
            {
                squatters += 1;
            }
        }
        held.push(s);
    }
    let started = std::time::Instant::now();
    let amy = net.daemon("amy").await;
    wait_full_mesh(&[&zed, &amy], Duration::from_secs(5)).await;
    let kept = procfs::established_on(to.port());
    eprintln!(
        "a new peer linked in {:?}; of {} hostile connections ({squatters} Go-style joins) zed holds {}",
        started.elapsed(),
        held.len(),
        kept - 1
    );
    // What waits to identify (64 slots, the oldest making room) and four
    // addresses' shares of unproven links (8 each), besides amy's.
    assert!(kept <= 64 + 4 * 8 + 1, "zed holds {kept} connections");
}

/// A stopped process (SIGSTOP, a laptop lid) once woke up, declared its
/// links dead by their silence and threw away the 30 lines already in
/// their buffers. Now it reads what arrived before it judges.
#[tokio::test]
async fn a_stopped_peer_keeps_what_arrived_while_it_slept() {
    let net = TestNet::new();
    let [a, b, c, d] = net.linked(["alice", "bob", "carol", "dave"]).await;
    let b_id = b.status().await.peer_id;
    let mut at_a = a.subscribe(None).await;
    b.signal(nix::sys::signal::Signal::SIGSTOP);
    // Ten lines from each of the others wait in bob's socket buffers.
    for from in [&a, &c, &d] {
        from.say_many("while asleep", 10).await;
    }
    // Alice gives bob up: his own links are then past their silence too.
    at_a.until(
        "bob's leave",
        T,
        |e| matches!(&e.body, EventBody::Leave { peer_id, .. } if *peer_id == b_id),
    )
    .await;
    b.signal(nix::sys::signal::Signal::SIGCONT);
    let kept = wait_until("bob to read what arrived", T, || async {
        let h = b.try_history(1000).await.ok()?;
        let n = h
            .iter()
            .filter(|e| text(e).starts_with("while asleep"))
            .count();
        (n == 30).then_some(n)
    })
    .await;
    eprintln!("{kept} of 30 lines that arrived while stopped were kept");
}

/// A peer flooding 100k lines/s once pushed everyone else's lines out of
/// the held history (37 of 123 left). Now a flood thins only itself.
#[tokio::test]
async fn a_flood_leaves_everyone_elses_lines_in_the_history() {
    let net = TestNet::new();
    let [a, b, c] = net.linked(["alice", "bob", "carol"]).await;
    let mut at_b = b.subscribe(None).await;
    a.say_many("alice says", 50).await;
    let flood = 5_000;
    c.say_many("flood", flood).await;
    all_arrive(&mut at_b, "", "flood", flood).await;
    let h = b.history(1000).await;
    let kept = h
        .iter()
        .filter(|e| text(e).starts_with("alice says"))
        .count();
    assert_eq!(kept, 50, "of alice's 50 lines after {flood} from carol");
    assert_eq!(h.len(), 1000, "the history is full");
    eprintln!("{kept} of 50 of alice's lines still held after {flood} from carol");
}

/// What the probe found, all at once, against a daemon with the open-file
/// limit of a user service: 10,000 forged announces with fresh ids from 100
/// addresses, pointing at a port that never answers, and 1,000 hostile
/// connections (idle, Go-style joins, claims on the announced ids). Once,
/// 2,000 announces used up the descriptors and API calls timed out.
#[tokio::test]
async fn a_flood_of_announces_and_connections_locks_nobody_out() {
    let net = TestNet::new();
    let zed = net.daemon_with_file_limit("zed", 1024).await;
    let pid = u32::try_from(zed.pid().as_raw()).unwrap();
    let to = ([127, 0, 0, 1], zed.status().await.port).into();
    // A port that takes connections and never answers them.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole = blackhole.local_addr().unwrap().port();
    let probe = ApiProbe::start(&zed.socket);
    let announces = 10_000;
    let most_fds = async {
        let mut most = 0;
        for _ in 0..40 {
            most = most.max(procfs::open_fds(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        most
    };
    let ((), held, fds) = tokio::join!(
        announce_flood(net.group, announces, hole),
        hostile_crowd(to, 1000),
        most_fds
    );
    // The forged peers fill a bounded table (256 unlinked, and the links
    // of the few claims let in), and only so many are dialed at once; once,
    // every one of them was known and dialed.
    let known = zed.status().await.known_peers;
    assert!(known <= 256 + 64, "{known} forged peers known");

    let started = std::time::Instant::now();
    let amy = net.daemon("amy").await;
    let amy_id = amy.status().await.peer_id;
    wait_until("amy to link with zed", Duration::from_secs(5), || async {
        let p = zed.try_peers().await.ok()?;
        p.iter()
            .any(|p| p.peer_id == amy_id && p.connected)
            .then_some(())
    })
    .await;
    let joined = started.elapsed();
    let worst = probe.finish();
    assert!(worst < Duration::from_secs(1), "an API call took {worst:?}");
    // Its bounds: 64 handshakes, 64 unproven links, 32 dials, ~40 files of
    // its own (store, journal, sockets); plus connections accepted and being
    // refused at that instant, more of them on a busy machine. Unbounded,
    // the 1,000 connections alone would take 1,000.
    assert!(fds < 256, "zed held up to {fds} descriptors");
    eprintln!(
        "under {} hostile connections and {announces} forged announces a new peer linked in {joined:?}; \
         the slowest API answer took {worst:?}; zed knew {known} peers and held at most {fds} of its 1,024 descriptors",
        held.len()
    );
    drop(blackhole);
}
