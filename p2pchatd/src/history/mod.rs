//! The daemon's recent history: the last N events, each with a strictly
//! increasing cursor, deduplicated by message id.
//!
//! Events are stored as their JSON, encoded once when they happen, so
//! `history` replies and every subscriber copy bytes instead of encoding
//! again. The ring is also every subscriber's queue: a subscriber is only a
//! cursor into it, so a client that stops reading costs no memory; when the
//! events it has not read are evicted it gets a `gap` and skips to the live
//! edge (DESIGN §3). What `history` pages through is kept apart, in
//! [`held`]: the same events, shared, but thinned fairly when one author
//! floods.
//!
//! With a [`Store`], every event also goes to disk: the ring starts with
//! the newest stored events, cursors continue from the last life, `history`
//! pages on into the store past the held window, and a subscriber behind
//! the ring reads from the store instead of getting a gap.

mod held;

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;
use shared::api::{encode_event_notification, write_json_array};
use shared::event::{Event, EventBody};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::store::{HANDOFF, HANDOFF_DELAY, Row, RunRow, Store};
use held::Held;

/// Subscribers may fall this far behind even when `--history` is smaller:
/// a burst must not gap a healthy client that was descheduled for a moment
/// (8,192 events are ~40 ms at 200k msg/s, ~2 MiB when full).
pub(crate) const MIN_RING: usize = 8192;

/// Appends to a deque that never holds more than `cap`: grown by doubling,
/// but never past `cap`, so a full one is not up to half empty (10,000
/// events in a deque grown to 16,384 slots).
pub(super) fn push_capped<T>(q: &mut VecDeque<T>, item: T, cap: usize) {
    if q.len() == q.capacity() && q.len() < cap {
        q.reserve_exact(q.len().max(16).min(cap - q.len()));
    }
    q.push_back(item);
}

/// How many message ids are remembered for deduplication. Messages arrive
/// once per link in a full mesh, so a duplicate is at most a reconnect away;
/// the Go peer remembers 1,000.
const SEEN_IDS: usize = 16 * 1024;

/// One event in the ring.
#[derive(Debug)]
struct Stored {
    cursor: u64,
    json: Arc<str>,
}

/// What a room filter files an event under: none for `#general` and what
/// is no room's (joins, leaves, nicks, alerts), the room (`#name`) for a
/// room's lines and room events, `@` for a direct message (which no room
/// filter shows).
pub(crate) fn filter_key(body: &EventBody) -> Option<Arc<str>> {
    match body.room() {
        None => Some(Arc::from("@")),
        Some(shared::rooms::GENERAL) => None,
        Some(r) => Some(Arc::from(r)),
    }
}

/// A room filter as the ring checks it: by the event's JSON, where a key
/// is never mistaken for text (text has its quotes escaped), so no
/// event in memory pays for a room tag.
#[derive(Debug, Clone)]
pub(crate) struct RoomFilter {
    /// `#name`.
    room: String,
    /// How its events spell it in their JSON.
    needle: String,
}

impl RoomFilter {
    pub(crate) fn new(room: &str) -> Self {
        Self {
            room: room.to_owned(),
            needle: format!("\"room\":\"{room}\""),
        }
    }

    /// The room, as the store filters by it.
    pub(crate) fn room(&self) -> &str {
        &self.room
    }

    fn admits(&self, e: &Stored) -> bool {
        let json = &*e.json;
        json.contains(&self.needle)
            || (self.room == shared::rooms::GENERAL
                && !json.contains("\"room\":\"")
                && !json.contains("\"to\":\""))
    }
}

#[derive(Debug)]
struct Ring {
    /// Every subscriber's queue: the newest events, contiguous cursors.
    events: VecDeque<Stored>,
    /// How many of the newest events `subscribe {since}` replays.
    held: usize,
    capacity: usize,
    /// What `history` pages through: fair to each author.
    window: Held,
    /// Keys authors for `window`.
    authors: RandomState,
    next_cursor: u64,
    seen: SeenIds,
    /// Events for the store, not yet handed over.
    unsent: Vec<Row>,
    /// Sealed runs for the store, handed over after the events staged
    /// before them: a stored run's lines are stored.
    unsent_runs: Vec<RunRow>,
    /// Where each event is encoded before it is shared: grown once, not
    /// per event.
    scratch: Vec<u8>,
    /// The time of the newest event.
    last_ts: chrono::DateTime<Utc>,
    /// Cursors up to this one may be given out; past it, the store's mark
    /// moves on first (none without a store).
    reserved: u64,
}

