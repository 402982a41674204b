//! One API client: requests in, responses and events out.
//!
//! The reader answers requests in order (a client may pipeline them) and
//! hands each reply to the writer through a small bounded queue: a client
//! that sends but never reads stops being read, and nobody else notices.
//! The writer interleaves replies with the client's subscription, which is
//! only a cursor into the history: however slowly it reads, it holds no
//! memory, and when it falls out of the history it gets a `gap`.

use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use serde_json::Value;
use shared::api::{RpcError, TransferInfo, code, decode_request, encode_error};
use shared::event::{Event, EventBody};
use shared::limits::MAX_API_LINE;
use shared::line::LineReader;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::ApiContext;
use super::methods::{Reply, dispatch};
use crate::history::Subscription;

/// Bytes read from a client at once: requests are small.
const READ_CHUNK: usize = 4096;
/// Replies waiting to be written. Full means the client does not read:
/// the reader then waits, so that client's requests wait too.
const REPLY_QUEUE: usize = 64;
/// Events copied into one write.
const EVENT_BATCH: usize = 512;
/// The write buffer a connection keeps between writes. A larger reply (a
/// long `history`) is written and then let go, so an attached client does
/// not pin megabytes for as long as it stays.
const OUT_KEEP: usize = 16 * 1024;
/// Time a stopping daemon gives a client to take its last replies.
const FLUSH_WAIT: Duration = Duration::from_millis(200);

/// Serves one client until it leaves or the daemon stops.
pub(super) async fn serve(stream: Stream, ctx: &ApiContext, cancel: &CancellationToken) {
    let (tx, rx) = mpsc::channel(REPLY_QUEUE);
    tokio::join!(
        read_requests(&stream, ctx, tx, cancel),
        write_replies(&stream, ctx, rx, cancel)
    );
}

/// Tells a client over the limit why it is turned away.
pub(super) async fn refuse_busy(mut stream: Stream) {
    let mut out = Vec::new();
    encode_error(
        None,
        &RpcError::new(code::TOO_MANY_CLIENTS, "too many clients"),
        &mut out,
    );
    let _ = tokio::time::timeout(FLUSH_WAIT, stream.write_all(&out)).await;
}

