//! The local API (DESIGN §3): JSON-RPC 2.0, one object per line, over the
//! daemon's Unix socket.
//!
//! Requests: `say`, `history`, `subscribe`, `peers`, `status`, `nick`,
//! `shutdown`. After `subscribe` the daemon sends `event` notifications whose
//! params are one [`Event`](crate::event::Event) each. Errors use the
//! standard JSON-RPC codes plus the application codes in [`code`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::event::Event;

/// JSON-RPC error codes. Negative ones are the standard's; positive ones are
/// ours and documented in the README.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// `say`: the text breaks the rules (empty, over 4096 bytes, control
    /// characters).
    pub const INVALID_TEXT: i64 = 1001;
    /// `nick`: the nick breaks the rules (1-20 characters, no whitespace or
    /// control characters).
    pub const INVALID_NICK: i64 = 1002;
    /// The daemon is stopping and takes no more requests.
    pub const SHUTTING_DOWN: i64 = 1003;
    /// `subscribe`: `since` is newer than the newest event; the daemon was
    /// restarted since the client saw that cursor.
    pub const CURSOR_AHEAD: i64 = 1004;
    /// The daemon serves its maximum number of clients already.
    pub const TOO_MANY_CLIENTS: i64 = 1005;
    /// `trust`, `forget`: no key holds that nick.
    pub const UNKNOWN_NICK: i64 = 1006;
    /// `search` without a store, or with a query that has no words.
    pub const SEARCH_UNAVAILABLE: i64 = 1007;
    /// `say {wait}`: a peer linked when the line was sent did not confirm
    /// it holds it in time (or cannot: a Go peer); the line was sent.
    pub const UNCONFIRMED: i64 = 1008;
    /// A room name breaks the rules (`#` and 1-32 of `a-z 0-9 - _ .`), or
    /// the room cannot be left (`#general`), or too many rooms are joined.
    pub const INVALID_ROOM: i64 = 1009;
    /// `say {room}` in a room this daemon is not in.
    pub const NOT_IN_ROOM: i64 = 1010;
    /// `say {to}`: no direct message can go to that nick (unknown, a Go
    /// peer, in conflict, or a peer too old to take one).
    pub const CANNOT_DM: i64 = 1011;
    /// `send`: no file can go to that nick (unknown, a Go peer, in
    /// conflict, too old), or a path cannot be offered (missing, not a
    /// file or folder, unreadable, over the limits).
    pub const CANNOT_SEND: i64 = 1012;
    /// `accept`, `decline`: no offer waiting for an answer has that id;
    /// `cancel`: no transfer under way has it.
    pub const NO_SUCH_TRANSFER: i64 = 1013;
    /// `accept`: the download folder cannot take it (no room on the disk,
    /// not writable).
    pub const NO_ROOM_FOR_FILES: i64 = 1014;
}

/// A room a client named, in its one spelling, or the API's error for it.
pub fn room_param(room: &str) -> Result<String, RpcError> {
    crate::rooms::parse_room(room)
        .map_err(|e| RpcError::new(code::INVALID_ROOM, format!("room {room:?}: {e}")))
}

/// The method name of event notifications.
pub const EVENT_METHOD: &str = "event";

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }
}

/// `say {text, action?, room?, to?, wait?, timeout_ms?}`: send a line to a
/// room (`#general` without one), or with `to` (a nick) to that peer
/// alone. `action` marks a `/me`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SayParams {
    pub text: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub action: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Answer only once every peer linked now holds the line (or fail
    /// with [`code::UNCONFIRMED`] after `timeout_ms`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
    /// How long `wait` waits, ms: default [`SAY_WAIT_DEFAULT_MS`], at most
    /// [`SAY_WAIT_MAX_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// How long `say {wait}` waits by default, and at most (ms).
pub const SAY_WAIT_DEFAULT_MS: u64 = 5_000;
pub const SAY_WAIT_MAX_MS: u64 = 600_000;

/// `history {limit?, before?}`: the newest `limit` held events (default 100)
/// with a cursor below `before`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// Only this room's messages (`#general`'s come with the events that
    /// are no room's: joins, leaves, nick changes, alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// `subscribe {since?, attach?}`: live events from now on; with `since`,
/// first every held event after that cursor. `attach: true` is a person's
/// client (the TUI): while one is subscribed you are present, not away, and
/// what it was sent when it leaves is where you left off (`read`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attach: bool,
    /// As `history`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// `away {reason?}`: away by hand with a reason; without one (or null),
/// back (then away again only while no client is attached).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwayParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Result of `away`: the away message peers now see, if any.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AwayResult {
    pub away: Option<String>,
}