/// The history handle; cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct History {
    ring: Mutex<Ring>,
    /// The newest cursor, for subscribers to wait on.
    head: watch::Sender<u64>,
    store: Option<Arc<Store>>,
    /// Wakes [`History::pump`] when events wait for the store.
    staged: Notify,
    /// Where the user left off: the newest event an attached client was
    /// sent before it left.
    read: Mutex<Option<u64>>,
}

/// A page of history, oldest first: stored events older than the held
/// window, then held ones.
#[derive(Debug)]
pub(crate) struct Page {
    stored: Vec<(u64, String)>,
    held: Vec<Arc<str>>,
}

impl Page {
    /// Appends the page as a JSON array.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        let stored = self.stored.iter().map(|(_, json)| json.as_str());
        write_json_array(stored.chain(self.held.iter().map(|j| &**j)), out);
    }
}

/// Where a subscriber starts reading.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// The next cursor to deliver.
    next: u64,
    head: watch::Receiver<u64>,
    /// A gap to report before anything else (`since` older than held).
    pending_gap: Option<(u64, u64)>,
    /// Only this room's events.
    room: Option<RoomFilter>,
}

/// `subscribe {since}` named a cursor this daemon has not reached.
#[derive(Debug, thiserror::Error)]
#[error("cursor {since} is newer than the newest event {head}; the daemon was restarted")]
pub(crate) struct CursorAhead {
    pub since: u64,
    pub head: u64,
}

impl History {
    #[cfg(test)]
    pub(crate) fn new(held: usize) -> Self {
        Self::with_store(held, None)
    }

    /// A history over `store`: the ring starts with its newest `held`
    /// events, and cursors go on from where the last life stopped.
    pub(crate) fn with_store(held: usize, store: Option<Store>) -> Self {
        let capacity = held.max(MIN_RING);
        let mut ring = Ring {
            events: VecDeque::new(),
            held,
            capacity,
            window: Held::new(held),
            authors: RandomState::new(),
            next_cursor: 1,
            seen: SeenIds::new(SEEN_IDS),
            unsent: Vec::new(),
            unsent_runs: Vec::new(),
            scratch: Vec::new(),
            last_ts: chrono::DateTime::<Utc>::MIN_UTC,
            reserved: u64::MAX,
        };
        if let Some(store) = &store {
            match store.newest(held) {
                Ok(rows) => ring.load(rows),
                Err(e) => warn!("could not read the newest history: {e}"),
            }
            ring.next_cursor = store.next_cursor();
            ring.reserved = store.reserve(ring.next_cursor);
        }
        let head = ring.next_cursor - 1;
        let read = store.as_ref().and_then(Store::read_marker);
        Self {
            ring: Mutex::new(ring),
            head: watch::Sender::new(head),
            store: store.map(Arc::new),
            staged: Notify::new(),
            read: Mutex::new(read),
        }
    }

    /// Where the user left off, if known.
    pub(crate) fn read_marker(&self) -> Option<u64> {
        *self.read.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An attached client left having been sent events up to `cursor`:
    /// that is where the user left off (it only moves forward), noted in
    /// the store too.
    pub(crate) fn set_read(&self, cursor: u64) {
        let mut read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        if read.is_some_and(|r| r >= cursor) {
            return;
        }
        *read = Some(cursor);
        if let Some(store) = &self.store {
            store.set_read_marker(cursor);
        }
    }

    /// Hands gathered events to the store, a short while after the first
    /// of them (a full batch goes at once), until `stop`.
    pub(crate) async fn pump(self: Arc<Self>, stop: CancellationToken) {
        if self.store.is_none() {
            return;
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.staged.notified() => {}
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(HANDOFF_DELAY) => {}
            }
            self.hand_over_staged();
        }
        self.hand_over_staged();
    }

    /// Stores what is queued and records a clean stop. An event that comes
    /// after (a task that did not stop in time) moves the store's cursor
    /// mark on again, so its cursor is never given out twice.
    pub(crate) fn close(&self) {
        if let Some(store) = &self.store {
            // Under the lock: no event slips between the last cursor read
            // and the stop recorded.
            let mut ring = self.lock();
            let rows = std::mem::take(&mut ring.unsent);
            if !rows.is_empty() {
                store.write(rows);
            }
            for run in std::mem::take(&mut ring.unsent_runs) {
                store.write_run(run);
            }
            let newest = ring.next_cursor - 1;
            ring.reserved = newest;
            store.close(newest);
        }
    }

