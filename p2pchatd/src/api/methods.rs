//! Answers to API requests.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use shared::api::{
    AwayResult, Call, HISTORY_DEFAULT_LIMIT, MAX_SEARCH_BYTES, NickResult, Request, RoomResult,
    RpcError, SAY_WAIT_DEFAULT_MS, SAY_WAIT_MAX_MS, SearchParams, ShutdownResult, StatusInfo,
    SubscribeResult, TopicParams, TopicResult, TransferInfo, TransfersResult, TrustResult, code,
    encode_error, encode_history_result, encode_result, room_param, write_json_array,
};
use shared::rooms::MAX_TOPIC_CHARS;
use shared::text::{validate_nick, validate_text};

use super::ApiContext;
use crate::history::{RoomFilter, Subscription};
use crate::store::match_query;

/// Bytes of JSON a typical event takes, to size a `history` reply.
const EVENT_JSON_GUESS: usize = 256;
/// The most events one `history` call returns from the store (~2.5 MB).
const HISTORY_STORE_LIMIT: usize = 10_000;

/// What the writer sends for one request.
pub(super) enum Reply {
    Line(Vec<u8>),
    /// The response, then the subscription's events.
    Subscribed {
        line: Vec<u8>,
        subscription: Subscription,
        /// A person's client: present while subscribed.
        attached: Option<crate::mesh::Attached>,
        /// Transfer events, for a subscription to everything (no room).
        transfers: Option<tokio::sync::broadcast::Receiver<std::sync::Arc<TransferInfo>>>,
        /// For a person's client: every transfer not over, as it stood
        /// once `transfers` listened, told right after the response, so
        /// nothing that changed since the client listed them is missed.
        snapshot: Vec<TransferInfo>,
    },
    /// A notification: nothing to send.
    None,
}

