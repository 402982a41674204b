//! The reducer: `update(&mut State, Action) -> Vec<Effect>`. No I/O: what
//! must happen outside (talk to the daemon, quit) comes back as effects.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};
use shared::api::{PeerInfo, RoomInfo, StatusInfo, Trust};
use shared::event::{Event, EventBody};
use shared::rooms::GENERAL;
use tui_input::InputRequest;

use super::command::{self, Command};
use super::state::{DaemonLink, LineKind, MAX_RECALL, Me, State, Target, short_id};

/// Rows one mouse wheel notch scrolls.
const WHEEL_ROWS: usize = 3;

/// Everything that can happen to the TUI.
#[derive(Debug, Clone)]
pub(super) enum Action {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Paste(String),
    /// The terminal gained (true) or lost the focus.
    Focus(bool),
    Resize(u16, u16),
    Daemon(DaemonMsg),
    /// The slow timer: refresh what has no event of its own.
    Tick,
}

/// What the daemon session reports.
#[derive(Debug, Clone)]
pub(super) enum DaemonMsg {
    /// Attached (again). `history` is empty when resuming the same daemon
    /// by cursor: the missed events follow as `Event`s.
    Attached {
        status: Box<StatusInfo>,
        history: Vec<Event>,
        /// Where the user left off last time (fresh attach only).
        read: Option<u64>,
        /// The rooms the daemon is in besides `#general`.
        rooms: Vec<String>,
        /// Offers waiting and transfers under way.
        transfers: Vec<shared::api::TransferInfo>,
    },
    /// We joined a room (`/join`): its buffer opens.
    Joined(String),
    /// We left a room: its buffer closes.
    Parted(String),
    /// What a room we joined said before: its newest held events.
    RoomHistory {
        room: String,
        events: Vec<Event>,
    },
    /// The answer to `/rooms`.
    Rooms(Vec<RoomInfo>),
    Event(Box<Event>),
    Peers(Vec<PeerInfo>),
    /// The connection is gone; the session retries.
    Lost(String),
    /// A request failed; say so in the view.
    Failed(String),
    /// A request did what it was asked; say so in the view.
    Done(String),
    /// What `/search` found, oldest first.
    Found {
        words: String,
        hits: Vec<Event>,
    },
}

/// What the UI asks the daemon for (the session carries it there, and
/// says what failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ask {
    /// A line to a room (`#general` when none) or to a peer (by nick).
    Say {
        text: String,
        action: bool,
        room: Option<String>,
        to: Option<String>,
    },
    /// Join or leave a room; list the rooms; show or set a room's topic.
    Join(String),
    Part(String),
    Rooms,
    Topic {
        room: String,
        text: Option<String>,
    },
    Nick(String),
    /// `trust NICK` / `forget NICK` at the daemon.
    Trust(String),
    Forget(String),
    Search(String),
    /// Away with a reason, or back.
    Away(Option<String>),
    /// `send`, `accept`, `decline` or `cancel` (what follows shows as
    /// transfer events).
    Files(shared::api::Call),
}

impl Ask {
    /// What a failure of it is said as, before the reason.
    pub(super) fn failed(&self) -> &'static str {
        match self {
            Self::Say { .. } => "not sent",
            Self::Join(_) => "not joined",
            Self::Part(_) => "not left",
            Self::Rooms => "rooms",
            Self::Topic { .. } => "topic",
            Self::Nick(_) => "nick not changed",
            Self::Trust(_) => "not trusted",
            Self::Forget(_) => "not forgotten",
            Self::Search(_) => "search failed",
            Self::Away(_) => "away not changed",
            Self::Files(call) => call.method(),
        }
    }
}

/// Work for the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Effect {
    /// A request to the daemon.
    Daemon(Ask),
    RefreshPeers,
    /// Ring the terminal bell (a mention).
    Bell,
    /// Capture the mouse (wheel scrolling) or give it back to the terminal.
    Mouse(bool),
    /// Restart the daemon (another version runs): through systemd when it
    /// started it, else stop it and start ours.
    RestartDaemon {
        systemd: bool,
    },
    /// Stop the daemon, then quit.
    Shutdown,
    Quit,
}

/// A paste of more lines than this is refused, not sent line by line.
pub(super) const MAX_PASTE_LINES: usize = 100;

pub(super) fn update(state: &mut State, action: Action) -> Vec<Effect> {
    match action {
        Action::Key(k) if k.kind != KeyEventKind::Release => key(state, k),
        Action::Key(_) => vec![],
        Action::Mouse(m) => {
            mouse(state, m);
            vec![]
        }
        Action::Paste(text) => {
            paste(state, &text);
            vec![]
        }
        Action::Focus(focused) => {
            state.focused = focused;
            if !state.looking_away() {
                state.mentions = 0;
            }
            vec![]
        }
        Action::Resize(w, h) => {
            state.width = w;
            state.height = h;
            state.relayout();
            vec![]
        }
        Action::Daemon(msg) => daemon(state, msg),
        Action::Tick => match state.link {
            DaemonLink::Connected => vec![Effect::RefreshPeers],
            _ => vec![],
        },
    }
}

fn key(state: &mut State, k: KeyEvent) -> Vec<Effect> {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    let alt = k.modifiers.contains(KeyModifiers::ALT);
    if state.show_help {
        // Any key closes the help; Esc, q and F1 only close it.
        state.show_help = false;
        if matches!(k.code, KeyCode::Esc | KeyCode::F(1) | KeyCode::Char('q')) {
            return vec![];
        }
    }
    // A paste of several lines waits for Enter (send each) or Esc; the
    // quit keys still quit.
    if state.paste.is_some() && ctrl && matches!(k.code, KeyCode::Char('c' | 'd')) {
        return vec![Effect::Quit];
    }
    if let Some(lines) = state.paste.take() {
        return match k.code {
            KeyCode::Enter => lines
                .into_iter()
                .map(|text| say_here(state, text, false))
                .collect(),
            KeyCode::Esc => {
                state.note(LineKind::Info("paste dropped".into()));
                vec![]
            }
            _ => {
                state.paste = Some(lines);
                vec![]
            }
        };
    }
    // The offer to restart a daemon of another version takes y or n
    // while nothing is typed.
    if state.restart_offer.is_some() && state.input.value().is_empty() && !ctrl && !alt {
        match k.code {
            KeyCode::Char('y' | 'Y') => {
                state.restart_offer = None;
                state.note(LineKind::Info("restarting p2pchatd...".into()));
                return vec![Effect::RestartDaemon {
                    systemd: state.systemd,
                }];
            }
            KeyCode::Char('n' | 'N') | KeyCode::Esc => {
                state.restart_offer = None;
                state.note(LineKind::Info(
                    "kept the running p2pchatd; `p2pchat stop`, then `p2pchat`, restarts it".into(),
                ));
                return vec![];
            }
            _ => {}
        }
    }
    match k.code {
        KeyCode::Tab => {
            complete(state, true);
            return vec![];
        }
        KeyCode::BackTab => {
            complete(state, false);
            return vec![];
        }
        _ => state.completion = None,
    }
    let edit = |state: &mut State, r: InputRequest| {
        state.input.handle(r);
    };
    match k.code {
        KeyCode::Char('m') if alt => {
            state.mouse = !state.mouse;
            state.note(LineKind::Info(if state.mouse {
                "mouse on: the wheel scrolls; Alt-M gives selection and link clicks back to the terminal".into()
            } else {
                "mouse off: the terminal selects and opens links; Alt-M turns wheel scrolling on".into()
            }));
            return vec![Effect::Mouse(state.mouse)];
        }
        KeyCode::Char(c @ '1'..='9') if alt => {
            state.switch_to(usize::from(c as u8 - b'1'));
        }
        // With one buffer, Alt-arrows move by word, as before buffers.
        KeyCode::Left if alt && state.tabs_visible() => switch_by(state, false),
        KeyCode::Right if alt && state.tabs_visible() => switch_by(state, true),
        KeyCode::Left if alt => edit(state, InputRequest::GoToPrevWord),
        KeyCode::Right if alt => edit(state, InputRequest::GoToNextWord),
        KeyCode::Char('p') if ctrl => switch_by(state, false),
        KeyCode::Char('n') if ctrl => switch_by(state, true),
        KeyCode::Char('c') if ctrl => return vec![Effect::Quit],
        KeyCode::Char('d') if ctrl && state.input.value().is_empty() => return vec![Effect::Quit],
        KeyCode::Enter => return submit(state),
        KeyCode::F(1) => state.show_help = true,
        KeyCode::F(2) => {
            state.show_users = !state.show_users;
            state.relayout();
        }
        // Esc dismisses an alert (it stays in the view), and leaves a
        // search's hits for the end.
        KeyCode::Esc => {
            state.alert = None;
            if state.hit.take().is_some() {
                scroll_down(state, usize::MAX);
            }
        }
        KeyCode::F(3) => next_hit(state, k.modifiers.contains(KeyModifiers::SHIFT)),
        KeyCode::PageUp => scroll_up(state, state.message_height().saturating_sub(1).max(1)),
        KeyCode::PageDown => scroll_down(state, state.message_height().saturating_sub(1).max(1)),
        KeyCode::Home if !ctrl => scroll_up(state, usize::MAX),
        KeyCode::End if !ctrl => scroll_down(state, usize::MAX),
        KeyCode::Up => recall(state, true),
        KeyCode::Down => recall(state, false),
        KeyCode::Left if ctrl => edit(state, InputRequest::GoToPrevWord),
        KeyCode::Right if ctrl => edit(state, InputRequest::GoToNextWord),
        KeyCode::Left => edit(state, InputRequest::GoToPrevChar),
        KeyCode::Right => edit(state, InputRequest::GoToNextChar),
        KeyCode::Char('b') if alt => edit(state, InputRequest::GoToPrevWord),
        KeyCode::Char('f') if alt => edit(state, InputRequest::GoToNextWord),
        KeyCode::Char('a') if ctrl => edit(state, InputRequest::GoToStart),
        KeyCode::Char('e') if ctrl => edit(state, InputRequest::GoToEnd),
        KeyCode::Char('w') if ctrl => edit(state, InputRequest::DeletePrevWord),
        KeyCode::Backspace if ctrl || alt => edit(state, InputRequest::DeletePrevWord),
        KeyCode::Char('u') if ctrl => edit(state, InputRequest::DeleteFromStart),
        KeyCode::Char('k') if ctrl => edit(state, InputRequest::DeleteTillEnd),
        KeyCode::Char('d') if alt => edit(state, InputRequest::DeleteNextWord),
        KeyCode::Char('d') if ctrl => edit(state, InputRequest::DeleteNextChar),
        KeyCode::Char('y') if ctrl => edit(state, InputRequest::Yank),
        KeyCode::Backspace => edit(state, InputRequest::DeletePrevChar),
        KeyCode::Delete => edit(state, InputRequest::DeleteNextChar),
        KeyCode::Char(c) if !ctrl => edit(state, InputRequest::InsertChar(c)),
        _ => {}
    }
    vec![]
}

