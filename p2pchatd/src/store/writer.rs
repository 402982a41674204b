//! The store's writer thread: batches events into transactions, keeps what
//! it could not write and tries again, trims by the retention rules.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{
    BATCH, CRASH_JUMP, CREATE, CREATE_ROOMS, CREATE_SYNC, CREATE_WORDS, QUEUE, Retention, SCHEMA,
    Shared, describe, from_sql, meta, set_meta, to_sql,
};

/// Events that keep coming are gathered into one transaction until none
/// has come for this long (longer than the history's handoff delay)...
const GATHER_QUIET: Duration = Duration::from_millis(50);
/// ... or for this long since the first of them, or until a batch is full.
/// A crash loses what was gathered, as it loses what is still queued: our
/// own lines come back from the journal, the peers' signed lines through
/// catch-up from those that hold them (a Go peer's are gone).
const GATHER_MAX: Duration = Duration::from_secs(1);
/// A write that failed is tried again after this long.
const RETRY: Duration = Duration::from_secs(2);
/// The words index follows the events in the quiet after a burst (this
/// long without a new batch), so a burst of chat is not slowed by it...
const INDEX_QUIET: Duration = Duration::from_millis(50);
/// ... unless it lags this many cursors behind: then a chunk goes with
/// every batch. (At 100,000, indexing during a long flood cost the
/// throughput A -> B ~10%; a search catches the index up first anyway.)
const INDEX_LAG: u64 = 1_000_000;
/// Cursors indexed at once.
const INDEX_CHUNK: u64 = 16_384;
/// How often the retention rules run.
const RETAIN_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per statement, so a long-due trim (retention lowered, a
/// busy room) never holds the database for long.
const TRIM_CHUNK: u64 = 10_000;

/// One event as stored.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub cursor: u64,
    pub ts_ms: i64,
    pub json: Arc<str>,
    /// What a room filter sees ([`crate::history::filter_key`]): none for
    /// `#general` and what is no room's.
    pub room: Option<Arc<str>>,
}

/// One sealed run of an author's lines, as catch-up relays it.
#[derive(Debug, Clone)]
pub(crate) struct RunRow {
    pub author: Arc<str>,
    pub life: Arc<str>,
    pub last: u64,
    pub prev: [u8; 32],
    pub end: [u8; 32],
    /// The run as a relay object (key, seal, lines); encoded by the
    /// writer, off the daemon's thread.
    pub relay: shared::authorship::Relay,
    /// How far the life's runs now reach without a hole, if the run moved
    /// that on.
    pub reach: Option<LifeRow>,
}

/// How far one author's life is held without a hole.
#[derive(Debug, Clone)]
pub(crate) struct LifeRow {
    pub author: Arc<str>,
    pub life: Arc<str>,
    pub key: [u8; 32],
    pub last: u64,
    pub end: [u8; 32],
    /// The room (wire form) of the life's lines, when not `#general`.
    pub room: Option<Arc<str>>,
}

/// Runs waiting for the writer at most; past that (a disk that has failed
/// for long), the oldest go unstored and are caught up again later.
const RUNS_QUEUE: usize = 16 * 1024;
/// Room for runs kept between bursts.
const RUNS_KEPT: usize = 64;