async fn read_requests(
    mut stream: &Stream,
    ctx: &ApiContext,
    tx: mpsc::Sender<Reply>,
    cancel: &CancellationToken,
) {
    let mut lines = LineReader::new(MAX_API_LINE, READ_CHUNK);
    loop {
        while let Some(line) = lines.next_line() {
            let reply = match line {
                Err(e) => error_reply(None, code::INVALID_REQUEST, format!("request is a {e}")),
                Ok(line) => match decode_request(&line) {
                    Err(bad) => error_reply(bad.id.as_ref(), bad.error.code, bad.error.message),
                    Ok(req) => tokio::select! {
                        () = cancel.cancelled() => return,
                        r = dispatch(ctx, req) => r,
                    },
                },
            };
            if tx.send(reply).await.is_err() {
                return;
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            r = stream.read_buf(lines.space()) => match r {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => return debug!(error = %e, "client read failed"),
            },
        }
    }
}

fn error_reply(id: Option<&Value>, code: i64, message: String) -> Reply {
    let mut out = Vec::new();
    encode_error(id, &RpcError::new(code, message), &mut out);
    Reply::Line(out)
}

async fn write_replies(
    mut stream: &Stream,
    ctx: &ApiContext,
    mut rx: mpsc::Receiver<Reply>,
    cancel: &CancellationToken,
) {
    let mut sub: Option<Subscription> = None;
    // A person's client: dropped when the connection ends.
    let mut attached: Option<crate::mesh::Attached> = None;
    let mut transfers: Option<Transfers> = None;
    let mut out = Vec::with_capacity(OUT_KEEP);
    let mut rx_open = true;
    let mut more = false;
    loop {
        if !more {
            tokio::select! {
                biased;
                r = rx.recv(), if rx_open => match r {
                    Some(reply) => take(reply, &mut out, &mut sub, &mut attached, &mut transfers),
                    None => rx_open = false,
                },
                r = next_transfer(&mut transfers, ctx), if transfers.is_some() => match r {
                    Some(infos) => {
                        for info in infos {
                            transfer_event(&info, sub.as_ref(), &mut out);
                        }
                    }
                    None => transfers = None,
                },
                r = next_event(&mut sub), if sub.is_some() => {
                    if r.is_err() {
                        sub = None;
                    }
                }
                () = cancel.cancelled(), if sub.is_some() => sub = None,
                else => break,
            }
        }
        while rx_open {
            match rx.try_recv() {
                Ok(reply) => take(reply, &mut out, &mut sub, &mut attached, &mut transfers),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => rx_open = false,
            }
        }
        more = match sub.as_mut() {
            Some(s) if !cancel.is_cancelled() => ctx.history.fill(s, &mut out, EVENT_BATCH).await,
            _ => false,
        };
        // Where the user left off counts what reached the client: it moves
        // once the write went through.
        let filled = sub.as_ref().map(Subscription::delivered);
        if !rx_open {
            // The client stopped talking: a person's client is gone then
            // (a script may still read its events).
            attached = None;
        }
        if !out.is_empty() {
            let write = stream.write_all(&out);
            let give_up = async {
                cancel.cancelled().await;
                tokio::time::sleep(FLUSH_WAIT).await;
            };
            let done = tokio::select! {
                r = write => r.is_ok(),
                () = give_up => false,
            };
            if !done {
                return;
            }
            if let (Some(a), Some(f)) = (attached.as_mut(), filled) {
                a.delivered = Some(f);
            }
            out.clear();
            out.shrink_to(OUT_KEEP);
        }
        if !rx_open && sub.is_none() {
            break;
        }
    }
    let _ = stream.flush().await;
}

type Transfers = tokio::sync::broadcast::Receiver<Arc<TransferInfo>>;

fn take(
    reply: Reply,
    out: &mut Vec<u8>,
    sub: &mut Option<Subscription>,
    attached: &mut Option<crate::mesh::Attached>,
    transfers: &mut Option<Transfers>,
) {
    let append = |out: &mut Vec<u8>, line: Vec<u8>| {
        if out.is_empty() && line.len() > out.capacity() {
            // A reply bigger than the buffer is written as it is, not
            // copied first. Small ones go into the buffer kept between
            // writes: taking each small reply's own allocation as the
            // buffer dropped its capacity, and a pipelining client's
            // batch then regrew it by reallocating, over and over.
            *out = line;
        } else {
            out.extend_from_slice(&line);
        }
    };
    match reply {
        Reply::Line(line) => append(out, line),
        Reply::Subscribed {
            line,
            subscription,
            attached: mut a,
            transfers: t,
            snapshot,
        } => {
            *transfers = t;
            append(out, line);
            for info in &snapshot {
                transfer_event(info, Some(&subscription), out);
            }
            // What it asked to start after, it has (the TUI loaded it).
            if let Some(a) = &mut a {
                a.delivered = Some(subscription.delivered());
            }
            *sub = Some(subscription);
            *attached = a;
        }
        Reply::None => {}
    }
}

/// The next transfer event; `None` once the daemon stops sending them. A
/// subscriber that fell behind gets where every transfer stands instead
/// of what it missed: some progress, never an end.
async fn next_transfer(
    rx: &mut Option<Transfers>,
    ctx: &ApiContext,
) -> Option<Vec<Arc<TransferInfo>>> {
    use tokio::sync::broadcast::error::RecvError;
    match rx.as_mut()?.recv().await {
        Ok(info) => Some(vec![info]),
        Err(RecvError::Lagged(_)) => Some(
            ctx.mesh
                .transfers()
                .list()
                .into_iter()
                .map(Arc::new)
                .collect(),
        ),
        Err(RecvError::Closed) => None,
    }
}

/// A transfer event, at the cursor the subscriber stands at (it is not
/// one of the history's).
fn transfer_event(info: &TransferInfo, sub: Option<&Subscription>, out: &mut Vec<u8>) {
    let event = Event {
        cursor: sub.map_or(0, Subscription::delivered),
        ts: chrono::Utc::now(),
        body: EventBody::Transfer(Box::new(info.clone())),
    };
    if let Ok(json) = serde_json::to_string(&event) {
        shared::api::encode_event_notification(&json, out);
    }
}

async fn next_event(sub: &mut Option<Subscription>) -> Result<(), ()> {
    match sub {
        Some(s) => s.changed().await.map_err(|_| ()),
        None => std::future::pending().await,
    }
}