    /// Gathers an event for the store; a full batch comes back to be
    /// handed over (outside the lock). Moves the store's cursor mark on
    /// before a cursor past it is seen by anyone.
    fn stage(&self, ring: &mut Ring, row: Option<Row>) -> Option<Vec<Row>> {
        let row = row?;
        if row.cursor > ring.reserved
            && let Some(store) = &self.store
        {
            ring.reserved = store.reserve(row.cursor);
        }
        ring.unsent.push(row);
        if ring.unsent.len() >= HANDOFF {
            return Some(std::mem::take(&mut ring.unsent));
        }
        if ring.unsent.len() == 1 {
            self.staged.notify_one();
        }
        None
    }

    fn hand_over(&self, rows: Option<Vec<Row>>) {
        if let (Some(store), Some(rows)) = (&self.store, rows) {
            store.write(rows);
        }
    }

    /// Hands what is staged to the store now.
    pub(crate) fn hand_over_staged(&self) {
        let (rows, runs) = {
            let mut ring = self.lock();
            (
                std::mem::take(&mut ring.unsent),
                std::mem::take(&mut ring.unsent_runs),
            )
        };
        if !rows.is_empty() {
            self.hand_over(Some(rows));
        }
        if let Some(store) = &self.store {
            for run in runs {
                store.write_run(run);
            }
        }
    }

    /// Gathers a sealed run for the store, to go after the events staged
    /// so far (its lines' among them).
    pub(crate) fn stage_run(&self, run: RunRow) {
        if self.store.is_none() {
            return;
        }
        let mut ring = self.lock();
        ring.unsent_runs.push(run);
        if ring.unsent.is_empty() && ring.unsent_runs.len() == 1 {
            self.staged.notify_one();
        }
    }

    /// Everything appended so far is stored (or failed) once this returns.
    async fn flush_store(&self, store: &Store) {
        self.hand_over_staged();
        store.flush().await;
    }

    pub(crate) fn store(&self) -> Option<&Store> {
        self.store.as_deref()
    }

    /// The store, to read from off the runtime.
    pub(crate) fn store_handle(&self) -> Option<Arc<Store>> {
        self.store.clone()
    }