enum Job {
    Rows(Vec<Row>),
    Run(Box<RunRow>),
    Flush(oneshot::Sender<()>),
    /// Like `Flush`, with the words index caught up too (for `search`).
    Index(oneshot::Sender<()>),
    /// Like `Flush`, for a thread that blocks on it.
    Drained(Sender<()>),
    /// A value of the `meta` table to set.
    Meta(&'static str, u64),
    Close(u64),
}

/// Where a new life starts.
pub(super) struct Start {
    /// Past every cursor the store knows of, and after an unclean stop past
    /// what the lost queue may have held.
    pub next_cursor: u64,
    /// Past every cursor the store knows of, nothing more.
    pub known: u64,
    pub crashed: bool,
    /// Every message up to this cursor is in the words index.
    pub indexed: u64,
}

/// Creates or checks the schema, and marks the store as in use: a crash
/// leaves the mark, and the next life skips past the cursors it may have
/// given out unstored.
pub(super) fn prepare(c: &Connection) -> rusqlite::Result<Start> {
    let version: u32 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    match version {
        0 => {
            // The version goes with the tables, in one transaction: a kill
            // in between leaves neither.
            c.execute_batch(&format!(
                "BEGIN; {CREATE} {CREATE_WORDS} {CREATE_SYNC} {CREATE_ROOMS} PRAGMA user_version = {SCHEMA}; COMMIT;"
            ))?;
        }
        1 => {
            // The words of what is stored are indexed in the background.
            info!("adding search, catch-up and rooms to the history store");
            c.execute_batch(&format!(
                "BEGIN; {CREATE_WORDS} {CREATE_SYNC} {CREATE_ROOMS} PRAGMA user_version = {SCHEMA}; COMMIT;"
            ))?;
        }
        2 => {
            info!("adding catch-up and rooms to the history store");
            c.execute_batch(&format!(
                "BEGIN; {CREATE_SYNC} {CREATE_ROOMS} PRAGMA user_version = {SCHEMA}; COMMIT;"
            ))?;
        }
        3 => {
            info!("adding rooms to the history store");
            c.execute_batch(&format!(
                "BEGIN; {CREATE_ROOMS} PRAGMA user_version = {SCHEMA}; COMMIT;"
            ))?;
        }
        SCHEMA => {}
        newer => {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!(
                    "its format ({newer}) is newer than this p2pchatd knows ({SCHEMA})"
                )),
            ));
        }
    }
    let newest: u64 = c
        .query_row("SELECT max(cursor) FROM events", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .map_or(0, from_sql);
    let last_given = meta(c, "last_cursor")?.unwrap_or(0);
    let in_use = meta(c, "in_use")?.unwrap_or(0) == 1;
    let base = newest.max(last_given);
    let next_cursor = base + 1 + if in_use { CRASH_JUMP } else { 0 };
    set_meta(c, "in_use", 1)?;
    Ok(Start {
        next_cursor,
        known: base,
        crashed: in_use,
        indexed: meta(c, "indexed")?.unwrap_or(0),
    })
}

/// The writer's end of the queue, kept by the store. The queue grows in
/// small blocks as events come (a preallocated one would cost its full
/// size for good), and is bounded by counting.
#[derive(Debug)]
pub(super) struct Handle {
    tx: Sender<Job>,
    queued: Arc<AtomicUsize>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

pub(super) fn spawn(
    conn: Connection,
    shared: Arc<Shared>,
    retention: Retention,
    next_cursor: u64,
    indexed: u64,
) -> io::Result<Handle> {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let count = queued.clone();
    let thread = std::thread::Builder::new()
        .name("store".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            crate::service::background_priority("the store's writer");
            Writer {
                conn,
                shared,
                retention,
                pending: VecDeque::new(),
                runs: VecDeque::new(),
                unstored: 0,
                last_trim: None,
                newest: next_cursor - 1,
                stored: next_cursor - 1,
                indexed,
                retry_at: None,
                index_retry_at: None,
                queued: count,
            }
            .run(&rx);
        })?;
    Ok(Handle {
        tx,
        queued,
        thread: Mutex::new(Some(thread)),
    })
}

impl Handle {
    pub(super) fn write(&self, rows: Vec<Row>) {
        if self.queued.fetch_add(rows.len(), Ordering::Relaxed) >= QUEUE {
            // The disk is slower than the chat: wait for it to catch up.
            let (tx, rx) = mpsc::channel();
            if self.tx.send(Job::Drained(tx)).is_ok() {
                let _ = rx.recv();
            }
        }
        // Gone only after close: nothing is written then anyway.
        let _ = self.tx.send(Job::Rows(rows));
    }

    pub(super) fn write_run(&self, run: RunRow) {
        let _ = self.tx.send(Job::Run(Box::new(run)));
    }

    pub(super) fn set_meta(&self, key: &'static str, value: u64) {
        let _ = self.tx.send(Job::Meta(key, value));
    }

    pub(super) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    pub(super) async fn index(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Index(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    pub(super) fn close(&self, last_cursor: u64) {
        let _ = self.tx.send(Job::Close(last_cursor));
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            warn!("the store's writer panicked");
        }
    }
}

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    retention: Retention,
    /// Events not yet written: the batch being written, or what a failing
    /// disk refused, up to QUEUE.
    pending: VecDeque<Row>,
    /// Sealed runs not yet written, up to RUNS_QUEUE.
    runs: VecDeque<RunRow>,
    /// Events given up on while the disk failed.
    unstored: u64,
    last_trim: Option<Instant>,
    newest: u64,
    /// Every event up to this cursor is written.
    stored: u64,
    /// Every message up to this cursor is in the words index.
    indexed: u64,
    /// While writes fail: when to try again.
    retry_at: Option<Instant>,
    /// While indexing fails: when to try again (writes go on meanwhile).
    index_retry_at: Option<Instant>,
    /// Events handed over and not yet taken.
    queued: Arc<AtomicUsize>,
}

