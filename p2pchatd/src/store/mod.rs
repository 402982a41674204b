//! The history on disk: every event, by cursor, in SQLite.
//!
//! The in-memory ring ([`crate::history`]) still serves subscribers; the
//! store keeps everything retained, so a restart forgets nothing, `history`
//! pages back past the ring, and a client resumes from any cursor it holds.
//!
//! One writer thread owns the writing connection: events reach it through
//! a bounded queue and are committed in batches, one transaction each (WAL,
//! `synchronous=NORMAL`: a crash of the daemon loses nothing committed, a
//! power cut at most the last batches). Reads go through a second
//! connection, off the runtime thread.
//!
//! What can go wrong, and what the daemon does (README, "Files"):
//! - another daemon holds the store: refuse to start ([`StoreError`]);
//! - the folder or file cannot be written, or the file is not a database:
//!   chat on live without storing, say so in `status` and with an alert;
//!   the file is never touched;
//! - a write fails while running (a full disk): keep the unstored events
//!   (bounded) and retry; `status` says so until a write succeeds.
//!
//! Cursors never go back: a clean stop records the last cursor given out,
//! and after a crash the next life starts past every cursor the lost queue
//! could have held.

mod writer;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use shared::api::{StoreInfo, StoreState};
use tracing::{info, warn};

pub(crate) use writer::{LifeRow, Row, RunRow};

/// The database, in the state folder.
pub const STORE_FILE: &str = "history.db";
/// Held (flock) by the daemon that owns the store. Inside: its pid, and the
/// cursor mark: `running N` while it runs (no cursor above N was given
/// out), `stopped N` after a clean stop (N was the last).
const LOCK_FILE: &str = "history.lock";
/// Cursors reserved at once in the mark: a crash costs at most this many
/// unused cursors, and the mark is written (and synced) once per this many.
const RESERVE: u64 = 1_000_000;

/// Events waiting for the writer. Full means the disk is slower than the
/// chat: appending then waits (a burst of 200k msg/s fills it in ~0.3 s).
pub(crate) const QUEUE: usize = 64 * 1024;
/// Events written in one transaction, at most (a burst's are gathered,
/// [`writer`]): ~12 MiB of log at ~400 bytes an event.
const BATCH: usize = 32 * 1024;
/// Events the history gathers before handing them over at once (it hands
/// over sooner, [`HANDOFF_DELAY`] after the first): the writer wakes once
/// per batch, not once per line.
pub(crate) const HANDOFF: usize = 4096;
pub(crate) const HANDOFF_DELAY: Duration = Duration::from_millis(20);
/// The `meta` key of where the user left off.
const READ_MARKER: &str = "read_marker";
/// Cursors a crashed life may have given out beyond what it stored.
const CRASH_JUMP: u64 = (QUEUE + 2 * BATCH + HANDOFF) as u64;

