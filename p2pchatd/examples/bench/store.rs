//! The history store: how fast it takes a sustained flood, none lost, and
//! how soon a daemon holding all of it answers again after a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rusqlite::{Connection, OpenFlags};
use testkit::TestNet;

use crate::Counts;
use crate::drive::{flood, percentile};
use shared::api::{Call, HistoryResult, SearchParams};

/// How long the store may take to catch up with a flood.
const STORE_WAIT: Duration = Duration::from_secs(120);
/// How often the bench looks at the database while it waits.
const POLL: Duration = Duration::from_millis(10);
/// How long a restart may take before the bench gives up.
const RESTART_WAIT: Duration = Duration::from_secs(30);

pub(crate) struct StoreFigures {
    pub msgs_per_s: f64,
    pub lost: u64,
    pub stored: u64,
    pub restart_ready_ms: f64,
    /// Median time of a `search` over everything stored.
    pub search_ms: f64,
}

/// Searches timed over the full store.
const SEARCHES: usize = 21;

/// Says `c.stored` lines on one daemon and waits until its database holds
/// them all; then stops it and times its next start until the API answers.
pub(crate) async fn store(c: &Counts) -> StoreFigures {
    let net = TestNet::new().quiet();
    let mut a = net.daemon("alice").await;
    let db = net
        .home_of("alice")
        .join("state")
        .join("p2pchat")
        .join(p2pchatd::store::STORE_FILE);
    let n = c.stored;
    let tag = "stored";
    let started = Instant::now();
    let said = flood(&a.socket, tag, n).await;
    // The last line said is the newest event: wait until it is stored.
    let last = a.history(1).await.last().map_or(0, |e| e.cursor);
    // One reader, opened once (each read sees the newest commit).
    let reader = open(&db);
    while started.elapsed() < STORE_WAIT && reader.as_ref().map_or(0, newest) < last {
        tokio::time::sleep(POLL).await;
    }
    let took = started.elapsed();
    let held = reader.as_ref().map_or(0, |r| count(r, tag));
    drop(reader);
    let msgs_per_s = held as f64 / took.as_secs_f64();
    eprintln!(
        "  {n} says answered in {} ms, all {held} stored in {} ms",
        said.as_millis(),
        took.as_millis()
    );

    a.signal(Signal::SIGTERM);
    assert!(a.exit_within(RESTART_WAIT).await.success(), "alice stops");
    drop(a);
    let restarted = Instant::now();
    let a = net.spawn("alice", &[]);
    a.wait_ready().await;
    let restart_ready_ms = restarted.elapsed().as_secs_f64() * 1e3;
    let status = a.status().await;
    eprintln!(
        "  restarted with {held} stored: answering in {restart_ready_ms:.1} ms (store {:?})",
        status.store.map(|s| s.state)
    );
    // Searches for one line among all (two words: a common one and a rare
    // one) and for the newest of the most common word.
    let client = a.client().await;
    let mut times = Vec::with_capacity(SEARCHES);
    for i in 0..SEARCHES {
        let words = if i % 3 == 0 {
            tag.to_owned()
        } else {
            format!("{tag} {}", fastrand::usize(..n))
        };
        let t = Instant::now();
        let hits: HistoryResult = client
            .call(&Call::Search(SearchParams {
                words,
                ..SearchParams::default()
            }))
            .await
            .expect("search");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(!hits.events.is_empty(), "a search found nothing");
    }
    times.sort_by(f64::total_cmp);
    let search_ms = percentile(&times, 0.5);
    eprintln!(
        "  {SEARCHES} searches over {held} stored: p50 {search_ms:.1} ms, slowest {:.1} ms",
        times.last().copied().unwrap_or(0.0)
    );
    StoreFigures {
        search_ms,
        msgs_per_s,
        lost: (n as u64).saturating_sub(held),
        stored: held,
        restart_ready_ms,
    }
}

fn open(db: &Path) -> Option<Connection> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| eprintln!("  cannot open {}: {e}", db.display()))
        .ok()?;
    c.busy_timeout(Duration::from_secs(5)).ok()?;
    Some(c)
}

/// The newest cursor stored.
fn newest(c: &Connection) -> u64 {
    c.query_row("SELECT max(cursor) FROM events", [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .map_err(|e| eprintln!("  cannot read the newest: {e}"))
    .ok()
    .flatten()
    .map_or(0, |n| u64::try_from(n).unwrap_or(0))
}

/// Messages tagged `tag` in the database, read as any other reader would.
fn count(c: &Connection, tag: &str) -> u64 {
    c.query_row(
        "SELECT count(*) FROM events WHERE json LIKE ?1",
        [format!("%\"text\":\"{tag} %")],
        |r| r.get::<_, i64>(0),
    )
    .map_err(|e| eprintln!("  cannot count: {e}"))
    .map_or(0, |n| u64::try_from(n).unwrap_or(0))
}