/// An away reason is at most this many characters; longer ones are cut.
pub const MAX_AWAY_CHARS: usize = 160;

/// An away reason as it is kept and shown: cut to [`MAX_AWAY_CHARS`];
/// none when blank (that is back).
pub fn clip_away(reason: &str) -> Option<String> {
    let clipped: String = reason.chars().take(MAX_AWAY_CHARS).collect();
    (!clipped.trim().is_empty()).then_some(clipped)
}
/// What peers see while no client is attached and no reason was given.
pub const DETACHED_AWAY: &str = "detached";

/// `search {words, from?, since?, limit?}`: stored messages that hold every
/// word (a word ending in `*` matches as a prefix), newest `limit`
/// (default 100), oldest first; `from` keeps one nick's, `since` those
/// from that time on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    pub words: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// Longest `search` words accepted.
pub const MAX_SEARCH_BYTES: usize = 512;

/// `nick {name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NickParams {
    pub name: String,
}

/// `trust {nick}` (the key holding it is verified) and `forget {nick}`
/// (the nick is unpinned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustParams {
    pub nick: String,
}

/// Result of `trust`: the nick and the fingerprint now verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustResult {
    pub nick: String,
    pub fingerprint: String,
}

/// `join {room}` and `part {room}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomParams {
    pub room: String,
}

/// `topic {room, text?}`: sets the room's topic; without `text`, only
/// says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicParams {
    pub room: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Result of `topic`: the room and its topic now, if it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicResult {
    pub room: String,
    pub topic: Option<crate::rooms::Topic>,
}

/// Result of `join` and `part`: the room, and whether anything changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomResult {
    pub room: String,
    pub changed: bool,
}

/// A room this daemon is in or knows of (a linked peer is in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    pub joined: bool,
    /// Who is in it now: linked peers, and us when joined.
    pub members: usize,
    /// The linked peers in it, by nick as shown.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Its topic, in a room we are in that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// `send {paths, to}`: offers files and folders (absolute paths, as the
/// daemon sees them) to the peer holding the nick `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendParams {
    pub paths: Vec<String>,
    pub to: String,
}

/// `accept {id}`, `decline {id}`: answers an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferParams {
    pub id: String,
}

/// Result of `transfers`: those under way and the recent ones, oldest
/// first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TransfersResult {
    pub transfers: Vec<TransferInfo>,
}

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferDirection {
    /// Offered to us.
    In,
    /// Offered by us.
    Out,
}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferState {
    /// Waiting for the recipient's answer.
    Offered,
    /// Bytes are moving (`done` grows).
    Active,
    /// Accepted, and cut: it resumes when the peer is back.
    Waiting,
    /// Every file arrived whole and verified.
    Done,
    /// It stopped for good (`reason` says why); partial data stays.
    Failed,
    /// The recipient said no.
    Declined,
}

impl TransferState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offered => "offered",
            Self::Active => "active",
            Self::Waiting => "waiting",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Declined => "declined",
        }
    }

    /// Whether it is over (done, failed or declined).
    pub fn is_over(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Declined)
    }
}

/// One transfer, as `transfers` lists it and a `transfer` event tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferInfo {
    /// 16 hex digits: what `accept` and `decline` take.
    pub id: String,
    pub direction: TransferDirection,
    /// The other end.
    pub peer_id: String,
    pub nick: String,
    /// The first few files' names.
    pub names: Vec<String>,
    pub files: u64,
    pub bytes: u64,
    /// Bytes verified at the recipient so far (as the sender last heard).
    pub done: u64,
    pub state: TransferState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes a second, lately (while active).
    #[serde(default)]
    pub rate: u64,
    /// Where the files land (ours, incoming).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Bytes that came in on its connections in this life of the daemon,
    /// chunks sent again after a cut included (incoming).
    #[serde(default)]
    pub transferred: u64,
}

/// A request, by method, with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Say(SayParams),
    History(HistoryParams),
    Subscribe(SubscribeParams),
    Peers,
    Status,
    Nick(NickParams),
    Trust(TrustParams),
    Forget(TrustParams),
    Search(SearchParams),
    Away(AwayParams),
    Rooms,
    Join(RoomParams),
    Part(RoomParams),
    Topic(TopicParams),
    Send(SendParams),
    Accept(TransferParams),
    Decline(TransferParams),
    Cancel(TransferParams),
    Transfers,
    Shutdown,
}

