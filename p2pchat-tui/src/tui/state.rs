//! The TUI's state: plain data, changed only by `update`, read by `view`.

use std::collections::VecDeque;

#[cfg(test)]
use chrono::FixedOffset;
use chrono::{Local, NaiveDate, Utc};
use shared::Timestamp;
use shared::api::{PeerInfo, TransferDirection, TransferInfo, TransferState, Trust};
use shared::event::{Event, EventBody};
use shared::mention::Highlights;
use shared::rooms::GENERAL;
use tui_input::Input;

use super::theme::Theme;
use super::wrap::{str_width, wrap};

/// Lines kept in the view; older ones scroll away for good (the daemon's
/// history is the record).
pub(super) const MAX_LINES: usize = 10_000;
/// Sent lines kept for Up/Down recall.
pub(super) const MAX_RECALL: usize = 100;
/// Transfers the panel above the status bar shows at once.
pub(super) const TRANSFER_ROWS: usize = 3;
/// Ended transfers kept after their last line.
const KEEP_ENDED: usize = 16;

/// The start of a transfer id that `/accept` takes.
pub(super) fn short_id(id: &str) -> &str {
    id.get(..6).unwrap_or(id)
}
/// Width of the users pane, and the narrowest terminal that shows it.
pub(super) const USERS_WIDTH: u16 = 24;
pub(super) const USERS_MIN_TERMINAL: u16 = 60;

/// Who we are, once attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Me {
    pub peer_id: String,
    pub nick: String,
    pub fingerprint: String,
}

/// The link to the daemon, for the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DaemonLink {
    Connecting,
    Connected,
    Lost,
}

/// What a line in the message area says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LineKind {
    Message {
        peer_id: String,
        nick: String,
        text: String,
        action: bool,
        own: bool,
        /// `!` (the nick belongs to another key) or `?` (plaintext).
        mark: Option<char>,
        /// Said while we were apart, caught up later: shown with its own
        /// time and [`LATE_MARK`].
        late: bool,
        /// It names us (our nick or a highlight word).
        mention: bool,
    },
    Join {
        nick: String,
        peer_id: String,
    },
    Leave {
        nick: String,
        reason: Option<String>,
    },
    Nick {
        old: String,
        new: String,
    },
    /// Someone set the buffer's room's topic.
    Topic {
        nick: String,
        text: String,
    },
    /// Someone (or we) joined or left the buffer's room.
    Room {
        nick: String,
        room: String,
        joined: bool,
    },
    Gap {
        missed: u64,
    },
    Info(String),
    Error(String),
    /// From the daemon: who is who is in doubt (a verified nick, another key).
    Alert(String),
    /// A rule across the view with a label: the day changed, or where
    /// unread lines begin.
    Rule(String),
}

/// One entry of the message area, with its height at the current width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChatLine {
    pub ts: Timestamp,
    /// The daemon's cursor of the event it shows; none for our own notes.
    pub cursor: Option<u64>,
    pub kind: LineKind,
    pub rows: usize,
}

/// What a buffer shows: a room, or a direct conversation with one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// `#name`.
    Room(String),
    Direct {
        peer_id: String,
        nick: String,
    },
}

impl Target {
    pub(super) fn general() -> Self {
        Self::Room(GENERAL.to_owned())
    }

    /// How the buffer list names it: `#ops`, `@bob`.
    pub(super) fn name(&self) -> String {
        match self {
            Self::Room(r) => r.clone(),
            Self::Direct { nick, .. } => format!("@{nick}"),
        }
    }