    /// Everything appended so far is stored (or failed) once this returns.
    pub(crate) async fn flush(&self) {
        if let Some(store) = &self.store {
            self.flush_store(store).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding the lock cannot leave the ring half-written
        // in a way that matters more than losing the daemon; keep serving.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an event; returns its cursor.
    pub(crate) fn append(&self, body: EventBody) -> u64 {
        let mut ring = self.lock();
        let (cursor, row) = ring.push(body, self.store.is_some());
        let batch = self.stage(&mut ring, row);
        drop(ring);
        self.hand_over(batch);
        self.head.send_replace(cursor);
        cursor
    }

    /// Records a chat message unless its id was seen before. `body` is only
    /// built for a new message.
    pub(crate) fn append_message(
        &self,
        sender: &str,
        id: &str,
        body: impl FnOnce() -> EventBody,
    ) -> Option<u64> {
        let cursor = self.append_message_unpublished(sender, id, body)?;
        self.head.send_replace(cursor);
        Some(cursor)
    }

    /// Like `append_message`, but subscribers are not woken until
    /// [`History::publish`]: a link that reads a batch of lines wakes them
    /// once per batch, not once per line.
    pub(crate) fn append_message_unpublished(
        &self,
        sender: &str,
        id: &str,
        body: impl FnOnce() -> EventBody,
    ) -> Option<u64> {
        let mut ring = self.lock();
        if !ring.seen.insert(sender, id) {
            return None;
        }
        let (cursor, row) = ring.push(body(), self.store.is_some());
        let batch = self.stage(&mut ring, row);
        drop(ring);
        self.hand_over(batch);
        Some(cursor)
    }

    /// Wakes subscribers for everything appended so far.
    pub(crate) fn publish(&self) {
        let head = self.newest_cursor();
        self.head.send_if_modified(|h| {
            let changed = *h != head;
            *h = head;
            changed
        });
    }

    /// (held events, how many may be held).
    pub(crate) fn stats(&self) -> (usize, usize) {
        let ring = self.lock();
        (ring.window.len(), ring.window.capacity())
    }

    /// At rest after a burst: the ring lets go of what only a subscriber
    /// lagging through the burst needed (past `--history`, up to
    /// [`MIN_RING`]) and of the room it grew. Only what the store holds
    /// goes, so a subscriber behind the ring reads on from there; without
    /// a store (or with one failing to write) nothing goes, as a laggard
    /// would get a gap instead.
    pub(crate) fn settle(&self) {
        let Some(store) = &self.store else {
            return;
        };
        let persisted = store.persisted();
        let mut ring = self.lock();
        let over = ring.events.len().saturating_sub(ring.held);
        let stored = ring
            .events
            .iter()
            .take(over)
            .take_while(|e| e.cursor <= persisted)
            .count();
        ring.events.drain(..stored);
        ring.events.shrink_to_fit();
        ring.unsent.shrink_to_fit();
    }

    pub(crate) fn newest_cursor(&self) -> u64 {
        self.lock().next_cursor - 1
    }

    /// Writes the JSON array of the newest `limit` held events with a cursor
    /// below `before`, oldest first, into `out`.
    ///
    /// The held window comes first; with a store, a page that reaches past
    /// it goes on with the stored events older than the window.
    pub(crate) async fn page(
        &self,
        limit: usize,
        before: Option<u64>,
        room: Option<&RoomFilter>,
    ) -> Page {
        if let Some(room) = room {
            return self.room_page(limit, before, room).await;
        }
        let (held, oldest_held, newest) = {
            let ring = self.lock();
            (
                ring.window.page(limit, before),
                ring.window.oldest(),
                ring.next_cursor - 1,
            )
        };
        let mut stored = Vec::new();
        if held.len() < limit
            && let Some(store) = &self.store
        {
            let upto = before
                .unwrap_or(u64::MAX)
                .min(oldest_held.unwrap_or(u64::MAX))
                .min(newest + 1);
            if store.persisted() + 1 < upto {
                self.flush_store(store).await;
            }
            let reader = store.clone();
            let more = limit - held.len();
            match tokio::task::spawn_blocking(move || reader.page(more, upto, None)).await {
                Ok(Ok(rows)) => stored = rows,
                Ok(Err(e)) => warn!("could not read stored history: {e}"),
                Err(e) => warn!("stored history read failed: {e}"),
            }
        }
        Page { stored, held }
    }

    /// A page of one room's events: the newest in the ring, then, with a
    /// store, older ones from it (the fair window is for the whole
    /// history; a room's page takes what the room holds).
    async fn room_page(&self, limit: usize, before: Option<u64>, room: &RoomFilter) -> Page {
        let before = before.unwrap_or(u64::MAX);
        let (mut held, first) = {
            let ring = self.lock();
            let end = ring.position(before);
            let held: Vec<Arc<str>> = ring
                .events
                .range(..end)
                .rev()
                .filter(|e| room.admits(e))
                .take(limit)
                .map(|e| e.json.clone())
                .collect();
            (held, ring.first_cursor())
        };
        held.reverse();
        let mut stored = Vec::new();
        if held.len() < limit
            && let Some(store) = &self.store
        {
            let upto = before.min(first);
            if store.persisted() + 1 < upto {
                self.flush_store(store).await;
            }
            let reader = store.clone();
            let more = limit - held.len();
            let room = room.room().to_owned();
            match tokio::task::spawn_blocking(move || reader.page(more, upto, Some(room.as_str())))
                .await
            {
                Ok(Ok(rows)) => stored = rows,
                Ok(Err(e)) => warn!("could not read stored history: {e}"),
                Err(e) => warn!("stored history read failed: {e}"),
            }
        }
        Page { stored, held }
    }

    /// Starts a subscription: live events only, or with `since` every held
    /// event after that cursor first; only `room`'s, with one.
    pub(crate) fn subscribe(
        &self,
        since: Option<u64>,
        room: Option<RoomFilter>,
    ) -> Result<Subscription, CursorAhead> {
        let ring = self.lock();
        let head = ring.next_cursor - 1;
        let mut sub = Subscription {
            next: head + 1,
            head: self.head.subscribe(),
            pending_gap: None,
            room,
        };
        if let Some(since) = since {
            if since > head {
                return Err(CursorAhead { since, head });
            }
            let oldest_held = ring
                .events
                .get(ring.held_range().start)
                .map_or(head + 1, |e| e.cursor);
            // With a store, what the ring no longer holds is read from it.
            if since + 1 < oldest_held && self.store.is_none() {
                sub.pending_gap = Some((oldest_held - since - 1, oldest_held - 1));
                sub.next = oldest_held;
            } else {
                sub.next = since + 1;
            }
        }
        Ok(sub)
    }

    /// Appends `event` notifications for what `sub` has not seen yet, up to
    /// `max` events, to `out`. Returns true when it stopped at `max` (more
    /// are ready).
    pub(crate) async fn fill(&self, sub: &mut Subscription, out: &mut Vec<u8>, max: usize) -> bool {
        sub.head.borrow_and_update();
        if let Some((missed, last)) = sub.pending_gap.take() {
            push_gap(out, missed, last);
        }
        let first = self.lock().first_cursor();
        if sub.next < first
            && let Some(store) = &self.store
        {
            return self.fill_from_store(store, sub, first, out, max).await;
        }
        let ring = self.lock();
        let head = ring.next_cursor - 1;
        if sub.next > head {
            return false;
        }
        if sub.next < ring.first_cursor() {
            // Evicted before this subscriber read them: skip to the live edge.
            let missed = head + 1 - sub.next;
            sub.next = head + 1;
            drop(ring);
            push_gap(out, missed, head);
            return false;
        }
        let start = ring.position(sub.next);
        for (read, e) in ring.events.range(start..).enumerate() {
            if read == max {
                return true;
            }
            if sub.room.as_ref().is_none_or(|r| r.admits(e)) {
                encode_event_notification(&e.json, out);
            }
            sub.next = e.cursor + 1;
        }
        false
    }

    /// Reads what `sub` missed below the ring's `first` cursor from the
    /// store, a batch at a time; true: call again.
    async fn fill_from_store(
        &self,
        store: &Arc<Store>,
        sub: &mut Subscription,
        first: u64,
        out: &mut Vec<u8>,
        max: usize,
    ) -> bool {
        if store.persisted() + 1 < first {
            // Evicted from the ring while still queued for the disk.
            self.flush_store(store).await;
        }
        let from = sub.next;
        let reader = store.clone();
        let room = sub.room.as_ref().map(|r| r.room().to_owned());
        let read = tokio::task::spawn_blocking(move || {
            let rows = reader.range(from, first, max, room.as_deref())?;
            // Only when the first row is missing: was it trimmed away?
            let oldest = match rows.first() {
                Some(&(c, _)) if c == from => None,
                _ => reader.oldest()?,
            };
            Ok::<_, rusqlite::Error>((rows, oldest))
        })
        .await;
        let mut failed = false;
        let (rows, oldest) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                warn!("could not read history for a subscriber: {e}");
                failed = true;
                (Vec::new(), None)
            }
            Err(e) => {
                warn!("history read failed: {e}");
                failed = true;
                (Vec::new(), None)
            }
        };
        // Trimmed away by retention: say so. Holes (duplicates skipped, a
        // crashed life's unused cursors) are not gaps.
        if let Some(upto) = oldest.filter(|&o| o > from).map(|o| o.min(first)) {
            push_gap(out, upto - from, upto - 1);
        }
        let full = rows.len() == max;
        for (cursor, json) in &rows {
            encode_event_notification(json, out);
            sub.next = cursor + 1;
        }
        if !full && sub.next < first {
            // The rest up to the ring is holes, unless the store could not
            // be read or has not got it all (a failing disk): then say so.
            if failed || store.persisted() + 1 < first {
                push_gap(out, first - sub.next, first - 1);
            }
            sub.next = first;
        }
        true
    }
}

