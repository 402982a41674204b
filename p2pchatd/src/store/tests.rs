use std::sync::Arc;

use testkit::TempDir;

use super::*;

fn row(cursor: u64, id: &str) -> Row {
    Row {
        cursor,
        ts_ms: chrono::Utc::now().timestamp_millis(),
        kind: "message".into(),
        peer_id: Some("p".into()),
        msg_id: Some(id.into()),
        json: Arc::from(format!(r#"{{"cursor":{cursor},"id":"{id}"}}"#)),
    }
}

fn open_store(dir: &Path) -> Store {
    match open(dir, Retention::default()).expect("not locked") {
        Opened::Store(s) => s,
        Opened::Off { problem, .. } => panic!("no store: {problem}"),
    }
}

fn block<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn cursors(rows: &[(u64, String)]) -> Vec<u64> {
    rows.iter().map(|r| r.0).collect()
}

#[test]
fn events_and_cursors_outlive_a_clean_stop() {
    let dir = TempDir::new("p2pchat-store-");
    let s = open_store(dir.path());
    assert_eq!(s.next_cursor(), 1);
    for c in 1..=5 {
        s.write(row(c, &format!("m{c}")));
    }
    // A duplicate message (same author and id) keeps its cursor a hole.
    s.write(row(6, "m5"));
    block(s.flush());
    assert_eq!(s.persisted(), 6);
    assert_eq!(cursors(&s.page(3, u64::MAX).unwrap()), [3, 4, 5]);
    assert_eq!(cursors(&s.range(2, 6, 10).unwrap()), [2, 3, 4, 5]);
    s.close(7);
    drop(s);

    let s = open_store(dir.path());
    assert_eq!(s.next_cursor(), 8, "past the last cursor given out");
    let newest = s.newest(2).unwrap();
    assert_eq!(newest.iter().map(|r| r.cursor).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(newest[1].msg_id.as_deref(), Some("m5"));
}

#[test]
fn after_a_crash_cursors_skip_what_the_lost_queue_may_have_held() {
    let dir = TempDir::new("p2pchat-store-");
    let s = open_store(dir.path());
    s.write(row(1, "a"));
    block(s.flush());
    // No close: as after kill -9 (the lock goes with the process).
    drop(s);
    let s = open_store(dir.path());
    assert_eq!(s.next_cursor(), 2 + CRASH_JUMP);
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
    for c in 1..=3 {
        s.write(Row {
            ts_ms: old,
            ..row(c, &format!("old{c}"))
        });
    }
    for c in 4..=1_500 {
        s.write(row(c, &format!("m{c}")));
    }
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

use super::writer::trim;