/// The schema, by `user_version`. One table, appended at its end: no
/// secondary index to keep up on the hot path (duplicates are caught in
/// memory before they get here; retention finds its boundary by cursor,
/// as time only grows with it).
const SCHEMA: u32 = 4;
const CREATE: &str = "
    CREATE TABLE events (
        cursor  INTEGER PRIMARY KEY,
        ts      INTEGER NOT NULL,   -- ms since the epoch, when it happened here
        json    TEXT NOT NULL       -- the event as the API sends it
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
";
/// Version 2: the words of every message, for `search` (rowid = cursor;
/// the text itself stays in `events`).
const CREATE_WORDS: &str = "
    CREATE VIRTUAL TABLE words USING fts5 (
        text, content = '', contentless_delete = 1,
        tokenize = 'unicode61 remove_diacritics 2'
    );
";

/// Version 3: what catch-up sends and knows (see [`crate::sync`]). Each
/// sealed run of an author's lines, ready to relay, keyed by the author,
/// its life and the run's last sequence number; `cursor` is the newest
/// cursor when it was stored, for retention. Per author and life, how far
/// the runs held reach without a hole.
const CREATE_SYNC: &str = "
    CREATE TABLE runs (
        author  TEXT NOT NULL,
        life    TEXT NOT NULL,
        last    INTEGER NOT NULL,
        prev    BLOB NOT NULL,      -- the chain hash before the run
        end     BLOB NOT NULL,      -- and after it
        cursor  INTEGER NOT NULL,
        relay   TEXT NOT NULL,      -- the run as a relay object
        PRIMARY KEY (author, life, last)
    ) WITHOUT ROWID;
    CREATE INDEX runs_by_cursor ON runs (cursor);
    CREATE TABLE lives (
        author  TEXT NOT NULL,
        life    TEXT NOT NULL,
        key     BLOB NOT NULL,      -- the author's identity key
        last    INTEGER NOT NULL,
        end     BLOB NOT NULL,
        cursor  INTEGER NOT NULL,
        PRIMARY KEY (author, life)
    ) WITHOUT ROWID;
";

/// Version 4: rooms and direct messages. Each event's room for a room
/// filter (NULL for `#general` and what is no room's, `#name`, or `@` for a
/// direct message), indexed only where it is not NULL (the common line
/// pays nothing); and each life's room (wire form; NULL for `#general`),
/// so catch-up sends a room's runs only to its members.
const CREATE_ROOMS: &str = "
    ALTER TABLE events ADD COLUMN room TEXT;
    CREATE INDEX events_by_room ON events (room, cursor) WHERE room IS NOT NULL;
    ALTER TABLE lives ADD COLUMN room TEXT;
";

/// A stored run's last sequence number, and the chain hashes before and
/// after it.
pub(crate) type RunEnds = (u64, [u8; 32], [u8; 32]);

/// How much history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub days: u32,
    pub messages: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            days: 365,
            messages: 1_000_000,
        }
    }
}

/// Why the daemon will not start on this store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the history store {path} is in use by another p2pchatd{}; stop it, or give this one its own XDG_STATE_HOME",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, pid: Option<u32> },
}

/// The store, or why there is none.
#[derive(Debug)]
pub(crate) enum Opened {
    Store(Store),
    /// Chat on live, without storing.
    Off {
        path: PathBuf,
        problem: String,
    },
}

/// What the store's health is now, for `status`.
#[derive(Debug, Default)]
pub(crate) struct Health {
    pub failing: Option<String>,
}

/// The open store: a reading connection here, the writer on its thread.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    reader: Mutex<Connection>,
    writer: writer::Handle,
    shared: Arc<Shared>,
    /// The first cursor of this life.
    next_cursor: u64,
    /// The lock, with the cursor mark in it.
    mark: Mutex<MarkFile>,
}

/// What the writer tells the rest.
#[derive(Debug, Default)]
struct Shared {
    /// Every event up to this cursor is stored (or was found a duplicate).
    persisted: AtomicU64,
    health: Mutex<Health>,
}

impl Shared {
    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opens the store in `dir`, creating both if needed. Only another daemon
/// holding it is an error; anything else leaves the daemon without a store.
pub(crate) fn open(dir: &Path, retention: Retention) -> Result<Opened, StoreError> {
    let path = dir.join(STORE_FILE);
    let off = |problem: String| {
        warn!(path = %path.display(), "{problem}; chatting on without storing history");
        Ok(Opened::Off {
            path: path.clone(),
            problem,
        })
    };
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return off(format!("cannot create the folder {}: {e}", dir.display()));
    }
    let (lock, mark) = match lock(&dir.join(LOCK_FILE)) {
        Ok(Ok(l)) => l,
        Ok(Err(pid)) => return Err(StoreError::Locked { path, pid }),
        Err(e) => return off(format!("cannot lock the history store: {e}")),
    };
    let opened = (|| {
        let writing = connect(&path, true)?;
        let start = writer::prepare(&writing)?;
        let reader = connect(&path, false)?;
        Ok::<_, rusqlite::Error>((writing, start, reader))
    })();
    let (writing, start, reader) = match opened {
        Ok(o) => o,
        Err(e) => return off(describe(&e)),
    };
    // The mark in the lock file is synced apart from the database, so it
    // holds also when the database could not record a stop (a full disk)
    // or lost its last commits (a power cut).
    let (next_cursor, crashed) = match mark {
        Some(Mark::Stopped(m)) => (start.known.max(m) + 1, false),
        Some(Mark::Running(m)) => (start.known.max(m) + 1, true),
        None => (start.next_cursor, start.crashed),
    };
    let mut mark = MarkFile {
        file: lock,
        reserved: 0,
    };
    mark.reserve(next_cursor);
    if crashed {
        info!(
            next_cursor,
            "the last daemon did not stop cleanly; cursors continue past what it may have given out"
        );
    }
    let shared = Arc::new(Shared {
        persisted: AtomicU64::new(next_cursor - 1),
        health: Mutex::default(),
    });
    let writer = match writer::spawn(
        writing,
        shared.clone(),
        retention,
        next_cursor,
        start.indexed,
    ) {
        Ok(w) => w,
        Err(e) => return off(format!("cannot start the store's writer: {e}")),
    };
    Ok(Opened::Store(Store {
        path,
        reader: Mutex::new(reader),
        writer,
        shared,
        next_cursor,
        mark: Mutex::new(mark),
    }))
}

