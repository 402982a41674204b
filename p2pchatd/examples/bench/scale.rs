//! How cost grows with the room: for meshes of several sizes, the time for
//! one more peer to be fully linked, memory and idle CPU per daemon, and
//! the fan-out rate of one sender to everyone else.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::procfs::{CpuSample, cpu_sample, rss_kib};
use testkit::raw::{Raw, contains};
use testkit::{Daemon, TestNet, wait_full_mesh, wait_until};

use crate::Counts;
use crate::drive::{Counted, count, flood, flood_in, link_drops};

/// How long a mesh may take to link fully, per daemon in it.
const LINK_WAIT_PER_PEER: Duration = Duration::from_secs(1);
/// How long a newcomer may take to link with everyone.
const JOIN_WAIT: Duration = Duration::from_secs(10);
/// What the room's sender says in #general once the room's flood is over.
const ROOM_END: &str = "the room flood is over";
/// How long a non-member may wait for that.
const FLOOD_END_WAIT: Duration = Duration::from_secs(60);
/// A receiver that hears nothing for this long has all it will get.
const QUIET: Duration = Duration::from_secs(5);

/// One row of the scaling table.
#[derive(Debug, Clone)]
pub(crate) struct ScaleRow {
    pub peers: usize,
    pub join_ms: f64,
    pub rss_kib_per_daemon: f64,
    pub idle_cpu_pct_per_daemon: f64,
    pub idle_wakeups_per_s: f64,
    pub fanout_msgs_per_s: f64,
    pub fanout_lost: usize,
    /// A room of half the mesh (the goal mesh only).
    pub room: Option<RoomFanout>,
}

/// One sender floods a room that half the mesh is in: the members' rate,
/// and what the others got of it (lines, bytes read, CPU).
#[derive(Debug, Clone)]
pub(crate) struct RoomFanout {
    pub members: usize,
    pub msgs_per_s: f64,
    pub lost: usize,
    /// Room lines the non-members' subscribers saw (the goal: none).
    pub outsider_lines: usize,
    /// Lines the sender's link carried to each non-member meanwhile (its
    /// heartbeats, one per idle 4 s), and to each member (the room's lines
    /// and seals).
    pub outsider_link_lines: f64,
    pub member_link_lines: f64,
    /// CPU each non-member spent meanwhile, and each member, ms.
    pub outsider_cpu_ms: f64,
    pub member_cpu_ms: f64,
}

impl ScaleRow {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "peers": self.peers,
            "join_ms": self.join_ms,
            "rss_kib_per_daemon": self.rss_kib_per_daemon,
            "idle_cpu_pct_per_daemon": self.idle_cpu_pct_per_daemon,
            "idle_wakeups_per_s": self.idle_wakeups_per_s,
            "fanout_msgs_per_s": self.fanout_msgs_per_s,
            "fanout_lost": self.fanout_lost,
        })
    }
}

/// Measures a mesh of `peers` daemons.
pub(crate) async fn mesh_of(c: &Counts, peers: usize) -> ScaleRow {
    let net = TestNet::new().quiet();
    // Each holds the whole fan-out, so a receiver this process reads late
    // still gets every line: what is measured is the daemons, not the
    // bench keeping up (a reader more than the history behind gets a gap).
    let history = (c.fanout + 1000).to_string();
    let mut daemons = Vec::with_capacity(peers);
    for i in 0..peers {
        daemons.push(
            net.daemon_with(&format!("p{i:02}"), &["--history", &history])
                .await,
        );
    }
    let refs: Vec<&Daemon> = daemons.iter().collect();
    let link_wait = LINK_WAIT_PER_PEER * u32::try_from(peers).unwrap_or(u32::MAX);
    wait_full_mesh(&refs, link_wait.max(JOIN_WAIT)).await;

    let join_ms = join(&net, peers).await;
    // Let the others see the newcomer go, so the mesh is as it was.
    let sender = &daemons[0];
    wait_until("the newcomer to be gone", JOIN_WAIT, || async {
        let p = sender.try_peers().await.ok()?;
        (p.iter().filter(|p| p.connected).count() == peers - 1).then_some(())
    })
    .await;

    let (cpu_pct, wakeups, rss) = idle(&daemons, c.idle).await;
    let (rate, lost) = fanout(&daemons, c.fanout).await;
    let room = if peers == crate::GOAL_MESH {
        Some(in_a_room(&daemons, c.fanout).await)
    } else {
        None
    };
    let row = ScaleRow {
        peers,
        join_ms,
        rss_kib_per_daemon: rss,
        idle_cpu_pct_per_daemon: cpu_pct,
        idle_wakeups_per_s: wakeups,
        fanout_msgs_per_s: rate,
        fanout_lost: lost,
        room,
    };
    if let Some(r) = &row.room {
        eprintln!(
            "  {peers} peers, a room of {}: {:.0} msg/s to its members, {} lost; the {} others showed {} of its lines, their links from the sender carried {:.1} lines each (heartbeats), {:.1} ms CPU each (members: {:.0} lines, {:.1} ms)",
            r.members,
            r.msgs_per_s,
            r.lost,
            peers - r.members,
            r.outsider_lines,
            r.outsider_link_lines,
            r.outsider_cpu_ms,
            r.member_link_lines,
            r.member_cpu_ms,
        );
    }
    eprintln!(
        "  {peers} peers: join {:.1} ms, {:.0} KiB and {:.3} ms CPU per 10 s per daemon, {:.1} wakeups/s, fan-out {:.0} msg/s, {lost} lost",
        row.join_ms,
        row.rss_kib_per_daemon,
        row.idle_cpu_pct_per_daemon * 100.0,
        row.idle_wakeups_per_s,
        row.fanout_msgs_per_s,
    );
    row
}

