//! Waiting on what happens instead of sleeping: polls with a deadline that
//! says what was awaited, and subscriptions read until an event matches.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use p2pchat_tui::client::{Client, ClientError};
use shared::api::{Call, SubscribeParams, SubscribeResult};
use shared::event::{Event, EventBody};
use tokio::sync::mpsc;

use crate::daemon::Daemon;

/// How often [`wait_until`] looks again.
const POLL: Duration = Duration::from_millis(10);

/// Polls `check` until it yields a value; panics after `limit` saying what
/// was awaited.
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until every daemon sees all the others connected.
pub async fn wait_full_mesh(daemons: &[&Daemon], limit: Duration) {
    let want = daemons.len() - 1;
    for d in daemons {
        wait_until(
            &format!("{} to link with {want} peers", d.nick),
            limit,
            || async {
                let peers = d.try_peers().await.ok()?;
                (peers.iter().filter(|p| p.connected).count() == want).then_some(())
            },
        )
        .await;
    }
}

/// Subscribes to the daemon at `socket` and hands the subscription to
/// `work` on a thread and runtime of its own, so what it reads and times
/// does not wait on the test's own thread. Returns once subscribed.
pub async fn on_own_thread<T, F, Fut>(socket: &Path, work: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce(Subscriber) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    own_thread(socket, |s| async move { subscribe_at(&s).await }, work).await
}

/// As [`on_own_thread`], with the subscription's raw lines (to count
/// events by their bytes, as the bench does, without decoding each).
pub async fn on_own_thread_raw<T, F, Fut>(socket: &Path, work: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce(crate::raw::Raw) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    own_thread(
        socket,
        |s| async move { crate::raw::Raw::subscribe(&s, None).await },
        work,
    )
    .await
}

async fn own_thread<S, T, Sub, SubFut, F, Fut>(
    socket: &Path,
    subscribe: Sub,
    work: F,
) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    Sub: FnOnce(std::path::PathBuf) -> SubFut + Send + 'static,
    SubFut: Future<Output = S>,
    F: FnOnce(S) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let socket = socket.to_owned();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let sub = subscribe(socket).await;
            let _ = ready_tx.send(());
            work(sub).await
        })
    });
    ready_rx.await.expect("subscribed");
    handle
}

/// A live subscription on the daemon at `socket`.
pub async fn subscribe_at(socket: &Path) -> Subscriber {
    subscribe_since(socket, None).await
}

pub(crate) async fn subscribe_since(socket: &Path, since: Option<u64>) -> Subscriber {
    subscribe_with(
        socket,
        SubscribeParams {
            since,
            ..Default::default()
        },
    )
    .await
}

pub(crate) async fn subscribe_with(socket: &Path, params: SubscribeParams) -> Subscriber {
    subscribed(socket, params).await.0
}

/// A subscription with `params`, and the daemon's answer to it.
pub(crate) async fn subscribed(
    socket: &Path,
    params: SubscribeParams,
) -> (Subscriber, SubscribeResult) {
    let client = Client::connect(socket).await.expect("connect");
    let events = client.take_events().expect("events");
    let answer: SubscribeResult = client
        .call(&Call::Subscribe(params))
        .await
        .expect("subscribe");
    (
        Subscriber {
            _client: client,
            events,
        },
        answer,
    )
}

/// A subscription's event stream.
pub struct Subscriber {
    /// Keeps the connection open.
    _client: Client,
    pub events: mpsc::Receiver<Event>,
}

impl Subscriber {
    /// Skips events until one matches `pred`, within `limit`.
    pub async fn until(
        &mut self,
        what: &str,
        limit: Duration,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Event {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let e = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
                .expect("stream open");
            if pred(&e) {
                return e;
            }
        }
    }

    /// Collects `n` chat messages, skipping joins and the like; a gap
    /// means messages were lost and fails the test.
    pub async fn messages(&mut self, n: usize, limit: Duration) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let e = self
                .until(&format!("message {} of {n}", out.len() + 1), limit, |e| {
                    matches!(e.body, EventBody::Message { .. } | EventBody::Gap { .. })
                })
                .await;
            assert!(
                !matches!(e.body, EventBody::Gap { .. }),
                "lost messages: {e:?}"
            );
            out.push(e);
        }
        out
    }
}

/// The message of the API error `code` that `r` must be.
pub fn refused(r: Result<impl std::fmt::Debug, ClientError>, code: i64) -> String {
    match r {
        Err(ClientError::Rpc(e)) if e.code == code => e.message,
        other => panic!("expected error {code}, got {other:?}"),
    }
}

/// Text of a message event.
pub fn text(e: &Event) -> &str {
    match &e.body {
        EventBody::Message { text, .. } => text,
        _ => "",
    }
}

/// Runs `f` to its end on a runtime of its own: for a synchronous test of
/// code that awaits.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}
