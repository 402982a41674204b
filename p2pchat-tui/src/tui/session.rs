//! The TUI's link to the daemon: attach (history, then a subscription from
//! its last cursor), forward events, carry requests, and when the daemon
//! goes away, re-attach from the last cursor seen, so nothing is lost or
//! shown twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shared::api::{
    AwayParams, AwayResult, Call, HistoryParams, HistoryResult, NickParams, NickResult, PeerInfo,
    RoomInfo, RoomParams, RoomResult, SayParams, SayResult, SearchParams, ShutdownResult,
    StatusInfo, StoreState, SubscribeParams, SubscribeResult, TopicParams, TopicResult,
    TransferInfo, TransfersResult, TrustParams, TrustResult, code,
};
use shared::event::Event;
use tokio::sync::{mpsc, oneshot};

use super::state::MAX_LINES;
use super::update::{Action, Ask, DaemonMsg};
use crate::client::{Client, ClientError};

/// A room's events shown when it is joined.
const ROOM_HISTORY: usize = 500;

/// Retry delays while the daemon is away.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What the UI asks of the daemon: what the user asked, and the loop's
/// own peer refreshes and shutdown.
#[derive(Debug)]
pub(super) enum Request {
    Ask(Ask),
    Peers,
    Shutdown(oneshot::Sender<Result<(), String>>),
}

/// An attached daemon.
struct Attached {
    client: Arc<Client>,
    events: mpsc::Receiver<Event>,
    daemon_id: String,
    /// The cursor the subscription started after.
    cursor: u64,
}