impl Subscription {
    /// The newest cursor delivered so far (0: none).
    pub(crate) fn delivered(&self) -> u64 {
        self.next.saturating_sub(1)
    }

    /// Waits until an event newer than the last `fill` exists. Errors only
    /// when the history is gone (daemon stopping).
    pub(crate) async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.head.changed().await
    }
}

fn push_gap(out: &mut Vec<u8>, missed: u64, last: u64) {
    let gap = Event {
        cursor: last,
        ts: Utc::now(),
        body: EventBody::Gap { missed },
    };
    if let Ok(json) = serde_json::to_string(&gap) {
        encode_event_notification(&json, out);
    }
}

impl Ring {
    /// Adds an event; with `row`, also what the store needs of it.
    fn push(&mut self, body: EventBody, row: bool) -> (u64, Option<Row>) {
        let cursor = self.next_cursor;
        self.next_cursor += 1;
        // Never before the last event, even when the clock steps back: the
        // store finds its retention boundary by time growing with cursors.
        let now = Utc::now().max(self.last_ts);
        self.last_ts = now;
        let event = Event {
            cursor,
            ts: now,
            body,
        };
        // An event of strings and numbers always encodes, as UTF-8.
        self.scratch.clear();
        let json: Arc<str> = match serde_json::to_writer(&mut self.scratch, &event) {
            Ok(()) => std::str::from_utf8(&self.scratch)
                .unwrap_or_default()
                .into(),
            Err(_) => "".into(),
        };
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        let author = author_of(&event.body).map_or(0, |id| self.authors.hash_one(id));
        self.window.push(cursor, author, json.clone());
        let row = row.then(|| Row {
            cursor,
            ts_ms: event.ts.timestamp_millis(),
            json: json.clone(),
            room: filter_key(&event.body),
        });
        push_capped(&mut self.events, Stored { cursor, json }, self.capacity);
        (cursor, row)
    }

