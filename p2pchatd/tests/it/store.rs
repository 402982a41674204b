//! The history store: what survives a restart and a crash, and what the
//! daemon does with a store it cannot use.

use std::time::Duration;

use nix::sys::signal::Signal;
use shared::api::StoreState;
use shared::event::{Event, EventBody};
use testkit::*;

const T: Duration = Duration::from_secs(10);

fn texts(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| matches!(e.body, EventBody::Message { .. }))
        .map(text)
        .collect()
}

fn said(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("line {i}")).collect()
}

#[tokio::test]
async fn history_and_cursors_outlive_a_restart() {
    let net = TestNet::new();
    let mut a = net.daemon_with("alice", &["--history", "50"]).await;
    let before = a.status().await.instance;
    a.say_many("line", 300).await;
    let held = a.history(300).await;
    let cursor_of = |i: usize| {
        held.iter()
            .find(|e| text(e) == format!("line {i}"))
            .unwrap_or_else(|| panic!("line {i} in history"))
            .cursor
    };
    let (at_99, at_299) = (cursor_of(99), cursor_of(299));

    a.signal(Signal::SIGTERM);
    assert!(a.exit_within(T).await.success());
    let a = net.daemon_with("alice", &["--history", "50"]).await;
    let status = a.status().await;
    assert_ne!(status.instance, before, "a new life");
    assert_eq!(status.store.unwrap().state, StoreState::Ok);

    // `tail -n 5` shows the last five from before.
    let tail = a.p2pchat(&["tail", "-n", "5"]).await;
    let last: Vec<&str> = tail
        .lines()
        .map(|l| l.rsplit("> ").next().unwrap())
        .collect();
    assert_eq!(last, said(295..300), "{tail}");
    // All 300 page back, past the 50 held in memory, from the store.
    assert_eq!(texts(&a.history(300).await), said(0..300));

    // A client that stopped at line 99 resumes with none lost or doubled,
    // and the lines of this life come after, with newer cursors.
    let mut sub = a.subscribe(Some(at_99)).await;
    a.say("after").await;
    let got = sub.messages(201, T).await;
    let want: Vec<String> = said(100..300).into_iter().chain(["after".into()]).collect();
    assert_eq!(texts(&got), want);
    assert!(got[200].cursor > at_299, "cursors never go back");
}

#[tokio::test]
async fn after_kill_9_no_cursor_is_given_out_twice() {
    let net = TestNet::new();
    let a = net.daemon("alice").await;
    a.say_many("line", 1_000).await;
    let mut sub = a.subscribe(None).await;
    a.say("last before the crash").await;
    let last = sub
        .until("the last line", T, |e| text(e) == "last before the crash")
        .await
        .cursor;
    a.signal(Signal::SIGKILL);
    drop(a);

    let a = net.daemon("alice").await;
    // Resuming from the last cursor seen: nothing of the old life comes
    // again, and the new line has a cursor of its own.
    let mut sub = a.subscribe(Some(last)).await;
    a.say("first after").await;
    let got = sub.messages(1, T).await;
    assert_eq!(texts(&got), ["first after"]);
    assert!(got[0].cursor > last);
    // What was stored reads back once each.
    let history = a.history(2_000).await;
    let mut cursors: Vec<u64> = history.iter().map(|e| e.cursor).collect();
    cursors.dedup();
    assert_eq!(cursors.len(), history.len(), "no cursor twice");
    let lines = texts(&history);
    let unique: std::collections::HashSet<&&str> = lines.iter().collect();
    assert_eq!(unique.len(), lines.len(), "no line twice");
}

#[tokio::test]
async fn a_second_daemon_on_the_same_store_is_refused() {
    let net = TestNet::new();
    let a = net.daemon("alice").await;
    let pid = a.status().await.pid;
    let state = net.home_of("alice").join("state");
    let mut b = net.spawn_with_env("bob", &[], &[("XDG_STATE_HOME", state.as_os_str())]);
    let status = b.exit_within(T).await;
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(
        log.contains("is in use by another p2pchatd") && log.contains(&format!("(pid {pid})")),
        "{log}"
    );
}

#[tokio::test]
async fn a_damaged_store_is_left_as_it_is_and_the_chat_goes_on() {
    let net = TestNet::new();
    let dir = net.home_of("alice").join("state").join("p2pchat");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("history.db");
    let junk = b"not a database, but the user's own".repeat(100);
    std::fs::write(&file, &junk).unwrap();
    let [a, b] = net.linked(["alice", "bob"]).await;

    let store = a.status().await.store.unwrap();
    assert_eq!(store.state, StoreState::Off);
    assert!(
        store.problem.as_deref().unwrap().contains("damaged"),
        "{store:?}"
    );
    // Said where a client sees it.
    let alert = a
        .history(10)
        .await
        .into_iter()
        .find_map(|e| match e.body {
            EventBody::Alert { text, .. } => Some(text),
            _ => None,
        })
        .expect("an alert");
    assert!(alert.contains("not being stored"), "{alert}");
    // Live chat works.
    let mut at_b = b.subscribe(None).await;
    a.say("still here").await;
    at_b.until("the live line", T, |e| text(e) == "still here")
        .await;
    assert_eq!(std::fs::read(&file).unwrap(), junk, "the file is untouched");
}