impl Writer {
    fn run(mut self, rx: &mpsc::Receiver<Job>) {
        let mut flushes = Vec::new();
        let mut drained = Vec::new();
        let mut indexes = Vec::new();
        // Since when what is pending has been gathered, unwritten.
        let mut gathering: Option<Instant> = None;
        loop {
            let lagging = self.indexed < self.stored;
            // Whether a timeout means quiet: not when the cap on gathering
            // cut the wait short (events may still be coming).
            let mut whole_wait = true;
            let first = if let Some(since) = gathering {
                let left = GATHER_MAX.saturating_sub(since.elapsed());
                whole_wait = left >= GATHER_QUIET;
                rx.recv_timeout(GATHER_QUIET.min(left))
            } else if !self.pending.is_empty() || !self.runs.is_empty() {
                rx.recv_timeout(RETRY)
            } else if lagging {
                rx.recv_timeout(INDEX_QUIET)
            } else {
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            let timed_out = matches!(first, Err(RecvTimeoutError::Timeout));
            let quiet = timed_out && whole_wait;
            // The store was dropped without a close: write what is here,
            // but leave the mark of an unclean stop.
            let mut gone = false;
            let mut close = match first {
                Ok(job) => self.take(job, &mut flushes, &mut drained, &mut indexes),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    gone = true;
                    None
                }
            };
            // While the disk fails, take everything that comes (what is
            // kept is bounded); else a batch at most.
            while close.is_none()
                && !gone
                && (self.retry_at.is_some() || self.pending.len() < BATCH)
            {
                match rx.try_recv() {
                    Ok(job) => close = self.take(job, &mut flushes, &mut drained, &mut indexes),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => gone = true,
                }
            }
            // While a burst goes on, its events are gathered rather than
            // written at every handoff: one transaction in the quiet after
            // it (or once a batch or a second has gathered) costs less than
            // many during it, and leaves the CPU to the chat meanwhile.
            // Anyone waiting on the store, a failing disk, a stop: at once.
            let waited_on = close.is_some()
                || gone
                || !flushes.is_empty()
                || !drained.is_empty()
                || !indexes.is_empty();
            let unwritten = !self.pending.is_empty() || !self.runs.is_empty();
            if unwritten && !timed_out && !waited_on && self.retry_at.is_none() {
                let since = *gathering.get_or_insert_with(Instant::now);
                if self.pending.len() < BATCH && since.elapsed() < GATHER_MAX {
                    continue;
                }
            }
            gathering = None;
            self.write_pending();
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
            for d in drained.drain(..) {
                let _ = d.send(());
            }
            if !indexes.is_empty() {
                self.index_all();
                for i in indexes.drain(..) {
                    let _ = i.send(());
                }
            } else if quiet || self.stored.saturating_sub(self.indexed) > INDEX_LAG {
                self.index_chunk();
            }
            if let Some(last) = close {
                self.close(last);
                return;
            }
            if gone {
                return;
            }
            self.trim_if_due();
        }
    }

    /// Takes one job; `Some(last cursor)` on close.
    fn take(
        &mut self,
        job: Job,
        flushes: &mut Vec<oneshot::Sender<()>>,
        drained: &mut Vec<Sender<()>>,
        indexes: &mut Vec<oneshot::Sender<()>>,
    ) -> Option<u64> {
        match job {
            Job::Rows(rows) => {
                self.queued.fetch_sub(rows.len(), Ordering::Relaxed);
                if let Some(last) = rows.last() {
                    self.newest = self.newest.max(last.cursor);
                }
                self.pending.extend(rows);
                if self.pending.len() > QUEUE {
                    // The disk has refused for a while: the oldest go
                    // unstored (subscribers still had them live).
                    let over = self.pending.len() - QUEUE;
                    self.pending.drain(..over);
                    self.unstored += over as u64;
                }
                None
            }
            Job::Run(run) => {
                self.runs.push_back(*run);
                if self.runs.len() > RUNS_QUEUE {
                    self.runs.pop_front();
                }
                None
            }
            Job::Flush(tx) => {
                flushes.push(tx);
                None
            }
            Job::Drained(tx) => {
                drained.push(tx);
                None
            }
            Job::Index(tx) => {
                indexes.push(tx);
                None
            }
            Job::Meta(key, value) => {
                if let Err(e) = set_meta(&self.conn, key, value) {
                    warn!(key, "could not note in the history store: {}", describe(&e));
                }
                None
            }
            Job::Close(last) => Some(last),
        }
    }