pub(super) async fn dispatch(ctx: &ApiContext, req: Request) -> Reply {
    let Request { id, call } = req;

    if ctx.shutdown.is_cancelled() {
        return respond::<()>(
            id,
            Err(RpcError::new(code::SHUTTING_DOWN, "p2pchatd is stopping")),
        );
    }
    match call {
        Call::Say(p) => {
            if let Err(e) = validate_text(&p.text) {
                return respond::<()>(id, Err(RpcError::new(code::INVALID_TEXT, e.to_string())));
            }
            let dest = match ctx.mesh.dest(p.room.as_deref(), p.to.as_deref()) {
                Ok(d) => d,
                Err(e) => return respond::<()>(id, Err(e)),
            };
            if p.wait {
                let wait = p
                    .timeout_ms
                    .unwrap_or(SAY_WAIT_DEFAULT_MS)
                    .min(SAY_WAIT_MAX_MS);
                let said = ctx
                    .mesh
                    .say_confirmed(&p.text, p.action, &dest, Duration::from_millis(wait))
                    .await;
                respond(id, said)
            } else {
                respond(id, ctx.mesh.say(&p.text, p.action, &dest).await)
            }
        }
        Call::History(p) => {
            let (_, held) = ctx.history.stats();
            // Past the held window, pages come from the store.
            let most = if ctx.history.store().is_some() {
                held.max(HISTORY_STORE_LIMIT)
            } else {
                held
            };
            let limit = p.limit.unwrap_or(HISTORY_DEFAULT_LIMIT).min(most);
            let room = match room_filter(p.room.as_deref()) {
                Ok(r) => r,
                Err(e) => return respond::<()>(id, Err(e)),
            };
            let Some(id) = id else { return Reply::None };
            let page = ctx.history.page(limit, p.before, room.as_ref()).await;
            let mut out = Vec::with_capacity(EVENT_JSON_GUESS * limit.min(1024) + 64);
            encode_history_result(&id, |out| page.write_json(out), &mut out);
            Reply::Line(out)
        }
        Call::Subscribe(p) => match room_filter(p.room.as_deref()).and_then(|room| {
            let transfers = room.is_none().then(|| ctx.mesh.transfers().events());
            ctx.history
                .subscribe(p.since, room)
                .map(|s| (s, transfers))
                .map_err(|e| RpcError::new(code::CURSOR_AHEAD, e.to_string()))
        }) {
            Err(e) => respond::<()>(id, Err(e)),
            Ok((subscription, transfers)) => {
                let result = SubscribeResult {
                    cursor: ctx.history.newest_cursor(),
                    peer_id: ctx.mesh.peer_id().to_string(),
                    instance: ctx.mesh.instance().to_owned(),
                    read: ctx.history.read_marker(),
                };
                let line = match respond(id, Ok(result)) {
                    Reply::Line(l) => l,
                    _ => Vec::new(),
                };
                let snapshot = if p.attach && transfers.is_some() {
                    let mut live = ctx.mesh.transfers().list();
                    live.retain(|t| !t.state.is_over());
                    live
                } else {
                    Vec::new()
                };
                Reply::Subscribed {
                    line,
                    subscription,
                    attached: p.attach.then(|| ctx.mesh.attach()),
                    transfers,
                    snapshot,
                }
            }
        },
        Call::Peers => respond(id, Ok(ctx.mesh.peers())),
        Call::Status => respond(id, Ok(status(ctx))),
        Call::Nick(p) => match validate_nick(&p.name) {
            Err(e) => respond::<()>(id, Err(RpcError::new(code::INVALID_NICK, e.to_string()))),
            Ok(()) => {
                let old = ctx
                    .mesh
                    .set_nick(&p.name)
                    .await
                    .unwrap_or_else(|| p.name.clone());
                let (saved_in, not_saved) = save_nick(ctx.config_file.clone(), &p.name).await;
                respond(
                    id,
                    Ok(NickResult {
                        old,
                        new: p.name,
                        saved_in,
                        not_saved,
                    }),
                )
            }
        },
        Call::Away(p) => respond(
            id,
            Ok(AwayResult {
                away: ctx.mesh.set_away(p.reason),
            }),
        ),
        Call::Trust(p) => match ctx.mesh.verify_nick(&p.nick) {
            Ok(fingerprint) => respond(
                id,
                Ok(TrustResult {
                    nick: p.nick,
                    fingerprint,
                }),
            ),
            Err(e) => respond::<()>(id, Err(RpcError::new(code::UNKNOWN_NICK, e.to_string()))),
        },
        Call::Forget(p) => match ctx.mesh.forget_nick(&p.nick) {
            Ok(()) => respond(id, Ok(p)),
            Err(e) => respond::<()>(id, Err(RpcError::new(code::UNKNOWN_NICK, e.to_string()))),
        },
        Call::Search(p) => {
            let Some(id) = id else { return Reply::None };
            match search(ctx, p).await {
                Ok(hits) => {
                    let size = hits.iter().map(|h| h.1.len() + 1).sum::<usize>() + 64;
                    let mut out = Vec::with_capacity(size);
                    encode_history_result(
                        &id,
                        |out| write_json_array(hits.iter().map(|h| h.1.as_str()), out),
                        &mut out,
                    );
                    Reply::Line(out)
                }
                Err(e) => respond::<()>(Some(id), Err(e)),
            }
        }
        Call::Rooms => respond(id, Ok(ctx.mesh.rooms_info())),
        Call::Join(p) => respond(id, join_or_part(ctx, &p.room, true).await),
        Call::Topic(p) => respond(id, topic(ctx, p).await),
        Call::Part(p) => respond(id, join_or_part(ctx, &p.room, false).await),
        Call::Send(p) => respond(id, crate::transfer::send(&ctx.mesh, p).await),
        Call::Accept(p) => respond(id, crate::transfer::accept(&ctx.mesh, &p.id)),
        Call::Decline(p) => respond(id, crate::transfer::decline(&ctx.mesh, &p.id).await),
        Call::Cancel(p) => respond(id, crate::transfer::cancel(&ctx.mesh, &p.id).await),
        Call::Transfers => respond(
            id,
            Ok(TransfersResult {
                transfers: ctx.mesh.transfers().list(),
            }),
        ),
        Call::Shutdown => {
            let reply = respond(id, Ok(ShutdownResult { stopping: true }));
            tracing::info!("shutdown requested by a client");
            ctx.shutdown.cancel();
            reply
        }
    }
}

/// Sets or reads a room's topic.
async fn topic(ctx: &ApiContext, p: TopicParams) -> Result<TopicResult, RpcError> {
    let room = room_param(&p.room)?;
    let topic = match p.text {
        Some(text) => {
            validate_text(&text).map_err(|e| RpcError::new(code::INVALID_TEXT, e.to_string()))?;
            if text.chars().count() > MAX_TOPIC_CHARS {
                return Err(RpcError::new(
                    code::INVALID_TEXT,
                    format!("a topic is at most {MAX_TOPIC_CHARS} characters"),
                ));
            }
            Some(ctx.mesh.set_topic(&room, &text).await?)
        }
        None => ctx.mesh.topic(&room),
    };
    Ok(TopicResult { room, topic })
}

/// Joins or leaves a room, as named by a client.
async fn join_or_part(ctx: &ApiContext, room: &str, join: bool) -> Result<RoomResult, RpcError> {
    let room = room_param(room)?;
    let changed = if join {
        ctx.mesh.join_room(&room).await
    } else {
        ctx.mesh.part_room(&room).await
    };
    changed
        .map(|changed| RoomResult { room, changed })
        .map_err(|e| RpcError::new(code::INVALID_ROOM, e.to_string()))
}