/// Runs until the UI goes away (its channels close).
pub(super) async fn run(
    socket: PathBuf,
    actions: mpsc::Sender<Action>,
    mut requests: mpsc::Receiver<Request>,
) {
    // (the daemon's life, last cursor seen): where to resume.
    let mut resume: Option<(String, u64)> = None;
    let mut wait = RETRY_FIRST;
    loop {
        match attach(&socket, resume.as_ref(), &actions).await {
            Ok(Some(mut link)) => {
                wait = RETRY_FIRST;
                match serve(&mut link, &actions, &mut requests, &mut resume).await {
                    Some(why) => {
                        if actions
                            .send(Action::Daemon(DaemonMsg::Lost(why)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    None => return,
                }
            }
            Ok(None) => return,
            Err(e) => {
                if actions
                    .send(Action::Daemon(DaemonMsg::Lost(e.to_string())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        // Wait before retrying; requests meanwhile fail with a reason.
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                r = requests.recv() => match r {
                    None => return,
                    Some(r) => refuse(r, &actions).await,
                },
            }
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// Hits `/search` shows at most.
const SEARCH_HITS: usize = 50;

/// What a cursor of this daemon stays valid across: its life, or with a
/// store its key (cursors then go on across restarts).
fn continuity(status: &StatusInfo) -> String {
    match &status.store {
        Some(s) if s.state != StoreState::Off => format!("{} (stored)", status.peer_id),
        _ => status.life().to_owned(),
    }
}

/// Connects and loads what the view needs. `Ok(None)`: the UI is gone.
async fn attach(
    socket: &Path,
    resume: Option<&(String, u64)>,
    actions: &mpsc::Sender<Action>,
) -> Result<Option<Attached>, ClientError> {
    let client = Client::connect(socket).await?;
    let events = client.take_events().ok_or(ClientError::Disconnected)?;
    let status: StatusInfo = client.call(&Call::Status).await?;
    let daemon_id = continuity(&status);
    // Before subscribing: once events flow, nobody reads them until the
    // attach is done, and an answer behind a full queue would never come.
    // A daemon from before rooms knows no `rooms`: none, then.
    let rooms: Vec<RoomInfo> = match client.call(&Call::Rooms).await {
        Err(ClientError::Rpc(e)) if e.code == code::METHOD_NOT_FOUND => Vec::new(),
        r => r?,
    };
    let rooms = rooms
        .into_iter()
        .filter(|r| r.joined && r.name != shared::rooms::GENERAL)
        .map(|r| r.name)
        .collect();
    // Offers waiting and transfers under way (none from a daemon before
    // file transfer). What changes before the subscription below still
    // comes: an attaching subscription starts with where each stands.
    let transfers = match client.call::<TransfersResult>(&Call::Transfers).await {
        Err(ClientError::Rpc(e)) if e.code == code::METHOD_NOT_FOUND => Vec::new(),
        r => r?.transfers,
    };
    // Cursors we hold still mean the same events: the subscription replays
    // what we missed, also across a restart of a daemon with its store.
    let resumed = match resume {
        Some((id, cursor)) if *id == daemon_id => {
            let r: Result<SubscribeResult, _> = client
                .call(&Call::Subscribe(SubscribeParams {
                    since: Some(*cursor),
                    attach: true,
                    room: None,
                }))
                .await;
            match r {
                Ok(_) => Some(*cursor),
                // Its store was lost: load afresh.
                Err(ClientError::Rpc(e)) if e.code == code::CURSOR_AHEAD => None,
                Err(e) => return Err(e),
            }
        }
        _ => None,
    };
    let (history, since, read) = match resumed {
        Some(cursor) => (Vec::new(), cursor, None),
        None => {
            let h: HistoryResult = client
                .call(&Call::History(HistoryParams {
                    limit: Some(MAX_LINES),
                    before: None,
                    room: None,
                }))
                .await?;
            let since = h.events.last().map_or(0, |e| e.cursor);
            let s: SubscribeResult = client
                .call(&Call::Subscribe(SubscribeParams {
                    since: Some(since),
                    attach: true,
                    room: None,
                }))
                .await?;
            (h.events, since, s.read)
        }
    };
    let msg = DaemonMsg::Attached {
        status: Box::new(status),
        history,
        read,
        rooms,
        transfers,
    };
    if actions.send(Action::Daemon(msg)).await.is_err() {
        return Ok(None);
    }
    Ok(Some(Attached {
        client: Arc::new(client),
        events,
        daemon_id,
        cursor: since,
    }))
}

/// Forwards events and carries requests until the connection drops
/// (`Some(reason)`) or the UI goes away (`None`).
async fn serve(
    link: &mut Attached,
    actions: &mpsc::Sender<Action>,
    requests: &mut mpsc::Receiver<Request>,
    resume: &mut Option<(String, u64)>,
) -> Option<String> {
    // What the view now holds, even before the first live event.
    *resume = Some((link.daemon_id.clone(), link.cursor));
    loop {
        tokio::select! {
            e = link.events.recv() => match e {
                Some(e) => {
                    *resume = Some((link.daemon_id.clone(), e.cursor));
                    if actions.send(Action::Daemon(DaemonMsg::Event(Box::new(e)))).await.is_err() {
                        return None;
                    }
                }
                None => return Some("connection closed".into()),
            },
            r = requests.recv() => match r {
                None => return None,
                Some(r) => {
                    if let Err(e) = forward(&link.client, r, actions).await {
                        return Some(e.to_string());
                    }
                }
            },
        }
    }
}

/// Sends a request; its answer is awaited in a task of its own, so events
/// keep flowing meanwhile (the client's event queue must never wait on a
/// response that sits behind it).
async fn forward(
    client: &Arc<Client>,
    r: Request,
    actions: &mpsc::Sender<Action>,
) -> Result<(), ClientError> {
    let actions = actions.clone();
    let failed = match &r {
        Request::Ask(ask) => ask.failed(),
        Request::Peers | Request::Shutdown(_) => "",
    };
    match r {
        Request::Ask(Ask::Say {
            text,
            action,
            room,
            to,
        }) => {
            let params = SayParams {
                text,
                action,
                room,
                to,
                ..Default::default()
            };
            let p = client.send(&Call::Say(params)).await?;
            tokio::spawn(async move {
                if let Err(e) = p.wait::<SayResult>().await {
                    let _ = actions
                        .send(Action::Daemon(DaemonMsg::Failed(format!("{failed}: {e}"))))
                        .await;
                }
            });
        }
        Request::Ask(Ask::Join(room)) => {
            let p = client.send(&Call::Join(RoomParams { room })).await?;
            let client = client.clone();
            tokio::spawn(async move {
                let room = match p.wait::<RoomResult>().await {
                    Ok(r) => r.room,
                    Err(e) => {
                        let msg = DaemonMsg::Failed(format!("{failed}: {e}"));
                        let _ = actions.send(Action::Daemon(msg)).await;
                        return;
                    }
                };
                let _ = actions
                    .send(Action::Daemon(DaemonMsg::Joined(room.clone())))
                    .await;
                // What the room said before, as far as the daemon holds it
                // (what its members send now follows as events).
                let history = client
                    .call::<HistoryResult>(&Call::History(HistoryParams {
                        limit: Some(ROOM_HISTORY),
                        before: None,
                        room: Some(room.clone()),
                    }))
                    .await;
                if let Ok(h) = history {
                    let msg = DaemonMsg::RoomHistory {
                        room,
                        events: h.events,
                    };
                    let _ = actions.send(Action::Daemon(msg)).await;
                }
            });
        }
        Request::Ask(Ask::Part(room)) => {
            let p = client.send(&Call::Part(RoomParams { room })).await?;
            tokio::spawn(async move {
                let msg = match p.wait::<RoomResult>().await {
                    Ok(r) => DaemonMsg::Parted(r.room),
                    Err(e) => DaemonMsg::Failed(format!("{failed}: {e}")),
                };
                let _ = actions.send(Action::Daemon(msg)).await;
            });
        }
        Request::Ask(Ask::Topic { room, text }) => {
            let asked = text.is_none();
            let p = client
                .send(&Call::Topic(TopicParams { room, text }))
                .await?;
            tokio::spawn(async move {
                let msg = match p.wait::<TopicResult>().await {
                    // A topic set shows as its event.
                    Ok(_) if !asked => return,
                    Ok(TopicResult {
                        room,
                        topic: Some(t),
                    }) => DaemonMsg::Done(format!(
                        "topic of {room}: {} (set by {} {})",
                        t.text,
                        t.nick,
                        t.at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M")
                    )),
                    Ok(TopicResult { room, topic: None }) => {
                        DaemonMsg::Done(format!("{room} has no topic; /topic TEXT sets one"))
                    }
                    Err(e) => DaemonMsg::Failed(format!("{failed}: {e}")),
                };
                let _ = actions.send(Action::Daemon(msg)).await;
            });
        }
        Request::Ask(Ask::Rooms) => {
            let p = client.send(&Call::Rooms).await?;
            tokio::spawn(async move {
                let msg = match p.wait::<Vec<RoomInfo>>().await {
                    Ok(rooms) => DaemonMsg::Rooms(rooms),
                    Err(e) => DaemonMsg::Failed(format!("{failed}: {e}")),
                };
                let _ = actions.send(Action::Daemon(msg)).await;
            });
        }
        Request::Ask(Ask::Away(reason)) => {
            let p = client.send(&Call::Away(AwayParams { reason })).await?;
            tokio::spawn(async move {
                let msg = match p.wait::<AwayResult>().await {
                    Ok(AwayResult { away: None }) => DaemonMsg::Done("you are back".into()),
                    Ok(AwayResult { away: Some(a) }) => {
                        DaemonMsg::Done(format!("you are away: {a}"))
                    }
                    Err(e) => DaemonMsg::Failed(format!("{failed}: {e}")),
                };
                let _ = actions.send(Action::Daemon(msg)).await;
            });
        }
        Request::Ask(Ask::Nick(name)) => {
            let p = client.send(&Call::Nick(NickParams { name })).await?;
            tokio::spawn(async move {
                let msg = match p.wait::<NickResult>().await {
                    Ok(r) => match r.not_saved {
                        Some(why) => {
                            DaemonMsg::Failed(format!("the nick lasts until p2pchatd stops: {why}"))
                        }
                        None => return,
                    },
                    Err(e) => DaemonMsg::Failed(format!("{failed}: {e}")),
                };
                let _ = actions.send(Action::Daemon(msg)).await;
            });
        }
        Request::Ask(Ask::Trust(nick)) => {
            let p = client.send(&Call::Trust(TrustParams { nick })).await?;
            tokio::spawn(async move {
                let msg = match p.wait::<TrustResult>().await {
                    Ok(r) => DaemonMsg::Done(format!(
                        "{} is verified: fingerprint {}",
                        r.nick, r.fingerprint
                    )),
                    Err(e) => DaemonMsg::Failed(format!("{failed}: {e}")),
                };
                let _ = actions.send(Action::Daemon(msg)).await;
            });
        }
        Request::Ask(Ask::Forget(nick)) => {
            let p = client
                .send(&Call::Forget(TrustParams { nick: nick.clone() }))
                .await?;
            tokio::spawn(async move {
                let msg = match p.wait::<TrustParams>().await {
                    Ok(_) => DaemonMsg::Done(format!(
                        "{nick} is no longer pinned: the next key to use it holds it"
                    )),
                    Err(e) => DaemonMsg::Failed(format!("{failed}: {e}")),
                };
                let _ = actions.send(Action::Daemon(msg)).await;
            });
        }
        Request::Ask(Ask::Search(words)) => {
            let p = client
                .send(&Call::Search(SearchParams {
                    words: words.clone(),
                    limit: Some(SEARCH_HITS),
                    ..SearchParams::default()
                }))
                .await?;
            tokio::spawn(async move {
                let msg = match p.wait::<HistoryResult>().await {
                    Ok(r) => DaemonMsg::Found {
                        words,
                        hits: r.events,
                    },
                    Err(e) => DaemonMsg::Failed(format!("{failed}: {e}")),
                };
                let _ = actions.send(Action::Daemon(msg)).await;
            });
        }
        Request::Ask(Ask::Files(call)) => {
            let p = client.send(&call).await?;
            tokio::spawn(async move {
                if let Err(e) = p.wait::<TransferInfo>().await {
                    let msg = DaemonMsg::Failed(format!("{failed}: {e}"));
                    let _ = actions.send(Action::Daemon(msg)).await;
                }
            });
        }
        Request::Peers => {
            let p = client.send(&Call::Peers).await?;
            tokio::spawn(async move {
                if let Ok(peers) = p.wait::<Vec<PeerInfo>>().await {
                    let _ = actions.send(Action::Daemon(DaemonMsg::Peers(peers))).await;
                }
            });
        }
        Request::Shutdown(done) => {
            let p = client.send(&Call::Shutdown).await?;
            tokio::spawn(async move {
                let r = p
                    .wait::<ShutdownResult>()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let _ = done.send(r);
            });
        }
    }
    Ok(())
}

async fn refuse(r: Request, actions: &mpsc::Sender<Action>) {
    let why = "not connected to p2pchatd";
    let msg = match r {
        Request::Ask(ask) => format!("{}: {why}", ask.failed()),
        Request::Peers => return,
        Request::Shutdown(done) => {
            let _ = done.send(Err(why.into()));
            return;
        }
    };
    let _ = actions.send(Action::Daemon(DaemonMsg::Failed(msg))).await;
}