/// Default and maximum of `history`'s `limit` when the daemon holds more.
pub const HISTORY_DEFAULT_LIMIT: usize = 100;

impl Call {
    pub fn method(&self) -> &'static str {
        match self {
            Self::Say(_) => "say",
            Self::History(_) => "history",
            Self::Subscribe(_) => "subscribe",
            Self::Peers => "peers",
            Self::Status => "status",
            Self::Nick(_) => "nick",
            Self::Trust(_) => "trust",
            Self::Forget(_) => "forget",
            Self::Search(_) => "search",
            Self::Away(_) => "away",
            Self::Rooms => "rooms",
            Self::Join(_) => "join",
            Self::Part(_) => "part",
            Self::Topic(_) => "topic",
            Self::Send(_) => "send",
            Self::Accept(_) => "accept",
            Self::Decline(_) => "decline",
            Self::Cancel(_) => "cancel",
            Self::Transfers => "transfers",
            Self::Shutdown => "shutdown",
        }
    }

    /// Reads a method and its params as the daemon receives them.
    pub fn parse(method: &str, params: Option<&RawValue>) -> Result<Self, RpcError> {
        Ok(match method {
            "say" => Self::Say(required(params)?),
            "history" => Self::History(optional(params)?),
            "subscribe" => Self::Subscribe(optional(params)?),
            "peers" => no_params(params).map(|()| Self::Peers)?,
            "status" => no_params(params).map(|()| Self::Status)?,
            "nick" => Self::Nick(required(params)?),
            "trust" => Self::Trust(required(params)?),
            "forget" => Self::Forget(required(params)?),
            "search" => Self::Search(required(params)?),
            "away" => Self::Away(optional(params)?),
            "rooms" => no_params(params).map(|()| Self::Rooms)?,
            "join" => Self::Join(required(params)?),
            "part" => Self::Part(required(params)?),
            "topic" => Self::Topic(required(params)?),
            "send" => Self::Send(required(params)?),
            "accept" => Self::Accept(required(params)?),
            "decline" => Self::Decline(required(params)?),
            "cancel" => Self::Cancel(required(params)?),
            "transfers" => no_params(params).map(|()| Self::Transfers)?,
            "shutdown" => no_params(params).map(|()| Self::Shutdown)?,
            other => {
                return Err(RpcError::new(
                    code::METHOD_NOT_FOUND,
                    format!("unknown method `{other}`"),
                ));
            }
        })
    }

    /// The request line a client sends, newline included.
    pub fn encode_request(&self, id: u64) -> Vec<u8> {
        /// The params, borrowed and written once (no `Value` in between).
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Params<'a> {
            Say(&'a SayParams),
            History(&'a HistoryParams),
            Subscribe(&'a SubscribeParams),
            Nick(&'a NickParams),
            Trust(&'a TrustParams),
            Search(&'a SearchParams),
            Away(&'a AwayParams),
            Room(&'a RoomParams),
            Topic(&'a TopicParams),
            Send(&'a SendParams),
            Transfer(&'a TransferParams),
        }
        #[derive(Serialize)]
        struct Out<'a> {
            jsonrpc: &'static str,
            id: u64,
            method: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            params: Option<Params<'a>>,
        }
        let params = match self {
            Self::Say(p) => Some(Params::Say(p)),
            Self::History(p) => Some(Params::History(p)),
            Self::Subscribe(p) => Some(Params::Subscribe(p)),
            Self::Nick(p) => Some(Params::Nick(p)),
            Self::Trust(p) | Self::Forget(p) => Some(Params::Trust(p)),
            Self::Search(p) => Some(Params::Search(p)),
            Self::Away(p) => Some(Params::Away(p)),
            Self::Join(p) | Self::Part(p) => Some(Params::Room(p)),
            Self::Topic(p) => Some(Params::Topic(p)),
            Self::Send(p) => Some(Params::Send(p)),
            Self::Accept(p) | Self::Decline(p) | Self::Cancel(p) => Some(Params::Transfer(p)),
            Self::Peers | Self::Status | Self::Rooms | Self::Transfers | Self::Shutdown => None,
        };
        let mut out = serde_json::to_vec(&Out {
            jsonrpc: "2.0",
            id,
            method: self.method(),
            params,
        })
        .unwrap_or_default();
        out.push(b'\n');
        out
    }
}

fn typed<T: DeserializeOwned>(json: &str) -> Result<T, RpcError> {
    serde_json::from_str(json)
        .map_err(|e| RpcError::new(code::INVALID_PARAMS, format!("invalid params: {e}")))
}

fn required<T: DeserializeOwned>(params: Option<&RawValue>) -> Result<T, RpcError> {
    match params.map(RawValue::get) {
        None | Some("null") => Err(RpcError::new(
            code::INVALID_PARAMS,
            "params are required for this method",
        )),
        Some(json) => typed(json),
    }
}

fn optional<T: DeserializeOwned + Default>(params: Option<&RawValue>) -> Result<T, RpcError> {
    match params.map(RawValue::get) {
        None | Some("null") => Ok(T::default()),
        Some(json) => typed(json),
    }
}

fn no_params(params: Option<&RawValue>) -> Result<(), RpcError> {
    match params.map(|p| p.get().trim()) {
        None | Some("null" | "{}" | "[]") => Ok(()),
        Some(_) => Err(RpcError::new(
            code::INVALID_PARAMS,
            "this method takes no params",
        )),
    }
}

/// A request as the daemon decoded it.
#[derive(Debug)]
pub struct Request {
    /// `None` for a notification (no `id` member): it gets no response.
    pub id: Option<Value>,
    pub call: Call,
}

/// A request line the daemon could not take: answer `error` to `id`
/// (`null` when the id itself could not be read).
#[derive(Debug)]
pub struct BadRequest {
    pub id: Option<Value>,
    pub error: RpcError,
}

#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(default)]
    jsonrpc: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default)]
    method: Option<Value>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
}

/// Keeps `"id": null` apart from a missing id.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Decodes one request line (newline removed).
pub fn decode_request(line: &[u8]) -> Result<Request, BadRequest> {
    let bad = |id: Option<Value>, code, msg: String| BadRequest {
        id,
        error: RpcError::new(code, msg),
    };
    // serde would read an array as a struct's fields in order, so `[1,2,3]`
    // would pass for a request with id 2: batches are refused up front.
    if line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(bad(
            None,
            code::INVALID_REQUEST,
            "batches are not supported: send one request object per line".into(),
        ));
    }
    let raw: RawRequest<'_> = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) if e.is_data() => {
            return Err(bad(
                None,
                code::INVALID_REQUEST,
                "a request is one JSON object per line (batches are not supported)".into(),
            ));
        }
        Err(e) => return Err(bad(None, code::PARSE_ERROR, format!("parse error: {e}"))),
    };
    let id = match raw.id {
        Some(v @ (Value::Null | Value::Number(_) | Value::String(_))) => Some(v),
        Some(_) => {
            return Err(bad(
                None,
                code::INVALID_REQUEST,
                "`id` must be a string, a number or null".into(),
            ));
        }
        None => None,
    };
    if raw.jsonrpc.as_ref().and_then(Value::as_str) != Some("2.0") {
        return Err(bad(
            id,
            code::INVALID_REQUEST,
            "`jsonrpc` must be \"2.0\"".into(),
        ));
    }
    let Some(Value::String(method)) = raw.method else {
        return Err(bad(
            id,
            code::INVALID_REQUEST,
            "`method` must be a string".into(),
        ));
    };
    match Call::parse(&method, raw.params) {
        Ok(call) => Ok(Request { id, call }),
        Err(error) => Err(BadRequest { id, error }),
    }
}

/// Appends a success response line to `out`.
pub fn encode_result<T: Serialize + ?Sized>(id: &Value, result: &T, out: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct Out<'a, T: ?Sized> {
        jsonrpc: &'static str,
        id: &'a Value,
        result: &'a T,
    }
    let start = out.len();
    if serde_json::to_writer(
        &mut *out,
        &Out {
            jsonrpc: "2.0",
            id,
            result,
        },
    )
    .is_err()
    {
        out.truncate(start);
        return encode_error(
            Some(id),
            &RpcError::new(code::INTERNAL_ERROR, "result could not be encoded"),
            out,
        );
    }
    out.push(b'\n');
}

/// Appends a `history` response line to `out`. `write_events` writes the
/// JSON array of events: the daemon keeps every event as JSON, so a page of
/// them is copied, not encoded again.
pub fn encode_history_result(
    id: &Value,
    write_events: impl FnOnce(&mut Vec<u8>),
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    // A `Value` of ours always encodes; an id is a number, string or null.
    if serde_json::to_writer(&mut *out, id).is_err() {
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(br#","result":{"events":"#);
    write_events(out);
    out.extend_from_slice(b"}}\n");
}

/// Appends the JSON array of `items` (each already JSON) to `out`.
pub fn write_json_array<'a>(items: impl IntoIterator<Item = &'a str>, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.as_bytes());
    }
    out.push(b']');
}