    /// Whether `other` is the same conversation (a DM by its peer's id,
    /// whatever the nick).
    fn is(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Room(a), Self::Room(b)) => a == b,
            (Self::Direct { peer_id: a, .. }, Self::Direct { peer_id: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// One conversation's lines and where the reader is in them.
#[derive(Debug)]
pub(super) struct Buffer {
    pub target: Target,
    pub lines: VecDeque<ChatLine>,
    /// Sum of `rows` over `lines`.
    pub total_rows: usize,
    /// Rows scrolled up from the bottom; 0 follows new lines.
    pub scroll: usize,
    /// Messages that arrived while scrolled up.
    pub unseen: usize,
    /// The day of the newest line in time order, for day-change rules.
    pub last_day: Option<NaiveDate>,
    /// Messages that came while another buffer was shown, and how many
    /// of them name us (every direct message does).
    pub unread: usize,
    pub mentioned: usize,
}

impl Buffer {
    fn new(target: Target) -> Self {
        Self {
            target,
            lines: VecDeque::new(),
            total_rows: 0,
            scroll: 0,
            unseen: 0,
            last_day: None,
            unread: 0,
            mentioned: 0,
        }
    }

    /// Takes the unread rule out (the reader saw what it marked).
    fn drop_unread_rule(&mut self) {
        if let Some(i) = self
            .lines
            .iter()
            .position(|l| matches!(&l.kind, LineKind::Rule(r) if r == UNREAD))
            && let Some(l) = self.lines.remove(i)
        {
            self.total_rows -= l.rows;
        }
    }
}

/// Buffers at most: #general, 64 rooms, and direct conversations.
pub(super) const MAX_BUFFERS: usize = 128;

/// Time for the view: the local zone and the real time, or in tests a
/// fixed zone and a fixed "now" (so they render the same every run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Clock {
    Local,
    #[cfg(test)]
    Fixed {
        tz: FixedOffset,
        now: Timestamp,
    },
}

impl Clock {
    /// `ts` in the clock's zone, as `format` (strftime) says.
    pub(super) fn format(self, ts: &Timestamp, format: &str) -> String {
        match self {
            Self::Local => ts.with_timezone(&Local).format(format).to_string(),
            #[cfg(test)]
            Self::Fixed { tz, .. } => ts.with_timezone(&tz).format(format).to_string(),
        }
    }

    /// The calendar day of `ts` in the clock's zone.
    pub(super) fn day(self, ts: &Timestamp) -> NaiveDate {
        match self {
            Self::Local => ts.with_timezone(&Local).date_naive(),
            #[cfg(test)]
            Self::Fixed { tz, .. } => ts.with_timezone(&tz).date_naive(),
        }
    }

    /// The time of lines the client adds itself.
    pub(super) fn now(self) -> Timestamp {
        match self {
            Self::Local => Utc::now(),
            #[cfg(test)]
            Self::Fixed { now, .. } => now,
        }
    }
}

pub(super) use crate::format::LATE_MARK;

/// The rule where unread lines begin.
pub(super) const UNREAD: &str = "new since you left";

/// The time column's format when the settings name none.
pub(super) const DEFAULT_TIME_FORMAT: &str = "%H:%M";
/// The time column is never wider than this (a long format is cut).
const MAX_TIME_WIDTH: usize = 32;

/// Columns a time takes in `format`, plus the space after it: the widest
/// of a sample of times (month and day names differ in length).
pub(super) fn time_width(format: &str) -> usize {
    use chrono::TimeZone;
    // In the local zone, so a zone name (%Z) is measured as shown.
    let widest = (1..=12)
        .filter_map(|m| Local.with_ymd_and_hms(2026, m, 28, 22, 58, 58).single())
        .map(|t| str_width(&t.format(format).to_string()))
        .max()
        .unwrap_or(5);
    widest.min(MAX_TIME_WIDTH) + 1
}

/// What the settings file says about the TUI (`[tui]`, and the highlight
/// words of `[notify]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub time_format: String,
    pub mouse: bool,
    pub bell: bool,
    pub highlight: Vec<String>,
}

impl Settings {
    /// The settings file's choices, defaults where it says nothing.
    pub fn from_file(f: &shared::config::FileConfig) -> Self {
        let d = Self::default();
        Self {
            time_format: f.tui.time_format.clone().unwrap_or(d.time_format),
            mouse: f.tui.mouse.unwrap_or(d.mouse),
            bell: f.tui.bell.unwrap_or(d.bell),
            highlight: f.notify.highlight.clone(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            time_format: DEFAULT_TIME_FORMAT.to_owned(),
            mouse: false,
            bell: true,
            highlight: Vec::new(),
        }
    }
}

impl LineKind {
    /// The marker after the time (`<nick> `, `* nick `, `--> `...), after
    /// the line's trust mark if it has one.
    pub(super) fn marker(&self) -> String {
        let mark = self.mark().unwrap_or_default();
        match self {
            Self::Message {
                nick,
                action: false,
                ..
            } => format!("{mark}<{nick}> "),
            Self::Message {
                nick, action: true, ..
            } => format!("{mark}* {nick} "),
            Self::Join { .. } | Self::Room { joined: true, .. } => "--> ".into(),
            Self::Leave { .. } | Self::Room { joined: false, .. } => "<-- ".into(),
            Self::Nick { .. } | Self::Info(_) | Self::Topic { .. } => "-- ".into(),
            Self::Gap { .. } | Self::Error(_) | Self::Alert(_) => "!! ".into(),
            Self::Rule(_) => String::new(),
        }
    }

    /// The trust mark a message starts with (`! ` or `? `), if any.
    pub(super) fn is_late(&self) -> bool {
        matches!(self, Self::Message { late: true, .. })
    }

