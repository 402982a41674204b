//! The shell commands: `say`, `msg`, `tail`, `rooms`, `join`, `part`,
//! `peers`, `nick`, `status`, `stop`, `fingerprint`, `trust`, `forget`,
//! `search`, `away`, `send`, `accept`, `decline`, `transfers` speak to the
//! daemon through
//! [`crate::client`]; `keygen` writes a network key. None touches the
//! terminal UI.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use shared::api::{
    AwayParams, AwayResult, Call, DETACHED_AWAY, HistoryParams, HistoryResult, NickParams,
    NickResult, PeerInfo, RoomInfo, RoomParams, RoomResult, SayParams, SayResult, SearchParams,
    ShutdownResult, StatusInfo, SubscribeParams, SubscribeResult, TopicParams, TopicResult,
    TrustParams, TrustResult,
};
use shared::event::Event;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::client::{Client, ClientError, Pending};
use crate::format;

/// Says sent before waiting for the oldest answer (`say -`).
const SAY_WINDOW: usize = 256;
/// How long `stop` waits for the daemon to be gone.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How often `stop` looks whether the socket file is gone.
const STOP_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a line to #general (or -r ROOM); `say -` sends each line of stdin
    Say(SayArgs),
    /// Send a direct message to NICK alone, sealed to its key
    Msg(MsgArgs),
    /// Print recent events of #general (or -r ROOM, or --all); with -f,
    /// keep printing new ones
    Tail(TailArgs),
    /// List the rooms you are in and those peers are in
    Rooms {
        /// One JSON array
        #[arg(long)]
        json: bool,
    },
    /// Join ROOM (`#name`): its lines reach you, and what it said before
    /// comes from the peers in it; kept across restarts
    Join {
        /// `#` and 1-32 of a-z 0-9 - _ .
        room: String,
    },
    /// Leave ROOM: its lines stop coming
    Part {
        /// A room you are in
        room: String,
    },
    /// Print ROOM's topic; with TEXT, set it (its members see it)
    Topic {
        /// A room you are in
        room: String,
        /// The new topic (joined by spaces), at most 300 characters
        text: Vec<String>,
    },
    /// List known peers and their links
    Peers {
        /// One JSON array
        #[arg(long)]
        json: bool,
    },
    /// Change your nick
    Nick {
        /// 1-20 characters, no whitespace
        name: String,
    },
    /// Show the daemon's state
    Status {
        /// One JSON object
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon (it says goodbye to everyone)
    Stop,
    /// Print your key's fingerprint, or NICK's, to compare out of band
    Fingerprint {
        /// A peer's nick as `peers` shows it
        nick: Option<String>,
    },
    /// Mark NICK's key verified, once its fingerprint was compared
    Trust {
        /// The nick, as `peers` shows it
        nick: String,
    },
    /// Unpin NICK from its key (say, its owner has a new one)
    Forget {
        /// The nick, as `peers` shows it
        nick: String,
    },
    /// Search the stored history for messages holding every word
    Search(SearchArgs),
    /// Offer files or folders to NICK; shows the progress until they
    /// arrive (Ctrl-C stops watching, not the transfer)
    Send(crate::files::SendArgs),
    /// Accept an offer (`transfers` lists them); shows the progress until
    /// the files are in the download folder
    Accept(crate::files::AnswerArgs),
    /// Decline an offer
    Decline {
        /// The offer's id, as `transfers` shows it
        id: String,
    },
    /// Stop a transfer, either way, offered or under way; the other end
    /// hears it (what arrived stays in its .part)
    Cancel {
        /// The transfer's id, as `transfers` shows it
        id: String,
    },
    /// List the transfers under way and the recent ones
    Transfers {
        /// One JSON array
        #[arg(long)]
        json: bool,
    },
    /// Mark yourself away with REASON; with none, back (you still show as
    /// away while no chat UI is attached)
    Away {
        /// Why, as peers see it
        reason: Vec<String>,
    },
    /// Write a new network key (32 random bytes, mode 0600) for --network-key
    Keygen {
        /// Where to write it; an existing file is never overwritten
        path: PathBuf,
    },
    /// Why nobody shows up: the daemon, the interfaces, a multicast
    /// self-test, the chat port, the firewall; exit 1 if something is wrong
    Doctor {
        /// One JSON object
        #[arg(long)]
        json: bool,
    },
    /// Check the settings file (see --config), or print a commented example
    Config {
        /// Print a commented example with every key and its default
        #[arg(long)]
        print_default: bool,
    },
}