/// Appends an error response line to `out`.
pub fn encode_error(id: Option<&Value>, error: &RpcError, out: &mut Vec<u8>) {
    #[derive(Serialize)]
    struct Out<'a> {
        jsonrpc: &'static str,
        id: &'a Value,
        error: &'a RpcError,
    }
    let null = Value::Null;
    let out_obj = Out {
        jsonrpc: "2.0",
        id: id.unwrap_or(&null),
        error,
    };
    if serde_json::to_writer(&mut *out, &out_obj).is_ok() {
        out.push(b'\n');
    }
}

/// Appends an `event` notification around an event's JSON to `out`. The
/// daemon keeps events as JSON, so this costs no second encoding.
pub fn encode_event_notification(event_json: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"jsonrpc":"2.0","method":"event","params":"#);
    out.extend_from_slice(event_json.as_bytes());
    out.extend_from_slice(b"}\n");
}

/// What a client reads from the daemon.
#[derive(Debug)]
pub enum ServerMessage {
    Response {
        id: Value,
        outcome: Result<Value, RpcError>,
    },
    Event(Event),
}

/// Decodes one line from the daemon (newline removed).
pub fn decode_server_message(line: &[u8]) -> Result<ServerMessage, serde_json::Error> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        id: Value,
        #[serde(default)]
        result: Option<Value>,
        #[serde(default)]
        error: Option<RpcError>,
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        params: Option<Event>,
    }
    use serde::de::Error;
    let raw: Raw = serde_json::from_slice(line)?;
    match (raw.method, raw.params, raw.error, raw.result) {
        (Some(m), Some(event), _, _) if m == EVENT_METHOD => Ok(ServerMessage::Event(event)),
        (None, _, Some(e), _) => Ok(ServerMessage::Response {
            id: raw.id,
            outcome: Err(e),
        }),
        (None, _, None, result) => Ok(ServerMessage::Response {
            id: raw.id,
            outcome: Ok(result.unwrap_or(Value::Null)),
        }),
        _ => Err(serde_json::Error::custom("neither a response nor an event")),
    }
}

