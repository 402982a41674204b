//! Rendering: `view(&State, &mut Frame)`, pure. Only the rows on screen are
//! wrapped; every line's height is already known from the state.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use shared::api::{PeerKind, TransferDirection, TransferState, Trust};

use super::command::{HELP, KEYS};
use super::state::{
    ChatLine, DaemonLink, LATE_MARK, LineKind, State, Target, USERS_WIDTH, layout, short_id,
};
use super::wrap::str_width;
use shared::rooms::GENERAL;

/// A piece of a link on screen: where, what it shows, where it goes. The
/// loop writes these again as OSC 8 hyperlinks after each frame (ratatui
/// cells cannot hold one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ScreenLink {
    pub x: u16,
    pub y: u16,
    pub text: String,
    pub url: String,
}

/// A row of the message area, and the links in it (column, text, url).
type Row = (Line<'static>, Vec<(usize, String, String)>);

pub(super) fn view(state: &State, frame: &mut Frame<'_>) -> Vec<ScreenLink> {
    let area = frame.area();
    // An alert takes a row of its own above the status bar until dismissed.
    let banner_rows = u16::from(state.banner().is_some());
    let [main, files, banner, status, input] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(state.transfer_rows()),
        Constraint::Length(banner_rows),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    if let Some((text, tail)) = state.banner() {
        alert_banner(state, &text, tail, frame, banner);
    }
    if files.height > 0 {
        transfers(state, frame, files);
    }
    // The buffer list takes the top row once more than #general is open.
    let [tabs_area, main] = Layout::vertical([
        Constraint::Length(u16::from(state.tabs_visible())),
        Constraint::Min(1),
    ])
    .areas(main);
    if state.tabs_visible() {
        tabs(state, frame, tabs_area);
    }
    let messages_area = if state.users_visible() {
        let [m, u] =
            Layout::horizontal([Constraint::Min(1), Constraint::Length(USERS_WIDTH)]).areas(main);
        users(state, frame, u);
        m
    } else {
        main
    };
    let links = messages(state, frame, messages_area);
    status_bar(state, frame, status);
    input_line(state, frame, input);
    if state.show_help {
        help(state, frame, area);
        return Vec::new();
    }
    links
}

/// Each buffer's label in the list: ` 2 #ops 3! `: its number (Alt-N),
/// its name, then what is unread in it and `!` when that names us.
fn tab_labels(state: &State) -> Vec<String> {
    state
        .buffers
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let count = match (b.unread, b.mentioned) {
                (0, _) => String::new(),
                (n, 0) => format!(" {n}"),
                (n, _) => format!(" {n}!"),
            };
            format!(" {} {}{count} ", i + 1, fit(&b.target.name(), 24))
        })
        .collect()
}

/// The first label the list shows: the one on screen always fits.
fn first_tab(labels: &[String], current: usize, width: usize) -> usize {
    let mut used = 0;
    let mut first = current.min(labels.len().saturating_sub(1));
    for i in (0..=first).rev() {
        used += str_width(&labels[i]);
        if used > width {
            break;
        }
        first = i;
    }
    first
}

/// The buffer whose label is at column `x` of the list, if any.
pub(super) fn tab_at(state: &State, x: u16) -> Option<usize> {
    let labels = tab_labels(state);
    let first = first_tab(&labels, state.current, usize::from(state.width));
    let mut at = 0usize;
    for (i, label) in labels.iter().enumerate().skip(first) {
        let w = str_width(label);
        if usize::from(x) < at + w {
            return Some(i);
        }
        at += w;
    }
    None
}