#[derive(Debug, Args)]
pub struct SayArgs {
    /// The room to say it in (default #general)
    #[arg(short, long, value_name = "ROOM")]
    pub room: Option<String>,
    #[command(flatten)]
    pub line: LineArgs,
}

#[derive(Debug, Args)]
pub struct MsgArgs {
    /// Whom to send it to: a nick as `peers` shows it
    pub nick: String,
    #[command(flatten)]
    pub line: LineArgs,
}

#[derive(Debug, Args)]
pub struct LineArgs {
    /// The words to send (joined by spaces), or `-` for stdin
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true, value_name = "TEXT")]
    pub text: Vec<String>,
    /// Send as an action, like IRC's /me
    #[arg(long)]
    pub me: bool,
    /// Return once every peer linked now that the line goes to holds it;
    /// exit 1 naming those that did not confirm in time
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, requires = "wait",
          value_parser = parse_wait)]
    pub timeout: f64,
}

/// A `--timeout`: seconds, more than 0, at most 600.
fn parse_wait(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t > 0.0 && t <= 600.0 => Ok(t),
        _ => Err("seconds, more than 0 and at most 600".into()),
    }
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// How many held events to print first
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 10)]
    pub lines: usize,
    /// Keep printing events as they happen
    #[arg(short, long)]
    pub follow: bool,
    /// One JSON event per line (the schema in the README)
    #[arg(long)]
    pub json: bool,
    /// The room to print (default #general, with joins, leaves and nick
    /// changes)
    #[arg(short, long, value_name = "ROOM", conflicts_with = "all")]
    pub room: Option<String>,
    /// Every room and direct message
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words that must all occur; `word*` matches as a prefix
    #[arg(required = true, num_args = 1.., value_name = "WORDS")]
    pub words: Vec<String>,
    /// Only lines by this nick (as shown)
    #[arg(long, value_name = "NICK")]
    pub from: Option<String>,
    /// Only lines from then on: `2h`, `3d`, `1w` ago, a date (`2026-11-24`)
    /// or an RFC 3339 time
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only lines of this room (default: every room and direct message)
    #[arg(short, long, value_name = "ROOM")]
    pub room: Option<String>,
    /// How many of the newest hits to print
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 100)]
    pub lines: usize,
    /// One JSON event per line (the schema in the README)
    #[arg(long)]
    pub json: bool,
}

/// `--since`: a span ago (`90s`, `30m`, `2h`, `3d`, `1w`), a local date, or
/// an RFC 3339 time.
fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{Local, NaiveDate, TimeZone, Utc};
    let now = Utc::now();
    if let Some(unit) = s.chars().last().filter(char::is_ascii_alphabetic)
        && let Ok(n) = s[..s.len() - 1].parse::<i64>()
    {
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(format!("{s:?}: use s, m, h, d or w after the number")),
        };
        return n
            .checked_mul(secs)
            .and_then(chrono::TimeDelta::try_seconds)
            .and_then(|d| now.checked_sub_signed(d))
            .ok_or_else(|| format!("{s:?} is too long ago"));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .and_then(|t| Local.from_local_datetime(&t).earliest())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| format!("{s:?} is not a day here"));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{s:?}: give 2h, 3d, a date like 2026-11-24, or an RFC 3339 time"))
}

/// Why a command failed; decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Standard output or input failed, e.g. its reader went away.
    #[error("{0}")]
    Stdio(#[source] io::Error),
    #[error("{0}")]
    Failed(String),
}

impl CommandError {
    /// 2 when no daemon answers, else 1.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Client(ClientError::NotRunning(_)) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }

    /// The reader of our output went away (`p2pchat tail | head`): not a
    /// failure, the reader had what it wanted.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Stdio(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Writes to standard output at once (a script follows `tail -f` live).
pub(crate) fn emit(text: &str) -> Result<(), CommandError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CommandError::Stdio)
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<String, CommandError> {
    serde_json::to_string(v).map_err(|e| CommandError::Client(e.into()))
}