    pub(super) fn mark(&self) -> Option<String> {
        match self {
            Self::Message { mark: Some(m), .. } => Some(format!("{m} ")),
            _ => None,
        }
    }

    /// The text after the marker.
    pub(super) fn body(&self) -> String {
        match self {
            Self::Message { text, .. } => text.replace('\t', "    "),
            Self::Join { nick, peer_id } => format!("{nick} ({peer_id}) joined"),
            Self::Leave {
                nick,
                reason: Some(r),
            } => format!("{nick} left ({r})"),
            Self::Leave { nick, reason: None } => format!("{nick} left"),
            Self::Nick { old, new } => format!("{old} is now known as {new}"),
            Self::Topic { nick, text } => format!("{nick} set the topic: {text}"),
            Self::Room {
                nick,
                room,
                joined: true,
            } => format!("{nick} joined {room}"),
            Self::Room {
                nick,
                room,
                joined: false,
            } => format!("{nick} left {room}"),
            Self::Gap { missed } => format!("{missed} events missed while this view lagged"),
            Self::Info(t) | Self::Error(t) | Self::Alert(t) | Self::Rule(t) => t.clone(),
        }
    }
}

/// Where a line's body starts (its lead: time and marker) and where its
/// continuation rows are indented to: under the body unless that leaves
/// too little room.
fn lead_and_indent(marker: &str, width: usize, time_width: usize) -> (usize, usize) {
    let lead = time_width + str_width(marker);
    (lead, if lead * 2 <= width { lead } else { 0 })
}

/// A laid-out line: the continuation indent, the marker, the body, and
/// its rows as byte ranges of the body.
pub(super) struct Laid {
    pub indent: usize,
    pub marker: String,
    pub body: String,
    pub rows: Vec<std::ops::Range<usize>>,
}

pub(super) fn layout(kind: &LineKind, width: usize, time_width: usize) -> Laid {
    let marker = kind.marker();
    let (lead, indent) = lead_and_indent(&marker, width, time_width);
    let body = kind.body();
    let base = body.as_ptr() as usize;
    let rows = if matches!(kind, LineKind::Rule(_)) {
        std::iter::once(0..body.len()).collect()
    } else {
        wrap(
            &body,
            width.saturating_sub(lead),
            width.saturating_sub(indent),
        )
        .into_iter()
        .map(|r| {
            // Each row is a slice of the body: its place in it.
            let start = r.as_ptr() as usize - base;
            start..start + r.len()
        })
        .collect()
    };
    Laid {
        indent,
        marker,
        body,
        rows,
    }
}

/// How many rows a line takes, without building them.
fn row_count(kind: &LineKind, width: usize, time_width: usize) -> usize {
    if matches!(kind, LineKind::Rule(_)) {
        return 1;
    }
    let (lead, indent) = lead_and_indent(&kind.marker(), width, time_width);
    wrap(
        &kind.body(),
        width.saturating_sub(lead),
        width.saturating_sub(indent),
    )
    .len()
}

#[derive(Debug)]
pub(super) struct State {
    pub me: Option<Me>,
    pub link: DaemonLink,
    /// `#general` first, then rooms and direct conversations as opened.
    pub buffers: Vec<Buffer>,
    /// The buffer on screen.
    pub current: usize,
    pub peers: Vec<PeerInfo>,
    pub show_users: bool,
    pub show_help: bool,
    pub input: Input,
    /// Sent lines, oldest first, and where Up/Down recall is.
    pub sent: Vec<String>,
    pub recall: Option<usize>,
    /// What was typed before recall began.
    pub draft: String,
    pub width: u16,
    pub height: u16,
    pub theme: Theme,
    pub clock: Clock,
    /// The daemon's life (instance) seen last, to tell a restarted daemon.
    pub daemon_id: Option<String>,
    /// An alert shown in the status bar until dismissed (Esc).
    pub alert: Option<String>,
    /// The last search's hits (cursors, oldest first), and the one the
    /// view jumped to (highlighted until Esc).
    pub hits: Vec<u64>,
    pub hit: Option<u64>,
    /// The settings file's choices (time format, bell, highlight words;
    /// the mouse as it started).
    pub settings: Settings,
    /// The width of the time column, with its space, in that format.
    pub time_width: usize,
    /// What makes a line a mention: our nick and the settings' words.
    pub highlights: Highlights,
    /// The terminal reports the mouse to us (wheel scrolling); Alt-M.
    pub mouse: bool,
    /// The terminal has the focus (as far as it tells).
    pub focused: bool,
    /// Mentions that came while the view was scrolled up or the terminal
    /// had no focus.
    pub mentions: usize,
    /// Tab completion under way.
    pub completion: Option<Completion>,
    /// Rooms the daemon said we joined whose join event has not come yet
    /// (a part of ours still on its way closes nothing then).
    pub joining: std::collections::BTreeSet<String>,
    /// A paste of several lines waiting for Enter (send) or Esc.
    pub paste: Option<Vec<String>>,
    /// Since when nobody is linked (the status bar then hints at
    /// `p2pchat doctor`).
    pub alone_since: Option<Timestamp>,
    /// The daemon runs another version: offered to restart it (the
    /// banner says which, `y` restarts).
    pub restart_offer: Option<String>,
    /// The daemon was started by systemd (restarted through it).
    pub systemd: bool,
    /// File transfers: offers waiting, those under way, and a few that
    /// ended (the panel shows those not over).
    pub transfers: Vec<TransferInfo>,
}

/// Tab completion under way: the input around the word, the candidates,
/// the one shown, and the input as it shows it (any edit ends it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Completion {
    pub before: String,
    pub after: String,
    pub candidates: Vec<String>,
    pub index: usize,
    pub shown: String,
}

impl Completion {
    /// The input with the current candidate, and the cursor after it.
    pub(super) fn apply(&self) -> (String, usize) {
        let word = &self.candidates[self.index % self.candidates.len()];
        let value = format!("{}{word}{}", self.before, self.after);
        (value, self.before.chars().count() + word.chars().count())
    }
}

impl State {
    pub(super) fn new(width: u16, height: u16, theme: Theme, clock: Clock) -> Self {
        Self {
            me: None,
            link: DaemonLink::Connecting,
            buffers: vec![Buffer::new(Target::general())],
            current: 0,
            peers: Vec::new(),
            show_users: true,
            show_help: false,
            input: Input::default(),
            sent: Vec::new(),
            recall: None,
            draft: String::new(),
            width,
            height,
            theme,
            clock,
            daemon_id: None,
            alert: None,
            hits: Vec::new(),
            hit: None,
            settings: Settings::default(),
            time_width: time_width(DEFAULT_TIME_FORMAT),
            highlights: Highlights::default(),
            mouse: false,
            focused: true,
            mentions: 0,
            completion: None,
            joining: std::collections::BTreeSet::new(),
            paste: None,
            alone_since: None,
            restart_offer: None,
            systemd: false,
            transfers: Vec::new(),
        }
    }