fn mouse(state: &mut State, m: MouseEvent) {
    match m.kind {
        MouseEventKind::ScrollUp => scroll_up(state, WHEEL_ROWS),
        MouseEventKind::ScrollDown => scroll_down(state, WHEEL_ROWS),
        // A click on the buffer list shows that buffer.
        MouseEventKind::Down(_) if m.row == 0 && state.tabs_visible() => {
            if let Some(i) = super::view::tab_at(state, m.column) {
                state.switch_to(i);
            }
        }
        _ => {}
    }
}

/// The next (or previous) buffer, round and round.
fn switch_by(state: &mut State, next: bool) {
    let n = state.buffers.len();
    let i = if next {
        (state.current + 1) % n
    } else {
        (state.current + n - 1) % n
    };
    state.switch_to(i);
}

/// A line said in the buffer on screen: to its room, or to its peer (by
/// the nick it goes by now).
fn say_here(state: &State, text: String, action: bool) -> Effect {
    let (room, to) = match &state.buf().target {
        Target::Room(r) if r == GENERAL => (None, None),
        Target::Room(r) => (Some(r.clone()), None),
        Target::Direct { peer_id, nick } => {
            let now = state.peers.iter().find(|p| p.peer_id == *peer_id);
            (
                None,
                Some(now.map_or_else(|| nick.clone(), |p| p.nick.clone())),
            )
        }
    };
    Effect::Daemon(Ask::Say {
        text,
        action,
        room,
        to,
    })
}

/// Opens the conversation with `nick` (a peer we know), and shows it when
/// `show`. False (and said) when no peer goes by that nick.
fn query(state: &mut State, nick: &str, show: bool) -> bool {
    // A linked peer first.
    let found = state
        .peers
        .iter()
        .filter(|p| p.nick == nick)
        .max_by_key(|p| p.connected);
    let Some(p) = found else {
        state.note(LineKind::Error(format!("no peer is called {nick}")));
        return false;
    };
    let target = Target::Direct {
        peer_id: p.peer_id.clone(),
        nick: p.nick.clone(),
    };
    match state.open(target) {
        Some(i) => {
            if show {
                state.switch_to(i);
            }
            true
        }
        None => {
            state.note(LineKind::Error("too many buffers open; /close some".into()));
            false
        }
    }
}

/// Jumps to the next older search hit in the scrollback (or newer), round
/// and round.
fn next_hit(state: &mut State, newer: bool) {
    let n = state.hits.len();
    if n == 0 {
        return;
    }
    let at = state
        .hit
        .and_then(|c| state.hits.iter().position(|&h| h == c))
        .unwrap_or(n);
    for step in 1..=n {
        let i = if newer {
            (at + step) % n
        } else {
            (at + n * 2 - step) % n
        };
        let cursor = state.hits[i];
        if state.jump_to(cursor) {
            return;
        }
    }
}

fn scroll_up(state: &mut State, rows: usize) {
    let max = state.max_scroll();
    let b = state.buf_mut();
    b.scroll = b.scroll.saturating_add(rows).min(max);
}

fn scroll_down(state: &mut State, rows: usize) {
    let b = state.buf_mut();
    b.scroll = b.scroll.saturating_sub(rows);
    if b.scroll == 0 {
        b.unseen = 0;
        if state.focused {
            state.mentions = 0;
        }
    }
}

/// A paste: one line goes into the input to edit; several wait for
/// Enter, then go as one message each (never glued with spaces).
fn paste(state: &mut State, text: &str) {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<String> = text
        .split('\n')
        .map(|l| {
            l.chars()
                .map(|c| if c == '\t' { ' ' } else { c })
                .filter(|c| !c.is_control())
                .collect::<String>()
        })
        .filter(|l| !l.trim().is_empty())
        .collect();
    match lines.len() {
        0 => {}
        1 => {
            for c in lines[0].chars() {
                state.input.handle(InputRequest::InsertChar(c));
            }
        }
        n if n > MAX_PASTE_LINES => state.note(LineKind::Error(format!(
            "a paste of {n} lines is not sent (at most {MAX_PASTE_LINES}); `p2pchat say -` sends a file"
        ))),
        _ => state.paste = Some(lines),
    }
}

/// Tab (forward) or Shift-Tab: completes the word before the cursor, a
/// /command at the start of the line, else a nick (with `: ` at the line
/// start); again cycles through the other candidates.
fn complete(state: &mut State, forward: bool) {
    if let Some(c) = &mut state.completion
        && state.input.value() == c.shown
    {
        let n = c.candidates.len();
        c.index = if forward {
            (c.index + 1) % n
        } else {
            (c.index + n - 1) % n
        };
        let (value, cursor) = c.apply();
        c.shown.clone_from(&value);
        state.input = tui_input::Input::new(value).with_cursor(cursor);
        return;
    }
    let value = state.input.value().to_owned();
    let chars: Vec<char> = value.chars().collect();
    let cursor = state.input.cursor().min(chars.len());
    let start = chars[..cursor]
        .iter()
        .rposition(|c| c.is_whitespace())
        .map_or(0, |i| i + 1);
    let word: String = chars[start..cursor].iter().collect();
    let candidates: Vec<String> = if start == 0 && word.starts_with('/') {
        command::names()
            .filter(|n| n.starts_with(&word.to_lowercase()))
            .map(|n| format!("{n} "))
            .collect()
    } else {
        let lower = word.to_lowercase();
        let mut nicks: Vec<(bool, &str)> = state
            .peers
            .iter()
            .map(|p| (p.connected, p.nick.as_str()))
            .filter(|(_, n)| n.to_lowercase().starts_with(&lower))
            .collect();
        // Peers here first, then by name; each nick once.
        nicks.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let mut out: Vec<String> = Vec::new();
        for (_, n) in nicks {
            let n = if start == 0 {
                format!("{n}: ")
            } else {
                format!("{n} ")
            };
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    };
    if candidates.is_empty() {
        return;
    }
    let before: String = chars[..start].iter().collect();
    let after: String = chars[cursor..].iter().collect();
    let n = candidates.len();
    let mut c = super::state::Completion {
        before,
        after,
        candidates,
        index: if forward { 0 } else { n - 1 },
        shown: String::new(),
    };
    let (value, cursor) = c.apply();
    c.shown.clone_from(&value);
    state.input = tui_input::Input::new(value).with_cursor(cursor);
    state.completion = Some(c);
}

/// Up: older sent lines; Down: newer, then back to the draft.
fn recall(state: &mut State, older: bool) {
    if state.sent.is_empty() {
        return;
    }
    let next = match (state.recall, older) {
        (None, true) => {
            state.draft = state.input.value().to_owned();
            Some(state.sent.len() - 1)
        }
        (None, false) => return,
        (Some(i), true) => Some(i.saturating_sub(1)),
        (Some(i), false) if i + 1 < state.sent.len() => Some(i + 1),
        (Some(_), false) => None,
    };
    state.recall = next;
    let text = match next {
        Some(i) => state.sent[i].clone(),
        None => std::mem::take(&mut state.draft),
    };
    state.input = text.into();
}

fn submit(state: &mut State) -> Vec<Effect> {
    let line = state.input.value_and_reset();
    state.recall = None;
    state.draft.clear();
    let Some(cmd) = command::parse(&line) else {
        return vec![];
    };
    if state.sent.last() != Some(&line) {
        state.sent.push(line);
        if state.sent.len() > MAX_RECALL {
            state.sent.remove(0);
        }
    }
    // Sending jumps back to the newest line.
    state.buf_mut().scroll = 0;
    state.buf_mut().unseen = 0;
    match cmd {
        Command::Say(text) => vec![say_here(state, text, false)],
        Command::Me(text) => vec![say_here(state, text, true)],
        Command::Join(room) => vec![Effect::Daemon(Ask::Join(room))],
        Command::Part(room) => match (room, &state.buf().target) {
            (Some(r), _) => vec![Effect::Daemon(Ask::Part(r))],
            (None, Target::Room(r)) => vec![Effect::Daemon(Ask::Part(r.clone()))],
            (None, Target::Direct { .. }) => {
                state.close(state.current);
                vec![]
            }
        },
        Command::Close => {
            match &state.buf().target {
                Target::Direct { .. } => state.close(state.current),
                Target::Room(r) if r == GENERAL => {
                    state.note(LineKind::Error(format!("{GENERAL} stays open")));
                }
                Target::Room(r) => {
                    return vec![Effect::Daemon(Ask::Part(r.clone()))];
                }
            }
            vec![]
        }
        Command::Msg { nick, text } => {
            if !query(state, &nick, false) {
                return vec![];
            }
            vec![Effect::Daemon(Ask::Say {
                text,
                action: false,
                room: None,
                to: Some(nick),
            })]
        }
        Command::Query(nick) => {
            query(state, &nick, true);
            vec![]
        }
        Command::Rooms => vec![Effect::Daemon(Ask::Rooms)],
        Command::Topic(text) => match &state.buf().target {
            Target::Room(r) => vec![Effect::Daemon(Ask::Topic {
                room: r.clone(),
                text,
            })],
            Target::Direct { .. } => {
                state.note(LineKind::Error("a conversation has no topic".into()));
                vec![]
            }
        },
        Command::Nick(name) => vec![Effect::Daemon(Ask::Nick(name))],
        Command::Trust(nick) => vec![Effect::Daemon(Ask::Trust(nick))],
        Command::Search(words) => vec![Effect::Daemon(Ask::Search(words))],
        Command::Away(reason) => vec![Effect::Daemon(Ask::Away(reason))],
        Command::Forget(nick) => vec![Effect::Daemon(Ask::Forget(nick))],
        Command::Whois(nick) => {
            whois(state, &nick);
            vec![]
        }
        Command::Send(words) => send_files(state, &words).into_iter().collect(),
        Command::Accept(id) => pick_transfer(state, id.as_deref(), Pick::Accept)
            .into_iter()
            .collect(),
        Command::Decline(id) => pick_transfer(state, id.as_deref(), Pick::Decline)
            .into_iter()
            .collect(),
        Command::Cancel(id) => pick_transfer(state, id.as_deref(), Pick::Cancel)
            .into_iter()
            .collect(),
        Command::Users => {
            list_users(state);
            vec![Effect::RefreshPeers]
        }
        Command::Help => {
            state.show_help = true;
            vec![]
        }
        Command::Clear => {
            state.clear();
            vec![]
        }
        Command::Quit => vec![Effect::Quit],
        Command::Shutdown => vec![Effect::Shutdown],
        Command::Invalid(why) => {
            state.note(LineKind::Error(why));
            vec![]
        }
    }
}

/// `/users`: who is here, as lines in the view.
fn list_users(state: &mut State) {
    let mut names: Vec<String> = state
        .pane_peers()
        .into_iter()
        .filter(|p| p.connected)
        .map(|p| p.nick.clone())
        .collect();
    if let Some(me) = &state.me {
        names.insert(0, format!("{} (you)", me.nick));
    }
    let others = state.peers.iter().filter(|p| !p.connected).count();
    let mut text = format!("{} here: {}", names.len(), names.join(", "));
    if others > 0 {
        text.push_str(&format!("; {others} more known, not connected"));
    }
    state.note(LineKind::Info(text));
}

/// `/send PATH [NICK]`: to NICK when the last word is a peer's nick,
/// else to the conversation's peer. `~/` is the home folder; a relative
/// path is the UI's working folder's.
fn send_files(state: &mut State, words: &str) -> Option<Effect> {
    let is_peer = |n: &str| state.peers.iter().any(|p| p.nick == n);
    let (path, nick) = match words.rsplit_once(char::is_whitespace) {
        Some((path, last)) if is_peer(last.strip_prefix('@').unwrap_or(last)) => (
            path.trim_end(),
            last.strip_prefix('@').unwrap_or(last).to_owned(),
        ),
        _ => match &state.buf().target {
            Target::Direct { nick, .. } => (words, nick.clone()),
            Target::Room(_) => {
                state.note(LineKind::Error(
                    "to whom? /send PATH NICK (or /send PATH in a conversation)".into(),
                ));
                return None;
            }
        },
    };
    let expanded = match path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map_or_else(
            || std::path::PathBuf::from(path),
            |h| std::path::PathBuf::from(h).join(rest),
        ),
        None => std::path::PathBuf::from(path),
    };
    let absolute = match std::path::absolute(&expanded) {
        Ok(p) => p,
        Err(e) => {
            state.note(LineKind::Error(format!("{path}: {e}")));
            return None;
        }
    };
    Some(Effect::Daemon(Ask::Files(shared::api::Call::Send(
        shared::api::SendParams {
            paths: vec![absolute.to_string_lossy().into_owned()],
            to: nick,
        },
    ))))
}