pub async fn run(
    socket: &Path,
    config: Option<&Path>,
    command: Command,
) -> Result<(), CommandError> {
    // The commands that need no daemon.
    match &command {
        Command::Keygen { path } => return keygen(path),
        Command::Config { print_default } => return check_config(config, *print_default),
        Command::Doctor { json: as_json } => return doctor(socket, config, *as_json).await,
        _ => {}
    }
    let client = Client::connect(socket).await?;
    match command {
        Command::Say(a) => say(&client, &a.line, a.room, None).await,
        Command::Msg(a) => say(&client, &a.line, None, Some(a.nick)).await,
        Command::Rooms { json: as_json } => {
            let rooms: Vec<RoomInfo> = client.call(&Call::Rooms).await?;
            if as_json {
                emit(&(json(&rooms)? + "\n"))
            } else {
                emit(&format::rooms_table(&rooms))
            }
        }
        Command::Join { room } => {
            let r: RoomResult = client.call(&Call::Join(RoomParams { room })).await?;
            emit(&if r.changed {
                format!("joined {}\n", r.room)
            } else {
                format!("already in {}\n", r.room)
            })
        }
        Command::Topic { room, text } => {
            let text = (!text.is_empty()).then(|| text.join(" "));
            let r: TopicResult = client
                .call(&Call::Topic(TopicParams { room, text }))
                .await?;
            emit(&match r.topic {
                Some(t) => format!(
                    "{}: {} (set by {} {})\n",
                    r.room,
                    format::clean_text(&t.text),
                    format::clean_text(&t.nick),
                    t.at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M")
                ),
                None => format!("{} has no topic\n", r.room),
            })
        }
        Command::Part { room } => {
            let r: RoomResult = client.call(&Call::Part(RoomParams { room })).await?;
            emit(&if r.changed {
                format!("left {}\n", r.room)
            } else {
                format!("not in {}\n", r.room)
            })
        }
        Command::Tail(a) => tail(&client, a).await,
        Command::Search(a) => search(&client, a).await,
        Command::Send(a) => crate::files::send(&client, a).await,
        Command::Accept(a) => crate::files::accept(&client, a).await,
        Command::Decline { id } => crate::files::decline(&client, id).await,
        Command::Cancel { id } => crate::files::cancel(&client, id).await,
        Command::Transfers { json: as_json } => crate::files::list(&client, as_json).await,
        Command::Peers { json: as_json } => {
            let peers: Vec<PeerInfo> = client.call(&Call::Peers).await?;
            if as_json {
                emit(&(json(&peers)? + "\n"))
            } else {
                emit(&format::peers_table(&peers))
            }
        }
        Command::Nick { name } => {
            let r: NickResult = client.call(&Call::Nick(NickParams { name })).await?;
            if let Some(why) = &r.not_saved {
                warning(&format!("the nick lasts until p2pchatd stops: {why}"));
            }
            if r.old == r.new {
                emit(&format!("your nick is already {}\n", r.new))
            } else {
                emit(&format!("{} is now known as {}\n", r.old, r.new))
            }
        }
        Command::Status { json: as_json } => {
            let s: StatusInfo = client.call(&Call::Status).await?;
            warn_on_version(&s.version);
            if as_json {
                emit(&(json(&s)? + "\n"))
            } else {
                emit(&format::status_text(&s))
            }
        }
        Command::Stop => stop(&client, socket).await,
        Command::Fingerprint { nick: None } => {
            let s: StatusInfo = client.call(&Call::Status).await?;
            emit(&format!("{}  {}  (you)\n", s.nick, s.fingerprint))
        }
        Command::Fingerprint { nick: Some(nick) } => {
            let peers: Vec<PeerInfo> = client.call(&Call::Peers).await?;
            match peers.iter().find(|p| p.nick == nick) {
                Some(p) => emit(&format::peer_fingerprint(p)),
                None => Err(CommandError::Failed(format!("no peer is called {nick}"))),
            }
        }
        Command::Trust { nick } => {
            let r: TrustResult = client.call(&Call::Trust(TrustParams { nick })).await?;
            emit(&format!(
                "{} is verified: fingerprint {}\n",
                r.nick, r.fingerprint
            ))
        }
        Command::Forget { nick } => {
            let r: TrustParams = client.call(&Call::Forget(TrustParams { nick })).await?;
            emit(&format!(
                "{} is no longer pinned: the next key to use it holds it\n",
                r.nick
            ))
        }
        Command::Away { reason } => {
            let reason = (!reason.is_empty()).then(|| reason.join(" "));
            let r: AwayResult = client.call(&Call::Away(AwayParams { reason })).await?;
            emit(&match r.away {
                None => "you are back\n".to_owned(),
                Some(a) if a == DETACHED_AWAY => {
                    format!("no reason set; you show as away ({a}) while no chat UI is attached\n")
                }
                Some(a) => format!("you are away: {a}\n"),
            })
        }
        Command::Keygen { path } => keygen(&path),
        Command::Config { print_default } => check_config(config, print_default),
        Command::Doctor { json: as_json } => doctor(socket, config, as_json).await,
    }
}