/// The buffer list: the one on screen stands out, unread ones are bright,
/// those that name us in the mention colour.
fn tabs(state: &State, frame: &mut Frame<'_>, area: Rect) {
    let theme = state.theme;
    let labels = tab_labels(state);
    let first = first_tab(&labels, state.current, usize::from(area.width));
    let spans: Vec<Span<'static>> = labels
        .into_iter()
        .zip(&state.buffers)
        .enumerate()
        .skip(first)
        .map(|(i, (label, b))| {
            let style = if i == state.current {
                theme.status_bar().add_modifier(Modifier::BOLD)
            } else if b.mentioned > 0 {
                theme.mention()
            } else if b.unread > 0 {
                Style::default().add_modifier(Modifier::BOLD)
            } else {
                theme.info()
            };
            Span::styled(label, style)
        })
        .collect();
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn messages(state: &State, frame: &mut Frame<'_>, area: Rect) -> Vec<ScreenLink> {
    let theme = state.theme;
    if state.buf().lines.is_empty() {
        let hint = match state.link {
            DaemonLink::Connected => "No messages yet. Type to chat; /help lists the commands.",
            _ => "Connecting to p2pchatd...",
        };
        frame.render_widget(Paragraph::new(Line::styled(hint, theme.info())), area);
        return Vec::new();
    }
    let height = usize::from(area.height);
    let width = state.message_width();
    // Walk back from the newest line: lines below the view are skipped by
    // their cached heights, only lines on screen are wrapped and styled.
    let mut below = state.buf().scroll.min(state.max_scroll());
    let mut chunks: Vec<Vec<Row>> = Vec::new();
    let mut rows = 0;
    for line in state.buf().lines.iter().rev() {
        if rows >= height {
            break;
        }
        if below >= line.rows {
            below -= line.rows;
            continue;
        }
        let mut rendered = render_line(state, line, width);
        // The view's bottom edge may cut through this line.
        rendered.truncate(rendered.len() - below);
        below = 0;
        rows += rendered.len();
        chunks.push(rendered);
    }
    let mut visible: Vec<Row> = chunks.into_iter().rev().flatten().collect();
    // The top edge may cut through the oldest line shown.
    let cut = visible.len().saturating_sub(height);
    visible.drain(..cut);
    // New lines sit at the bottom, next to the input, as in a chat.
    let pad = height - visible.len();
    let target = Rect {
        y: area.y + cells(pad),
        height: cells(visible.len()),
        ..area
    };
    let mut links = Vec::new();
    for (i, (_, row_links)) in visible.iter_mut().enumerate() {
        for (col, text, url) in row_links.drain(..) {
            links.push(ScreenLink {
                x: area.x + cells(col),
                y: target.y + cells(i),
                text,
                url,
            });
        }
    }
    let lines: Vec<Line<'static>> = visible.into_iter().map(|(l, _)| l).collect();
    frame.render_widget(Paragraph::new(lines), target);
    links
}

/// What a stretch of a body is: plain, a mention, a link (to where).
#[derive(Clone, Copy)]
enum Mark<'a> {
    Mention,
    Link(&'a str),
}

fn render_line(state: &State, line: &ChatLine, width: usize) -> Vec<Row> {
    let theme = state.theme;
    let laid = layout(&line.kind, width, state.time_width);
    if let LineKind::Rule(label) = &line.kind {
        return vec![(rule(label, width, theme.rule()), Vec::new())];
    }
    let (marker_style, body_style) = match &line.kind {
        LineKind::Message { peer_id, own, .. } => (theme.nick(peer_id, *own), Style::new()),
        LineKind::Join { .. } | LineKind::Room { joined: true, .. } => (theme.join(), theme.join()),
        LineKind::Leave { .. } | LineKind::Room { joined: false, .. } => {
            (theme.leave(), theme.leave())
        }
        LineKind::Nick { .. } | LineKind::Topic { .. } => (theme.notice(), theme.notice()),
        LineKind::Gap { .. } => (theme.notice(), theme.notice().add_modifier(Modifier::BOLD)),
        LineKind::Info(_) => (theme.info(), theme.info()),
        LineKind::Error(_) => (theme.error(), theme.error()),
        LineKind::Alert(_) => (theme.status_alert(), theme.error()),
        LineKind::Rule(_) => (theme.rule(), theme.rule()),
    };
    // The search hit jumped to stands out.
    let body_style = if line.cursor.is_some() && line.cursor == state.hit {
        body_style.add_modifier(Modifier::REVERSED)
    } else {
        body_style
    };
    // Mentions and links in the body, by byte range, in order.
    let body = &laid.body;
    let mut marks: Vec<(std::ops::Range<usize>, Mark<'_>)> = Vec::new();
    if let LineKind::Message { own, text, .. } = &line.kind {
        if !own {
            marks.extend(
                state
                    .highlights
                    .ranges(body)
                    .into_iter()
                    .map(|r| (r, Mark::Mention)),
            );
        }
        // Only lines people wrote carry links (a URL is plain text in our
        // own notes).
        if text.contains("://") {
            for l in linkify::LinkFinder::new()
                .kinds(&[linkify::LinkKind::Url])
                .links(body)
            {
                marks.push((l.start()..l.end(), Mark::Link(l.as_str())));
            }
        }
        marks.sort_by_key(|(r, _)| r.start);
    }
    let time = state.clock.format(&line.ts, &state.settings.time_format);
    let time_room = state.time_width.saturating_sub(1);
    // Padded by display width: a format may hold wide characters.
    let pad = time_room.saturating_sub(str_width(&time));
    let time = format!("{time}{}", " ".repeat(pad));
    let mut out = Vec::with_capacity(laid.rows.len());
    for (i, row) in laid.rows.iter().enumerate() {
        let mut spans = Vec::new();
        let mut col;
        if i == 0 {
            col = state.time_width + str_width(&laid.marker);
            spans.push(Span::styled(fit(&time, time_room), theme.time()));
            if line.kind.is_late() {
                spans.push(Span::styled(LATE_MARK, theme.notice()));
            } else {
                spans.push(Span::styled(" ", theme.time()));
            }
            match line.kind.mark() {
                Some(mark) => {
                    let rest = laid.marker[mark.len()..].to_owned();
                    spans.push(Span::styled(mark, theme.error()));
                    spans.push(Span::styled(rest, marker_style));
                }
                None => spans.push(Span::styled(laid.marker.clone(), marker_style)),
            }
        } else {
            col = laid.indent;
            spans.push(Span::raw(" ".repeat(laid.indent)));
        }
        let mut links = Vec::new();
        let mut at = row.start;
        let mut pieces =
            |from: usize, to: usize, mark: Option<Mark<'_>>, spans: &mut Vec<Span<'static>>| {
                if from >= to {
                    return;
                }
                let text = body[from..to].to_owned();
                let style = match mark {
                    Some(Mark::Mention) => body_style.patch(theme.mention()),
                    Some(Mark::Link(url)) => {
                        links.push((col, text.clone(), url.to_owned()));
                        body_style.patch(theme.link())
                    }
                    None => body_style,
                };
                col += str_width(&text);
                spans.push(Span::styled(text, style));
            };
        for (r, mark) in &marks {
            let (from, to) = (r.start.max(row.start), r.end.min(row.end));
            if from >= to || from < at {
                continue;
            }
            pieces(at, from, None, &mut spans);
            pieces(from, to, Some(*mark), &mut spans);
            at = to;
        }
        pieces(at, row.end, None, &mut spans);
        out.push((Line::from(spans), links));
    }
    out
}

/// `──── label ────` across `width` columns.
fn rule(label: &str, width: usize, style: Style) -> Line<'static> {
    let label = fit(label, width.saturating_sub(8));
    let left = 4;
    let right = width.saturating_sub(left + str_width(&label) + 2);
    Line::styled(
        format!("{} {label} {}", "─".repeat(left), "─".repeat(right)),
        style,
    )
}

/// Cuts `s` to `max` columns, marking the cut with `…`.
fn fit(s: &str, max: usize) -> String {
    if str_width(s) <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = super::wrap::char_width(c);
        if w + cw + 1 > max {
            break;
        }
        out.push(c);
        w += cw;
    }
    out.push('…');
    out
}

