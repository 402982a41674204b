//! Plain-text rendering of events and daemon state for the shell commands.

use std::fmt::Write as _;

use chrono::Local;
use shared::api::{
    LinkDirection, PeerInfo, PeerKind, StatusInfo, StoreState, TransferDirection, TransferInfo,
    TransferState, Trust,
};
use shared::event::{Event, EventBody};
// Nothing printed may drive the terminal. The daemon already cleans what
// peers send; this is the last line, with the same rule.
use shared::text::sanitize_foreign_text as clean;

/// An event's line with its day in front, for lines from any day.
pub(crate) fn dated_line(e: &Event) -> String {
    format!(
        "{} {}",
        e.ts.with_timezone(&Local).format("%Y-%m-%d"),
        event_line(e)
    )
}

/// One event as an IRC-style line, in local time.
pub(crate) fn event_line(e: &Event) -> String {
    let (ts, late) = shown_time(e);
    let gap = if late { LATE_MARK } else { " " };
    let time = ts.with_timezone(&Local).format("%H:%M:%S");
    let body = match &e.body {
        EventBody::Message {
            nick,
            text,
            action,
            trust,
            room,
            to,
            ..
        } => {
            let mark = trust
                .and_then(Trust::line_mark)
                .map(|m| format!("{m} "))
                .unwrap_or_default();
            // Where, unless it is #general: `#ops` or `→bob` in front.
            let place = match (room.as_deref(), to) {
                (_, Some(to)) => format!("→{} ", clean(&to.nick)),
                (Some(r), None) if r != shared::rooms::GENERAL => format!("{} ", clean(r)),
                _ => String::new(),
            };
            if *action {
                format!("{place}{mark}* {} {}", clean(nick), clean(text))
            } else {
                format!("{place}{mark}<{}> {}", clean(nick), clean(text))
            }
        }
        EventBody::Topic {
            nick, room, text, ..
        } => format!(
            "-- {} set the topic of {}: {}",
            clean(nick),
            clean(room),
            clean(text)
        ),
        EventBody::Room {
            nick, room, joined, ..
        } => {
            let (arrow, verb) = if *joined {
                ("-->", "joined")
            } else {
                ("<--", "left")
            };
            format!("{arrow} {} {verb} {}", clean(nick), clean(room))
        }
        EventBody::Alert { text, .. } => format!("!! {}", clean(text)),
        EventBody::Join { peer_id, nick } => {
            format!("--> {} ({}) joined", clean(nick), clean(peer_id))
        }
        EventBody::Leave { nick, reason, .. } => match reason {
            Some(r) => format!("<-- {} left ({})", clean(nick), clean(r)),
            None => format!("<-- {} left", clean(nick)),
        },
        EventBody::Nick { old, new, .. } => {
            format!("-- {} is now known as {}", clean(old), clean(new))
        }
        EventBody::Gap { missed } => format!("-- {missed} events missed (reading too slowly)"),
        EventBody::Transfer(t) => format!("== {}", transfer_line(t)),
        EventBody::Other { kind } => format!("-- ({} event)", clean(kind)),
    };
    format!("{time}{gap}{body}")
}

/// After the time of a line that was said while we were apart (caught up
/// later), in place of the space.
pub(crate) const LATE_MARK: &str = "↺";

/// The time an event is shown at, and whether it is late: a line caught up
/// after a partition shows when it was said, not when it reached us.
pub(crate) fn shown_time(e: &Event) -> (shared::Timestamp, bool) {
    match &e.body {
        EventBody::Message {
            late: true, sent, ..
        } => (sent.unwrap_or(e.ts), true),
        _ => (e.ts, false),
    }
}

/// Text from elsewhere, safe to print.
pub(crate) fn clean_text(s: &str) -> String {
    clean(s).into_owned()
}