/// Result of `say`: the message id and its cursor in our history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SayResult {
    pub id: String,
    pub cursor: u64,
    /// With `wait`: the peers (ids) that confirmed they hold the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<Vec<String>>,
}

/// Result of `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResult {
    pub events: Vec<Event>,
}

/// Result of `subscribe`: the newest cursor when the subscription started,
/// the daemon's peer id (the same across its restarts) and its instance
/// (new on every start: a client's cursors belong to one instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeResult {
    pub cursor: u64,
    pub peer_id: String,
    #[serde(default)]
    pub instance: String,
    /// Where the user left off: the newest event the last attached client
    /// was sent before it left (`subscribe {attach}`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<u64>,
}

/// Which side opened a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkDirection {
    Dialed,
    Accepted,
}

impl LinkDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dialed => "dialed",
            Self::Accepted => "accepted",
        }
    }
}

/// What kind of program a peer runs, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    P2pchatd,
    Go,
}

/// How far a peer is known to be who its nick says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// Its fingerprint was compared out of band (`p2pchat trust`).
    Verified,
    /// Its key holds its nick, from an earlier meeting.
    Pinned,
    /// Met for the first time now; its key now holds its nick.
    New,
    /// Its nick belongs to another key: shown as `nick~tag`.
    Conflict,
    /// No key at all (a Go peer): anyone could be it.
    Plaintext,
}

