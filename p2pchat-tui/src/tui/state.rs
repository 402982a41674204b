//! The TUI's state: plain data, changed only by `update`, read by `view`.

use std::collections::VecDeque;

#[cfg(test)]
use chrono::FixedOffset;
use chrono::{Local, Utc};
use shared::Timestamp;
use shared::api::{PeerInfo, Trust};
use shared::event::{Event, EventBody};
use tui_input::Input;

use super::theme::Theme;
use super::wrap::{str_width, wrap};

/// Lines kept in the view; older ones scroll away for good (the daemon's
/// history is the record).
pub(super) const MAX_LINES: usize = 10_000;
/// Sent lines kept for Up/Down recall.
pub(super) const MAX_RECALL: usize = 100;
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
    Gap {
        missed: u64,
    },
    Info(String),
    Error(String),
    /// From the daemon: who is who is in doubt (a verified nick, another key).
    Alert(String),
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
    pub(super) fn hhmm(self, ts: &Timestamp) -> String {
        match self {
            Self::Local => ts.with_timezone(&Local).format("%H:%M").to_string(),
            #[cfg(test)]
            Self::Fixed { tz, .. } => ts.with_timezone(&tz).format("%H:%M").to_string(),
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

/// Columns of the time column ("HH:MM ").
pub(super) const TIME_WIDTH: usize = 6;
pub(super) use crate::format::LATE_MARK;

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
            Self::Join { .. } => "--> ".into(),
            Self::Leave { .. } => "<-- ".into(),
            Self::Nick { .. } | Self::Info(_) => "-- ".into(),
            Self::Gap { .. } | Self::Error(_) | Self::Alert(_) => "!! ".into(),
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
            Self::Gap { missed } => format!("{missed} events missed while this view lagged"),
            Self::Info(t) | Self::Error(t) | Self::Alert(t) => t.clone(),
        }
    }
}

/// Where a line's body starts (its lead: time and marker) and where its
/// continuation rows are indented to: under the body unless that leaves
/// too little room.
fn lead_and_indent(marker: &str, width: usize) -> (usize, usize) {
    let lead = TIME_WIDTH + str_width(marker);
    (lead, if lead * 2 <= width { lead } else { 0 })
}

/// A laid-out line: the continuation indent, the marker, the body's rows.
pub(super) fn layout(kind: &LineKind, width: usize) -> (usize, String, Vec<String>) {
    let marker = kind.marker();
    let (lead, indent) = lead_and_indent(&marker, width);
    let body = kind.body();
    let rows = wrap(
        &body,
        width.saturating_sub(lead),
        width.saturating_sub(indent),
    )
    .into_iter()
    .map(str::to_owned)
    .collect();
    (indent, marker, rows)
}

/// How many rows a line takes, without building them.
fn row_count(kind: &LineKind, width: usize) -> usize {
    let (lead, indent) = lead_and_indent(&kind.marker(), width);
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
    pub lines: VecDeque<ChatLine>,
    /// Sum of `rows` over `lines`.
    pub total_rows: usize,
    pub peers: Vec<PeerInfo>,
    pub show_users: bool,
    pub show_help: bool,
    /// Rows scrolled up from the bottom; 0 follows new lines.
    pub scroll: usize,
    /// Messages that arrived while scrolled up.
    pub unseen: usize,
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
}

impl State {
    pub(super) fn new(width: u16, height: u16, theme: Theme, clock: Clock) -> Self {
        Self {
            me: None,
            link: DaemonLink::Connecting,
            lines: VecDeque::new(),
            total_rows: 0,
            peers: Vec::new(),
            show_users: true,
            show_help: false,
            scroll: 0,
            unseen: 0,
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
        }
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

    /// Rows of the message area (the status bar and input take two, an
    /// alert one more).
    pub(super) fn message_height(&self) -> usize {
        let below = 2 + u16::from(self.alert.is_some());
        usize::from(self.height.saturating_sub(below)).max(1)
    }

    /// The largest useful scroll offset.
    pub(super) fn max_scroll(&self) -> usize {
        self.total_rows.saturating_sub(self.message_height())
    }

    pub(super) fn push(&mut self, ts: Timestamp, cursor: Option<u64>, kind: LineKind) {
        let rows = row_count(&kind, self.message_width());
        let is_message = matches!(kind, LineKind::Message { .. });
        self.lines.push_back(ChatLine {
            ts,
            cursor,
            kind,
            rows,
        });
        self.total_rows += rows;
        if self.scroll > 0 {
            // Keep what the reader looks at in place.
            self.scroll += rows;
            if is_message {
                self.unseen += 1;
            }
        }
        while self.lines.len() > MAX_LINES {
            if let Some(old) = self.lines.pop_front() {
                self.total_rows -= old.rows;
            }
        }
        self.scroll = self.scroll.min(self.max_scroll());
    }

    /// A line of our own, timed now.
    pub(super) fn note(&mut self, kind: LineKind) {
        self.push(self.clock.now(), None, kind);
    }

    /// Adds a daemon event as a line.
    pub(super) fn push_event(&mut self, e: &Event) {
        let own = |peer_id: &str| self.me.as_ref().is_some_and(|m| m.peer_id == peer_id);
        let (ts, late) = crate::format::shown_time(e);
        let kind = match &e.body {
            EventBody::Message {
                peer_id,
                nick,
                text,
                action,
                trust,
                ..
            } => LineKind::Message {
                own: own(peer_id),
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
            EventBody::Gap { missed } => LineKind::Gap { missed: *missed },
            EventBody::Other { .. } => return,
        };
        self.push(ts, Some(e.cursor), kind);
    }

    /// Scrolls so the line of event `cursor` is in the middle of the view
    /// and highlights it; false when the scrollback does not hold it.
    pub(super) fn jump_to(&mut self, cursor: u64) -> bool {
        let Some(i) = self.lines.iter().rposition(|l| l.cursor == Some(cursor)) else {
            return false;
        };
        let below: usize = self.lines.iter().skip(i + 1).map(|l| l.rows).sum();
        let margin = self.message_height().saturating_sub(self.lines[i].rows) / 2;
        self.scroll = below.saturating_sub(margin).min(self.max_scroll());
        self.hit = Some(cursor);
        true
    }

    /// Lays every line out again (the width changed).
    pub(super) fn relayout(&mut self) {
        let width = self.message_width();
        let mut total = 0;
        for l in &mut self.lines {
            l.rows = row_count(&l.kind, width);
            total += l.rows;
        }
        self.total_rows = total;
        self.scroll = self.scroll.min(self.max_scroll());
    }

    pub(super) fn clear(&mut self) {
        self.lines.clear();
        self.total_rows = 0;
        self.scroll = 0;
        self.unseen = 0;
    }

    /// Connected peers.
    pub(super) fn connected(&self) -> usize {
        self.peers.iter().filter(|p| p.connected).count()
    }
}