/// Milliseconds from a newcomer's start until it is linked with all
/// `peers`, as its own join events tell; the newcomer is gone after.
async fn join(net: &TestNet, peers: usize) -> f64 {
    let started = Instant::now();
    let newcomer = net.spawn("newcomer", &[]);
    let deadline = Instant::now() + JOIN_WAIT;
    while !newcomer.socket.exists() {
        assert!(Instant::now() < deadline, "the newcomer did not start");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut joins = Raw::subscribe(&newcomer.socket, Some(0)).await;
    let got = count(&mut joins, b"\"kind\":\"join\"", peers, JOIN_WAIT).await;
    assert_eq!(got.n, peers, "the newcomer linked with every peer");
    got.last.duration_since(started).as_secs_f64() * 1e3
}

/// Mean idle CPU (%), wakeups per second and RSS (KiB) per daemon, all
/// sampled over the same `span`, once the mesh has settled.
async fn idle(daemons: &[Daemon], span: Duration) -> (f64, f64, f64) {
    tokio::time::sleep(crate::idle::SETTLE).await;
    let pids: Vec<u32> = daemons
        .iter()
        .map(|d| u32::try_from(d.pid().as_raw()).unwrap_or(0))
        .collect();
    let before: Vec<CpuSample> = pids.iter().map(|&p| cpu_sample(p)).collect();
    let t0 = Instant::now();
    tokio::time::sleep(span).await;
    let secs = t0.elapsed().as_secs_f64();
    let used: Vec<CpuSample> = pids
        .iter()
        .zip(&before)
        .map(|(&p, &b)| cpu_sample(p) - b)
        .collect();
    let n = daemons.len() as f64;
    let cpu_ns: u64 = used.iter().map(|u| u.cpu_ns).sum();
    let switches: u64 = used.iter().map(|u| u.switches).sum();
    let rss: u64 = pids.iter().filter_map(|&p| rss_kib(p)).sum();
    (
        cpu_ns as f64 / 1e9 / secs * 100.0 / n,
        switches as f64 / secs / n,
        rss as f64 / n,
    )
}

/// The first half of the mesh joins `#bench`; the first daemon floods `n`
/// lines into it. Members count what they got; the others' subscribers
/// count room lines (none should come), and each daemon's bytes read and
/// CPU over the flood show what the room cost those not in it.
async fn in_a_room(daemons: &[Daemon], n: usize) -> RoomFanout {
    const ROOM: &str = "#bench";
    let half = daemons.len() / 2;
    let members = &daemons[..half];
    for d in members {
        d.join(ROOM).await;
    }
    let sender = &members[0];
    wait_until("the room's members to be known", JOIN_WAIT, || async {
        let rooms: Vec<shared::api::RoomInfo> = sender
            .client()
            .await
            .call(&shared::api::Call::Rooms)
            .await
            .ok()?;
        rooms
            .iter()
            .any(|r| r.name == ROOM && r.members == half)
            .then_some(())
    })
    .await;
    let pid = |d: &Daemon| u32::try_from(d.pid().as_raw()).unwrap_or(0);
    let mut counters = Vec::new();
    for (i, d) in daemons.iter().enumerate().skip(1) {
        let member = i < half;
        let counter = testkit::wait::on_own_thread_raw(&d.socket, move |mut sub| async move {
            if member {
                return count(&mut sub, b"\"text\":\"room ", n, QUIET).await;
            }
            // A non-member counts room lines until the sender's #general
            // line after the flood: on each link, any room line sent would
            // have come before it.
            let mut c = Counted {
                n: 0,
                last: Instant::now(),
                gaps: 0,
            };
            let deadline = tokio::time::Instant::now() + FLOOD_END_WAIT;
            while let Some(l) = sub.line(deadline).await {
                if contains(l, b"\"text\":\"room ") {
                    c.n += 1;
                } else if contains(l, ROOM_END.as_bytes()) {
                    break;
                }
            }
            c
        })
        .await;
        counters.push((member, counter));
    }
    let sender_id = sender.status().await.peer_id;
    // Lines each daemon's link to the sender carried, and its CPU.
    let from_sender = |peers: Vec<shared::api::PeerInfo>| {
        peers
            .iter()
            .find(|p| p.peer_id == sender_id)
            .and_then(|p| p.lines_in)
            .unwrap_or(0)
    };
    let mut before = Vec::new();
    for d in daemons {
        before.push((from_sender(d.peers().await), cpu_sample(pid(d))));
    }
    let t0 = Instant::now();
    flood_in(&sender.socket, "room", n, Some(ROOM)).await;
    let mut got = 0;
    let mut outsiders_told = false;
    let mut outsider_lines = 0;
    let mut last = t0;
    for (member, h) in counters {
        if !member && !outsiders_told {
            // Every member has the flood: tell the others it is over.
            outsiders_told = true;
            sender.say(ROOM_END).await;
        }
        let r = h.join().expect("a counter");
        if member {
            got += r.n;
            last = last.max(r.last);
        } else {
            outsider_lines += r.n;
        }
    }
    let mut spent = Vec::new();
    for (d, (lines, cpu)) in daemons.iter().zip(&before) {
        let after = from_sender(d.peers().await);
        spent.push((after.saturating_sub(*lines), cpu_sample(pid(d)) - *cpu));
    }
    let mean = |range: &[(u64, CpuSample)]| {
        let k = range.len().max(1) as f64;
        (
            range.iter().map(|(b, _)| *b as f64).sum::<f64>() / k,
            range
                .iter()
                .map(|(_, c)| c.cpu_ns as f64 / 1e6)
                .sum::<f64>()
                / k,
        )
    };
    // Members but the sender, who reads its own API's flood.
    let (member_link_lines, member_cpu) = mean(&spent[1..half]);
    let (outsider_link_lines, outsider_cpu) = mean(&spent[half..]);
    let want = n * (half - 1);
    RoomFanout {
        members: half,
        msgs_per_s: n as f64 / last.duration_since(t0).as_secs_f64(),
        lost: want - got,
        outsider_lines,
        outsider_link_lines,
        member_link_lines,
        outsider_cpu_ms: outsider_cpu,
        member_cpu_ms: member_cpu,
    }
}

/// One sender floods `n` lines; every other daemon's subscriber counts
/// them. Returns msg/s (every line to all) and how many deliveries failed.
async fn fanout(daemons: &[Daemon], n: usize) -> (f64, usize) {
    let (sender, receivers) = daemons.split_first().expect("a mesh");
    let mut counters = Vec::new();
    for d in receivers {
        // Each receiver is read on a thread of its own, so that the bench,
        // not the daemons, is never what falls behind.
        counters.push(
            testkit::wait::on_own_thread_raw(&d.socket, move |mut sub| async move {
                count(&mut sub, b"\"text\":\"fan ", n, QUIET).await
            })
            .await,
        );
    }
    let t0 = Instant::now();
    flood(&sender.socket, "fan", n).await;
    let mut results = Vec::new();
    for h in counters {
        results.push(h.join().expect("a counter"));
    }
    let last = results.iter().map(|r| r.last).max().unwrap_or(t0);
    let got: usize = results.iter().map(|r| r.n).sum();
    let gaps: usize = results.iter().map(|r| r.gaps).sum();
    let want = n * receivers.len();
    if got < want {
        eprintln!(
            "  fan-out: {got} of {want} delivered, {gaps} subscriber gaps, {} link drops",
            link_drops(sender)
        );
    }
    (n as f64 / last.duration_since(t0).as_secs_f64(), want - got)
}