impl Trust {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Pinned => "pinned",
            Self::New => "new",
            Self::Conflict => "conflict",
            Self::Plaintext => "plaintext",
        }
    }

    /// The mark a line from such a peer carries: `!` for a conflict, `?`
    /// for plaintext; none for a peer whose key holds its nick.
    pub fn line_mark(self) -> Option<char> {
        match self {
            Self::Conflict => Some('!'),
            Self::Plaintext => Some('?'),
            Self::Verified | Self::Pinned | Self::New => None,
        }
    }

    /// One column for a list of peers: `✓` verified, `+` new, `!`
    /// conflict, `?` plaintext, blank for pinned (the usual case).
    pub fn glyph(self) -> char {
        match self {
            Self::Verified => '✓',
            Self::Pinned => ' ',
            Self::New => '+',
            Self::Conflict | Self::Plaintext => self.line_mark().unwrap_or(' '),
        }
    }
}

/// One known peer in `peers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: String,
    pub nick: String,
    /// Where we dial it or where it connected from.
    pub addr: Option<String>,
    pub connected: bool,
    pub link: Option<LinkDirection>,
    /// Known once linked: `p2pchatd` or `go`.
    pub kind: Option<PeerKind>,
    /// Its link is Noise-encrypted and proved its key.
    #[serde(default)]
    pub encrypted: bool,
    /// Its key's fingerprint, once a link proved the key.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Known once linked.
    #[serde(default)]
    pub trust: Option<Trust>,
    /// Milliseconds since we last heard of it (discovery or link).
    pub last_seen_ms: Option<u64>,
    /// Its away message, while it is away (p2pchatd peers say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away: Option<String>,
    /// The rooms it is in besides `#general` (p2pchatd peers say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
    /// Lines its current link has carried to us (heartbeats too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines_in: Option<u64>,
}

/// Result of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Derived from the daemon's key: the same across restarts.
    pub peer_id: String,
    /// New on every start: cursors belong to one instance.
    #[serde(default)]
    pub instance: String,
    /// The key's fingerprint, to compare with a peer out of band.
    #[serde(default)]
    pub fingerprint: String,
    pub nick: String,
    /// The TCP chat port.
    pub port: u16,
    /// Connected peers.
    pub peers: usize,
    /// Peers known, connected or not.
    pub known_peers: usize,
    pub version: String,
    pub socket: String,
    pub pid: u32,
    pub uptime_s: u64,
    /// Events held, and how many may be held.
    pub history: usize,
    pub history_capacity: usize,
    /// The discovery group, or null with `--no-discovery`.
    pub multicast: Option<String>,
    pub interfaces: Vec<String>,
    pub listen: String,
    /// The history on disk; absent from daemons without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreInfo>,
    /// Our away message as peers see it, while we are away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away: Option<String>,
    /// Started as a systemd service (restart it with systemctl, not by
    /// starting another).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub systemd: bool,
}

/// The history store, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    /// The database file.
    pub path: String,
    pub state: StoreState,
    /// What is wrong, when the state is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub retain_days: u32,
    pub retain_messages: u64,
}

/// Whether history reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreState {
    /// Every event is stored.
    Ok,
    /// Writes fail (a full disk): events wait in memory, retried.
    Failing,
    /// No store: the daemon chats on live (see `problem`).
    Off,
}

impl StatusInfo {
    /// What tells one life of the daemon from the next: its instance (its
    /// peer id, from daemons that had none, whose ids changed per start).
    pub fn life(&self) -> &str {
        if self.instance.is_empty() {
            &self.peer_id
        } else {
            &self.instance
        }
    }
}

/// Result of `nick`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NickResult {
    pub old: String,
    pub new: String,
    /// The settings file the nick was written into, so it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_in: Option<String>,
    /// Why it could not be written there (the nick is changed all the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_saved: Option<String>,
}