    fn write_pending(&mut self) {
        if (self.pending.is_empty() && self.runs.is_empty())
            || self.retry_at.is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        let newest = self.pending.back().map_or(self.newest, |r| r.cursor);
        match insert(&mut self.conn, &self.pending, &self.runs, newest) {
            Ok(()) => {
                self.retry_at = None;
                // What a burst gathered is not kept for the next one.
                self.runs.clear();
                self.runs.shrink_to(RUNS_KEPT);
                if let Some(last) = self.pending.back().map(|r| r.cursor) {
                    self.stored = last;
                    self.pending.clear();
                    self.pending.shrink_to(super::HANDOFF);
                    self.shared.persisted.store(last, Ordering::Release);
                }
                let mut health = self.shared.health();
                if health.failing.take().is_some() {
                    info!(
                        unstored = self.unstored,
                        "the history store is written again"
                    );
                }
            }
            Err(e) => {
                self.retry_at = Some(Instant::now() + RETRY);
                let problem = describe(&e);
                let mut health = self.shared.health();
                if health.failing.as_deref() != Some(problem.as_str()) {
                    warn!(
                        waiting = self.pending.len(),
                        "{problem}; keeping events in memory and trying again"
                    );
                }
                health.failing = Some(problem);
            }
        }
    }

    fn close(&mut self, last: u64) {
        self.retry_at = None;
        self.write_pending();
        let done = set_meta(&self.conn, "last_cursor", last.max(self.newest))
            .and_then(|()| {
                if self.pending.is_empty() {
                    set_meta(&self.conn, "in_use", 0)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE"));
        if let Err(e) = done {
            warn!(
                "could not close the history store cleanly: {}",
                describe(&e)
            );
        }
        if !self.pending.is_empty() || self.unstored > 0 {
            warn!(
                unstored = self.pending.len() as u64 + self.unstored,
                "stopping with events the store could not take"
            );
        }
    }

    /// Indexes the words of the next stored chunk.
    fn index_chunk(&mut self) {
        if self.indexed >= self.stored
            || self.retry_at.is_some()
            || self.index_retry_at.is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        let upto = self.stored.min(self.indexed + INDEX_CHUNK);
        match index(&mut self.conn, self.indexed, upto) {
            Ok(()) => {
                self.indexed = upto;
                self.index_retry_at = None;
            }
            Err(e) => {
                warn!("could not index words for search: {}", describe(&e));
                self.index_retry_at = Some(Instant::now() + RETRY);
            }
        }
    }

    /// Catches the index up with everything stored.
    fn index_all(&mut self) {
        while self.indexed < self.stored && self.retry_at.is_none() && self.index_retry_at.is_none()
        {
            self.index_chunk();
        }
    }

    fn trim_if_due(&mut self) {
        if self.shared.health().failing.is_some()
            || self.last_trim.is_some_and(|t| t.elapsed() < RETAIN_EVERY)
        {
            return;
        }
        self.last_trim = Some(Instant::now());
        if let Err(e) = trim(&self.conn, self.retention) {
            warn!("could not trim the history store: {}", describe(&e));
        }
    }
}

/// Writes events and sealed runs in one transaction; runs are filed
/// under `newest`, the newest cursor, for retention.
fn insert(
    conn: &mut Connection,
    rows: &VecDeque<Row>,
    runs: &VecDeque<RunRow>,
    newest: u64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        // A cursor already stored (never, but a retry after a failed
        // commit must not fail on it) is skipped.
        let mut q = tx.prepare_cached(
            "INSERT OR IGNORE INTO events (cursor, ts, json, room) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for r in rows {
            q.execute(params![
                to_sql(r.cursor),
                r.ts_ms,
                &*r.json,
                r.room.as_deref()
            ])?;
        }
    }
    if !runs.is_empty() {
        let mut run = tx.prepare_cached(
            "INSERT OR IGNORE INTO runs (author, life, last, prev, end, cursor, relay)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut reach = tx.prepare_cached(
            "INSERT INTO lives (author, life, key, last, end, cursor, room)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (author, life) DO UPDATE SET
               last = excluded.last, end = excluded.end, cursor = excluded.cursor
             WHERE excluded.last > lives.last",
        )?;
        let newest = to_sql(newest);
        for r in runs {
            run.execute(params![
                &*r.author,
                &*r.life,
                to_sql(r.last),
                r.prev,
                r.end,
                newest,
                serde_json::to_string(&r.relay).unwrap_or_default()
            ])?;
            if let Some(l) = &r.reach {
                reach.execute(params![
                    &*l.author,
                    &*l.life,
                    l.key,
                    to_sql(l.last),
                    l.end,
                    newest,
                    l.room.as_deref()
                ])?;
            }
        }
    }
    tx.commit()
}

/// Indexes the words of the messages with a cursor above `after` and up to
/// `upto`, read out of their JSON by SQLite itself in one statement, and
/// records how far the index reaches, in one transaction.
fn index(conn: &mut Connection, after: u64, upto: u64) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.prepare_cached(
        "INSERT INTO words (rowid, text)
         SELECT cursor, json ->> '$.text' FROM events
         WHERE cursor > ?1 AND cursor <= ?2 AND json ->> '$.kind' = 'message'",
    )?
    .execute(params![to_sql(after), to_sql(upto)])?;
    set_meta(&tx, "indexed", upto)?;
    tx.commit()
}

/// Deletes what is older than the retention days and the oldest beyond the
/// retention count: finds the first cursor to keep once, then deletes below
/// it a chunk per statement, so the database is never held for long.
/// Returns how many events went.
pub(super) fn trim(c: &Connection, r: Retention) -> rusqlite::Result<usize> {
    let cutoff = chrono::Utc::now().timestamp_millis() - i64::from(r.days) * 86_400_000;
    let by_age = first_at_or_after(c, cutoff)?;
    // Counting back from the newest walks the rows; cursors are unique, so
    // when the whole span of them fits, nothing is over the count.
    let (lo, hi): (Option<i64>, Option<i64>) =
        c.query_row("SELECT min(cursor), max(cursor) FROM events", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    let span = match (lo, hi) {
        (Some(lo), Some(hi)) => from_sql(hi - lo + 1),
        _ => 0,
    };
    let by_count: Option<i64> = if span <= r.messages {
        None
    } else {
        c.query_row(
            "SELECT cursor FROM events ORDER BY cursor DESC LIMIT 1 OFFSET ?1",
            params![to_sql(r.messages.saturating_sub(1))],
            |row| row.get(0),
        )
        .optional()?
    };
    let Some(keep) = by_age.max(by_count) else {
        return Ok(0);
    };
    let mut chunk = c.prepare_cached(
        "DELETE FROM events WHERE cursor IN
           (SELECT cursor FROM events WHERE cursor < ?1 ORDER BY cursor LIMIT ?2)",
    )?;
    let mut deleted = 0;
    loop {
        let n = chunk.execute(params![keep, to_sql(TRIM_CHUNK)])?;
        deleted += n;
        if n < usize::try_from(TRIM_CHUNK).unwrap_or(usize::MAX) {
            break;
        }
    }
    if deleted > 0 {
        // The words of what is gone go too, and the runs filed before it
        // (with the lives nothing was heard of since): catch-up no longer
        // sends or asks for them.
        c.execute("DELETE FROM words WHERE rowid < ?1", [keep])?;
        c.execute("DELETE FROM runs WHERE cursor < ?1", [keep])?;
        c.execute("DELETE FROM lives WHERE cursor < ?1", [keep])?;
        info!(deleted, "trimmed the history store");
    }
    Ok(deleted)
}

/// The first cursor whose event is from `ts_ms` or later, found by halving
/// the cursor range (events are stored in time order, give or take a
/// clock step): a few lookups by key instead of an index on time.
pub(super) fn first_at_or_after(c: &Connection, ts_ms: i64) -> rusqlite::Result<Option<i64>> {
    let mut q = c.prepare_cached(
        "SELECT cursor, ts FROM events WHERE cursor >= ?1 ORDER BY cursor LIMIT 1",
    )?;
    let mut at = |cursor: i64| {
        q.query_row([cursor], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .optional()
    };
    let Some((mut lo, lo_ts)) = at(0)? else {
        return Ok(None);
    };
    if lo_ts >= ts_ms {
        return Ok(Some(lo));
    }
    let mut hi: i64 = c.query_row("SELECT max(cursor) FROM events", [], |r| r.get(0))?;
    // Invariant: the event at `lo` is older than `ts_ms`; past `hi`, none is.
    while lo < hi {
        let mid = lo + (hi - lo + 1) / 2;
        match at(mid)? {
            Some((found, ts)) if ts < ts_ms => lo = found,
            _ => hi = mid - 1,
        }
    }
    // `lo` is the last old one; the next stored event, if any, is kept.
    Ok(at(lo + 1)?.map(|(c, _)| c).or(Some(lo + 1)))
}