    /// Whether nobody has been linked for long enough to hint at doctor.
    pub(super) fn lonely(&self) -> bool {
        self.link == DaemonLink::Connected
            && self.alone_since.is_some_and(|t| {
                (self.clock.now() - t).num_seconds()
                    >= i64::try_from(crate::doctor::ALONE_HINT_S).unwrap_or(i64::MAX)
            })
    }

    /// Takes the settings file's choices.
    pub(super) fn apply(&mut self, s: Settings) {
        self.time_width = time_width(&s.time_format);
        self.mouse = s.mouse;
        self.settings = s;
        self.rebuild_highlights();
        self.relayout();
    }

    /// Our nick or the words changed: what a mention is changes too.
    pub(super) fn rebuild_highlights(&mut self) {
        let nick = self.me.as_ref().map(|m| m.nick.as_str());
        let words = self.settings.highlight.iter().map(String::as_str);
        self.highlights = Highlights::new(nick, words);
    }

    /// The buffer on screen.
    pub(super) fn buf(&self) -> &Buffer {
        &self.buffers[self.current]
    }

    pub(super) fn buf_mut(&mut self) -> &mut Buffer {
        &mut self.buffers[self.current]
    }

    /// Where the buffer of `target` is, opened (at the end) if new; `None`
    /// when no more may be opened.
    pub(super) fn open(&mut self, target: Target) -> Option<usize> {
        if let Some(i) = self.buffers.iter().position(|b| b.target.is(&target)) {
            // A DM partner's nick may have changed.
            self.buffers[i].target = target;
            return Some(i);
        }
        if self.buffers.len() >= MAX_BUFFERS {
            return None;
        }
        self.buffers.push(Buffer::new(target));
        Some(self.buffers.len() - 1)
    }

    /// Shows buffer `i`: its unread lines are read now. The unread rule of
    /// the buffer left behind goes (a new one marks what comes next).
    pub(super) fn switch_to(&mut self, i: usize) {
        if i >= self.buffers.len() || i == self.current {
            return;
        }
        self.buf_mut().drop_unread_rule();
        self.current = i;
        let b = self.buf_mut();
        b.unread = 0;
        b.mentioned = 0;
        self.completion = None;
    }

    /// Closes buffer `i` (never `#general`); the one on screen stays, or
    /// the one before it shows, read.
    pub(super) fn close(&mut self, i: usize) {
        if i == 0 || i >= self.buffers.len() {
            return;
        }
        self.buffers.remove(i);
        if self.current >= i {
            self.current -= 1;
            let b = self.buf_mut();
            b.unread = 0;
            b.mentioned = 0;
        }
    }