fn users(state: &State, frame: &mut Frame<'_>, area: Rect) {
    let theme = state.theme;
    let shown = state.pane_peers();
    let here = shown.iter().filter(|p| p.connected).count();
    let title = match &state.buf().target {
        Target::Room(r) if r == GENERAL => format!(" users {here}/{} ", shown.len()),
        Target::Room(r) => format!(" {} {} ", fit(r, 14), here + 1),
        Target::Direct { .. } => " with ".to_owned(),
    };
    let block = Block::new()
        .borders(Borders::LEFT)
        .border_style(theme.border())
        .title(Span::styled(title, theme.info()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width);
    let mut lines = Vec::new();
    if let Some(me) = &state.me {
        lines.push(Line::from(vec![
            Span::raw(" ●  "),
            Span::styled(
                fit(&me.nick, width.saturating_sub(10)),
                theme.nick(&me.peer_id, true),
            ),
            Span::styled(" (you)", theme.info()),
        ]));
    }
    let mut peers = shown;
    peers.sort_by_key(|p| !p.connected);
    for p in peers {
        let label = match (p.connected, p.link, p.kind) {
            (true, _, _) if p.away.is_some() => "away",
            (true, _, Some(PeerKind::Go)) => "go",
            (true, Some(dir), _) => dir.as_str(),
            (true, None, _) => "linked",
            (false, _, _) => "offline",
        };
        let dot = if p.connected { " ●" } else { " ○" };
        // One column of trust at a glance: ✓ verified, + new, ! conflict,
        // ? plaintext, blank when the key holds its nick as before.
        let glyph = p.trust.map_or(' ', Trust::glyph);
        let glyph_style = match p.trust {
            Some(Trust::Verified) => theme.join().remove_modifier(Modifier::DIM),
            Some(Trust::Conflict | Trust::Plaintext) => theme.error(),
            _ => theme.info(),
        };
        let nick_room = width.saturating_sub(4 + label.len() + 1);
        let nick = fit(&p.nick, nick_room);
        let gap = width.saturating_sub(4 + str_width(&nick) + label.len());
        let nick_style = if p.connected && p.away.is_none() {
            theme.nick(&p.peer_id, false)
        } else {
            theme.info()
        };
        lines.push(Line::from(vec![
            Span::raw(dot),
            Span::styled(format!("{glyph} "), glyph_style),
            Span::styled(nick, nick_style),
            Span::raw(" ".repeat(gap)),
            Span::styled(label, theme.info()),
        ]));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The transfers not over, a row each: which way, what, with whom, and a
/// bar with the share done, the rate and the time left.
fn transfers(state: &State, frame: &mut Frame<'_>, area: Rect) {
    let theme = state.theme;
    let width = usize::from(area.width);
    let lines: Vec<Line<'_>> = state
        .transfers
        .iter()
        .filter(|t| !t.state.is_over())
        .take(usize::from(area.height))
        .map(|t| {
            let (arrow, dir) = match t.direction {
                TransferDirection::In => ("↓", "from"),
                TransferDirection::Out => ("↑", "to"),
            };
            let head = format!(
                " {arrow} {} {dir} {} ",
                crate::format::transfer_what(t),
                crate::format::clean_text(&t.nick)
            );
            let tail = match t.state {
                TransferState::Offered if t.direction == TransferDirection::In => {
                    format!("/accept {} or /decline", short_id(&t.id))
                }
                TransferState::Offered => "waiting for an answer".to_owned(),
                TransferState::Waiting
                    if t.reason.is_none()
                        && t.direction == TransferDirection::In
                        && t.done == 0 =>
                {
                    "accepted; starting".to_owned()
                }
                TransferState::Waiting => "cut; resumes when the peer is back".to_owned(),
                _ => progress(t),
            };
            let mut spans = vec![Span::styled(head, theme.notice())];
            let room = width.saturating_sub(spans[0].width() + tail.chars().count() + 1);
            if t.state == TransferState::Active && room >= 6 {
                let bar = room.min(30);
                let filled = usize::try_from(
                    (u128::from(t.done.min(t.bytes)) * bar as u128)
                        .checked_div(u128::from(t.bytes))
                        .unwrap_or(bar as u128),
                )
                .unwrap_or(bar);
                spans.push(Span::styled("█".repeat(filled), theme.join()));
                spans.push(Span::styled("░".repeat(bar - filled), theme.info()));
                spans.push(Span::raw(" "));
            }
            spans.push(Span::styled(tail, theme.info()));
            Line::from(spans)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), area);
}

/// `45%  118.2 MiB/s  0:07 left`.
fn progress(t: &shared::api::TransferInfo) -> String {
    let pct = (t.done.min(t.bytes) * 100)
        .checked_div(t.bytes)
        .unwrap_or(100);
    let left = t.bytes.saturating_sub(t.done);
    let eta = match left.checked_div(t.rate) {
        Some(s) => format!("  {}:{:02} left", s / 60, s % 60),
        None => String::new(),
    };
    format!("{pct:3}%  {}/s{eta}", shared::transfer::human_bytes(t.rate))
}

fn status_bar(state: &State, frame: &mut Frame<'_>, area: Rect) {
    let theme = state.theme;
    let bar = theme.status_bar();
    let mut spans = Vec::new();
    let nick = state.me.as_ref().map_or("?", |m| m.nick.as_str());
    spans.push(Span::styled(
        format!(" {nick} "),
        bar.add_modifier(Modifier::BOLD),
    ));
    spans.push(Span::styled("│", bar));
    let peers = state.connected();
    let noun = if peers == 1 { "peer" } else { "peers" };
    spans.push(Span::styled(format!(" {peers} {noun} "), bar));
    spans.push(Span::styled("│", bar));
    match state.link {
        DaemonLink::Connected => spans.push(Span::styled(" daemon: connected ", bar)),
        DaemonLink::Connecting => spans.push(Span::styled(" daemon: connecting... ", bar)),
        DaemonLink::Lost => spans.push(Span::styled(
            " daemon: lost, reconnecting... ",
            theme.status_alert(),
        )),
    }
    if state.lonely() {
        spans.push(Span::styled("│", bar));
        spans.push(Span::styled(
            " nobody here? p2pchat doctor ",
            theme.status_alert(),
        ));
    }
    if state.mentions > 0 {
        spans.push(Span::styled("│", bar));
        let noun = if state.mentions == 1 {
            "mention"
        } else {
            "mentions"
        };
        spans.push(Span::styled(
            format!(" @ {} {noun} ", state.mentions),
            theme.mention(),
        ));
    }
    if state.buf().scroll > 0 {
        spans.push(Span::styled("│", bar));
        let mark = if state.buf().unseen > 0 {
            format!(" ▼ {} new ", state.buf().unseen)
        } else {
            " ▲ scrolled ".to_owned()
        };
        spans.push(Span::styled(mark, theme.status_alert()));
    }
    let used: usize = spans.iter().map(|s| str_width(&s.content)).sum();
    let hint = " F1 help ";
    let fill = usize::from(area.width).saturating_sub(used + hint.len());
    spans.push(Span::styled(" ".repeat(fill), bar));
    spans.push(Span::styled(hint, bar));
    frame.render_widget(Paragraph::new(Line::from(spans)).style(bar), area);
}

/// The alert row: the text, cut to fit (the whole of it is in the view),
/// and how to dismiss it.
fn alert_banner(state: &State, text: &str, tail: &str, frame: &mut Frame<'_>, area: Rect) {
    let style = state.theme.status_alert();
    let room = usize::from(area.width).saturating_sub(3 + tail.len());
    let line = Line::from(vec![
        Span::styled(format!(" ⚠ {}", fit(text, room)), style),
        Span::styled(tail.to_owned(), style),
    ]);
    frame.render_widget(Paragraph::new(line).style(style), area);
}

/// A count of terminal cells as ratatui takes it; a terminal is far
/// smaller than `u16::MAX` cells on a side.
fn cells(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn input_line(state: &State, frame: &mut Frame<'_>, area: Rect) {
    let prompt = "> ";
    let [p, field] =
        Layout::horizontal([Constraint::Length(cells(prompt.len())), Constraint::Min(1)])
            .areas(area);
    frame.render_widget(Paragraph::new(Span::styled(prompt, state.theme.info())), p);
    // Keep the cursor on screen: scroll the text, never the prompt.
    let width = usize::from(field.width).max(1);
    let scroll = state.input.visual_scroll(width.saturating_sub(1));
    frame.render_widget(
        Paragraph::new(state.input.value()).scroll((0, cells(scroll))),
        field,
    );
    if !state.show_help {
        let x = cells(state.input.visual_cursor().saturating_sub(scroll));
        frame.set_cursor_position((field.x + x.min(field.width.saturating_sub(1)), field.y));
    }
}

fn help(state: &State, frame: &mut Frame<'_>, area: Rect) {
    let theme = state.theme;
    let key_width = HELP
        .iter()
        .chain(KEYS)
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    let row = |(k, v): &(&str, &str)| {
        Line::from(vec![
            Span::styled(format!(" {k:<key_width$} "), theme.notice()),
            Span::raw(v.to_string()),
        ])
    };
    let mut lines: Vec<Line<'_>> = HELP.iter().map(row).collect();
    let column = lines.iter().map(Line::width).max().unwrap_or(0);
    if usize::from(area.height) >= HELP.len() + KEYS.len() + 3 {
        // The keys below the commands when the terminal is tall enough,
        lines.push(Line::raw(""));
        lines.extend(KEYS.iter().map(row));
    } else if usize::from(area.width) >= 2 * column + 5 {
        // beside them when it is wide enough,
        for (i, k) in KEYS.iter().enumerate() {
            let pad = column.saturating_sub(lines[i].width()) + 1;
            let mut spans = std::mem::take(&mut lines[i].spans);
            spans.push(Span::raw(" ".repeat(pad)));
            spans.extend(row(k).spans);
            lines[i] = Line::from(spans);
        }
    } else {
        // else the keys are where F1 is not needed: `p2pchat --help`.
        lines.push(Line::styled(
            " (keys: a taller terminal, or the README)",
            theme.info(),
        ));
    }
    let want_w = cells(lines.iter().map(Line::width).max().unwrap_or(0)).saturating_add(3);
    let want_h = cells(lines.len()).saturating_add(2);
    let w = want_w.min(area.width);
    let h = want_h.min(area.height);
    let popup = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .border_style(theme.border())
                .title(" help ")
                .title_bottom(Span::styled(" Esc closes ", theme.info())),
        ),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::state::Clock;
    use crate::tui::theme::Theme;
    use crate::tui::update::{Action, DaemonMsg, update};
    use chrono::{FixedOffset, TimeZone, Utc};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use shared::api::{LinkDirection, PeerInfo, StatusInfo};
    use shared::event::{Event, EventBody};

    const ME: &str = "alice_0f3a9c21";

    fn at(min: u32) -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, min, 0).unwrap()
    }

    fn room(w: u16, h: u16, color: bool) -> State {
        let clock = Clock::Fixed {
            tz: FixedOffset::east_opt(0).unwrap(),
            now: at(30),
        };
        let mut s = State::new(w, h, Theme { color }, clock);
        let status = StatusInfo {
            peer_id: ME.into(),
            instance: "1".into(),
            fingerprint: String::new(),
            nick: "alice".into(),
            port: 8080,
            peers: 2,
            known_peers: 3,
            version: env!("CARGO_PKG_VERSION").into(),
            socket: "/run/user/1000/p2pchat/p2pchatd.sock".into(),
            pid: 1,
            uptime_s: 1,
            history: 0,
            history_capacity: 1000,
            multicast: None,
            interfaces: vec![],
            listen: "0.0.0.0".into(),
            store: None,
            away: None,
            systemd: false,
        };
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Attached {
                status: Box::new(status),
                history: vec![],
                read: None,
                rooms: Vec::new(),
                transfers: Vec::new(),
            }),
        );
        s
    }

    fn peers() -> Vec<PeerInfo> {
        let p = |id: &str, nick: &str, connected, link, kind| PeerInfo {
            peer_id: id.into(),
            nick: nick.into(),
            addr: Some("192.168.1.20:8080".into()),
            connected,
            link,
            kind,
            encrypted: kind == Some(PeerKind::P2pchatd),
            trust: Some(trust_of(id)),
            last_seen_ms: Some(0),
            ..Default::default()
        };
        vec![
            p(
                "bob_7be1d0aa",
                "bob",
                true,
                Some(LinkDirection::Dialed),
                Some(PeerKind::P2pchatd),
            ),
            p(
                "carol_51",
                "carol",
                true,
                Some(LinkDirection::Accepted),
                Some(PeerKind::Go),
            ),
            p(
                "dave_99c0ffee",
                "dave_with_a_long_nick",
                false,
                None,
                Some(PeerKind::P2pchatd),
            ),
            p(
                "k3fa2c0de",
                "bob~3fa2",
                true,
                Some(LinkDirection::Accepted),
                Some(PeerKind::P2pchatd),
            ),
        ]
    }

    /// Bob is verified, carol a Go peer, a second "bob" a conflict.
    fn trust_of(peer: &str) -> Trust {
        match peer {
            "bob_7be1d0aa" => Trust::Verified,
            "carol_51" => Trust::Plaintext,
            "k3fa2c0de" => Trust::Conflict,
            _ => Trust::Pinned,
        }
    }

    fn event(cursor: u64, min: u32, body: EventBody) -> Event {
        Event {
            cursor,
            ts: at(min),
            body,
        }
    }

    fn say(cursor: u64, min: u32, peer: &str, nick: &str, text: &str, action: bool) -> Event {
        event(
            cursor,
            min,
            EventBody::Message {
                id: format!("m{cursor}"),
                peer_id: peer.into(),
                nick: nick.into(),
                text: text.into(),
                action,
                fingerprint: None,
                trust: (peer != ME).then(|| trust_of(peer)),
                seq: None,
                sent: None,
                late: false,
                room: None,
                to: None,
            },
        )
    }

    fn busy(s: &mut State) {
        let evs = vec![
            event(
                1,
                0,
                EventBody::Join {
                    peer_id: "bob_7be1d0aa".into(),
                    nick: "bob".into(),
                },
            ),
            say(
                2,
                1,
                "bob_7be1d0aa",
                "bob",
                "morning! the build is green again",
                false,
            ),
            event(
                3,
                2,
                EventBody::Join {
                    peer_id: "carol_51".into(),
                    nick: "carol".into(),
                },
            ),
            say(
                4,
                3,
                "carol_51",
                "carol",
                "a long line to show how wrapping keeps the continuation rows under the text column, not under the time",
                false,
            ),
            say(5, 4, ME, "alice", "mine, marked as such", false),
            say(
                6,
                5,
                "bob_7be1d0aa",
                "bob",
                "日本語のテキストも幅で折り返します 🎉 emoji too",
                false,
            ),
            say(7, 6, "carol_51", "carol", "waves", true),
            event(
                8,
                7,
                EventBody::Nick {
                    peer_id: "bob_7be1d0aa".into(),
                    old: "bob".into(),
                    new: "robert".into(),
                },
            ),
            event(
                9,
                8,
                EventBody::Leave {
                    peer_id: "dave_99c0ffee".into(),
                    nick: "dave".into(),
                    reason: Some("ping timeout".into()),
                },
            ),
            event(10, 9, EventBody::Gap { missed: 12 }),
            say(
                11,
                10,
                "k3fa2c0de",
                "bob~3fa2",
                "it's me, bob, new laptop",
                false,
            ),
            event(
                12,
                10,
                EventBody::Alert {
                    peer_id: "k3fa2c0de".into(),
                    text: "bob is verified, but a peer with another key claims the nick".into(),
                },
            ),
        ];
        for e in evs {
            update(s, Action::Daemon(DaemonMsg::Event(Box::new(e))));
        }
        update(s, Action::Daemon(DaemonMsg::Peers(peers())));
    }

    fn draw(s: &State) -> Terminal<TestBackend> {
        let mut t = Terminal::new(TestBackend::new(s.width, s.height)).unwrap();
        t.draw(|f| {
            view(s, f);
        })
        .unwrap();
        t
    }

    /// A mention is styled in the body; a URL is styled and handed back as
    /// a link to write as OSC 8, split where the line wraps.
    #[test]
    fn mentions_stand_out_and_links_are_found() {
        let mut s = room(40, 8, true);
        let text = "alice: see https://example.com/a/very/long/path ok";
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Event(Box::new(say(
                1,
                1,
                "bob_7be1d0aa",
                "bob",
                text,
                false,
            )))),
        );
        s.show_users = false;
        s.relayout();
        let mut t = Terminal::new(TestBackend::new(s.width, s.height)).unwrap();
        let mut links = Vec::new();
        t.draw(|f| links = view(&s, f)).unwrap();
        let buf = t.backend().buffer().clone();
        let row = |y: u16| -> String { (0..40).map(|x| buf[(x, y)].symbol().to_owned()).collect() };
        // "12:01 <bob> " is 12 columns; the mention is the next five.
        let y = (0..8).find(|&y| row(y).starts_with("12:01")).unwrap();
        assert_eq!(buf[(12, y)].bg, ratatui::style::Color::Yellow, "{}", row(y));
        assert_eq!(buf[(11, y)].bg, ratatui::style::Color::Reset);
        let url = "https://example.com/a/very/long/path";
        assert_eq!(links.len(), 2, "{links:?}");
        assert!(links.iter().all(|l| l.url == url));
        assert_eq!(links[0].y + 1, links[1].y, "the wrapped part is linked too");
        assert_eq!(
            links.iter().map(|l| l.text.as_str()).collect::<String>(),
            url
        );
        let first = &links[0];
        assert!(row(first.y)[..].contains(&first.text));
        assert!(
            buf[(first.x, first.y)]
                .modifier
                .contains(Modifier::UNDERLINED)
        );
        // Our own line neither highlights nor rings for our own nick.
        let mut s = room(40, 8, true);
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Event(Box::new(say(
                1,
                1,
                ME,
                "alice",
                "alice here",
                false,
            )))),
        );
        s.show_users = false;
        s.relayout();
        let t = draw(&s);
        let buf = t.backend().buffer();
        assert!((0..40).all(|x| (0..8).all(|y| buf[(x, y)].bg != ratatui::style::Color::Yellow)));
    }

    /// Every scroll position shows exactly its window of the whole room,
    /// also where the view's edges cut through wrapped lines.
    #[test]
    fn each_scroll_offset_shows_its_window() {
        let mut s = room(40, 9, true);
        for i in 0..30u64 {
            let text = "word ".repeat(usize::try_from(i % 7).unwrap() * 4 + 1);
            update(
                &mut s,
                Action::Daemon(DaemonMsg::Event(Box::new(say(
                    i + 1,
                    1,
                    "bob_7be1d0aa",
                    "bob",
                    text.trim(),
                    false,
                )))),
            );
        }
        let text_of = |l: &Line<'_>| {
            l.spans
                .iter()
                .map(|sp| sp.content.as_ref())
                .collect::<String>()
        };
        let all: Vec<String> = s
            .buf()
            .lines
            .iter()
            .flat_map(|l| render_line(&s, l, s.message_width()))
            .map(|l| text_of(&l.0))
            .collect();
        let height = s.message_height();
        assert!(all.len() > 3 * height);
        for offset in 0..=s.max_scroll() {
            s.buf_mut().scroll = offset;
            let t = draw(&s);
            let buf = t.backend().buffer();
            let shown: Vec<String> = (0..cells(height))
                .map(|y| {
                    (0..s.width)
                        .map(|x| buf[(x, y)].symbol())
                        .collect::<String>()
                        .trim_end()
                        .to_owned()
                })
                .collect();
            let end = all.len() - offset;
            let want: Vec<String> = all[end - height..end]
                .iter()
                .map(|r| r.trim_end().to_owned())
                .collect();
            assert_eq!(shown, want, "scrolled {offset} rows up");
        }
    }

    #[test]
    fn empty_room() {
        let s = room(80, 10, true);
        insta::assert_snapshot!(draw(&s).backend());
    }

    /// Once a room or conversation is open, the buffer list heads the
    /// view: the one on screen stands out, others show what is unread in
    /// them (`!` when it names us); the users pane lists the room's people.
    #[test]
    fn buffer_list_with_unread_and_mentions() {
        let mut s = room(80, 10, true);
        update(&mut s, Action::Daemon(DaemonMsg::Joined("#ops".into())));
        let mut ops = say(1, 1, "bob_7c1d", "bob", "deploy at noon", false);
        let mut dm = say(2, 2, "carol_plain", "carol", "psst, alice", false);
        let mut here = say(3, 3, "bob_7c1d", "bob", "anyone?", false);
        if let EventBody::Message { room, .. } = &mut ops.body {
            *room = Some("#ops".into());
        }
        if let EventBody::Message { to, .. } = &mut dm.body {
            *to = Some(shared::event::Dm {
                peer_id: ME.into(),
                nick: "alice".into(),
            });
        }
        if let EventBody::Message { room, .. } = &mut here.body {
            *room = Some("#general".into());
        }
        for e in [ops, dm] {
            update(&mut s, Action::Daemon(DaemonMsg::Event(Box::new(e))));
        }
        update(
            &mut s,
            Action::Key(KeyEvent::new(KeyCode::Char('1'), KeyModifiers::ALT)),
        );
        update(&mut s, Action::Daemon(DaemonMsg::Event(Box::new(here))));
        insta::assert_snapshot!(draw(&s).backend());
        assert_eq!(tab_at(&s, 0), Some(0));
        assert_eq!(tab_at(&s, 79), None);
        // More labels than the row holds: the list starts where the one
        // on screen still fits.
        for i in 0..20 {
            update(
                &mut s,
                Action::Daemon(DaemonMsg::Joined(format!("#room{i}"))),
            );
        }
        assert_eq!(s.current, 22);
        let first = tab_at(&s, 0).unwrap();
        assert!(first > 0, "the list scrolled");
        let row: String = {
            let t = draw(&s);
            let b = t.backend().buffer().clone();
            (0..80).map(|x| b[(x, 0)].symbol().to_owned()).collect()
        };
        assert!(row.contains("23 #room19"), "{row}");
    }

    #[test]
    fn busy_room_wraps_and_colours() {
        let mut s = room(90, 18, true);
        busy(&mut s);
        for c in "typing a reply".chars() {
            update(
                &mut s,
                Action::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)),
            );
        }
        let t = draw(&s);
        insta::assert_snapshot!("busy_room_text", t.backend());
        // The styles: nick colours per peer, own nick underlined, system
        // lines in their colours.
        insta::assert_debug_snapshot!("busy_room_styles", t.backend().buffer());
    }

    #[test]
    fn scrolled_up_with_the_new_mark() {
        let mut s = room(80, 10, true);
        busy(&mut s);
        update(
            &mut s,
            Action::Key(KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE)),
        );
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Event(Box::new(say(
                11,
                10,
                "bob_7be1d0aa",
                "robert",
                "are you there?",
                false,
            )))),
        );
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Event(Box::new(say(
                12,
                10,
                "bob_7be1d0aa",
                "robert",
                "hello?",
                false,
            )))),
        );
        insta::assert_snapshot!(draw(&s).backend());
    }

    #[test]
    fn users_pane_and_lost_daemon() {
        let mut s = room(80, 8, true);
        update(&mut s, Action::Daemon(DaemonMsg::Peers(peers())));
        update(
            &mut s,
            Action::Daemon(DaemonMsg::Lost("connection closed".into())),
        );
        insta::assert_snapshot!(draw(&s).backend());
    }

    #[test]
    fn help() {
        let mut s = room(80, 24, true);
        busy(&mut s);
        update(
            &mut s,
            Action::Key(KeyEvent::new(KeyCode::F(1), KeyModifiers::NONE)),
        );
        insta::assert_snapshot!(draw(&s).backend());
    }

    #[test]
    fn no_color_is_readable_monochrome() {
        let mut s = room(90, 18, false);
        busy(&mut s);
        let t = draw(&s);
        insta::assert_snapshot!("no_color_text", t.backend());
        let buf = t.backend().buffer();
        for cell in buf.content() {
            assert_eq!(
                cell.fg,
                ratatui::style::Color::Reset,
                "NO_COLOR: no colours at all"
            );
            assert_eq!(cell.bg, ratatui::style::Color::Reset);
        }
        insta::assert_debug_snapshot!("no_color_styles", buf);
    }

    #[test]
    fn narrow_terminal_of_40_columns() {
        let mut s = room(40, 16, true);
        busy(&mut s);
        insta::assert_snapshot!(draw(&s).backend());
    }

    #[test]
    fn a_late_line_shows_when_it_was_said_with_a_mark() {
        let mut s = room(60, 8, true);
        let mut late = say(2, 30, "bob_7be1d0aa", "bob", "said while apart", false);
        if let EventBody::Message { sent, late: l, .. } = &mut late.body {
            *sent = Some(at(5));
            *l = true;
        }
        update(&mut s, Action::Daemon(DaemonMsg::Event(Box::new(late))));
        let line = s.buf().lines.back().expect("a line");
        let rows: Vec<String> = render_line(&s, line, s.message_width())
            .iter()
            .map(|l| l.0.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect();
        let said = s.clock.format(&at(5), "%H:%M");
        assert!(
            rows[0].starts_with(&format!("{said}{LATE_MARK}")),
            "its own time, marked: {rows:?}"
        );
        assert!(rows[0].ends_with("said while apart"), "{rows:?}");
    }
}