/// Writes 32 random bytes to a new file only its owner can read.
/// `doctor`: the report, exit 1 when a check failed.
async fn doctor(socket: &Path, config: Option<&Path>, as_json: bool) -> Result<(), CommandError> {
    let settings = shared::config::load(config)
        .map(|l| l.config)
        .map_err(|e| CommandError::Failed(e.to_string()))?;
    let report = crate::doctor::examine(socket, &settings).await;
    if as_json {
        emit(&(json(&report)? + "\n"))?;
    } else {
        emit(&crate::doctor::text(&report))?;
    }
    if report.ok {
        Ok(())
    } else {
        Err(CommandError::Failed(
            "doctor found something wrong (FAIL above)".into(),
        ))
    }
}

/// `config`: the example, or what is wrong with the settings file.
fn check_config(given: Option<&Path>, print_default: bool) -> Result<(), CommandError> {
    use shared::config;
    if print_default {
        return emit(config::DEFAULT_CONFIG);
    }
    let loaded = config::load(given).map_err(|e| CommandError::Failed(e.to_string()))?;
    for w in &loaded.warnings {
        warning(w);
    }
    match loaded.path {
        Some(p) => emit(&format!("{}: ok\n", p.display())),
        None => {
            let place = config::path_to_read(given).map(|(p, _)| p.display().to_string());
            emit(&format!(
                "no settings file{}; `p2pchat config --print-default > FILE` writes an example\n",
                place.map(|p| format!(" at {p}")).unwrap_or_default()
            ))
        }
    }
}

fn keygen(path: &Path) -> Result<(), CommandError> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: io::Error| {
        CommandError::Failed(match e.kind() {
            io::ErrorKind::AlreadyExists => format!(
                "{} exists; a network key is never overwritten (remove it first)",
                path.display()
            ),
            _ => format!("cannot write {}: {e}", path.display()),
        })
    };
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| CommandError::Failed(format!("no randomness from the system: {e}")))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    if let Err(e) = file.write_all(&key).and_then(|()| file.sync_all()) {
        // Half a key is no key.
        let _ = std::fs::remove_file(path);
        return Err(failed(e));
    }
    emit(&format!(
        "wrote a network key to {}: give it (privately) to those who may join, \
         and start p2pchatd with --network-key {}\n",
        path.display(),
        path.display()
    ))
}

/// Warns when the daemon runs another version than this client.
pub(crate) fn warn_on_version(daemon: &str) {
    let ours = env!("CARGO_PKG_VERSION");
    if daemon != ours {
        warning(&format!(
            "p2pchatd is version {daemon}, this client is {ours}"
        ));
    }
}

async fn say(
    client: &Client,
    a: &LineArgs,
    room: Option<String>,
    to: Option<String>,
) -> Result<(), CommandError> {
    let say_params = |text: String| say_params(text, a, room.clone(), to.clone());
    if a.text != ["-"] {
        let text = a.text.join(" ");
        let _: SayResult = client.call(&Call::Say(say_params(text))).await?;
        return Ok(());
    }
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let mut n = 0usize;
    let mut window: std::collections::VecDeque<(usize, Pending)> = Default::default();
    let mut refused = 0usize;
    loop {
        line.clear();
        let read = stdin
            .read_until(b'\n', &mut line)
            .await
            .map_err(CommandError::Stdio)?;
        if read == 0 {
            break;
        }
        n += 1;
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        let Ok(text) = std::str::from_utf8(&line).map(str::to_owned) else {
            report(n, "not valid UTF-8");
            refused += 1;
            continue;
        };
        if window.len() == SAY_WINDOW
            && let Some((k, p)) = window.pop_front()
        {
            refused += settle(k, p).await?;
        }
        let pending = client.send(&Call::Say(say_params(text))).await?;
        window.push_back((n, pending));
    }
    for (k, p) in window {
        refused += settle(k, p).await?;
    }
    if refused > 0 {
        return Err(CommandError::Failed(format!("{refused} line(s) not sent")));
    }
    Ok(())
}