/// The cursor mark, as the last life left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Running(u64),
    Stopped(u64),
}

impl Mark {
    fn parse(text: &str) -> Option<Self> {
        let line = text.lines().nth(1)?;
        let (state, n) = line.split_once(' ')?;
        let n = n.trim().parse().ok()?;
        match state {
            "running" => Some(Self::Running(n)),
            "stopped" => Some(Self::Stopped(n)),
            _ => None,
        }
    }
}

/// The locked file the mark lives in.
#[derive(Debug)]
struct MarkFile {
    file: Flock<File>,
    /// No cursor above this is given out before the mark moves on.
    reserved: u64,
}

impl MarkFile {
    /// Writes the mark in place (the same length each time: no new blocks
    /// on a full disk) and syncs it.
    fn write(&mut self, state: &str, n: u64) {
        use std::io::{Seek, Write};
        let text = format!("{}\n{state} {n:020}\n", std::process::id());
        let done = self
            .file
            .seek(io::SeekFrom::Start(0))
            .and_then(|_| self.file.write_all(text.as_bytes()))
            .and_then(|()| self.file.sync_data());
        if let Err(e) = done {
            warn!("could not record the cursor mark: {e}");
        }
    }

    /// Makes sure cursors up to `cursor` may be given out; returns the
    /// cursor up to which they may.
    fn reserve(&mut self, cursor: u64) -> u64 {
        if cursor > self.reserved {
            self.reserved = cursor + RESERVE;
            self.write("running", self.reserved);
        }
        self.reserved
    }
}

/// Opens (or makes) a file that only the user may read, without
/// truncating it, and never through a symbolic link.
pub(crate) fn open_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Takes the lock file, with the mark the last life left in it;
/// `Ok(Err(pid))` when another process holds it.
#[allow(clippy::type_complexity)]
fn lock(path: &Path) -> io::Result<Result<(Flock<File>, Option<Mark>), Option<u32>>> {
    let file = open_private(path)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => {
            let mark = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| Mark::parse(&t));
            Ok(Ok((held, mark)))
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.lines().next()?.trim().parse().ok());
            Ok(Err(pid))
        }
        Err((_, e)) => Err(e.into()),
    }
}

/// A connection with the settings every one of ours uses.
fn connect(path: &Path, create: bool) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let c = Connection::open_with_flags(path, flags)?;
    // The lock file keeps other daemons out; a reader waits for the
    // writer's checkpoint at most this long.
    c.busy_timeout(Duration::from_secs(2))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    // Pages cached per connection (negative: KiB): the newest events are
    // in the ring anyway; keep the daemon small.
    c.pragma_update(None, "cache_size", -512)?;
    // Copy the log into the database every ~16 MiB of it, not every 4 MiB:
    // fewer, larger checkpoints (each one syncs) while a burst is written.
    c.pragma_update(None, "wal_autocheckpoint", 4096)?;
    Ok(c)
}