    /// The peers the users pane lists for the buffer on screen: everyone
    /// for `#general`, a room's members, a conversation's partner.
    pub(super) fn pane_peers(&self) -> Vec<&PeerInfo> {
        match &self.buf().target {
            Target::Room(r) if r == GENERAL => self.peers.iter().collect(),
            Target::Room(r) => self
                .peers
                .iter()
                .filter(|p| p.connected && p.rooms.iter().any(|x| x == r))
                .collect(),
            Target::Direct { peer_id, .. } => self
                .peers
                .iter()
                .filter(|p| p.peer_id == *peer_id)
                .collect(),
        }
    }

    /// Whether mentions now are out of sight.
    pub(super) fn looking_away(&self) -> bool {
        self.buf().scroll > 0 || !self.focused
    }

    /// Whether the users pane is on screen.
    pub(super) fn users_visible(&self) -> bool {
        self.show_users && self.width >= USERS_MIN_TERMINAL
    }

    /// Columns of the message area.
    pub(super) fn message_width(&self) -> usize {
        let w = if self.users_visible() {
            self.width - USERS_WIDTH
        } else {
            self.width
        };
        usize::from(w).max(1)
    }

    /// What the banner row above the status bar says, if anything: a
    /// paste waiting, an offer to restart the daemon, else an alert; and
    /// how to dismiss it.
    pub(super) fn banner(&self) -> Option<(String, &'static str)> {
        if let Some(lines) = &self.paste {
            return Some((
                format!(
                    "paste of {} lines: Enter sends each as a message",
                    lines.len()
                ),
                " (Esc drops it) ",
            ));
        }
        if let Some(versions) = &self.restart_offer {
            return Some((
                format!("{versions}: restart p2pchatd now? y restarts it"),
                " (n or Esc keeps it) ",
            ));
        }
        self.alert.clone().map(|a| (a, " (Esc dismisses) "))
    }

    /// Whether the buffer list takes a row above the messages: once more
    /// than `#general` is open.
    pub(super) fn tabs_visible(&self) -> bool {
        self.buffers.len() > 1
    }

    /// Rows of the message area (the status bar and input take two, a
    /// banner and the buffer list one more each).
    pub(super) fn message_height(&self) -> usize {
        // Asked for every line pushed: whether there is a banner, not its
        // text.
        let banner = self.paste.is_some() || self.restart_offer.is_some() || self.alert.is_some();
        let below = 2 + u16::from(banner) + u16::from(self.tabs_visible()) + self.transfer_rows();
        usize::from(self.height.saturating_sub(below)).max(1)
    }

    /// Rows of the transfers panel: one per transfer not over, at most
    /// [`TRANSFER_ROWS`].
    pub(super) fn transfer_rows(&self) -> u16 {
        let live = self.transfers.iter().filter(|t| !t.state.is_over()).count();
        u16::try_from(live.min(TRANSFER_ROWS)).unwrap_or(0)
    }

    /// A transfer event: kept for the panel; a line when it starts, waits
    /// for an answer, or ends.
    pub(super) fn transfer(&mut self, t: &TransferInfo) {
        let before = self.transfers.iter().position(|x| x.id == t.id);
        let was = before.map(|i| self.transfers[i].state);
        match before {
            Some(i) => self.transfers[i] = t.clone(),
            None => self.transfers.push(t.clone()),
        }
        if was != Some(t.state) && t.state != TransferState::Active {
            let mut text = crate::format::transfer_line(t);
            if t.direction == TransferDirection::In && t.state == TransferState::Offered {
                text += &format!(" — /accept {0} or /decline {0}", short_id(&t.id));
            }
            self.note(match t.state {
                TransferState::Failed => LineKind::Error(text),
                _ => LineKind::Info(text),
            });
        }
        // A few ended ones stay for `/accept` to tell "no offer waits".
        let over = self.transfers.iter().filter(|t| t.state.is_over()).count();
        if over > KEEP_ENDED
            && let Some(i) = self.transfers.iter().position(|t| t.state.is_over())
        {
            self.transfers.remove(i);
        }
    }

    /// After an attach: what offers wait for an answer, in a line.
    pub(super) fn note_waiting_offers(&mut self) {
        let waiting: Vec<String> = self
            .transfers
            .iter()
            .filter(|t| t.direction == TransferDirection::In && t.state == TransferState::Offered)
            .map(|t| format!("{} ({})", crate::format::transfer_line(t), short_id(&t.id)))
            .collect();
        if !waiting.is_empty() {
            let text = format!(
                "offers wait for an answer (/accept ID, /decline ID): {}",
                waiting.join("; ")
            );
            self.note(LineKind::Info(text));
        }
    }