fn say_params(text: String, a: &LineArgs, room: Option<String>, to: Option<String>) -> SayParams {
    SayParams {
        text,
        action: a.me,
        room,
        to,
        wait: a.wait,
        // Whole milliseconds; the parser bounds it.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        timeout_ms: a.wait.then(|| (a.timeout * 1000.0).round() as u64),
    }
}

/// Waits for one say; a refused line is reported and counted, a lost
/// connection ends the command.
async fn settle(line: usize, p: Pending) -> Result<usize, CommandError> {
    match p.wait::<SayResult>().await {
        Ok(_) => Ok(0),
        Err(ClientError::Rpc(e)) => {
            report(line, &e.message);
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}

#[allow(clippy::print_stderr)]
pub(crate) fn warning(message: &str) {
    eprintln!("p2pchat: warning: {message}");
}

#[allow(clippy::print_stderr)]
fn report(line: usize, why: &str) {
    eprintln!("p2pchat: line {line} not sent: {why}");
}

async fn tail(client: &Client, a: TailArgs) -> Result<(), CommandError> {
    let print = |e: &Event| -> Result<(), CommandError> {
        if a.json {
            emit(&(json(e)? + "\n"))
        } else {
            emit(&(format::event_line(e) + "\n"))
        }
    };
    let mut last = None;
    // Today's scripts keep reading #general.
    let room = match (a.all, a.room) {
        (true, _) => None,
        (false, r) => Some(r.unwrap_or_else(|| shared::rooms::GENERAL.to_owned())),
    };
    if a.lines > 0 {
        let h: HistoryResult = client
            .call(&Call::History(HistoryParams {
                limit: Some(a.lines),
                before: None,
                room: room.clone(),
            }))
            .await?;
        for e in &h.events {
            print(e)?;
        }
        last = Some(h.events.last().map_or(0, |e| e.cursor));
    }
    if !a.follow {
        return Ok(());
    }
    let mut events = client
        .take_events()
        .ok_or_else(|| CommandError::Failed("event stream already taken".into()))?;
    let _: SubscribeResult = client
        .call(&Call::Subscribe(SubscribeParams {
            since: last,
            room,
            ..Default::default()
        }))
        .await?;
    while let Some(e) = events.recv().await {
        print(&e)?;
    }
    Err(CommandError::Client(ClientError::Disconnected))
}

async fn search(client: &Client, a: SearchArgs) -> Result<(), CommandError> {
    let hits: HistoryResult = client
        .call(&Call::Search(SearchParams {
            words: a.words.join(" "),
            from: a.from,
            since: a.since,
            limit: Some(a.lines),
            room: a.room,
        }))
        .await?;
    let mut out = String::new();
    for e in &hits.events {
        if a.json {
            out += &json(e)?;
        } else {
            out += &format::dated_line(e);
        }
        out.push('\n');
    }
    emit(&out)
}

async fn stop(client: &Client, socket: &Path) -> Result<(), CommandError> {
    let mut events = client.take_events();
    let _: ShutdownResult = client.call(&Call::Shutdown).await?;
    let gone = async {
        // The connection closes first, the socket file goes last.
        if let Some(ev) = events.as_mut() {
            while ev.recv().await.is_some() {}
        }
        while socket.exists() {
            tokio::time::sleep(STOP_POLL).await;
        }
    };
    tokio::time::timeout(STOP_WAIT, gone).await.map_err(|_| {
        CommandError::Failed(format!(
            "p2pchatd did not stop within {} s",
            STOP_WAIT.as_secs()
        ))
    })?;
    emit("p2pchatd stopped\n")
}