/// Result of `shutdown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownResult {
    pub stopping: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_call(call: Call) {
        let line = call.encode_request(42);
        assert_eq!(line.last(), Some(&b'\n'));
        let req = decode_request(&line[..line.len() - 1]).unwrap();
        assert_eq!(req.id, Some(Value::from(42)));
        assert_eq!(req.call, call);
    }

    #[test]
    fn requests_are_written_as_documented() {
        let say = Call::Say(SayParams {
            text: "hi".into(),
            action: false,
            ..Default::default()
        })
        .encode_request(1);
        assert_eq!(
            String::from_utf8(say).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"say\",\"params\":{\"text\":\"hi\"}}\n"
        );
        let peers = Call::Peers.encode_request(2);
        assert_eq!(
            String::from_utf8(peers).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"peers\"}\n"
        );
    }

    #[test]
    fn every_call_roundtrips() {
        roundtrip_call(Call::Say(SayParams {
            text: "hi".into(),
            action: false,
            ..Default::default()
        }));
        roundtrip_call(Call::Say(SayParams {
            text: "waves".into(),
            action: true,
            ..Default::default()
        }));
        roundtrip_call(Call::History(HistoryParams::default()));
        roundtrip_call(Call::History(HistoryParams {
            limit: Some(5),
            before: Some(10),
            room: None,
        }));
        roundtrip_call(Call::Subscribe(SubscribeParams::default()));
        roundtrip_call(Call::Subscribe(SubscribeParams {
            since: Some(0),
            attach: true,
            room: None,
        }));
        roundtrip_call(Call::Away(AwayParams {
            reason: Some("lunch".into()),
        }));
        roundtrip_call(Call::Away(AwayParams::default()));
        roundtrip_call(Call::Peers);
        roundtrip_call(Call::Status);
        roundtrip_call(Call::Nick(NickParams { name: "x".into() }));
        roundtrip_call(Call::Trust(TrustParams { nick: "x".into() }));
        roundtrip_call(Call::Forget(TrustParams { nick: "x".into() }));
        roundtrip_call(Call::Search(SearchParams {
            words: "deploy fri*".into(),
            from: Some("amy".into()),
            since: Some(chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap()),
            limit: Some(5),
            room: None,
        }));
        roundtrip_call(Call::Search(SearchParams {
            words: "x".into(),
            ..SearchParams::default()
        }));
        roundtrip_call(Call::Send(SendParams {
            paths: vec!["/home/amy/report.pdf".into()],
            to: "bob".into(),
        }));
        roundtrip_call(Call::Accept(TransferParams {
            id: "0123456789abcdef".into(),
        }));
        roundtrip_call(Call::Decline(TransferParams {
            id: "0123456789abcdef".into(),
        }));
        roundtrip_call(Call::Cancel(TransferParams {
            id: "0123456789abcdef".into(),
        }));
        roundtrip_call(Call::Transfers);
        roundtrip_call(Call::Shutdown);
    }

    fn err_code(line: &str) -> (Option<Value>, i64) {
        let e = decode_request(line.as_bytes()).unwrap_err();
        (e.id, e.error.code)
    }

    #[test]
    fn bad_requests_get_the_right_codes() {
        assert_eq!(err_code("{"), (None, code::PARSE_ERROR));
        assert_eq!(err_code("\u{1}"), (None, code::PARSE_ERROR));
        assert_eq!(err_code("[]"), (None, code::INVALID_REQUEST));
        assert_eq!(err_code("[1,2,3]"), (None, code::INVALID_REQUEST));
        assert_eq!(
            err_code(r#" [{"jsonrpc":"2.0","id":1,"method":"status"}]"#),
            (None, code::INVALID_REQUEST)
        );
        assert_eq!(err_code("42"), (None, code::INVALID_REQUEST));
        assert_eq!(
            err_code(r#"{"id":1,"method":"status"}"#),
            (Some(1.into()), code::INVALID_REQUEST)
        );
        assert_eq!(
            err_code(r#"{"jsonrpc":"2.0","id":{},"method":"status"}"#),
            (None, code::INVALID_REQUEST)
        );
        assert_eq!(
            err_code(r#"{"jsonrpc":"2.0","id":"a","method":7}"#),
            (Some("a".into()), code::INVALID_REQUEST)
        );
        assert_eq!(
            err_code(r#"{"jsonrpc":"2.0","id":2,"method":"dance"}"#),
            (Some(2.into()), code::METHOD_NOT_FOUND)
        );
        for bad in [
            r#"{"jsonrpc":"2.0","id":3,"method":"say"}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"say","params":{"txt":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"say","params":{"text":5}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"history","params":{"limit":-1}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"nick","params":null}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"status","params":{"x":1}}"#,
        ] {
            assert_eq!(
                err_code(bad),
                (Some(3.into()), code::INVALID_PARAMS),
                "{bad}"
            );
        }
    }

    #[test]
    fn notifications_and_null_ids() {
        let n = decode_request(br#"{"jsonrpc":"2.0","method":"status"}"#).unwrap();
        assert_eq!(n.id, None);
        let r =
            decode_request(br#"{"jsonrpc":"2.0","id":null,"method":"peers","params":{}}"#).unwrap();
        assert_eq!(r.id, Some(Value::Null));
    }

    #[test]
    fn responses_and_events_decode() {
        let mut out = Vec::new();
        encode_result(
            &Value::from(7),
            &SayResult {
                id: "abc".into(),
                cursor: 9,
                confirmed: None,
            },
            &mut out,
        );
        encode_error(
            Some(&Value::from(8)),
            &RpcError::new(code::INVALID_TEXT, "text is empty"),
            &mut out,
        );
        encode_event_notification(
            r#"{"kind":"gap","cursor":3,"ts":"2026-11-25T12:34:35.832Z","missed":2}"#,
            &mut out,
        );
        let lines: Vec<&[u8]> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 3);
        match decode_server_message(lines[0]).unwrap() {
            ServerMessage::Response { id, outcome: Ok(v) } => {
                assert_eq!(id, Value::from(7));
                let r: SayResult = serde_json::from_value(v).unwrap();
                assert_eq!(r.cursor, 9);
            }
            other => panic!("{other:?}"),
        }
        match decode_server_message(lines[1]).unwrap() {
            ServerMessage::Response {
                outcome: Err(e), ..
            } => assert_eq!(e.code, code::INVALID_TEXT),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_server_message(lines[2]).unwrap(),
            ServerMessage::Event(Event { cursor: 3, .. })
        ));
    }

    #[test]
    fn a_history_reply_reads_back_as_its_events() {
        let events: Vec<Event> = ["join", "gap"]
            .iter()
            .map(|k| {
                serde_json::from_str(&format!(
                    r#"{{"kind":"{k}","cursor":4,"ts":"2026-11-25T12:34:35.832Z","peer_id":"p","nick":"n","missed":1}}"#
                ))
                .unwrap()
            })
            .collect();
        let mut out = Vec::new();
        encode_history_result(
            &Value::from("h1"),
            |out| out.extend_from_slice(serde_json::to_string(&events).unwrap().as_bytes()),
            &mut out,
        );
        assert_eq!(out.pop(), Some(b'\n'));
        match decode_server_message(&out).unwrap() {
            ServerMessage::Response { id, outcome: Ok(v) } => {
                assert_eq!(id, Value::from("h1"));
                let r: HistoryResult = serde_json::from_value(v).unwrap();
                assert_eq!(r.events, events);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn result_types_roundtrip() {
        fn rt<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(v: T) {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v);
        }
        rt(SayResult {
            id: "a".into(),
            cursor: 1,
            confirmed: None,
        });
        rt(SayResult {
            id: "a".into(),
            cursor: 1,
            confirmed: Some(vec!["k0".into()]),
        });
        rt(HistoryResult { events: vec![] });
        rt(SubscribeResult {
            cursor: 0,
            peer_id: "p".into(),
            instance: "i".into(),
            read: Some(7),
        });
        rt(AwayResult {
            away: Some("lunch".into()),
        });
        rt(PeerInfo {
            peer_id: "p".into(),
            nick: "n".into(),
            addr: Some("127.0.0.1:8080".into()),
            connected: true,
            link: Some(LinkDirection::Dialed),
            kind: Some(PeerKind::Go),
            trust: Some(Trust::Plaintext),
            last_seen_ms: Some(5),
            away: Some("lunch".into()),
            ..Default::default()
        });
        rt(StatusInfo {
            peer_id: "p".into(),
            instance: "i".into(),
            fingerprint: "12345 67890".into(),
            nick: "n".into(),
            port: 8080,
            peers: 1,
            known_peers: 2,
            version: "0.1.0".into(),
            socket: "/tmp/x".into(),
            pid: 1,
            uptime_s: 3,
            history: 4,
            history_capacity: 1000,
            multicast: None,
            interfaces: vec!["127.0.0.1".into()],
            listen: "0.0.0.0".into(),
            store: Some(StoreInfo {
                path: "/s/history.db".into(),
                state: StoreState::Failing,
                problem: Some("the disk is full".into()),
                retain_days: 365,
                retain_messages: 1_000_000,
            }),
            away: Some("lunch".into()),
            systemd: true,
        });
        rt(NickResult {
            old: "a".into(),
            new: "b".into(),
            saved_in: Some("/c/config.toml".into()),
            not_saved: None,
        });
        rt(ShutdownResult { stopping: true });
        let json = serde_json::to_string(&PeerInfo {
            peer_id: "p".into(),
            nick: "n".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(json.contains(r#""link":null"#) && json.contains(r#""connected":false"#));
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode_request(&bytes);
            let _ = decode_server_message(&bytes);
        }
    }
}