/// `/accept [ID]`, `/decline [ID]` (an offer to us) and `/cancel [ID]`
/// (any transfer under way): the one whose id starts with ID; without
/// one, the only one there is (a peer's offer that came a moment before
/// is never taken by mistake).
fn pick_transfer(state: &mut State, id: Option<&str>, call: Pick) -> Option<Effect> {
    use shared::api::{Call, TransferDirection, TransferParams, TransferState};
    let what = match call {
        Pick::Cancel => "transfer",
        Pick::Accept | Pick::Decline => "offer",
    };
    let candidates: Vec<&shared::api::TransferInfo> = state
        .transfers
        .iter()
        .filter(|t| match call {
            Pick::Cancel => !t.state.is_over(),
            Pick::Accept | Pick::Decline => {
                t.direction == TransferDirection::In && t.state == TransferState::Offered
            }
        })
        .filter(|t| id.is_none_or(|i| t.id.starts_with(i)))
        .collect();
    let chosen = match (id, candidates.as_slice()) {
        (_, [one]) => one.id.clone(),
        (Some(i), []) => {
            state.note(LineKind::Error(format!("no {what} has an id starting {i}")));
            return None;
        }
        (None, []) => {
            state.note(LineKind::Error(format!("no {what} to answer or stop")));
            return None;
        }
        (Some(i), _) => {
            state.note(LineKind::Error(format!(
                "{i} starts the ids of several; type more of it"
            )));
            return None;
        }
        (None, all) => {
            let ids: Vec<String> = all
                .iter()
                .map(|t| format!("{} ({})", short_id(&t.id), crate::format::transfer_what(t)))
                .collect();
            state.note(LineKind::Error(format!(
                "{} {what}s; say which: {}",
                ids.len(),
                ids.join(", ")
            )));
            return None;
        }
    };
    let params = TransferParams { id: chosen };
    Some(Effect::Daemon(Ask::Files(match call {
        Pick::Accept => Call::Accept(params),
        Pick::Decline => Call::Decline(params),
        Pick::Cancel => Call::Cancel(params),
    })))
}

/// What `/accept`, `/decline` and `/cancel` ask of the daemon.
#[derive(Debug, Clone, Copy)]
enum Pick {
    Accept,
    Decline,
    Cancel,
}

/// `/whois NICK` (or `/fingerprint` for ourselves): who a peer is, as far
/// as its key says, from the last `peers` answer.
fn whois(state: &mut State, nick: &str) {
    if let Some(me) = state
        .me
        .as_ref()
        .filter(|m| nick.is_empty() || m.nick == nick)
    {
        let text = format!("{} (you): fingerprint {}", me.nick, me.fingerprint);
        state.note(LineKind::Info(text));
        return;
    }
    let Some(p) = state.peers.iter().find(|p| p.nick == nick) else {
        state.note(LineKind::Error(format!("no peer is called {nick}")));
        return;
    };
    let trust = p.trust.map_or("unknown", Trust::as_str);
    let link = match (p.connected, p.encrypted) {
        (true, true) => "linked, encrypted",
        (true, false) => "linked, plaintext",
        (false, _) => "not linked",
    };
    let text = match &p.fingerprint {
        Some(f) => format!(
            "{} ({}): fingerprint {f}; {trust}; {link}",
            p.nick, p.peer_id
        ),
        None => format!("{} ({}): no key; {trust}; {link}", p.nick, p.peer_id),
    };
    let hint = (p.trust != Some(Trust::Verified) && p.fingerprint.is_some()).then(|| {
        format!(
            "compare it with what {} reads from `p2pchat fingerprint`, then /trust {}",
            p.nick, p.nick
        )
    });
    state.note(LineKind::Info(text));
    if let Some(hint) = hint {
        state.note(LineKind::Info(hint));
    }
}