    fn first_cursor(&self) -> u64 {
        self.events.front().map_or(self.next_cursor, |e| e.cursor)
    }

    /// Where the first event at or after `cursor` is. Cursors increase
    /// through the ring, with holes where the store skipped one.
    fn position(&self, cursor: u64) -> usize {
        self.events.partition_point(|e| e.cursor < cursor)
    }

    /// Starts with stored events, oldest first.
    fn load(&mut self, rows: Vec<Row>) {
        for r in rows {
            // Who and which message, for fairness and deduplication.
            let body = serde_json::from_str::<Event>(&r.json).map(|e| e.body);
            if let Ok(EventBody::Message { peer_id, id, .. }) = &body {
                self.seen.insert(peer_id, id);
            }
            let author = body
                .as_ref()
                .ok()
                .and_then(author_of)
                .map_or(0, |a| self.authors.hash_one(a));
            self.window.push(r.cursor, author, r.json.clone());
            if self.events.len() == self.capacity {
                self.events.pop_front();
            }
            push_capped(
                &mut self.events,
                Stored {
                    cursor: r.cursor,
                    json: r.json,
                },
                self.capacity,
            );
            self.next_cursor = r.cursor + 1;
            if let Some(ts) = chrono::DateTime::from_timestamp_millis(r.ts_ms) {
                self.last_ts = self.last_ts.max(ts);
            }
        }
    }

    /// The part of the ring that counts as held history.
    fn held_range(&self) -> std::ops::Range<usize> {
        self.events.len().saturating_sub(self.held)..self.events.len()
    }
}

/// Who an event is about, for fairness in the held history.
fn author_of(body: &EventBody) -> Option<&str> {
    match body {
        EventBody::Message { peer_id, .. }
        | EventBody::Alert { peer_id, .. }
        | EventBody::Join { peer_id, .. }
        | EventBody::Leave { peer_id, .. }
        | EventBody::Nick { peer_id, .. }
        | EventBody::Room { peer_id, .. }
        | EventBody::Topic { peer_id, .. } => Some(peer_id),
        EventBody::Gap { .. } | EventBody::Transfer(_) | EventBody::Other { .. } => None,
    }
}

/// A bounded set of recently seen message ids, oldest forgotten first.
/// Ids are kept as keyed 64-bit hashes: a collision needs ~2^32 ids in the
/// window, and the key is random per daemon so no peer can aim for one.
#[derive(Debug)]
struct SeenIds {
    /// Already keyed hashes: hashed again by nothing.
    set: HashSet<u64, BuildHasherDefault<Prehashed>>,
    order: VecDeque<u64>,
    capacity: usize,
    key: RandomState,
}

impl SeenIds {
    fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::with_capacity_and_hasher(capacity, BuildHasherDefault::default()),
            order: VecDeque::with_capacity(capacity),
            capacity,
            key: RandomState::new(),
        }
    }

    /// False when `(sender, id)` was seen before.
    fn insert(&mut self, sender: &str, id: &str) -> bool {
        let mut h = self.key.build_hasher();
        sender.hash(&mut h);
        id.hash(&mut h);
        let h = h.finish();
        if !self.set.insert(h) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(h);
        true
    }
}