    /// The largest useful scroll offset.
    pub(super) fn max_scroll(&self) -> usize {
        self.buf().total_rows.saturating_sub(self.message_height())
    }

    /// Adds a line to the buffer on screen.
    pub(super) fn push(&mut self, ts: Timestamp, cursor: Option<u64>, kind: LineKind) {
        self.push_to(self.current, ts, cursor, kind);
    }

    /// Adds a line to buffer `i`.
    pub(super) fn push_to(&mut self, i: usize, ts: Timestamp, cursor: Option<u64>, kind: LineKind) {
        // A rule where the day changes; also above the first line when it
        // is not from today. Late lines carry their own date and do not
        // count.
        if !kind.is_late() && !matches!(kind, LineKind::Rule(_)) {
            let day = self.clock.day(&ts);
            let today = self.clock.day(&self.clock.now());
            let b = &mut self.buffers[i];
            let changed = match b.last_day {
                Some(last) => day != last,
                None => day != today,
            };
            b.last_day = Some(day);
            if changed {
                let label = day.format("%A, %-d %B %Y").to_string();
                self.push_to(i, ts, None, LineKind::Rule(label));
            }
        }
        let rows = row_count(&kind, self.message_width(), self.time_width);
        let height = self.message_height();
        let is_message = matches!(kind, LineKind::Message { .. });
        let b = &mut self.buffers[i];
        b.lines.push_back(ChatLine {
            ts,
            cursor,
            kind,
            rows,
        });
        b.total_rows += rows;
        if b.scroll > 0 {
            // Keep what the reader looks at in place.
            b.scroll += rows;
            if is_message {
                b.unseen += 1;
            }
        }
        while b.lines.len() > MAX_LINES {
            if let Some(old) = b.lines.pop_front() {
                b.total_rows -= old.rows;
            }
        }
        b.scroll = b.scroll.min(b.total_rows.saturating_sub(height));
    }

    /// A line of our own, timed now.
    pub(super) fn note(&mut self, kind: LineKind) {
        self.push(self.clock.now(), None, kind);
    }

    /// The buffer an event belongs to: a message's conversation, or its
    /// room's buffer if one is open (a room we left shows nothing more),
    /// a room event's room (our own join opens it), `#general` for the
    /// rest. `None`: not shown.
    fn target_of(&self, e: &Event) -> Option<Target> {
        let shown = |t: Target| self.buffers.iter().any(|b| b.target.is(&t)).then_some(t);
        let me = self.me.as_ref().map(|m| m.peer_id.as_str());
        match &e.body {
            EventBody::Message {
                to: Some(dm),
                peer_id,
                nick,
                ..
            } => Some(if Some(peer_id.as_str()) == me {
                Target::Direct {
                    peer_id: dm.peer_id.clone(),
                    nick: dm.nick.clone(),
                }
            } else {
                Target::Direct {
                    peer_id: peer_id.clone(),
                    nick: nick.clone(),
                }
            }),
            EventBody::Message { room, .. } => shown(Target::Room(
                room.clone().unwrap_or_else(|| GENERAL.to_owned()),
            )),
            EventBody::Room {
                room,
                peer_id,
                joined,
                ..
            } => {
                let target = Target::Room(room.clone());
                // Our own join opens the room; others' show where we are.
                if Some(peer_id.as_str()) == me && *joined {
                    Some(target)
                } else {
                    shown(target)
                }
            }
            EventBody::Topic { room, .. } => shown(Target::Room(room.clone())),
            EventBody::Other { .. } => None,
            _ => Some(Target::general()),
        }
    }

    /// Adds a live daemon event as a line in its buffer; true when it
    /// mentions us (a direct message from someone else always does).
    pub(super) fn push_event(&mut self, e: &Event) -> bool {
        self.push_event_counted(e, true)
    }

    /// Adds an event of the history loaded at attach: what is unread is
    /// counted afterwards, from where the user left off.
    pub(super) fn push_history(&mut self, e: &Event) {
        self.push_event_counted(e, false);
    }