/// The `rooms` table.
pub(crate) fn rooms_table(rooms: &[shared::api::RoomInfo]) -> String {
    let mut out = String::new();
    let width = rooms.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(out, "{:width$}  JOINED  MEMBERS  PEERS", "ROOM");
    for r in rooms {
        let peers = if r.peers.is_empty() {
            "-".to_owned()
        } else {
            r.peers
                .iter()
                .map(|p| clean(p).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "{:width$}  {:6}  {:7}  {peers}",
            clean(&r.name),
            if r.joined { "yes" } else { "no" },
            r.members
        );
    }
    out
}

/// Where a transfer stands, in words.
pub(crate) fn transfer_line(t: &TransferInfo) -> String {
    let what = transfer_what(t);
    let nick = clean(&t.nick);
    let reason = t
        .reason
        .as_deref()
        .map(|r| format!(" ({})", clean(r)))
        .unwrap_or_default();
    match (t.direction, t.state) {
        (TransferDirection::Out, TransferState::Offered) => {
            format!("{what}: waiting for {nick} to accept")
        }
        (TransferDirection::In, TransferState::Offered) => {
            format!("{what} from {nick}: waiting for you to accept")
        }
        (TransferDirection::Out, TransferState::Active) => format!("sending {what} to {nick}"),
        (TransferDirection::In, TransferState::Active) => {
            format!("receiving {what} from {nick}")
        }
        (TransferDirection::In, TransferState::Waiting) if t.reason.is_none() => {
            format!("{what} from {nick}: accepted; reaching {nick}")
        }
        (_, TransferState::Waiting) => {
            format!("{what}: cut{reason}; it resumes when {nick} is back")
        }
        (TransferDirection::Out, TransferState::Done) => {
            format!("{what}: {nick} has it, whole and verified")
        }
        (TransferDirection::In, TransferState::Done) => format!(
            "{what}: whole and verified, in {}",
            t.folder.as_deref().unwrap_or("the download folder")
        ),
        (_, TransferState::Failed) => format!("{what}: failed{reason}"),
        (_, TransferState::Declined) => format!("{what}: {nick} declined{reason}"),
    }
}

/// What a transfer holds, in short: `report.pdf (3.1 MiB)`, or
/// `photos/a.jpg and 999 more (4.0 MiB)`.
pub(crate) fn transfer_what(t: &TransferInfo) -> String {
    let first = t
        .names
        .first()
        .map_or_else(|| "files".into(), |n| clean(n).into_owned());
    let size = shared::transfer::human_bytes(t.bytes);
    match t.files {
        0 | 1 => format!("{first} ({size})"),
        n => format!("{first} and {} more ({size})", n - 1),
    }
}

/// The `transfers` table.
pub(crate) fn transfers_table(all: &[TransferInfo]) -> String {
    if all.is_empty() {
        return "no transfers\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ID                WAY  PEER                  STATE     DONE  WHAT"
    );
    for t in all {
        let way = match t.direction {
            TransferDirection::In => "in",
            TransferDirection::Out => "out",
        };
        let pct = (t.done.min(t.bytes) * 100)
            .checked_div(t.bytes)
            .unwrap_or(100);
        let _ = writeln!(
            out,
            "{:16}  {way:3}  {:20}  {:8}  {pct:3}%  {}{}",
            clean(&t.id),
            clean(&t.nick),
            t.state.as_str(),
            transfer_what(t),
            t.reason
                .as_deref()
                .map(|r| format!(" ({})", clean(r)))
                .unwrap_or_default()
        );
    }
    out
}

/// The `peers` table.
pub(crate) fn peers_table(peers: &[PeerInfo]) -> String {
    if peers.is_empty() {
        return "no peers known\n".into();
    }
    let rows: Vec<[String; 6]> = peers
        .iter()
        .map(|p| {
            let state = match (p.connected, p.kind, p.encrypted) {
                (true, Some(PeerKind::Go), _) => "connected, plaintext (go)".to_owned(),
                (true, _, true) => "connected, encrypted".to_owned(),
                (true, _, false) => "connected, plaintext".to_owned(),
                (false, _, _) => match p.last_seen_ms {
                    Some(ms) => format!("seen {}s ago", ms / 1000),
                    None => "not connected".to_owned(),
                },
            };
            let state = match &p.away {
                Some(a) if p.connected => format!("{state}; away: {}", clean(a)),
                _ => state,
            };
            [
                clean(&p.nick).into_owned(),
                clean(&p.peer_id).into_owned(),
                p.addr.clone().unwrap_or_else(|| "-".into()),
                p.link.map_or("-", LinkDirection::as_str).to_owned(),
                p.trust.map_or("-", Trust::as_str).to_owned(),
                state,
            ]
        })
        .collect();
    let header = ["NICK", "PEER ID", "ADDRESS", "LINK", "TRUST", "STATE"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 6]| {
        let last = cells.len() - 1;
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == last {
                let _ = write!(out, "{c}");
            } else {
                let _ = write!(out, "{c:<w$}  ");
            }
        }
        out.push('\n');
    };
    line(header);
    for r in &rows {
        line(r.each_ref().map(String::as_str));
    }
    out
}