/// What went wrong with the database, in words a user can act on.
fn describe(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::NotADatabase | C::DatabaseCorrupt) => format!(
            "the history store is damaged ({e}); it is left as it is: move it aside to start a new one"
        ),
        Some(C::ReadOnly | C::CannotOpen | C::PermissionDenied) => {
            format!("the history store cannot be written ({e})")
        }
        Some(C::DiskFull) => format!("the disk is full ({e})"),
        _ => format!("the history store cannot be used ({e})"),
    }
}

impl Store {
    /// The first cursor of this life: past everything the last one gave out.
    pub(crate) fn next_cursor(&self) -> u64 {
        self.next_cursor
    }

    /// Hands events to the writer; waits only while its queue is full.
    pub(crate) fn write(&self, rows: Vec<Row>) {
        self.writer.write(rows);
    }

    /// Hands a sealed run (and how far its life now reaches) to the writer.
    pub(crate) fn write_run(&self, run: RunRow) {
        self.writer.write_run(run);
    }

    /// Every event handed over so far is stored (or failed) once this
    /// returns.
    pub(crate) async fn flush(&self) {
        self.writer.flush().await;
    }

    /// Every event handed over so far is stored and its words indexed once
    /// this returns (`search` asks this first).
    pub(crate) async fn index(&self) {
        self.writer.index().await;
    }

    /// Writes fail now (a full disk).
    pub(crate) fn failing(&self) -> bool {
        self.shared.health().failing.is_some()
    }

    /// Where the user left off, as last noted (see
    /// [`History::set_read`](crate::history::History::set_read)).
    pub(crate) fn read_marker(&self) -> Option<u64> {
        meta(&self.reader(), READ_MARKER).ok().flatten()
    }

    /// Notes where the user left off.
    pub(crate) fn set_read_marker(&self, cursor: u64) {
        self.writer.set_meta(READ_MARKER, cursor);
    }

    /// Which of `cursors` have an event stored: a query per 256 of them,
    /// not one each.
    pub(crate) fn stored_among(
        &self,
        cursors: &[u64],
    ) -> rusqlite::Result<std::collections::HashSet<u64>> {
        let c = self.reader();
        let mut found = std::collections::HashSet::new();
        for chunk in cursors.chunks(256) {
            let holes = vec!["?"; chunk.len()].join(",");
            let mut q = c.prepare(&format!(
                "SELECT cursor FROM events WHERE cursor IN ({holes})"
            ))?;
            let rows = q.query_map(
                rusqlite::params_from_iter(chunk.iter().map(|&x| to_sql(x))),
                |r| r.get::<_, i64>(0).map(from_sql),
            )?;
            for r in rows {
                found.insert(r?);
            }
        }
        Ok(found)
    }

    /// Every cursor up to this one is stored.
    pub(crate) fn persisted(&self) -> u64 {
        self.shared.persisted.load(Ordering::Acquire)
    }

    /// Makes sure cursors up to `cursor` may be given out (the history
    /// asks before it passes the mark); returns how far they may.
    pub(crate) fn reserve(&self, cursor: u64) -> u64 {
        self.mark
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reserve(cursor)
    }

    /// Writes what is queued, records a clean stop, closes the writer.
    pub(crate) fn close(&self, last_cursor: u64) {
        self.writer.close(last_cursor);
        let mut mark = self.mark.lock().unwrap_or_else(|p| p.into_inner());
        mark.write("stopped", last_cursor);
        mark.reserved = last_cursor;
    }

