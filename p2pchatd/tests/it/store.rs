//! The history store: what survives a restart and a crash, and what the
//! daemon does with a store it cannot use.

use std::time::Duration;

use nix::sys::signal::Signal;
use p2pchat_tui::client::ClientError;
use shared::api::{Call, HistoryResult, SearchParams, StoreState, code};
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
    // A day's worth of a busy room, 50 of it held in memory.
    const HELD: usize = 100_000;
    let net = TestNet::new();
    let mut a = net.daemon_with("alice", &["--history", "50"]).await;
    let before = a.status().await.instance;
    a.say_many("line", HELD).await;
    let held = a.history(300).await;
    let cursor_of = |i: usize| {
        held.iter()
            .find(|e| text(e) == format!("line {i}"))
            .unwrap_or_else(|| panic!("line {i} in history"))
            .cursor
    };
    let (at_resume, at_last) = (cursor_of(HELD - 201), cursor_of(HELD - 1));

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
    assert_eq!(last, said(HELD - 5..HELD), "{tail}");
    // Pages go back past the 50 held in memory, from the store.
    assert_eq!(texts(&a.history(300).await), said(HELD - 300..HELD));

    // A client that stopped 200 lines before the end resumes with none
    // lost or doubled, and the lines of this life come after, with newer
    // cursors.
    let mut sub = a.subscribe(Some(at_resume)).await;
    a.say("after").await;
    let got = sub.messages(201, T).await;
    let want: Vec<String> = said(HELD - 200..HELD)
        .into_iter()
        .chain(["after".into()])
        .collect();
    assert_eq!(texts(&got), want);
    assert!(got[200].cursor > at_last, "cursors never go back");
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
    // Search says why it cannot.
    let r: Result<HistoryResult, _> = a
        .client()
        .await
        .call(&Call::Search(SearchParams {
            words: "still".into(),
            ..SearchParams::default()
        }))
        .await;
    match r {
        Err(ClientError::Rpc(e)) => {
            assert_eq!(e.code, code::SEARCH_UNAVAILABLE);
            assert!(e.message.contains("damaged"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn search_finds_lines_by_their_words_nick_and_time_also_after_a_restart() {
    let net = TestNet::new();
    let [a, mut b] = net.linked(["alice", "bob"]).await;
    let mut at_b = b.subscribe(None).await;
    a.say("the deploy is on Friday").await;
    at_b.until("alice's first line", T, |e| {
        text(e) == "the deploy is on Friday"
    })
    .await;
    b.say("deploy what?").await;
    a.say("unrelated").await;
    at_b.until("alice's last line", T, |e| text(e) == "unrelated")
        .await;
    let found = |out: String| -> Vec<String> {
        out.lines()
            .map(|l| {
                l.split_once(' ')
                    .unwrap()
                    .1
                    .split_once(' ')
                    .unwrap()
                    .1
                    .to_owned()
            })
            .collect()
    };
    let both = ["<alice> the deploy is on Friday", "<bob> deploy what?"];
    assert_eq!(found(b.p2pchat(&["search", "deploy"]).await), both);
    let json = b
        .p2pchat(&["search", "DEPLOY", "--from", "alice", "--json"])
        .await;
    let hits: Vec<Event> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(texts(&hits), ["the deploy is on Friday"]);
    assert_eq!(
        found(b.p2pchat(&["search", "fri*", "--since", "1h"]).await).len(),
        1
    );
    assert!(
        b.p2pchat(&["search", "deploy", "--since", "2099-01-01"])
            .await
            .is_empty()
    );

    b.signal(Signal::SIGTERM);
    assert!(b.exit_within(T).await.success());
    drop(b);
    let b = net.daemon("bob").await;
    assert_eq!(
        found(b.p2pchat(&["search", "deploy", "-n", "5"]).await),
        both
    );
}

#[tokio::test]
async fn a_full_disk_keeps_lines_in_memory_until_there_is_room_again() {
    let net = TestNet::new();
    let state = net.home_of("alice").join("state");
    std::fs::create_dir_all(&state).unwrap();
    let s = state.display().to_string();
    // Alice's state folder is a 1 MiB disk of her own.
    let mount = format!("mount -t tmpfs -o size=1m,mode=0700 tmpfs {s}");
    let Some(a) = net
        .daemon_with_own_mounts("alice", &["--history", "10"], &mount)
        .await
    else {
        return;
    };
    let pid = a.status().await.pid;
    assert_eq!(a.status().await.store.unwrap().state, StoreState::Ok);
    // Fill it up (cat stops at the full disk), then say more than the
    // log has room for (~350 KiB).
    in_namespace_of(pid, &format!("cat /dev/zero > {s}/filler"));
    let said = 1_000;
    a.say_many("full", said).await;
    let failing = wait_until("the store to fail", T, || async {
        let store = a.status().await.store.unwrap();
        (store.state == StoreState::Failing).then_some(store)
    })
    .await;
    assert!(failing.problem.unwrap().contains("full"));
    // Room again: the next try (within 2 s) writes what waited.
    let out = in_namespace_of(pid, &format!("rm {s}/filler"));
    assert!(out.status.success(), "{out:?}");
    wait_until("the store to write again", T, || async {
        (a.status().await.store.unwrap().state == StoreState::Ok).then_some(())
    })
    .await;
    // Every line is there, read back past the 10 held in memory.
    let lines = texts(&a.history(said).await)
        .into_iter()
        .filter(|t| t.starts_with("full"))
        .count();
    assert_eq!(lines, said, "none lost");
}

#[tokio::test]
async fn a_read_only_store_is_left_alone_and_the_chat_goes_on() {
    let net = TestNet::new();
    let mut a = net.daemon("alice").await;
    a.say("kept").await;
    a.signal(Signal::SIGTERM);
    assert!(a.exit_within(T).await.success());
    drop(a);
    let s = net.home_of("alice").join("state").display().to_string();
    let mount = format!("mount --bind {s} {s} && mount -o remount,bind,ro {s}");
    let Some(a) = net.daemon_with_own_mounts("alice", &[], &mount).await else {
        return;
    };
    let store = a.status().await.store.unwrap();
    assert_eq!(store.state, StoreState::Off, "{store:?}");
    assert!(
        store.problem.as_deref().unwrap().contains("ead-only"),
        "{store:?}"
    );
    // The chat goes on without it (the mount, not the daemon, keeps the
    // file as it was: nothing to check from out here).
    a.say("live").await;
    assert!(a.history(5).await.iter().any(|e| text(e) == "live"));
}

#[tokio::test]
async fn lines_carry_their_authors_sequence_and_time() {
    let net = TestNet::new();
    let [a, b] = net.linked(["alice", "bob"]).await;
    let mut at_b = b.subscribe(None).await;
    let before = chrono::Utc::now();
    a.say_many("numbered", 3).await;
    let got = at_b.messages(3, T).await;
    let seqs: Vec<u64> = got
        .iter()
        .map(|e| match &e.body {
            EventBody::Message { seq, sent, .. } => {
                let sent = sent.expect("sent");
                assert!(sent >= before - chrono::TimeDelta::seconds(1) && sent <= e.ts);
                seq.expect("seq")
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        seqs,
        [seqs[0], seqs[0] + 1, seqs[0] + 2],
        "in order, none skipped"
    );
    // As scripts see them.
    let json = b.p2pchat(&["tail", "-n", "1", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["seq"], seqs[2]);
    assert!(v["sent"].is_string(), "{v}");
}
