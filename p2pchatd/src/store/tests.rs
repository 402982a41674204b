use std::sync::Arc;

use testkit::{TempDir, block_on as block};

use super::*;

fn row(cursor: u64, id: &str) -> Row {
    Row {
        cursor,
        ts_ms: chrono::Utc::now().timestamp_millis(),
        json: Arc::from(format!(r#"{{"cursor":{cursor},"id":"{id}"}}"#)),
        room: None,
    }
}

fn open_store(dir: &Path) -> Store {
    match open(dir, Retention::default()).expect("not locked") {
        Opened::Store(s) => s,
        Opened::Off { problem, .. } => panic!("no store: {problem}"),
    }
}

/// The cursors of the stored messages holding `words`, once the index
/// caught up.
fn found(s: &Store, words: &str) -> Vec<u64> {
    block(s.index());
    cursors(
        &s.search(&match_query(words).unwrap(), None, None, 10, None)
            .unwrap(),
    )
}

fn cursors(rows: &[(u64, String)]) -> Vec<u64> {
    rows.iter().map(|r| r.0).collect()
}

#[test]
fn events_and_cursors_outlive_a_clean_stop() {
    let dir = TempDir::new("p2pchat-store-");
    let s = open_store(dir.path());
    assert_eq!(s.next_cursor(), 1);
    s.write((1..=4).map(|c| row(c, &format!("m{c}"))).collect());
    // A hole in the cursors (as after a crash) is no trouble.
    s.write(vec![row(5, "m5"), row(7, "m7")]);
    block(s.flush());
    assert_eq!(s.persisted(), 7);
    assert_eq!(cursors(&s.page(3, u64::MAX, None).unwrap()), [4, 5, 7]);
    assert_eq!(cursors(&s.page(2, 5, None).unwrap()), [3, 4]);
    assert_eq!(cursors(&s.range(2, 7, 10, None).unwrap()), [2, 3, 4, 5]);
    // Cursor 8 was given out but not stored (a duplicate, say).
    s.close(8);
    drop(s);

    let s = open_store(dir.path());
    assert_eq!(s.next_cursor(), 9, "past the last cursor given out");
    let newest = s.newest(2).unwrap();
    assert_eq!(newest.iter().map(|r| r.cursor).collect::<Vec<_>>(), [5, 7]);
    assert!(newest[1].json.contains(r#""id":"m7""#));
}

#[test]
fn after_a_crash_cursors_skip_past_every_one_given_out() {
    let dir = TempDir::new("p2pchat-store-");
    let s = open_store(dir.path());
    s.write(vec![row(1, "a")]);
    block(s.flush());
    // The history passed the reserved mark: it moved on first.
    assert_eq!(s.reserve(2), 1 + RESERVE);
    assert_eq!(s.reserve(3 * RESERVE), 4 * RESERVE);
    // No close: as after kill -9 (the lock goes with the process).
    drop(s);
    let s = open_store(dir.path());
    assert_eq!(s.next_cursor(), 4 * RESERVE + 1, "past the mark");
    drop(s);
    // Without the lock file (an older daemon's), the database's own mark
    // still skips what the lost queue may have held.
    std::fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
    let s = open_store(dir.path());
    assert_eq!(s.next_cursor(), 2 + CRASH_JUMP);
}

#[test]
fn a_clean_stop_is_recorded_even_when_the_database_cannot_take_it() {
    let dir = TempDir::new("p2pchat-store-");
    let s = open_store(dir.path());
    s.write(vec![row(1, "a")]);
    block(s.flush());
    // Cursors up to 50 were given out; the database never heard of them
    // (as when the disk is full), the mark did.
    s.close(50);
    drop(s);
    // What the database holds when it could not record the stop.
    let c = connect(&dir.path().join(STORE_FILE), false).unwrap();
    c.execute_batch("UPDATE meta SET value = 1 WHERE key IN ('last_cursor', 'in_use')")
        .unwrap();
    drop(c);
    let s = open_store(dir.path());
    assert_eq!(s.next_cursor(), 51, "the mark's, not a crash's jump");
}

#[test]
fn a_second_daemon_is_refused_with_the_holders_pid() {
    let dir = TempDir::new("p2pchat-store-");
    let _held = open_store(dir.path());
    match open(dir.path(), Retention::default()) {
        Err(StoreError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_damaged_file_is_left_alone_and_the_daemon_goes_on_without() {
    let dir = TempDir::new("p2pchat-store-");
    let path = dir.path().join(STORE_FILE);
    let junk = b"this is not a database, and it is the user's".repeat(200);
    std::fs::write(&path, &junk).unwrap();
    match open(dir.path(), Retention::default()).unwrap() {
        Opened::Off { problem, .. } => assert!(problem.contains("damaged"), "{problem}"),
        Opened::Store(_) => panic!("opened junk"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), junk, "untouched");
}

#[test]
fn a_folder_that_cannot_be_made_leaves_the_daemon_without_a_store() {
    let dir = TempDir::new("p2pchat-store-");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    match open(&file.join("p2pchat"), Retention::default()).unwrap() {
        Opened::Off { problem, .. } => assert!(problem.contains("cannot create"), "{problem}"),
        Opened::Store(_) => panic!("a store under a file"),
    }
}

#[test]
fn retention_keeps_the_newest_by_count_and_drops_old_days() {
    let dir = TempDir::new("p2pchat-store-");
    let s = open_store(dir.path());
    let old = chrono::Utc::now().timestamp_millis() - 3 * 86_400_000;
    s.write(
        (1..=3)
            .map(|c| Row {
                ts_ms: old,
                ..row(c, &format!("old{c}"))
            })
            .collect(),
    );
    s.write((4..=1_500).map(|c| row(c, &format!("m{c}"))).collect());
    block(s.flush());
    s.close(1_500);
    let c = connect(&dir.path().join(STORE_FILE), false).unwrap();
    trim(
        &c,
        Retention {
            days: 2,
            messages: 1_000,
        },
    )
    .unwrap();
    let (n, min): (i64, i64) = c
        .query_row("SELECT count(*), min(cursor) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((n, min), (1_000, 501));
}

#[test]
fn the_age_boundary_is_found_by_halving_cursors() {
    let dir = TempDir::new("p2pchat-store-");
    // Times from 1970: kept only by the longest retention.
    let keep_all = Retention {
        days: 36_500,
        messages: 1_000_000_000,
    };
    let Ok(Opened::Store(s)) = open(dir.path(), keep_all) else {
        panic!("no store");
    };
    // Cursors with holes, times growing with them.
    let rows: Vec<Row> = (1..=200u32)
        .map(|i| Row {
            ts_ms: i64::from(i) * 10,
            ..row(u64::from(i) * 3, &format!("m{i}"))
        })
        .collect();
    s.write(rows);
    block(s.flush());
    let c = connect(&dir.path().join(STORE_FILE), false).unwrap();
    let first = |ts| writer::first_at_or_after(&c, ts).unwrap();
    assert_eq!(first(0), Some(3), "all kept");
    assert_eq!(first(10), Some(3));
    assert_eq!(first(11), Some(6));
    assert_eq!(first(1_000), Some(300));
    assert_eq!(first(2_000), Some(600), "the newest kept");
    assert_eq!(first(2_001), Some(601), "none kept");
}

use super::writer::trim;

#[test]
fn search_words_are_taken_literally() {
    assert_eq!(
        match_query("deploy friday").unwrap(),
        r#""deploy" "friday""#
    );
    assert_eq!(match_query("fri*").unwrap(), r#""fri"*"#);
    // Query syntax is only ever text.
    assert_eq!(
        match_query(r#"a" OR "b NEAR(x"#).unwrap(),
        r#""a""" "OR" """b" "NEAR(x""#
    );
    assert_eq!(match_query("  ... * \"\" "), None);
}

fn message(cursor: u64, nick: &str, text: &str, ts_ms: i64) -> Row {
    Row {
        cursor,
        ts_ms,
        json: Arc::from(
            serde_json::json!({"kind": "message", "cursor": cursor, "nick": nick, "text": text})
                .to_string(),
        ),
        room: None,
    }
}

#[test]
fn search_finds_every_word_newest_last_by_nick_and_time() {
    let dir = TempDir::new("p2pchat-store-");
    let s = open_store(dir.path());
    let now = chrono::Utc::now().timestamp_millis();
    s.write(vec![
        message(1, "amy", "Deploy on Friday?", now - 10_000),
        message(2, "bob", "no deploy this week", now - 5_000),
        message(3, "amy", "déploiement friday, then", now),
        Row {
            cursor: 4,
            ts_ms: now,
            json: Arc::from(r#"{"kind":"join","cursor":4,"nick":"deploy"}"#),
            room: None,
        },
    ]);
    block(s.index());
    let search = |w: &str, from: Option<&str>, since: Option<i64>, n: usize| {
        cursors(
            &s.search(&match_query(w).unwrap(), from, since, n, None)
                .unwrap(),
        )
    };
    let hits = |w: &str, from: Option<&str>, since: Option<i64>| search(w, from, since, 10);
    assert_eq!(
        hits("deploy", None, None),
        [1, 2],
        "oldest first; not the join"
    );
    assert_eq!(hits("DEPLOY friday", None, None), [1]);
    assert_eq!(hits("fri*", None, None), [1, 3]);
    assert_eq!(hits("deploiement", None, None), [3], "without accents");
    assert_eq!(hits("deploy", Some("bob"), None), [2]);
    assert_eq!(hits("deploy", None, Some(now - 6_000)), [2]);
    assert_eq!(search("deploy", None, None, 1), [2]);
    assert!(hits("nothing", None, None).is_empty());
    // Trimmed lines are not found any more.
    s.close(4);
    drop(s);
    let c = connect(&dir.path().join(STORE_FILE), false).unwrap();
    trim(
        &c,
        Retention {
            days: 365,
            messages: 2,
        },
    )
    .unwrap();
    drop(c);
    let s = open_store(dir.path());
    assert_eq!(found(&s, "fri*"), [3]);
}

#[test]
fn a_store_from_before_search_gets_its_words_once() {
    let dir = TempDir::new("p2pchat-store-");
    let path = dir.path().join(STORE_FILE);
    {
        // What version 1 wrote.
        let c = connect(&path, true).unwrap();
        c.execute_batch(CREATE).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        // Of today: retention must keep it.
        c.execute(
            "INSERT INTO events (cursor, ts, json) VALUES (7, ?1, ?2)",
            rusqlite::params![
                chrono::Utc::now().timestamp_millis(),
                r#"{"kind":"message","cursor":7,"nick":"amy","text":"old words"}"#
            ],
        )
        .unwrap();
    }
    let s = open_store(dir.path());
    // Indexed in the background; a search asks for it to catch up.
    assert_eq!(found(&s, "old"), [7]);
    assert_eq!(s.next_cursor(), 8);
}

#[test]
fn an_event_after_the_stop_moves_the_mark_on_again() {
    let dir = TempDir::new("p2pchat-store-");
    let s = open_store(dir.path());
    s.close(10);
    // A task that did not stop in time gives out cursor 11.
    assert_eq!(s.reserve(11), 11 + RESERVE);
    drop(s);
    let s = open_store(dir.path());
    assert_eq!(s.next_cursor(), 12 + RESERVE, "past 11, not 11 again");
}

#[test]
fn a_steady_stream_is_written_while_it_goes_on() {
    let dir = TempDir::new("p2pchat-store-");
    let s = open_store(dir.path());
    // A row every 10 ms never leaves the writer the quiet it gathers a
    // burst for: only the bound on gathering gets it written.
    let started = std::time::Instant::now();
    let mut cursor = 0;
    while s.persisted() == 0 && started.elapsed() < Duration::from_secs(5) {
        cursor += 1;
        s.write(vec![row(cursor, "m")]);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        s.persisted() > 0,
        "{cursor} rows over 5 s of a steady stream, none written"
    );
}