    pub(crate) fn info(&self, retention: Retention) -> StoreInfo {
        let failing = self.shared.health().failing.clone();
        StoreInfo {
            path: self.path.display().to_string(),
            state: if failing.is_some() {
                StoreState::Failing
            } else {
                StoreState::Ok
            },
            problem: failing,
            retain_days: retention.days,
            retain_messages: retention.messages,
        }
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest `limit` events with a cursor below `before`, oldest
    /// first; only `room`'s, with one.
    pub(crate) fn page(
        &self,
        limit: usize,
        before: u64,
        room: Option<&str>,
    ) -> rusqlite::Result<Vec<(u64, String)>> {
        let c = self.reader();
        let mut q = c.prepare_cached(&format!(
            "SELECT cursor, json FROM events WHERE cursor < ?1 AND {} ORDER BY cursor DESC LIMIT ?2",
            room_clause(room, 3)
        ))?;
        let before = to_sql(before);
        let limit = to_sql(limit as u64);
        let map = |r: &rusqlite::Row<'_>| Ok((from_sql(r.get(0)?), r.get(1)?));
        let mut rows = match room_param(room) {
            Some(room) => q.query_map(params![before, limit, room], map)?,
            None => q.query_map(params![before, limit], map)?,
        }
        .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Up to `limit` events from cursor `from` on and below `upto`, in
    /// order; only `room`'s, with one.
    pub(crate) fn range(
        &self,
        from: u64,
        upto: u64,
        limit: usize,
        room: Option<&str>,
    ) -> rusqlite::Result<Vec<(u64, String)>> {
        let c = self.reader();
        let mut q = c.prepare_cached(&format!(
            "SELECT cursor, json FROM events WHERE cursor >= ?1 AND cursor < ?2 AND {} ORDER BY cursor LIMIT ?3",
            room_clause(room, 4)
        ))?;
        let (from, upto, limit) = (to_sql(from), to_sql(upto), to_sql(limit as u64));
        let map = |r: &rusqlite::Row<'_>| Ok((from_sql(r.get(0)?), r.get(1)?));
        match room_param(room) {
            Some(room) => q
                .query_map(params![from, upto, limit, room], map)?
                .collect(),
            None => q.query_map(params![from, upto, limit], map)?.collect(),
        }
    }

    /// Stored messages matching `query` (from [`match_query`]), newest
    /// `limit`, oldest first; only `from`'s (a nick as shown), only from
    /// `since_ms` on.
    pub(crate) fn search(
        &self,
        query: &str,
        from: Option<&str>,
        since_ms: Option<i64>,
        limit: usize,
        room: Option<&str>,
    ) -> rusqlite::Result<Vec<(u64, String)>> {
        let c = self.reader();
        let mut q = c.prepare_cached(&format!(
            "SELECT e.cursor, e.json FROM words w JOIN events e ON e.cursor = w.rowid
             WHERE words MATCH ?1 AND e.ts >= ?2 AND (?3 IS NULL OR e.json ->> '$.nick' = ?3)
             AND {} ORDER BY w.rowid DESC LIMIT ?4",
            room_clause(room, 5).replace("room", "e.room")
        ))?;
        let (since, limit) = (since_ms.unwrap_or(0), to_sql(limit as u64));
        let map = |r: &rusqlite::Row<'_>| Ok((from_sql(r.get(0)?), r.get(1)?));
        let mut rows = match room_param(room) {
            Some(room) => q.query_map(params![query, since, from, limit, room], map)?,
            None => q.query_map(params![query, since, from, limit], map)?,
        }
        .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// The oldest cursor stored, if any.
    pub(crate) fn oldest(&self) -> rusqlite::Result<Option<u64>> {
        self.reader()
            .query_row("SELECT min(cursor) FROM events", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map(|c| c.map(from_sql))
    }

    /// The folder the store lives in.
    pub(crate) fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Every life with runs held: how far they reach without a hole.
    pub(crate) fn lives(&self) -> rusqlite::Result<Vec<LifeRow>> {
        let c = self.reader();
        let mut q = c.prepare("SELECT author, life, key, last, end, room FROM lives")?;
        q.query_map([], |r| {
            Ok(LifeRow {
                author: r.get::<_, String>(0)?.into(),
                life: r.get::<_, String>(1)?.into(),
                key: r.get(2)?,
                last: from_sql(r.get(3)?),
                end: r.get(4)?,
                room: r.get::<_, Option<String>>(5)?.map(Arc::from),
            })
        })?
        .collect()
    }

    /// The runs of `life` held past its hole-free reach `after`:
    /// (last, prev, end) each, in order, at most `limit`.
    pub(crate) fn runs_beyond(
        &self,
        author: &str,
        life: &str,
        after: u64,
        limit: usize,
    ) -> rusqlite::Result<Vec<RunEnds>> {
        let c = self.reader();
        let mut q = c.prepare_cached(
            "SELECT last, prev, end FROM runs WHERE author = ?1 AND life = ?2 AND last > ?3
             ORDER BY last LIMIT ?4",
        )?;
        q.query_map(
            params![author, life, to_sql(after), to_sql(limit as u64)],
            |r| Ok((from_sql(r.get(0)?), r.get(1)?, r.get(2)?)),
        )?
        .collect()
    }

    /// Up to `limit` runs of `life` whose last line comes after `after`,
    /// in order: (last, the run as a relay object).
    pub(crate) fn runs_after(
        &self,
        author: &str,
        life: &str,
        after: u64,
        limit: usize,
    ) -> rusqlite::Result<Vec<(u64, String)>> {
        let c = self.reader();
        let mut q = c.prepare_cached(
            "SELECT last, relay FROM runs WHERE author = ?1 AND life = ?2 AND last > ?3
             ORDER BY last LIMIT ?4",
        )?;
        q.query_map(
            params![author, life, to_sql(after), to_sql(limit as u64)],
            |r| Ok((from_sql(r.get(0)?), r.get(1)?)),
        )?
        .collect()
    }

    /// The newest `n` events, oldest first: what the ring starts with.
    pub(crate) fn newest(&self, n: usize) -> rusqlite::Result<Vec<Row>> {
        let c = self.reader();
        let mut q =
            c.prepare("SELECT cursor, ts, json, room FROM events ORDER BY cursor DESC LIMIT ?1")?;
        let mut rows = q
            .query_map(params![to_sql(n as u64)], |r| {
                Ok(Row {
                    cursor: from_sql(r.get(0)?),
                    ts_ms: r.get(1)?,
                    json: r.get::<_, String>(2)?.into(),
                    room: r.get::<_, Option<String>>(3)?.map(Arc::from),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.reverse();
        Ok(rows)
    }
}

/// The SQL that keeps only `room`'s events (a filter as
/// [`crate::history::filter_key`] files them), its value the `n`th
/// parameter: `#general`'s are those filed under no room.
fn room_clause(room: Option<&str>, n: usize) -> String {
    match room {
        None => "1".to_owned(),
        Some(shared::rooms::GENERAL) => "room IS NULL".to_owned(),
        Some(_) => format!("room = ?{n}"),
    }
}

/// The value [`room_clause`] binds, if any.
fn room_param(room: Option<&str>) -> Option<&str> {
    room.filter(|r| *r != shared::rooms::GENERAL)
}

/// The store's state when there is none, for `status`.
pub(crate) fn off_info(path: &Path, problem: &str, retention: Retention) -> StoreInfo {
    StoreInfo {
        path: path.display().to_string(),
        state: StoreState::Off,
        problem: Some(problem.to_owned()),
        retain_days: retention.days,
        retain_messages: retention.messages,
    }
}

/// A full-text query that means what a user typed: every word must occur,
/// each taken literally (as a quoted phrase, so nothing in it is query
/// syntax), a word ending in `*` as a prefix. `None` without a word.
pub(crate) fn match_query(words: &str) -> Option<String> {
    let mut out = Vec::new();
    for w in words.split_whitespace() {
        let (w, prefix) = match w.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (w, false),
        };
        // What the tokenizer would not index alone (punctuation) cannot
        // match; a phrase of nothing is a syntax error.
        if !w.chars().any(char::is_alphanumeric) {
            continue;
        }
        let quoted = format!("\"{}\"", w.replace('"', "\"\""));
        out.push(if prefix { quoted + "*" } else { quoted });
    }
    (!out.is_empty()).then(|| out.join(" "))
}

/// SQLite integers are signed; cursors stay far below 2^63.
#[allow(clippy::cast_possible_wrap)]
fn to_sql(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

#[allow(clippy::cast_sign_loss)]
fn from_sql(n: i64) -> u64 {
    n.max(0) as u64
}

/// A meta value, if set.
fn meta(c: &Connection, key: &str) -> rusqlite::Result<Option<u64>> {
    c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map(|v| v.map(from_sql))
}

fn set_meta(c: &Connection, key: &str, value: u64) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, to_sql(value)],
    )
    .map(drop)
}

#[cfg(test)]
mod tests;