    fn push_event_counted(&mut self, e: &Event, live: bool) -> bool {
        if let EventBody::Room {
            peer_id,
            room,
            joined: true,
            ..
        } = &e.body
            && self.me.as_ref().is_some_and(|m| m.peer_id == *peer_id)
        {
            self.joining.remove(room);
        }
        let own = |peer_id: &str| self.me.as_ref().is_some_and(|m| m.peer_id == peer_id);
        let (ts, late) = crate::format::shown_time(e);
        let Some(target) = self.target_of(e) else {
            return false;
        };
        let kind = match &e.body {
            EventBody::Message {
                peer_id,
                nick,
                text,
                action,
                trust,
                to,
                ..
            } => LineKind::Message {
                own: own(peer_id),
                mention: !own(peer_id) && (to.is_some() || self.highlights.matches(text)),
                peer_id: peer_id.clone(),
                nick: nick.clone(),
                text: text.clone(),
                action: *action,
                mark: trust.and_then(Trust::line_mark),
                late,
            },
            EventBody::Alert { text, .. } => LineKind::Alert(text.clone()),
            EventBody::Join { peer_id, nick } => LineKind::Join {
                nick: nick.clone(),
                peer_id: peer_id.clone(),
            },
            EventBody::Leave { nick, reason, .. } => LineKind::Leave {
                nick: nick.clone(),
                reason: reason.clone(),
            },
            EventBody::Nick { old, new, .. } => LineKind::Nick {
                old: old.clone(),
                new: new.clone(),
            },
            EventBody::Topic { nick, text, .. } => LineKind::Topic {
                nick: nick.clone(),
                text: text.clone(),
            },
            EventBody::Room {
                nick, room, joined, ..
            } => LineKind::Room {
                nick: nick.clone(),
                room: room.clone(),
                joined: *joined,
            },
            EventBody::Gap { missed } => LineKind::Gap { missed: *missed },
            EventBody::Transfer(t) => {
                self.transfer(t);
                return false;
            }
            EventBody::Other { .. } => return false,
        };
        // Too many open: it shows in #general rather than nowhere, a
        // direct message marked as one.
        let is_dm = matches!(target, Target::Direct { .. });
        let mut kind = kind;
        let i = match self.open(target) {
            Some(i) => i,
            None => {
                // Marked as a direct message, unless it carries a trust
                // mark: that matters more.
                if let LineKind::Message { mark, .. } = &mut kind
                    && is_dm
                    && mark.is_none()
                {
                    *mark = Some('→');
                }
                0
            }
        };
        if let EventBody::Room {
            peer_id,
            joined: false,
            ..
        } = &e.body
            && self.me.as_ref().is_some_and(|m| m.peer_id == *peer_id)
        {
            // We left: the room's buffer goes (the line shows where we are),
            // unless we joined it again since (the part came late).
            let rejoining =
                matches!(&e.body, EventBody::Room { room, .. } if self.joining.contains(room));
            if i != 0 && !rejoining {
                self.close(i);
            }
            self.push(ts, Some(e.cursor), kind);
            return false;
        }
        let message = matches!(kind, LineKind::Message { own: false, .. });
        let mention = matches!(kind, LineKind::Message { mention: true, .. });
        if live && i != self.current && message {
            // Unread elsewhere: the first one gets the unread rule.
            let b = &mut self.buffers[i];
            if b.unread == 0 {
                b.drop_unread_rule();
                let rule = LineKind::Rule(UNREAD.to_owned());
                self.push_to(i, ts, None, rule);
            }
            let b = &mut self.buffers[i];
            b.unread += 1;
            b.mentioned += usize::from(mention);
        }
        self.push_to(i, ts, Some(e.cursor), kind);
        mention
    }

    /// Draws the unread rule after the line of event `read` (or above the
    /// first line, if every line is newer), in each buffer where anything
    /// newer follows; the buffers not on screen count what is unread.
    pub(super) fn mark_unread_after(&mut self, read: u64) {
        let width = self.message_width();
        for (n, b) in self.buffers.iter_mut().enumerate() {
            b.drop_unread_rule();
            b.unread = 0;
            b.mentioned = 0;
            let at = match b
                .lines
                .iter()
                .rposition(|l| l.cursor.is_some_and(|c| c <= read))
            {
                Some(i) => i + 1,
                None => 0,
            };
            let newer: Vec<&ChatLine> = b
                .lines
                .iter()
                .skip(at)
                .filter(|l| matches!(l.kind, LineKind::Message { own: false, .. }))
                .collect();
            if newer.is_empty() {
                continue;
            }
            if n != self.current {
                b.unread = newer.len();
                b.mentioned = newer
                    .iter()
                    .filter(|l| matches!(l.kind, LineKind::Message { mention: true, .. }))
                    .count();
            }
            let kind = LineKind::Rule(UNREAD.to_owned());
            let rows = row_count(&kind, width, self.time_width);
            let ts = b.lines.get(at).map_or_else(|| self.clock.now(), |l| l.ts);
            b.lines.insert(
                at,
                ChatLine {
                    ts,
                    cursor: None,
                    kind,
                    rows,
                },
            );
            b.total_rows += rows;
        }
    }