/// A `room` param as a filter: `#name`, checked.
fn room_filter(room: Option<&str>) -> Result<Option<RoomFilter>, RpcError> {
    room.map(|r| room_param(r).map(|r| RoomFilter::new(&r)))
        .transpose()
}

/// A search's hits (cursor, event JSON), oldest first.
async fn search(ctx: &ApiContext, p: SearchParams) -> Result<Vec<(u64, String)>, RpcError> {
    let unavailable = |m: String| RpcError::new(code::SEARCH_UNAVAILABLE, m);
    if p.words.len() > MAX_SEARCH_BYTES {
        return Err(RpcError::new(
            code::INVALID_PARAMS,
            format!("search words are over {MAX_SEARCH_BYTES} bytes"),
        ));
    }
    let Some(query) = match_query(&p.words) else {
        return Err(unavailable(
            "search needs a word (letters or digits)".into(),
        ));
    };
    let Some(store) = ctx.history.store_handle() else {
        let why = ctx
            .store_off
            .as_ref()
            .and_then(|s| s.problem.clone())
            .unwrap_or_default();
        return Err(unavailable(format!(
            "search needs the history store, and there is none: {why}"
        )));
    };
    // One trip to the writer: the index job writes what is queued first.
    ctx.history.hand_over_staged();
    store.index().await;
    let limit = p
        .limit
        .unwrap_or(HISTORY_DEFAULT_LIMIT)
        .min(HISTORY_STORE_LIMIT);
    let since = p.since.map(|t| t.timestamp_millis());
    let room = room_filter(p.room.as_deref())?.map(|r| r.room().to_owned());
    let hits = tokio::task::spawn_blocking(move || {
        store.search(&query, p.from.as_deref(), since, limit, room.as_deref())
    })
    .await;
    let failed = |e: &dyn std::fmt::Display| {
        RpcError::new(code::INTERNAL_ERROR, format!("search failed: {e}"))
    };
    match hits {
        Ok(Ok(hits)) => Ok(hits),
        Ok(Err(e)) => Err(failed(&e)),
        Err(e) => Err(failed(&e)),
    }
}

fn status(ctx: &ApiContext) -> StatusInfo {
    let (peers, known_peers) = ctx.mesh.counts();
    let (history, history_capacity) = ctx.history.stats();
    StatusInfo {
        peer_id: ctx.mesh.peer_id().to_string(),
        instance: ctx.mesh.instance().to_owned(),
        fingerprint: ctx.mesh.identity().fingerprint().to_owned(),
        nick: ctx.mesh.nick().to_string(),
        port: ctx.mesh.port(),
        peers,
        known_peers,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        socket: ctx.socket.display().to_string(),
        pid: std::process::id(),
        uptime_s: ctx.started.elapsed().as_secs(),
        history,
        history_capacity,
        multicast: ctx.multicast.clone(),
        interfaces: ctx.interfaces.clone(),
        listen: ctx.listen.clone(),
        store: match ctx.history.store() {
            Some(s) => Some(s.info(ctx.retention)),
            None => ctx.store_off.clone(),
        },
        away: ctx.mesh.away(),
        systemd: started_by_systemd(),
    }
}

fn respond<T: Serialize>(id: Option<Value>, result: Result<T, RpcError>) -> Reply {
    // Notifications get no response, not even an error (JSON-RPC 2.0 §4.1).
    let Some(id) = id else { return Reply::None };
    let mut out = Vec::new();
    match result {
        Ok(r) => encode_result(&id, &r, &mut out),
        Err(e) => encode_error(Some(&id), &e, &mut out),
    }
    Reply::Line(out)
}

/// Writes the nick into the settings file so the next start keeps it;
/// where it went, or why it did not.
async fn save_nick(file: Option<PathBuf>, nick: &str) -> (Option<String>, Option<String>) {
    let Some(file) = file else {
        return (None, Some("no settings file (no $HOME)".to_owned()));
    };
    let nick = nick.to_owned();
    let shown = file.display().to_string();
    let saved = tokio::task::spawn_blocking(move || shared::config::save_nick(&file, &nick))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match saved {
        Ok(()) => (Some(shown), None),
        Err(why) => {
            tracing::warn!("the new nick is not saved: {why}");
            (None, Some(why))
        }
    }
}

/// Whether systemd started this very process as a service: it names the
/// process it executed in `SYSTEMD_EXEC_PID` (systemd.exec(5)); children of
/// other services inherit the variable with another pid.
fn started_by_systemd() -> bool {
    std::env::var("SYSTEMD_EXEC_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id())
}