fn daemon(state: &mut State, msg: DaemonMsg) -> Vec<Effect> {
    match msg {
        DaemonMsg::Attached {
            status,
            history,
            read,
            rooms,
            transfers,
        } => {
            if let Some(old) = &state.daemon_id
                && old != status.life()
            {
                state.note(LineKind::Info(if history.is_empty() {
                    "p2pchatd was restarted; nothing was missed".into()
                } else {
                    "p2pchatd was restarted; its history follows".into()
                }));
            } else if state.link == DaemonLink::Lost {
                state.note(LineKind::Info("reattached to p2pchatd".into()));
            }
            let ours = env!("CARGO_PKG_VERSION");
            state.systemd = status.systemd;
            if status.version != ours {
                let versions = format!(
                    "p2pchatd is version {}, this client is {ours}",
                    status.version
                );
                state.note(LineKind::Error(versions.clone()));
                state.restart_offer = Some(versions);
            }
            state.daemon_id = Some(status.life().to_owned());
            state.me = Some(Me {
                peer_id: status.peer_id,
                nick: status.nick,
                fingerprint: status.fingerprint,
            });
            state.rebuild_highlights();
            state.alone_since = (status.peers == 0).then(|| {
                state.clock.now()
                    - chrono::Duration::seconds(i64::try_from(status.uptime_s).unwrap_or(0))
            });
            state.link = DaemonLink::Connected;
            for r in rooms {
                state.open(Target::Room(r));
            }
            for e in &history {
                state.push_history(e);
            }
            if let Some(read) = read {
                state.mark_unread_after(read);
            }
            state.transfers = transfers;
            state.note_waiting_offers();
            vec![Effect::RefreshPeers]
        }
        DaemonMsg::Event(e) => {
            let refresh = matches!(
                e.body,
                EventBody::Join { .. }
                    | EventBody::Leave { .. }
                    | EventBody::Nick { .. }
                    | EventBody::Alert { .. }
                    | EventBody::Room { .. }
            );
            if let EventBody::Alert { text, .. } = &e.body {
                state.alert = Some(text.clone());
            }
            if let (EventBody::Nick { peer_id, new, .. }, Some(me)) = (&e.body, state.me.as_mut())
                && *peer_id == me.peer_id
            {
                me.nick.clone_from(new);
                state.rebuild_highlights();
            }
            let mut effects = Vec::new();
            if state.push_event(&e) {
                if state.looking_away() {
                    state.mentions += 1;
                }
                if state.settings.bell {
                    effects.push(Effect::Bell);
                }
            }
            if refresh {
                effects.push(Effect::RefreshPeers);
            }
            effects
        }
        DaemonMsg::Peers(p) => {
            state.peers = p;
            if state.connected() > 0 {
                state.alone_since = None;
            } else if state.alone_since.is_none() {
                state.alone_since = Some(state.clock.now());
            }
            vec![]
        }
        DaemonMsg::Lost(why) => {
            if state.link != DaemonLink::Lost {
                state.note(LineKind::Error(format!(
                    "lost p2pchatd ({why}); reconnecting"
                )));
            }
            state.link = DaemonLink::Lost;
            vec![]
        }
        DaemonMsg::Failed(why) => {
            state.note(LineKind::Error(why));
            vec![]
        }
        DaemonMsg::Found { words, hits } => {
            state.note(LineKind::Info(match hits.len() {
                0 => format!("search {words:?}: nothing stored holds every word"),
                1 => format!("search {words:?}: 1 line"),
                n => format!("search {words:?}: {n} lines, oldest first"),
            }));
            for e in &hits {
                state.note(LineKind::Info(format!(
                    "  {}",
                    crate::format::dated_line(e)
                )));
            }
            state.hits = hits.iter().map(|e| e.cursor).collect();
            state.hit = None;
            // To the newest hit in the scrollback; F3 goes on to older ones.
            let hits_newest_first: Vec<u64> = state.hits.iter().rev().copied().collect();
            let shown = hits_newest_first.into_iter().find(|&c| state.jump_to(c));
            if shown.is_none() && !hits.is_empty() {
                state.note(LineKind::Info(
                    "  (older than the scrollback: listed above)".into(),
                ));
            } else if state.hits.len() > 1 {
                state.note(LineKind::Info(
                    "  F3: the next older hit, Shift-F3: newer, Esc: back to the end".into(),
                ));
                // The note moved the view; jump again.
                if let Some(c) = state.hit {
                    state.jump_to(c);
                }
            }
            Vec::new()
        }
        DaemonMsg::Joined(room) => {
            state.joining.insert(room.clone());
            match state.open(Target::Room(room)) {
                Some(i) => state.switch_to(i),
                None => state.note(LineKind::Error("too many buffers open; /close some".into())),
            }
            vec![Effect::RefreshPeers]
        }
        DaemonMsg::RoomHistory { room, events } => {
            state.backfill(&Target::Room(room), &events);
            vec![]
        }
        DaemonMsg::Parted(room) => {
            let target = Target::Room(room.clone());
            if let Some(i) = state.buffers.iter().position(|b| b.target == target) {
                state.close(i);
            }
            state.note(LineKind::Info(format!("left {room}")));
            vec![Effect::RefreshPeers]
        }
        DaemonMsg::Rooms(rooms) => {
            for r in rooms {
                let mark = if r.joined { "*" } else { " " };
                let who = if r.peers.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.peers.join(", "))
                };
                state.note(LineKind::Info(format!(
                    "{mark} {} ({} here){who}",
                    r.name, r.members
                )));
                if let Some(t) = &r.topic {
                    state.note(LineKind::Info(format!("    topic: {t}")));
                }
            }
            state.note(LineKind::Info(
                "* = joined; /join ROOM joins one, /part leaves".into(),
            ));
            vec![]
        }
        DaemonMsg::Done(what) => {
            state.note(LineKind::Info(what));
            // Trust shown in the pane changed with it.
            vec![Effect::RefreshPeers]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::state::{Clock, LineKind, UNREAD};
    use crate::tui::theme::Theme;
    use chrono::{FixedOffset, TimeZone, Utc};
    use crossterm::event::{KeyEventState, MouseEvent};
    use shared::api::StatusInfo;

    fn state() -> State {
        let mut s = State::new(80, 12, Theme { color: true }, clock());
        attach(&mut s, "me_1", vec![]);
        s
    }

    /// A linked (or not) p2pchatd peer `nick`, with id `nick_1`.
    fn peer(nick: &str, connected: bool) -> PeerInfo {
        PeerInfo {
            peer_id: format!("{nick}_1"),
            nick: nick.into(),
            connected,
            encrypted: true,
            ..Default::default()
        }
    }

    /// The tests' lines are said on 2026-11-25, which is "today".
    fn clock() -> Clock {
        Clock::Fixed {
            tz: FixedOffset::east_opt(0).unwrap(),
            now: Utc.with_ymd_and_hms(2026, 11, 25, 12, 30, 0).unwrap(),
        }
    }

    fn status(peer_id: &str) -> StatusInfo {
        StatusInfo {
            peer_id: peer_id.into(),
            instance: String::new(),
            fingerprint: String::new(),
            nick: "me".into(),
            port: 8080,
            peers: 0,
            known_peers: 0,
            version: env!("CARGO_PKG_VERSION").into(),
            socket: "/tmp/s".into(),
            pid: 1,
            uptime_s: 0,
            history: 0,
            history_capacity: 1000,
            multicast: None,
            interfaces: vec![],
            listen: "0.0.0.0".into(),
            store: None,
            away: None,
            systemd: false,
        }
    }

    fn attach(s: &mut State, id: &str, history: Vec<Event>) -> Vec<Effect> {
        update(
            s,
            Action::Daemon(DaemonMsg::Attached {
                status: Box::new(status(id)),
                history,
                read: None,
                rooms: Vec::new(),
                transfers: Vec::new(),
            }),
        )
    }

    fn key(code: KeyCode, mods: KeyModifiers) -> Action {
        Action::Key(KeyEvent {
            code,
            modifiers: mods,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        })
    }

    fn press(s: &mut State, code: KeyCode) -> Vec<Effect> {
        update(s, key(code, KeyModifiers::NONE))
    }

    fn ctrl(s: &mut State, c: char) -> Vec<Effect> {
        update(s, key(KeyCode::Char(c), KeyModifiers::CONTROL))
    }

    fn typed(s: &mut State, text: &str) {
        for c in text.chars() {
            press(s, KeyCode::Char(c));
        }
    }

    fn enter(s: &mut State, text: &str) -> Vec<Effect> {
        typed(s, text);
        press(s, KeyCode::Enter)
    }

    fn msg(cursor: u64, peer: &str, text: &str) -> Event {
        Event {
            cursor,
            ts: Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap(),
            body: EventBody::Message {
                id: format!("m{cursor}"),
                peer_id: peer.into(),
                nick: peer.into(),
                text: text.into(),
                action: false,
                fingerprint: None,
                trust: None,
                seq: None,
                sent: None,
                late: false,
                room: None,
                to: None,
            },
        }
    }

    fn last_line(s: &State) -> &LineKind {
        &s.buf().lines.back().unwrap().kind
    }

    /// A line of `peer` in `room`, or to us (`dm`).
    fn said_in(cursor: u64, peer: &str, room: Option<&str>, dm: bool) -> Action {
        let mut e = msg(cursor, peer, &format!("line {cursor}"));
        if let EventBody::Message { room: r, to, .. } = &mut e.body {
            *r = room.map(str::to_owned);
            if dm {
                *to = Some(shared::event::Dm {
                    peer_id: "me_1".into(),
                    nick: "me".into(),
                });
                *r = None;
            }
        }
        Action::Daemon(DaemonMsg::Event(Box::new(e)))
    }

    /// `peer` (nick: the id before `_`) joined or left `room`.
    fn room_event(cursor: u64, peer: &str, room: &str, joined: bool) -> Action {
        Action::Daemon(DaemonMsg::Event(Box::new(Event {
            cursor,
            ts: Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap(),
            body: EventBody::Room {
                peer_id: peer.into(),
                nick: peer.split('_').next().unwrap_or(peer).into(),
                room: room.into(),
                joined,
            },
        })))
    }

    fn alt(s: &mut State, code: KeyCode) -> Vec<Effect> {
        update(s, key(code, KeyModifiers::ALT))
    }

    fn offer_event(id: &str, state: shared::api::TransferState) -> Action {
        Action::Daemon(DaemonMsg::Event(Box::new(Event {
            cursor: 1,
            ts: Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap(),
            body: EventBody::Transfer(Box::new(shared::api::TransferInfo {
                id: id.into(),
                direction: shared::api::TransferDirection::In,
                peer_id: "bob_1".into(),
                nick: "bob".into(),
                names: vec!["report.pdf".into()],
                files: 1,
                bytes: 3 << 20,
                done: 0,
                state,
                reason: None,
                rate: 0,
                folder: None,
                transferred: 0,
            })),
        })))
    }

    /// An offer shows with how to answer it; `/accept` takes the only one
    /// waiting, and asks which when several do.
    #[test]
    fn offers_are_answered_by_id_or_when_alone() {
        use shared::api::{Call, TransferParams, TransferState};
        let mut s = state();
        attach(&mut s, "d1", vec![]);
        update(
            &mut s,
            offer_event("aaaa11112222333a", TransferState::Offered),
        );
        assert_eq!(
            last_line(&s).body(),
            "report.pdf (3.0 MiB) from bob: waiting for you to accept — /accept aaaa11 or /decline aaaa11"
        );
        assert_eq!(s.transfer_rows(), 1);
        update(
            &mut s,
            offer_event("bbbb11112222333b", TransferState::Offered),
        );
        assert!(enter(&mut s, "/accept").is_empty());
        assert!(last_line(&s).body().contains("2 offers; say which"));
        let accept = |id: &str| {
            vec![Effect::Daemon(Ask::Files(Call::Accept(TransferParams {
                id: id.into(),
            })))]
        };
        assert_eq!(enter(&mut s, "/accept bbbb"), accept("bbbb11112222333b"));
        update(&mut s, offer_event("bbbb11112222333b", TransferState::Done));
        assert_eq!(enter(&mut s, "/accept"), accept("aaaa11112222333a"));
        assert!(enter(&mut s, "/decline cccc").is_empty());
        assert!(
            last_line(&s)
                .body()
                .contains("no offer has an id starting cccc")
        );
    }

    fn names(s: &State) -> Vec<String> {
        s.buffers.iter().map(|b| b.target.name()).collect()
    }

    /// A room of ours has a buffer; its lines go there and count as unread
    /// until it is shown (Alt-N, Alt-arrows, Ctrl-N/P, a click), with the
    /// unread rule above the first; each buffer keeps its scroll.
    #[test]
    fn rooms_have_buffers_with_unread_counts_and_keys_to_switch() {
        let mut s = State::new(80, 12, Theme { color: true }, clock());
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Attached {
                status: Box::new(status("me_1")),
                history: vec![],
                read: None,
                rooms: vec!["#ops".into()],
                transfers: Vec::new(),
            }),
        );
        assert_eq!(names(&s), ["#general", "#ops"]);
        assert!(s.tabs_visible());
        update(&mut s, said_in(1, "bob", Some("#ops"), false));
        update(&mut s, said_in(2, "bob", Some("#ops"), false));
        update(&mut s, said_in(3, "bob", Some("#general"), false));
        assert_eq!((s.buffers[1].unread, s.buffers[1].mentioned), (2, 0));
        assert_eq!(s.buffers[0].unread, 0, "the buffer on screen has none");
        assert!(matches!(last_line(&s), LineKind::Message { text, .. } if text == "line 3"));
        alt(&mut s, KeyCode::Char('2'));
        assert_eq!(s.current, 1);
        assert_eq!(s.buffers[1].unread, 0, "read once shown");
        let bodies: Vec<String> = s.buf().lines.iter().map(|l| l.kind.body()).collect();
        assert_eq!(bodies, [UNREAD, "line 1", "line 2"]);
        // Typed lines go to the room on screen.
        assert_eq!(
            enter(&mut s, "hi ops"),
            [Effect::Daemon(Ask::Say {
                text: "hi ops".into(),
                action: false,
                room: Some("#ops".into()),
                to: None
            })]
        );
        // Round and round, both ways.
        alt(&mut s, KeyCode::Right);
        assert_eq!(s.current, 0);
        alt(&mut s, KeyCode::Left);
        assert_eq!(s.current, 1);
        ctrl(&mut s, 'n');
        assert_eq!(s.current, 0);
        ctrl(&mut s, 'p');
        assert_eq!(s.current, 1);
        alt(&mut s, KeyCode::Char('9'));
        assert_eq!(s.current, 1, "no ninth buffer");
        // The rule left with the reader; the next unread gets a new one.
        alt(&mut s, KeyCode::Char('1'));
        assert!(
            s.buffers[1]
                .lines
                .iter()
                .all(|l| !matches!(&l.kind, LineKind::Rule(r) if r == UNREAD))
        );
        // Scroll is kept per buffer.
        for c in 10..30 {
            update(&mut s, said_in(c, "bob", None, false));
        }
        press(&mut s, KeyCode::PageUp);
        let scrolled = s.buf().scroll;
        assert!(scrolled > 0);
        alt(&mut s, KeyCode::Char('2'));
        assert_eq!(s.buf().scroll, 0);
        alt(&mut s, KeyCode::Char('1'));
        assert_eq!(s.buf().scroll, scrolled, "#general kept its place");
        // A click on a label shows its buffer (the mouse must be on).
        let click = |col| {
            Action::Mouse(MouseEvent {
                kind: MouseEventKind::Down(crossterm::event::MouseButton::Left),
                column: col,
                row: 0,
                modifiers: KeyModifiers::NONE,
            })
        };
        update(&mut s, click(14));
        assert_eq!(s.current, 1, "the second label");
        update(&mut s, click(2));
        assert_eq!(s.current, 0);
    }

    /// A direct message opens a buffer of its own, counts as a mention and
    /// rings; /query opens and shows one, where typed lines go to the
    /// peer; /msg sends without switching; /close and /part close it.
    #[test]
    fn direct_messages_open_their_own_buffers() {
        let mut s = state();
        s.peers = vec![peer("bob", true), peer("cat", true)];
        let fx = update(&mut s, said_in(1, "bob_1", None, true));
        assert!(fx.contains(&Effect::Bell), "{fx:?}");
        assert_eq!(names(&s), ["#general", "@bob_1"]);
        assert_eq!((s.buffers[1].unread, s.buffers[1].mentioned), (1, 1));
        assert_eq!(s.current, 0, "a DM does not steal the view");

        assert_eq!(
            enter(&mut s, "/msg cat see you"),
            [Effect::Daemon(Ask::Say {
                text: "see you".into(),
                action: false,
                room: None,
                to: Some("cat".into())
            })]
        );
        assert_eq!(names(&s), ["#general", "@bob_1", "@cat"]);
        assert_eq!(s.current, 0);
        assert!(enter(&mut s, "/msg nobody hi").is_empty());
        assert!(matches!(last_line(&s), LineKind::Error(e) if e.contains("nobody")));

        assert!(enter(&mut s, "/query cat").is_empty());
        assert_eq!(s.current, 2);
        assert_eq!(
            enter(&mut s, "/me waves"),
            [Effect::Daemon(Ask::Say {
                text: "waves".into(),
                action: true,
                room: None,
                to: Some("cat".into())
            })]
        );
        // Our own DM to cat lands in cat's buffer.
        let mut mine = msg(5, "me_1", "to cat");
        if let EventBody::Message { to, .. } = &mut mine.body {
            *to = Some(shared::event::Dm {
                peer_id: "cat_1".into(),
                nick: "cat".into(),
            });
        }
        update(&mut s, Action::Daemon(DaemonMsg::Event(Box::new(mine))));
        assert!(
            matches!(last_line(&s), LineKind::Message { text, own: true, .. } if text == "to cat")
        );
        // The users pane shows the partner alone.
        let pane: Vec<&str> = s.pane_peers().iter().map(|p| p.nick.as_str()).collect();
        assert_eq!(pane, ["cat"]);
        assert!(enter(&mut s, "/close").is_empty());
        assert_eq!(names(&s), ["#general", "@bob_1"]);
        alt(&mut s, KeyCode::Char('2'));
        assert!(enter(&mut s, "/part").is_empty());
        assert_eq!(names(&s), ["#general"]);
        assert!(enter(&mut s, "/close").is_empty());
        assert!(matches!(last_line(&s), LineKind::Error(e) if e.contains("stays open")));
    }

    /// At attach, history is not unread unless the daemon says where the
    /// user left off: then each buffer counts what came after, with one
    /// rule. Lines of a room we are no longer in open nothing; our own
    /// part closes the room's buffer.
    #[test]
    fn attach_counts_unread_from_where_the_user_left_off() {
        let history = |read| {
            let mut s = State::new(80, 12, Theme { color: true }, clock());
            let mut events: Vec<Event> = (1..=4)
                .map(|c| {
                    let Action::Daemon(DaemonMsg::Event(e)) =
                        said_in(c, "bob", Some("#ops"), c == 4)
                    else {
                        unreachable!()
                    };
                    *e
                })
                .collect();
            events.push(msg(5, "bob", "in a room we left"));
            if let EventBody::Message { room, .. } = &mut events[4].body {
                *room = Some("#old".into());
            }
            update(
                &mut s,
                Action::Daemon(DaemonMsg::Attached {
                    status: Box::new(status("me_1")),
                    history: events,
                    read,
                    rooms: vec!["#ops".into()],
                    transfers: Vec::new(),
                }),
            );
            s
        };
        let s = history(None);
        assert_eq!(names(&s), ["#general", "#ops", "@bob"], "no #old");
        assert!(s.buffers.iter().all(|b| b.unread == 0 && b.mentioned == 0));
        let s = history(Some(2));
        assert_eq!((s.buffers[1].unread, s.buffers[1].mentioned), (1, 0));
        assert_eq!((s.buffers[2].unread, s.buffers[2].mentioned), (1, 1));
        let rules = |b: &crate::tui::state::Buffer| {
            b.lines
                .iter()
                .filter(|l| matches!(&l.kind, LineKind::Rule(r) if r == UNREAD))
                .count()
        };
        assert_eq!(rules(&s.buffers[1]), 1);
        // Our own part, from a shell: the buffer goes.
        let mut s = s;
        update(&mut s, room_event(9, "me_1", "#ops", false));
        assert_eq!(names(&s), ["#general", "@bob"]);
        update(&mut s, said_in(10, "bob", Some("#ops"), false));
        assert_eq!(names(&s), ["#general", "@bob"], "a left room stays shut");
    }

    /// A search hit in another buffer shows that buffer; a room's history
    /// loaded on join goes above what it shows, once; the restart offer
    /// takes a bare n or y only; with one buffer Alt-arrows move by word;
    /// /query takes `@nick` and prefers the linked peer.
    #[test]
    fn search_jumps_across_buffers_and_keys_keep_their_old_meaning() {
        let mut s = state();
        s.peers = vec![peer("bob", false), {
            let mut p = peer("bob", true);
            p.peer_id = "bob_2".into();
            p
        }];
        typed(&mut s, "one two");
        alt(&mut s, KeyCode::Left);
        assert_eq!(s.input.cursor(), 4, "moved by word");
        update(&mut s, Action::Daemon(DaemonMsg::Joined("#ops".into())));
        update(&mut s, said_in(20, "bob", Some("#ops"), false));
        update(
            &mut s,
            Action::Daemon(DaemonMsg::RoomHistory {
                room: "#ops".into(),
                events: (18..=20)
                    .map(|c| {
                        let Action::Daemon(DaemonMsg::Event(e)) =
                            said_in(c, "bob", Some("#ops"), false)
                        else {
                            unreachable!()
                        };
                        *e
                    })
                    .collect(),
            }),
        );
        let texts: Vec<String> = s
            .buf()
            .lines
            .iter()
            .filter(|l| matches!(l.kind, LineKind::Message { .. }))
            .map(|l| l.kind.body())
            .collect();
        assert_eq!(texts, ["line 18", "line 19", "line 20"]);
        alt(&mut s, KeyCode::Char('1'));
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Found {
                words: "line".into(),
                hits: vec![msg(19, "bob", "line 19")],
            }),
        );
        assert_eq!((s.current, s.hit), (1, Some(19)), "to #ops, at the hit");
        // A restart offer: Ctrl-N switches, it does not answer.
        s.restart_offer = Some("versions differ".into());
        s.input = "".into();
        let before = s.current;
        ctrl(&mut s, 'n');
        assert!(s.restart_offer.is_some());
        assert_ne!(s.current, before);
        press(&mut s, KeyCode::Char('n'));
        assert!(s.restart_offer.is_none());
        assert!(enter(&mut s, "/query @bob").is_empty());
        assert!(matches!(&s.buf().target, Target::Direct { peer_id, .. } if peer_id == "bob_2"));
    }

    /// A room's history loaded on join goes above, with a day rule where
    /// its day ends, older than our own join only, the reader's place
    /// kept; a part of ours that comes after we joined again closes
    /// nothing.
    #[test]
    fn a_joined_rooms_history_goes_above_in_order() {
        let mut s = state();
        update(&mut s, Action::Daemon(DaemonMsg::Joined("#ops".into())));
        update(&mut s, room_event(50, "me_1", "#ops", true));
        update(&mut s, said_in(51, "bob", Some("#ops"), false));
        let yesterday = |c: u64| {
            let Action::Daemon(DaemonMsg::Event(mut e)) = said_in(c, "bob", Some("#ops"), false)
            else {
                unreachable!()
            };
            e.ts = Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap();
            *e
        };
        let events = vec![yesterday(10), yesterday(11), {
            // Said after our join: it comes live, not from here.
            let Action::Daemon(DaemonMsg::Event(e)) = said_in(52, "bob", Some("#ops"), false)
            else {
                unreachable!()
            };
            *e
        }];
        // Our join is in what the daemon held for the room.
        let mut held = events;
        held.insert(2, {
            let Action::Daemon(DaemonMsg::Event(e)) = room_event(50, "me_1", "#ops", true) else {
                unreachable!()
            };
            *e
        });
        update(
            &mut s,
            Action::Daemon(DaemonMsg::RoomHistory {
                room: "#ops".into(),
                events: held,
            }),
        );
        let bodies: Vec<String> = s.buf().lines.iter().map(|l| l.kind.body()).collect();
        assert_eq!(
            bodies,
            [
                "Tuesday, 24 November 2026",
                "line 10",
                "line 11",
                "Wednesday, 25 November 2026",
                "me joined #ops",
                "line 51"
            ]
        );
        assert_eq!(s.buf().scroll, 0);
        // Out and in again fast: the daemon's answers come before the
        // events; the part's event then closes nothing, the join's opens.
        update(&mut s, Action::Daemon(DaemonMsg::Parted("#ops".into())));
        update(&mut s, Action::Daemon(DaemonMsg::Joined("#ops".into())));
        update(&mut s, room_event(55, "me_1", "#ops", false));
        assert_eq!(names(&s), ["#general", "#ops"]);
        update(&mut s, room_event(60, "me_1", "#ops", true));
        assert!(s.joining.is_empty());
        update(&mut s, room_event(70, "me_1", "#ops", false));
        assert_eq!(names(&s), ["#general"], "a part of ours then closes it");
    }

    /// /join asks the daemon, which answers with the room: its buffer
    /// opens and shows; /part (the room on screen, or a named one) asks
    /// to leave, and the buffer closes when the daemon says so; /rooms
    /// lists; the users pane shows the room's members.
    #[test]
    fn join_part_and_rooms_go_through_the_daemon() {
        let mut s = state();
        let mut bob = peer("bob", true);
        bob.rooms = vec!["#ops".into()];
        s.peers = vec![bob, peer("cat", true)];
        assert_eq!(
            enter(&mut s, "/join #Ops"),
            [Effect::Daemon(Ask::Join("#ops".into()))]
        );
        assert_eq!(names(&s), ["#general"], "not before the daemon says so");
        update(&mut s, Action::Daemon(DaemonMsg::Joined("#ops".into())));
        assert_eq!(
            (names(&s), s.current),
            (vec!["#general".into(), "#ops".into()], 1)
        );
        let pane: Vec<&str> = s.pane_peers().iter().map(|p| p.nick.as_str()).collect();
        assert_eq!(pane, ["bob"], "the room's members");
        // Someone else joining a room we show is said there.
        update(&mut s, room_event(9, "cat_1", "#ops", true));
        assert_eq!(last_line(&s).body(), "cat joined #ops");
        // A room we are not in opens nothing.
        update(&mut s, room_event(10, "cat_1", "#build", true));
        assert_eq!(names(&s).len(), 2);
        assert_eq!(enter(&mut s, "/rooms"), [Effect::Daemon(Ask::Rooms)]);
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Rooms(vec![RoomInfo {
                name: "#build".into(),
                joined: false,
                members: 1,
                peers: vec!["cat".into()],
                topic: Some("the CI bot".into()),
            }])),
        );
        let bodies: Vec<String> = s.buf().lines.iter().map(|l| l.kind.body()).collect();
        assert!(
            bodies.iter().any(|b| b == "  #build (1 here): cat"),
            "{bodies:?}"
        );
        assert!(
            bodies.iter().any(|b| b == "    topic: the CI bot"),
            "{bodies:?}"
        );
        // The topic: asked, set, and said in the room when someone sets it.
        assert_eq!(
            enter(&mut s, "/topic"),
            [Effect::Daemon(Ask::Topic {
                room: "#ops".into(),
                text: None
            })]
        );
        assert_eq!(
            enter(&mut s, "/topic deploys on Fridays"),
            [Effect::Daemon(Ask::Topic {
                room: "#ops".into(),
                text: Some("deploys on Fridays".into())
            })]
        );
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Event(Box::new(Event {
                cursor: 11,
                ts: Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap(),
                body: EventBody::Topic {
                    peer_id: "cat_1".into(),
                    nick: "cat".into(),
                    room: "#ops".into(),
                    text: "deploys on Fridays".into(),
                },
            }))),
        );
        assert_eq!(
            last_line(&s).body(),
            "cat set the topic: deploys on Fridays"
        );
        assert_eq!(
            enter(&mut s, "/part"),
            [Effect::Daemon(Ask::Part("#ops".into()))]
        );
        assert_eq!(
            enter(&mut s, "/part #build"),
            [Effect::Daemon(Ask::Part("#build".into()))]
        );
        update(&mut s, Action::Daemon(DaemonMsg::Parted("#ops".into())));
        assert_eq!((names(&s), s.current), (vec!["#general".into()], 0));
        assert!(!s.tabs_visible());
    }

    #[test]
    fn search_asks_the_daemon_and_lists_the_hits() {
        let mut s = state();
        let fx = enter(&mut s, "/search deploy");
        assert_eq!(fx, vec![Effect::Daemon(Ask::Search("deploy".into()))]);
        let hit = msg(9, "amy", "deploy friday");
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Found {
                words: "deploy".into(),
                hits: vec![hit],
            }),
        );
        let n = s.buf().lines.len();
        assert_eq!(
            s.buf().lines[n - 3].kind,
            LineKind::Info("search \"deploy\": 1 line".into())
        );
        let LineKind::Info(line) = &s.buf().lines[n - 2].kind else {
            panic!("{:?}", s.buf().lines[n - 2].kind)
        };
        assert!(line.ends_with("<amy> deploy friday"), "{line}");
        // Not in this view (it came before the client attached): said so.
        assert_eq!(
            *last_line(&s),
            LineKind::Info("  (older than the scrollback: listed above)".into())
        );
        assert_eq!(s.hit, None);
    }

    #[test]
    fn search_jumps_to_hits_in_the_view_and_f3_walks_them() {
        let mut s = state();
        for i in 1..=200u64 {
            let text = if i == 20 || i == 150 {
                format!("deploy number {i}")
            } else {
                format!("line {i}")
            };
            update(
                &mut s,
                Action::Daemon(DaemonMsg::Event(Box::new(msg(i, "amy", &text)))),
            );
        }
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Found {
                words: "deploy".into(),
                hits: vec![
                    msg(20, "amy", "deploy number 20"),
                    msg(150, "amy", "deploy number 150"),
                ],
            }),
        );
        let on_screen = |s: &State, cursor: u64| {
            let i = s
                .buf()
                .lines
                .iter()
                .position(|l| l.cursor == Some(cursor))
                .unwrap();
            let below: usize = s.buf().lines.iter().skip(i + 1).map(|l| l.rows).sum();
            below >= s.buf().scroll && below < s.buf().scroll + s.message_height()
        };
        assert_eq!(s.hit, Some(150), "the newest hit first");
        assert!(s.buf().scroll > 0 && on_screen(&s, 150));
        press(&mut s, KeyCode::F(3));
        assert_eq!(s.hit, Some(20));
        assert!(on_screen(&s, 20));
        press(&mut s, KeyCode::F(3));
        assert_eq!(s.hit, Some(150), "round and round");
        press(&mut s, KeyCode::Esc);
        assert_eq!((s.hit, s.buf().scroll), (None, 0), "back at the end");
    }

    #[test]
    fn an_alert_stays_up_until_esc() {
        let mut s = state();
        let alert = Event {
            cursor: 1,
            ts: Utc::now(),
            body: EventBody::Alert {
                peer_id: "k1".into(),
                text: "bob's key changed".into(),
            },
        };
        let fx = update(&mut s, Action::Daemon(DaemonMsg::Event(Box::new(alert))));
        assert_eq!(
            fx,
            vec![Effect::RefreshPeers],
            "the pane shows the conflict"
        );
        assert_eq!(s.alert.as_deref(), Some("bob's key changed"));
        assert_eq!(*last_line(&s), LineKind::Alert("bob's key changed".into()));
        // Typing, sending and scrolling leave it up...
        enter(&mut s, "hello");
        press(&mut s, KeyCode::PageUp);
        assert!(s.alert.is_some());
        // ... only Esc takes it down.
        press(&mut s, KeyCode::Esc);
        assert!(s.alert.is_none());
    }

    #[test]
    fn trust_commands_go_to_the_daemon_and_whois_reads_the_peers() {
        let mut s = state();
        assert_eq!(
            enter(&mut s, "/trust bob"),
            vec![Effect::Daemon(Ask::Trust("bob".into()))]
        );
        assert_eq!(
            enter(&mut s, "/forget bob"),
            vec![Effect::Daemon(Ask::Forget("bob".into()))]
        );
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Peers(vec![PeerInfo {
                peer_id: "k2".into(),
                nick: "bob".into(),
                connected: true,
                encrypted: true,
                fingerprint: Some("11111 22222 33333 44444 55555 66666".into()),
                trust: Some(Trust::Pinned),
                ..Default::default()
            }])),
        );
        enter(&mut s, "/whois bob");
        let lines: Vec<String> = s.buf().lines.iter().map(|l| l.kind.body()).collect();
        let n = lines.len();
        assert_eq!(
            lines[n - 2],
            "bob (k2): fingerprint 11111 22222 33333 44444 55555 66666; pinned; linked, encrypted"
        );
        assert!(lines[n - 1].contains("/trust bob"), "{lines:?}");
        enter(&mut s, "/whois nobody");
        assert!(matches!(last_line(&s), LineKind::Error(e) if e.contains("nobody")));
        enter(&mut s, "/fingerprint");
        assert!(
            matches!(last_line(&s), LineKind::Info(t) if t.starts_with("me (you): fingerprint"))
        );
    }

    #[test]
    fn enter_sends_text_and_clears_the_input() {
        let mut s = state();
        assert_eq!(
            enter(&mut s, "hello"),
            vec![Effect::Daemon(Ask::Say {
                text: "hello".into(),
                action: false,
                room: None,
                to: None,
            })]
        );
        assert_eq!(s.input.value(), "");
        assert_eq!(s.sent, vec!["hello"]);
        assert!(enter(&mut s, "").is_empty(), "a blank line sends nothing");
        assert!(enter(&mut s, "   ").is_empty());
    }

    #[test]
    fn every_command() {
        let mut s = state();
        assert_eq!(
            enter(&mut s, "/me waves"),
            vec![Effect::Daemon(Ask::Say {
                text: "waves".into(),
                action: true,
                room: None,
                to: None,
            })]
        );
        assert_eq!(
            enter(&mut s, "/nick bob"),
            vec![Effect::Daemon(Ask::Nick("bob".into()))]
        );
        assert_eq!(
            enter(&mut s, "//etc"),
            vec![Effect::Daemon(Ask::Say {
                text: "/etc".into(),
                action: false,
                room: None,
                to: None,
            })]
        );
        assert_eq!(enter(&mut s, "/quit"), vec![Effect::Quit]);
        assert_eq!(enter(&mut s, "/q"), vec![Effect::Quit]);
        assert_eq!(enter(&mut s, "/shutdown"), vec![Effect::Shutdown]);

        assert!(enter(&mut s, "/help").is_empty());
        assert!(s.show_help);
        press(&mut s, KeyCode::Esc);
        assert!(!s.show_help);

        assert!(enter(&mut s, "/nick two words").is_empty());
        assert!(matches!(last_line(&s), LineKind::Error(m) if m.contains("whitespace")));
        assert!(enter(&mut s, "/me").is_empty());
        assert!(matches!(last_line(&s), LineKind::Error(m) if m.contains("usage: /me")));
        assert!(enter(&mut s, "/bogus").is_empty());
        assert!(
            matches!(last_line(&s), LineKind::Error(m) if m.contains("unknown command /bogus"))
        );

        s.peers = vec![PeerInfo {
            peer_id: "b".into(),
            nick: "bob".into(),
            connected: true,
            ..Default::default()
        }];
        assert_eq!(enter(&mut s, "/users"), vec![Effect::RefreshPeers]);
        assert!(matches!(last_line(&s), LineKind::Info(m) if m == "2 here: me (you), bob"));
        assert_eq!(enter(&mut s, "/who"), vec![Effect::RefreshPeers]);

        assert!(!s.buf().lines.is_empty());
        assert!(enter(&mut s, "/clear").is_empty());
        assert!(s.buf().lines.is_empty() && s.buf().total_rows == 0);
    }

    #[test]
    fn up_and_down_recall_sent_lines_and_the_draft() {
        let mut s = state();
        enter(&mut s, "one");
        enter(&mut s, "two");
        typed(&mut s, "dra");
        press(&mut s, KeyCode::Up);
        assert_eq!(s.input.value(), "two");
        press(&mut s, KeyCode::Up);
        assert_eq!(s.input.value(), "one");
        press(&mut s, KeyCode::Up);
        assert_eq!(s.input.value(), "one", "stays at the oldest");
        press(&mut s, KeyCode::Down);
        assert_eq!(s.input.value(), "two");
        press(&mut s, KeyCode::Down);
        assert_eq!(s.input.value(), "dra", "back to the draft");
        press(&mut s, KeyCode::Down);
        assert_eq!(s.input.value(), "dra");
        assert_eq!(
            enter(&mut s, ""),
            vec![Effect::Daemon(Ask::Say {
                text: "dra".into(),
                action: false,
                room: None,
                to: None,
            })]
        );
        enter(&mut s, "dra");
        assert_eq!(s.sent, vec!["one", "two", "dra"], "no repeats in a row");
    }

    #[test]
    fn editing_keys() {
        let mut s = state();
        typed(&mut s, "hello big world");
        update(&mut s, key(KeyCode::Left, KeyModifiers::CONTROL));
        update(&mut s, key(KeyCode::Left, KeyModifiers::CONTROL));
        typed(&mut s, "X");
        assert_eq!(s.input.value(), "hello Xbig world");
        ctrl(&mut s, 'a');
        typed(&mut s, ">");
        ctrl(&mut s, 'e');
        typed(&mut s, "!");
        assert_eq!(s.input.value(), ">hello Xbig world!");
        ctrl(&mut s, 'w');
        assert_eq!(s.input.value(), ">hello Xbig ");
        update(&mut s, key(KeyCode::Char('b'), KeyModifiers::ALT));
        update(&mut s, key(KeyCode::Char('f'), KeyModifiers::ALT));
        press(&mut s, KeyCode::Backspace);
        press(&mut s, KeyCode::Left);
        press(&mut s, KeyCode::Left);
        press(&mut s, KeyCode::Delete);
        press(&mut s, KeyCode::Right);
        assert_eq!(s.input.value(), ">hello Xbg");
        ctrl(&mut s, 'a');
        press(&mut s, KeyCode::Right);
        ctrl(&mut s, 'k');
        assert_eq!(s.input.value(), ">");
        typed(&mut s, "abc");
        press(&mut s, KeyCode::Left);
        ctrl(&mut s, 'u');
        assert_eq!(s.input.value(), "c");
        assert!(
            ctrl(&mut s, 'd').is_empty(),
            "Ctrl-D deletes while there is text"
        );
        ctrl(&mut s, 'a');
        ctrl(&mut s, 'd');
        assert_eq!(s.input.value(), "");
        assert_eq!(
            ctrl(&mut s, 'd'),
            vec![Effect::Quit],
            "and quits on an empty line"
        );
        assert_eq!(ctrl(&mut s, 'c'), vec![Effect::Quit]);
        // Releases are not presses.
        let mut release = key(KeyCode::Char('x'), KeyModifiers::NONE);
        if let Action::Key(k) = &mut release {
            k.kind = KeyEventKind::Release;
        }
        update(&mut s, release);
        assert_eq!(s.input.value(), "");
    }

    #[test]
    fn a_one_line_paste_is_edited_and_many_lines_ask_first() {
        let mut s = state();
        update(&mut s, Action::Paste("c\td\u{1b}\n".into()));
        assert_eq!(s.input.value(), "c d", "one line, cleaned, to edit");
        assert_eq!(s.paste, None);

        let mut s = state();
        update(&mut s, Action::Paste("a\nb\r\n\r\nc\n".into()));
        assert_eq!(s.input.value(), "", "never glued into one line");
        assert_eq!(
            s.banner().map(|b| b.0),
            Some("paste of 3 lines: Enter sends each as a message".into())
        );
        assert_eq!(press(&mut s, KeyCode::Char('x')), vec![], "other keys wait");
        let said = press(&mut s, KeyCode::Enter);
        let texts: Vec<&str> = said
            .iter()
            .map(|e| match e {
                Effect::Daemon(Ask::Say {
                    text,
                    action: false,
                    room: None,
                    to: None,
                }) => text.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["a", "b", "c"]);
        assert_eq!(s.banner(), None);

        update(&mut s, Action::Paste("1\n2".into()));
        assert_eq!(ctrl(&mut s, 'c'), vec![Effect::Quit], "Ctrl-C still quits");
        assert_eq!(press(&mut s, KeyCode::Esc), vec![]);
        assert_eq!(s.paste, None);
        assert!(matches!(last_line(&s), LineKind::Info(t) if t == "paste dropped"));

        let huge = "x\n".repeat(MAX_PASTE_LINES + 1);
        update(&mut s, Action::Paste(huge));
        assert_eq!(s.paste, None, "refused, not queued");
        assert!(matches!(last_line(&s), LineKind::Error(t) if t.contains("101 lines")));
    }

    #[test]
    fn tab_completes_nicks_and_commands_and_cycles() {
        let mut s = state();
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Peers(vec![
                peer("bobby", false),
                peer("bob", true),
                peer("carol", true),
            ])),
        );
        for c in "bo".chars() {
            press(&mut s, KeyCode::Char(c));
        }
        press(&mut s, KeyCode::Tab);
        assert_eq!(s.input.value(), "bob: ", "at the line start, with `: `");
        press(&mut s, KeyCode::Tab);
        assert_eq!(s.input.value(), "bobby: ", "again: the next one");
        press(&mut s, KeyCode::Tab);
        assert_eq!(s.input.value(), "bob: ", "round and round");
        update(&mut s, key(KeyCode::BackTab, KeyModifiers::SHIFT));
        assert_eq!(s.input.value(), "bobby: ");
        for c in "hi CA".chars() {
            press(&mut s, KeyCode::Char(c));
        }
        press(&mut s, KeyCode::Tab);
        assert_eq!(s.input.value(), "bobby: hi carol ", "mid-line: a space");

        let mut s = state();
        for c in "/ni".chars() {
            press(&mut s, KeyCode::Char(c));
        }
        press(&mut s, KeyCode::Tab);
        assert_eq!(s.input.value(), "/nick ");
        let mut s = state();
        press(&mut s, KeyCode::Char('/'));
        press(&mut s, KeyCode::Char('w'));
        press(&mut s, KeyCode::Tab);
        press(&mut s, KeyCode::Tab);
        assert_eq!(s.input.value(), "/whois ", "/who, then /whois");
        press(&mut s, KeyCode::Char('x'));
        press(&mut s, KeyCode::Tab);
        assert_eq!(s.input.value(), "/whois x", "no candidate: nothing changes");
    }

    #[test]
    fn mentions_ring_count_and_follow_the_nick() {
        let mut s = state();
        s.settings.highlight = vec!["deploy".into()];
        s.rebuild_highlights();
        let fx = update(
            &mut s,
            Action::Daemon(DaemonMsg::Event(Box::new(msg(1, "bob_1", "hey me, look")))),
        );
        assert_eq!(fx, vec![Effect::Bell], "our nick rings");
        assert!(matches!(
            last_line(&s),
            LineKind::Message { mention: true, .. }
        ));
        assert_eq!(s.mentions, 0, "seen: at the bottom, focused");
        let fx = update(
            &mut s,
            Action::Daemon(DaemonMsg::Event(Box::new(msg(2, "bob_1", "memo")))),
        );
        assert_eq!(fx, vec![], "a word that only starts with the nick does not");
        update(&mut s, Action::Focus(false));
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Event(Box::new(msg(3, "bob_1", "DEPLOY done")))),
        );
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Event(Box::new(msg(4, "me_1", "me deploy")))),
        );
        assert_eq!(s.mentions, 1, "counted while away; our own lines never");
        update(&mut s, Action::Focus(true));
        assert_eq!(s.mentions, 0);
        // A new nick is what counts from then on.
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Event(Box::new(Event {
                cursor: 5,
                ts: Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap(),
                body: EventBody::Nick {
                    peer_id: "me_1".into(),
                    old: "me".into(),
                    new: "zed".into(),
                },
            }))),
        );
        assert_eq!(
            update(
                &mut s,
                Action::Daemon(DaemonMsg::Event(Box::new(msg(6, "bob_1", "zed?"))))
            ),
            vec![Effect::Bell]
        );
        s.settings.bell = false;
        assert_eq!(
            update(
                &mut s,
                Action::Daemon(DaemonMsg::Event(Box::new(msg(7, "bob_1", "zed!"))))
            ),
            vec![],
            "bell = false"
        );
    }

    #[test]
    fn a_day_change_draws_a_rule() {
        let mut s = state();
        let at = |d: u32, h: u32| Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap();
        let mut m = msg(1, "bob_1", "yesterday");
        m.ts = at(24, 23);
        update(&mut s, Action::Daemon(DaemonMsg::Event(Box::new(m))));
        let mut m = msg(2, "bob_1", "today");
        m.ts = at(25, 1);
        update(&mut s, Action::Daemon(DaemonMsg::Event(Box::new(m))));
        let kinds: Vec<String> = s.buf().lines.iter().map(|l| l.kind.body()).collect();
        assert_eq!(
            kinds,
            [
                "Tuesday, 24 November 2026",
                "yesterday",
                "Wednesday, 25 November 2026",
                "today"
            ]
        );
    }

    #[test]
    fn the_unread_rule_goes_after_the_last_line_read() {
        let mut s = State::new(80, 12, Theme { color: false }, clock());
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Attached {
                status: Box::new(status("me_1")),
                history: vec![msg(1, "bob_1", "old"), msg(2, "bob_1", "new")],
                read: Some(1),
                rooms: Vec::new(),
                transfers: Vec::new(),
            }),
        );
        let bodies: Vec<String> = s.buf().lines.iter().map(|l| l.kind.body()).collect();
        assert_eq!(bodies, ["old", "new since you left", "new"]);
        assert_eq!(s.buf().total_rows, 3);
        // Nothing newer than the mark: no rule.
        let mut s = state();
        s.buf_mut().lines.clear();
        s.buf_mut().total_rows = 0;
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Attached {
                status: Box::new(status("me_1")),
                history: vec![msg(1, "bob_1", "old")],
                read: Some(1),
                rooms: Vec::new(),
                transfers: Vec::new(),
            }),
        );
        assert!(
            s.buf()
                .lines
                .iter()
                .all(|l| !matches!(l.kind, LineKind::Rule(_)))
        );
    }

    #[test]
    fn away_and_back() {
        let mut s = state();
        for c in "/away lunch".chars() {
            press(&mut s, KeyCode::Char(c));
        }
        assert_eq!(
            press(&mut s, KeyCode::Enter),
            vec![Effect::Daemon(Ask::Away(Some("lunch".into())))]
        );
        for c in "/back".chars() {
            press(&mut s, KeyCode::Char(c));
        }
        assert_eq!(
            press(&mut s, KeyCode::Enter),
            vec![Effect::Daemon(Ask::Away(None))]
        );
    }

    #[test]
    fn another_daemon_version_is_offered_a_restart() {
        let mut s = State::new(80, 12, Theme { color: false }, clock());
        let mut old = status("me_1");
        old.version = "0.0.1".into();
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Attached {
                status: Box::new(old.clone()),
                history: vec![],
                read: None,
                rooms: Vec::new(),
                transfers: Vec::new(),
            }),
        );
        assert!(
            s.banner()
                .unwrap()
                .0
                .contains("restart p2pchatd now? y restarts it")
        );
        assert_eq!(
            press(&mut s, KeyCode::Char('y')),
            vec![Effect::RestartDaemon { systemd: false }]
        );
        assert_eq!(s.banner(), None);
        // Kept: n; and under systemd, systemd restarts it.
        old.systemd = true;
        let attach_old = |s: &mut State| {
            update(
                s,
                Action::Daemon(DaemonMsg::Attached {
                    status: Box::new(old.clone()),
                    history: vec![],
                    read: None,
                    rooms: Vec::new(),
                    transfers: Vec::new(),
                }),
            )
        };
        attach_old(&mut s);
        assert_eq!(press(&mut s, KeyCode::Char('n')), vec![]);
        assert_eq!(s.restart_offer, None);
        attach_old(&mut s);
        press(&mut s, KeyCode::Char('x'));
        assert_eq!(
            press(&mut s, KeyCode::Char('y')),
            vec![],
            "typing is typing"
        );
        assert_eq!(s.input.value(), "xy");
        ctrl(&mut s, 'u');
        assert_eq!(
            press(&mut s, KeyCode::Char('y')),
            vec![Effect::RestartDaemon { systemd: true }]
        );
    }

    #[test]
    fn nobody_linked_for_15_s_hints_at_doctor() {
        let mut s = state();
        s.alone_since = None;
        update(&mut s, Action::Daemon(DaemonMsg::Peers(vec![])));
        assert!(!s.lonely(), "just now");
        s.alone_since = Some(s.clock.now() - chrono::Duration::seconds(15));
        assert!(s.lonely());
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Peers(vec![peer("bob", true)])),
        );
        assert!(!s.lonely(), "a peer is linked");
        assert_eq!(s.alone_since, None);
    }

    #[test]
    fn alt_m_toggles_the_mouse() {
        let mut s = state();
        assert!(!s.mouse, "off by default");
        assert_eq!(
            update(&mut s, key(KeyCode::Char('m'), KeyModifiers::ALT)),
            vec![Effect::Mouse(true)]
        );
        assert_eq!(
            update(&mut s, key(KeyCode::Char('m'), KeyModifiers::ALT)),
            vec![Effect::Mouse(false)]
        );
    }

    #[test]
    fn scrolling_keeps_the_view_and_counts_new_lines() {
        let mut s = state();
        for i in 0..30 {
            update(
                &mut s,
                Action::Daemon(DaemonMsg::Event(Box::new(msg(
                    i,
                    "bob_1",
                    &format!("line {i}"),
                )))),
            );
        }
        assert_eq!(s.buf().total_rows, 30);
        press(&mut s, KeyCode::PageUp);
        assert_eq!(s.buf().scroll, 9, "a page is the message area less one row");
        update(
            &mut s,
            Action::Mouse(MouseEvent {
                kind: MouseEventKind::ScrollUp,
                column: 0,
                row: 0,
                modifiers: KeyModifiers::NONE,
            }),
        );
        assert_eq!(s.buf().scroll, 12);
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Event(Box::new(msg(30, "bob_1", "new")))),
        );
        assert_eq!(
            (s.buf().scroll, s.buf().unseen),
            (13, 1),
            "anchored, and counted"
        );
        press(&mut s, KeyCode::Home);
        assert_eq!(s.buf().scroll, s.max_scroll());
        press(&mut s, KeyCode::PageUp);
        assert_eq!(s.buf().scroll, s.max_scroll(), "clamped at the top");
        press(&mut s, KeyCode::PageDown);
        assert_eq!(s.buf().scroll, s.max_scroll() - 9);
        press(&mut s, KeyCode::End);
        assert_eq!((s.buf().scroll, s.buf().unseen), (0, 0));
        update(
            &mut s,
            Action::Mouse(MouseEvent {
                kind: MouseEventKind::ScrollDown,
                column: 0,
                row: 0,
                modifiers: KeyModifiers::NONE,
            }),
        );
        assert_eq!(s.buf().scroll, 0);
        press(&mut s, KeyCode::PageUp);
        enter(&mut s, "typing jumps back down");
        assert_eq!(s.buf().scroll, 0);
    }

    #[test]
    fn resize_and_the_users_pane_reflow() {
        let mut s = state();
        let long = "word ".repeat(30);
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Event(Box::new(msg(1, "bob_1", long.trim())))),
        );
        let wide = s.buf().lines.back().unwrap().rows;
        update(&mut s, Action::Resize(40, 12));
        assert!(!s.users_visible(), "too narrow for the pane");
        let narrow = s.buf().lines.back().unwrap().rows;
        assert!(narrow > wide, "{narrow} > {wide}");
        update(&mut s, Action::Resize(120, 30));
        assert!(s.users_visible());
        let with_pane = s.buf().lines.back().unwrap().rows;
        press(&mut s, KeyCode::F(2));
        assert!(!s.users_visible());
        assert!(s.buf().lines.back().unwrap().rows <= with_pane);
        assert_eq!(
            s.buf().total_rows,
            s.buf().lines.iter().map(|l| l.rows).sum::<usize>()
        );
        press(&mut s, KeyCode::F(1));
        assert!(s.show_help);
        press(&mut s, KeyCode::Char('x'));
        assert!(!s.show_help, "any key closes the help");
        assert_eq!(s.input.value(), "x", "and still does its job");
    }

    #[test]
    fn daemon_messages() {
        let mut s = State::new(80, 12, Theme { color: false }, clock());
        assert_eq!(s.link, DaemonLink::Connecting);
        assert_eq!(
            update(&mut s, Action::Tick),
            vec![],
            "no refresh before attaching"
        );
        let fx = attach(
            &mut s,
            "me_1",
            vec![msg(1, "bob_1", "held"), msg(2, "me_1", "mine")],
        );
        assert_eq!(fx, vec![Effect::RefreshPeers]);
        assert_eq!(s.link, DaemonLink::Connected);
        assert_eq!(s.me.as_ref().unwrap().nick, "me");
        assert!(matches!(
            &s.buf().lines[1].kind,
            LineKind::Message { own: true, .. }
        ));
        assert!(matches!(
            &s.buf().lines[0].kind,
            LineKind::Message { own: false, .. }
        ));
        assert_eq!(update(&mut s, Action::Tick), vec![Effect::RefreshPeers]);

        let join = Event {
            cursor: 3,
            ts: Utc::now(),
            body: EventBody::Join {
                peer_id: "c".into(),
                nick: "carol".into(),
            },
        };
        assert_eq!(
            update(&mut s, Action::Daemon(DaemonMsg::Event(Box::new(join)))),
            vec![Effect::RefreshPeers]
        );
        let rename = Event {
            cursor: 4,
            ts: Utc::now(),
            body: EventBody::Nick {
                peer_id: "me_1".into(),
                old: "me".into(),
                new: "myself".into(),
            },
        };
        update(&mut s, Action::Daemon(DaemonMsg::Event(Box::new(rename))));
        assert_eq!(s.me.as_ref().unwrap().nick, "myself");

        update(&mut s, Action::Daemon(DaemonMsg::Lost("gone".into())));
        update(&mut s, Action::Daemon(DaemonMsg::Lost("still gone".into())));
        assert_eq!(s.link, DaemonLink::Lost);
        let errors = s
            .buf()
            .lines
            .iter()
            .filter(|l| matches!(l.kind, LineKind::Error(_)))
            .count();
        assert_eq!(errors, 1, "one line per loss");
        attach(&mut s, "me_1", vec![]);
        assert!(matches!(last_line(&s), LineKind::Info(m) if m.contains("reattached")));
        attach(&mut s, "me_2", vec![]);
        assert!(matches!(last_line(&s), LineKind::Info(m) if m.contains("restarted")));

        update(
            &mut s,
            Action::Daemon(DaemonMsg::Failed("not sent: x".into())),
        );
        assert!(matches!(last_line(&s), LineKind::Error(m) if m == "not sent: x"));
        update(&mut s, Action::Daemon(DaemonMsg::Peers(vec![])));
        assert!(s.peers.is_empty());
        let gap = Event {
            cursor: 9,
            ts: Utc::now(),
            body: EventBody::Gap { missed: 3 },
        };
        update(&mut s, Action::Daemon(DaemonMsg::Event(Box::new(gap))));
        assert_eq!(last_line(&s), &LineKind::Gap { missed: 3 });
    }
}