/// The hasher of a set of keyed hashes: each is its own hash.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are hashed here; anything else still spreads.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::api::{ServerMessage, decode_server_message};

    use testkit::block_on as block;

    #[test]
    fn a_capped_deque_grows_to_its_cap_and_no_further() {
        let mut q = VecDeque::new();
        for i in 0..10_000 {
            push_capped(&mut q, i, 10_000);
        }
        assert!(q.capacity() < 10_064, "{} slots for 10,000", q.capacity());
        let mut doubled = VecDeque::new();
        for i in 0..10_000 {
            doubled.push_back(i);
        }
        assert!(doubled.capacity() >= 16_384, "as plain doubling would");
    }

    fn msg(n: u64) -> EventBody {
        EventBody::Message {
            id: format!("m{n}"),
            peer_id: "p".into(),
            nick: "n".into(),
            text: format!("text {n}"),
            action: false,
            fingerprint: None,
            trust: None,
            seq: None,
            sent: None,
            late: false,
            room: None,
            to: None,
        }
    }

    fn events(bytes: &[u8]) -> Vec<Event> {
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| match decode_server_message(l).unwrap() {
                ServerMessage::Event(e) => e,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn page(h: &History, limit: usize, before: Option<u64>) -> Vec<u64> {
        let mut out = Vec::new();
        block(h.page(limit, before, None)).write_json(&mut out);
        let evs: Vec<Event> = serde_json::from_slice(&out).unwrap();
        evs.iter().map(|e| e.cursor).collect()
    }

    /// A room filter shows its room's events, `#general`'s with what is no
    /// room's; never a direct message; text that spells a room key fools
    /// neither the ring nor a page.
    #[test]
    fn a_room_filter_shows_its_rooms_events_only() {
        let h = History::new(100);
        let said = |n: u64, room: Option<&str>, text: &str, dm: bool| {
            let mut body = msg(n);
            if let EventBody::Message {
                room: r,
                to,
                text: t,
                ..
            } = &mut body
            {
                *r = room.map(str::to_owned);
                *t = text.to_owned();
                if dm {
                    *r = None;
                    *to = Some(shared::event::Dm {
                        peer_id: "kme".into(),
                        nick: "me".into(),
                    });
                }
            }
            body
        };
        h.append(said(1, Some("#general"), "hello", false));
        h.append(said(2, Some("#ops"), "deploy", false));
        h.append(said(3, None, "from an old daemon", false));
        h.append(said(4, None, "psst", true));
        h.append(said(
            5,
            Some("#general"),
            r##"fake "room":"#ops" here"##,
            false,
        ));
        h.append(EventBody::Join {
            peer_id: "p".into(),
            nick: "n".into(),
        });
        let texts = |filter: &str| {
            let mut sub = h.subscribe(Some(0), Some(RoomFilter::new(filter))).unwrap();
            let mut out = Vec::new();
            block(h.fill(&mut sub, &mut out, 100));
            events(&out)
                .iter()
                .map(|e| match &e.body {
                    EventBody::Message { text, .. } => text.clone(),
                    other => other.kind().to_owned(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(texts("#ops"), ["deploy"]);
        assert_eq!(
            texts("#general"),
            [
                "hello",
                "from an old daemon",
                r##"fake "room":"#ops" here"##,
                "join"
            ]
        );
        assert!(texts("#build").is_empty());
        let mut out = Vec::new();
        block(h.page(10, None, Some(&RoomFilter::new("#ops")))).write_json(&mut out);
        let page: Vec<Event> = serde_json::from_slice(&out).unwrap();
        assert_eq!(page.len(), 1);
    }

    #[test]
    fn cursors_increase_and_old_events_go() {
        let h = History::new(3);
        for n in 1..=5 {
            assert_eq!(h.append(msg(n)), n);
        }
        assert_eq!(h.stats(), (3, 3));
        assert_eq!(page(&h, 10, None), vec![3, 4, 5]);
        assert_eq!(page(&h, 2, None), vec![4, 5]);
        assert_eq!(page(&h, 10, Some(5)), vec![3, 4]);
        assert_eq!(page(&h, 10, Some(3)), Vec::<u64>::new());
        assert_eq!(page(&h, 10, Some(1)), Vec::<u64>::new());
        assert_eq!(page(&h, 10, Some(99)), vec![3, 4, 5]);
    }

    #[test]
    fn dedups_by_sender_and_id() {
        let h = History::new(10);
        assert_eq!(h.append_message("a", "1", || msg(1)), Some(1));
        assert_eq!(h.append_message("a", "1", || msg(1)), None);
        assert_eq!(h.append_message("b", "1", || msg(1)), Some(2));
    }

    #[tokio::test]
    async fn unpublished_appends_wake_subscribers_once_published() {
        let h = History::new(10);
        let mut sub = h.subscribe(None, None).unwrap();
        h.append_message_unpublished("a", "1", || msg(1));
        h.append_message_unpublished("a", "2", || msg(2));
        let woken = tokio::time::timeout(std::time::Duration::from_millis(20), sub.changed()).await;
        assert!(woken.is_err(), "not before publish");
        h.publish();
        sub.changed().await.unwrap();
        let mut out = Vec::new();
        h.fill(&mut sub, &mut out, 100).await;
        assert_eq!(events(&out).len(), 2, "both, in one wake");
    }

    #[test]
    fn seen_ids_forget_the_oldest() {
        let mut s = SeenIds::new(2);
        assert!(s.insert("a", "1") && s.insert("a", "2") && s.insert("a", "3"));
        assert!(s.insert("a", "1"), "forgotten");
        assert!(!s.insert("a", "3"));
    }

    #[test]
    fn subscription_resumes_exactly_after_since() {
        let h = History::new(100);
        for n in 1..=10 {
            h.append(msg(n));
        }
        let mut sub = h.subscribe(Some(4), None).unwrap();
        let mut out = Vec::new();
        assert!(block(h.fill(&mut sub, &mut out, 3)), "stopped at max");
        assert!(!block(h.fill(&mut sub, &mut out, 100)));
        let cursors: Vec<u64> = events(&out).iter().map(|e| e.cursor).collect();
        assert_eq!(cursors, (5..=10).collect::<Vec<_>>());
        out.clear();
        assert!(!block(h.fill(&mut sub, &mut out, 100)));
        assert!(out.is_empty());
        h.append(msg(11));
        block(h.fill(&mut sub, &mut out, 100));
        assert_eq!(events(&out)[0].cursor, 11);
        assert!(h.subscribe(Some(12), None).is_err());
    }

    #[test]
    fn live_subscription_starts_at_the_edge() {
        let h = History::new(100);
        h.append(msg(1));
        let mut sub = h.subscribe(None, None).unwrap();
        let mut out = Vec::new();
        block(h.fill(&mut sub, &mut out, 100));
        assert!(out.is_empty());
        h.append(msg(2));
        block(h.fill(&mut sub, &mut out, 100));
        assert_eq!(events(&out).len(), 1);
    }

    #[test]
    fn since_older_than_held_reports_a_gap_first() {
        let h = History::new(3);
        for n in 1..=10 {
            h.append(msg(n));
        }
        let mut sub = h.subscribe(Some(2), None).unwrap();
        let mut out = Vec::new();
        block(h.fill(&mut sub, &mut out, 100));
        let evs = events(&out);
        assert_eq!(evs[0].body, EventBody::Gap { missed: 5 });
        assert_eq!(evs[0].cursor, 7);
        let rest: Vec<u64> = evs[1..].iter().map(|e| e.cursor).collect();
        assert_eq!(rest, vec![8, 9, 10]);
    }

    #[test]
    fn a_subscriber_that_falls_out_of_the_ring_gets_a_gap_and_skips_to_the_edge() {
        let h = History::new(10);
        let mut sub = h.subscribe(None, None).unwrap();
        let n = MIN_RING as u64 + 50;
        for i in 1..=n {
            h.append(msg(i));
        }
        let mut out = Vec::new();
        block(h.fill(&mut sub, &mut out, 100));
        let evs = events(&out);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].body, EventBody::Gap { missed: n });
        assert_eq!(evs[0].cursor, n);
        out.clear();
        h.append(msg(n + 1));
        block(h.fill(&mut sub, &mut out, 100));
        assert_eq!(events(&out)[0].cursor, n + 1);
    }

    #[test]
    fn at_rest_the_ring_keeps_its_history_and_a_laggard_reads_on_from_the_store() {
        let dir = testkit::TempDir::new("settle");
        let store = match crate::store::open(dir.path(), crate::store::Retention::default()) {
            Ok(crate::store::Opened::Store(s)) => s,
            _ => panic!("no store"),
        };
        let h = History::with_store(10, Some(store));
        let mut sub = h.subscribe(None, None).unwrap();
        let n = MIN_RING as u64 + 50;
        for i in 1..=n {
            h.append(msg(i));
        }
        assert_eq!(h.lock().events.len(), MIN_RING, "a burst fills the ring");
        // The last 50 are still staged, not stored: they stay.
        h.settle();
        assert!(
            h.lock().first_cursor() <= n - 49,
            "only what is stored goes"
        );
        h.hand_over_staged();
        block(h.store_handle().unwrap().flush());
        h.settle();
        assert_eq!(h.lock().events.len(), 10);
        let mut got = Vec::new();
        loop {
            let mut out = Vec::new();
            let more = block(h.fill(&mut sub, &mut out, 1000));
            got.extend(events(&out).iter().map(|e| e.cursor));
            if !more && sub.delivered() == n {
                break;
            }
        }
        assert_eq!(got, (1..=n).collect::<Vec<_>>(), "all of it, no gap");
    }
}