/// A peer's fingerprint, for `p2pchat fingerprint NICK`.
pub(crate) fn peer_fingerprint(p: &PeerInfo) -> String {
    match (&p.fingerprint, p.trust) {
        (Some(f), trust) => format!(
            "{}  {f}  ({})\n",
            clean(&p.nick),
            trust.map_or("unknown", Trust::as_str)
        ),
        (None, _) => format!(
            "{}  has no key (a plaintext peer): it cannot be verified\n",
            clean(&p.nick)
        ),
    }
}

/// The `status` summary.
pub(crate) fn status_text(s: &StatusInfo) -> String {
    let up = s.uptime_s;
    let uptime = if up >= 3600 {
        format!("{}h{:02}m", up / 3600, up % 3600 / 60)
    } else if up >= 60 {
        format!("{}m{:02}s", up / 60, up % 60)
    } else {
        format!("{up}s")
    };
    let discovery = match &s.multicast {
        Some(g) => format!("{g} on {}", s.interfaces.join(", ")),
        None => "off".into(),
    };
    let store = match &s.store {
        None => "none (an older daemon)".into(),
        Some(st) => {
            let state = match st.state {
                StoreState::Ok => "ok".to_owned(),
                StoreState::Failing => "FAILING, events wait in memory".to_owned(),
                StoreState::Off => "OFF, history is not being stored".to_owned(),
            };
            let problem = st
                .problem
                .as_deref()
                .map(|p| format!(": {}", clean(p)))
                .unwrap_or_default();
            format!(
                "{} ({state}{problem}; kept {} days, at most {} events)",
                st.path, st.retain_days, st.retain_messages
            )
        }
    };
    let mut away = s
        .away
        .as_deref()
        .map(|a| format!("away:      {}\n", clean(a)))
        .unwrap_or_default();
    if s.peers == 0 && s.uptime_s >= crate::doctor::ALONE_HINT_S {
        away.push_str("hint:      nobody is linked; `p2pchat doctor` tells why\n");
    }
    format!(
        "p2pchatd {} (pid {}), up {uptime}\n\
         nick:      {} ({})\n\
         {away}\
         key:       {}\n\
         chat port: {}:{}\n\
         peers:     {} connected, {} known\n\
         history:   {} of {} events in memory\n\
         store:     {store}\n\
         discovery: {discovery}\n\
         socket:    {}\n",
        s.version,
        s.pid,
        clean(&s.nick),
        s.peer_id,
        s.fingerprint,
        s.listen,
        s.port,
        s.peers,
        s.known_peers,
        s.history,
        s.history_capacity,
        s.socket,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_hints_at_doctor_when_nobody_is_linked_for_15_s() {
        let mut s: StatusInfo = serde_json::from_value(serde_json::json!({
            "peer_id": "p", "nick": "n", "port": 8080, "peers": 0, "known_peers": 0,
            "version": "0.1.0", "socket": "/s", "pid": 1, "uptime_s": 14, "history": 0,
            "history_capacity": 1000, "multicast": null, "interfaces": [], "listen": "0.0.0.0",
            "away": "detached"
        }))
        .unwrap();
        assert!(!status_text(&s).contains("doctor"));
        assert!(status_text(&s).contains("away:      detached\n"));
        s.uptime_s = 15;
        assert!(
            status_text(&s).contains("hint:      nobody is linked; `p2pchat doctor` tells why")
        );
        s.peers = 1;
        assert!(!status_text(&s).contains("doctor"));
    }

    #[test]
    fn lines_are_irc_like_and_clean() {
        let e = |body| Event {
            cursor: 1,
            ts: chrono::Utc::now(),
            body,
        };
        let l = event_line(&e(EventBody::Message {
            id: "i".into(),
            peer_id: "p".into(),
            nick: "amy".into(),
            text: "hi \u{1b}[2J".into(),
            action: false,
            fingerprint: None,
            trust: Some(Trust::Pinned),
            seq: None,
            sent: None,
            late: false,
            room: None,
            to: None,
        }));
        assert!(l.ends_with("<amy> hi \u{FFFD}[2J"), "{l}");
        let l = event_line(&e(EventBody::Message {
            id: "i".into(),
            peer_id: "p".into(),
            nick: "amy".into(),
            text: "waves".into(),
            action: true,
            fingerprint: None,
            trust: None,
            seq: None,
            sent: None,
            late: false,
            room: None,
            to: None,
        }));
        assert!(l.ends_with("* amy waves"));
        let l = event_line(&e(EventBody::Message {
            id: "i".into(),
            peer_id: "k0".into(),
            nick: "amy~3fa2".into(),
            text: "hi".into(),
            action: false,
            fingerprint: None,
            trust: Some(Trust::Conflict),
            seq: None,
            sent: None,
            late: false,
            room: None,
            to: None,
        }));
        assert!(l.ends_with(" ! <amy~3fa2> hi"), "{l}");
        let l = event_line(&e(EventBody::Message {
            id: "i".into(),
            peer_id: "amy_1".into(),
            nick: "amy".into(),
            text: "hi".into(),
            action: true,
            fingerprint: None,
            trust: Some(Trust::Plaintext),
            seq: None,
            sent: None,
            late: false,
            room: None,
            to: None,
        }));
        assert!(l.ends_with(" ? * amy hi"), "{l}");
        // Caught up later: when it was said, and marked.
        let said = chrono::Utc::now() - chrono::TimeDelta::hours(3);
        let l = event_line(&e(EventBody::Message {
            id: "i".into(),
            peer_id: "k0".into(),
            nick: "amy".into(),
            text: "while you were away".into(),
            action: false,
            fingerprint: None,
            trust: None,
            seq: Some(4),
            sent: Some(said),
            late: true,
            room: None,
            to: None,
        }));
        let when = said.with_timezone(&Local).format("%H:%M:%S").to_string();
        assert_eq!(l, format!("{when}{LATE_MARK}<amy> while you were away"));
        let l = event_line(&e(EventBody::Leave {
            peer_id: "p".into(),
            nick: "amy".into(),
            reason: Some("quit".into()),
        }));
        assert!(l.ends_with("<-- amy left (quit)"));
    }

    #[test]
    fn peers_table_aligns() {
        let t = peers_table(&[PeerInfo {
            peer_id: "bob_1".into(),
            nick: "bob".into(),
            addr: Some("127.0.0.1:8080".into()),
            connected: true,
            link: Some(LinkDirection::Dialed),
            kind: Some(PeerKind::P2pchatd),
            encrypted: true,
            trust: Some(Trust::Verified),
            last_seen_ms: Some(0),
            ..Default::default()
        }]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1], "bob   bob_1    127.0.0.1:8080  dialed  verified  connected, encrypted",
            "{t}"
        );
    }
}