    /// Puts a room's older events (its history, loaded on join) above
    /// what its buffer shows; those it shows already are not doubled.
    pub(super) fn backfill(&mut self, target: &Target, events: &[Event]) {
        let Some(i) = self.buffers.iter().position(|b| b.target.is(target)) else {
            return;
        };
        let me = self.me.as_ref().map(|m| m.peer_id.clone());
        let ours = |e: &Event| matches!(&e.body, EventBody::Room { peer_id, .. } if Some(peer_id) == me.as_ref());
        // What is older than what the buffer shows, and than our latest
        // join (what came after it arrives live, perhaps not yet).
        let shown = self.buffers[i].lines.iter().find_map(|l| l.cursor);
        let joined = events.iter().rev().find(|e| ours(e)).map(|e| e.cursor);
        let first = shown.into_iter().chain(joined).min().unwrap_or(u64::MAX);
        let older: Vec<&Event> = events
            .iter()
            .filter(|e| e.cursor < first && !ours(e))
            .filter(|e| self.target_of(e).is_some_and(|t| t.is(target)))
            .collect();
        if older.is_empty() {
            return;
        }
        let b = &mut self.buffers[i];
        let kept = std::mem::take(&mut b.lines);
        let (scroll, unseen, last_day) = (b.scroll, b.unseen, b.last_day);
        (b.total_rows, b.scroll, b.last_day) = (0, 0, None);
        for e in older {
            self.push_event_counted(e, false);
        }
        // A day rule where the older lines' day ends, as between any two.
        let first_kept = kept
            .iter()
            .find(|l| !l.kind.is_late() && !matches!(l.kind, LineKind::Rule(_)));
        let label_of = |d: NaiveDate| d.format("%A, %-d %B %Y").to_string();
        if let (Some(l), Some(day)) = (first_kept, self.buffers[i].last_day)
            && self.clock.day(&l.ts) != day
            && !kept
                .iter()
                .take_while(|k| matches!(k.kind, LineKind::Rule(_)))
                .any(|k| k.kind == LineKind::Rule(label_of(self.clock.day(&l.ts))))
        {
            let label = label_of(self.clock.day(&l.ts));
            let ts = l.ts;
            let rule = LineKind::Rule(label);
            let rows = row_count(&rule, self.message_width(), self.time_width);
            let b = &mut self.buffers[i];
            b.lines.push_back(ChatLine {
                ts,
                cursor: None,
                kind: rule,
                rows,
            });
            b.total_rows += rows;
        }
        let b = &mut self.buffers[i];
        for l in kept {
            b.total_rows += l.rows;
            b.lines.push_back(l);
        }
        // Older lines above keep the reader where it was.
        (b.scroll, b.unseen, b.last_day) = (scroll, unseen, last_day.or(b.last_day));
    }

    /// Shows the buffer holding the line of event `cursor`, scrolled so
    /// the line is in the middle of the view, and highlights it; false when
    /// no buffer holds it.
    pub(super) fn jump_to(&mut self, cursor: u64) -> bool {
        let holder = |b: &Buffer| b.lines.iter().any(|l| l.cursor == Some(cursor));
        if !holder(self.buf()) {
            match self.buffers.iter().position(holder) {
                Some(n) => self.switch_to(n),
                None => return false,
            }
        }
        let height = self.message_height();
        let max = self.max_scroll();
        let b = self.buf_mut();
        let Some(i) = b.lines.iter().rposition(|l| l.cursor == Some(cursor)) else {
            return false;
        };
        let below: usize = b.lines.iter().skip(i + 1).map(|l| l.rows).sum();
        let margin = height.saturating_sub(b.lines[i].rows) / 2;
        b.scroll = below.saturating_sub(margin).min(max);
        self.hit = Some(cursor);
        true
    }

    /// Lays every line out again (the width changed).
    pub(super) fn relayout(&mut self) {
        let width = self.message_width();
        let height = self.message_height();
        for b in &mut self.buffers {
            let mut total = 0;
            for l in &mut b.lines {
                l.rows = row_count(&l.kind, width, self.time_width);
                total += l.rows;
            }
            b.total_rows = total;
            b.scroll = b.scroll.min(total.saturating_sub(height));
        }
    }

    /// Empties the buffer on screen.
    pub(super) fn clear(&mut self) {
        let b = self.buf_mut();
        b.lines.clear();
        b.total_rows = 0;
        b.scroll = 0;
        b.unseen = 0;
        b.last_day = None;
        self.mentions = 0;
    }

    /// Connected peers.
    pub(super) fn connected(&self) -> usize {
        self.peers.iter().filter(|p| p.connected).count()
    }
}
