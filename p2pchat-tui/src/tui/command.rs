//! Slash commands typed on the input line.

use shared::text::{validate_nick, validate_text};

/// What a submitted input line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    Say(String),
    Me(String),
    /// Join a room (`#name`) / leave one (the buffer's, without a name).
    Join(String),
    Part(Option<String>),
    /// A direct message; open (and show) a conversation; list rooms; close
    /// the buffer.
    Msg {
        nick: String,
        text: String,
    },
    Query(String),
    Rooms,
    Close,
    /// Show the room's topic; with text, set it.
    Topic(Option<String>),
    Nick(String),
    /// Mark the key holding a nick verified / unpin the nick.
    Trust(String),
    Forget(String),
    /// Who a peer is by its key; empty: ourselves.
    Whois(String),
    /// Stored lines holding these words.
    Search(String),
    /// Away with a reason; none: back.
    Away(Option<String>),
    /// Offer a file or folder: the words typed (a path, perhaps a nick
    /// last; the view knows the nicks).
    Send(String),
    /// Answer a file offer: by id (or its start), else the only one.
    Accept(Option<String>),
    Decline(Option<String>),
    /// Stop a transfer (either way): by id (or its start), else the only
    /// one under way.
    Cancel(Option<String>),
    Users,
    Help,
    Clear,
    Quit,
    Shutdown,
    /// Something to tell the user instead (bad usage, unknown command).
    Invalid(String),
}

pub(super) const HELP: &[(&str, &str)] = &[
    ("/help", "this help (F1)"),
    ("/users, /who", "who is here (F2: the pane)"),
    ("/join #ROOM", "join a room (its own buffer)"),
    ("/part [#ROOM]", "leave this room (or ROOM)"),
    ("/msg NICK TEXT", "a direct message, sealed to NICK"),
    ("/query NICK, /close", "open, close a conversation"),
    ("/rooms", "rooms and who is in them"),
    ("/topic [TEXT]", "this room's topic (TEXT sets it)"),
    ("/nick NAME", "change your nick"),
    ("/me ACTION", "say an action"),
    ("/whois [NICK]", "fingerprint, trust (yours)"),
    ("/trust, /forget NICK", "verified; unpinned from its key"),
    ("/search WORDS", "find stored lines (word* too)"),
    ("/send PATH [NICK]", "offer a file or folder"),
    ("/accept, /decline", "answer a file offer [ID]"),
    ("/cancel [ID]", "stop a file transfer"),
    ("/away [REASON]", "away (none, /back: back)"),
    ("/clear", "clear this view"),
    ("/quit, /q", "detach; you stay present"),
    ("/shutdown", "stop the daemon and quit"),
    ("//text", "send text starting with /"),
];

pub(super) const KEYS: &[(&str, &str)] = &[
    ("Up, Down", "recall sent lines"),
    ("Tab, Shift-Tab", "complete a nick or /command"),
    ("^A ^E, Ctrl-arrows", "line start/end, by word"),
    ("^W ^U ^K", "delete word, to start, to end"),
    ("PgUp PgDn Home End", "scroll"),
    ("Alt-1..9, Alt-←/→", "show buffer N, previous/next"),
    ("^N ^P", "next/previous buffer"),
    ("Alt-M", "mouse on/off (wheel scrolling)"),
    ("F3, Shift-F3", "to the older/newer search hit"),
    ("Esc", "dismiss an alert, leave a search"),
    ("^C, ^D", "quit (detach)"),
];

/// Every /command, for Tab completion: the first name of each help entry
/// and its aliases.
pub(super) fn names() -> impl Iterator<Item = &'static str> {
    HELP.iter()
        .flat_map(|(usage, _)| usage.split(", "))
        .filter_map(|u| u.split(' ').next())
        .filter(|n| n.starts_with('/') && !n.starts_with("//"))
}

/// Reads one submitted line. `None`: nothing to do (blank line).
pub(super) fn parse(line: &str) -> Option<Command> {
    let line = line.trim_end();
    if line.trim().is_empty() {
        return None;
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Some(say(line.to_owned()));
    };
    if rest.starts_with('/') {
        return Some(say(rest.to_owned()));
    }
    let (name, arg) = match rest.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (rest, ""),
    };
    let no_arg = |c: Command| {
        if arg.is_empty() {
            c
        } else {
            Command::Invalid(format!("/{name} takes no argument"))
        }
    };
    Some(match name.to_ascii_lowercase().as_str() {
        "help" | "h" | "?" => Command::Help,
        "users" | "who" | "names" => no_arg(Command::Users),
        "clear" => no_arg(Command::Clear),
        "quit" | "q" | "exit" => Command::Quit,
        "shutdown" => no_arg(Command::Shutdown),
        "nick" => match arg {
            "" => Command::Invalid("usage: /nick NAME".into()),
            n => match validate_nick(n) {
                Ok(()) => Command::Nick(n.to_owned()),
                Err(e) => Command::Invalid(format!("cannot use that nick: {e}")),
            },
        },
        "whois" => Command::Whois(arg.to_owned()),
        "fingerprint" => no_arg(Command::Whois(String::new())),
        "join" | "j" => match shared::rooms::parse_room(arg) {
            _ if arg.is_empty() => Command::Invalid("usage: /join #ROOM".into()),
            Ok(r) => Command::Join(r),
            Err(e) => Command::Invalid(format!("cannot join {arg}: {e}")),
        },
        "part" | "leave" => match arg {
            "" => Command::Part(None),
            a => match shared::rooms::parse_room(a) {
                Ok(r) => Command::Part(Some(r)),
                Err(e) => Command::Invalid(format!("cannot leave {a}: {e}")),
            },
        },
        "msg" | "m" => match arg.split_once(char::is_whitespace) {
            Some((nick, text)) if !text.trim().is_empty() => match validate_text(text.trim()) {
                Ok(()) => Command::Msg {
                    nick: bare_nick(nick),
                    text: text.trim().to_owned(),
                },
                Err(e) => Command::Invalid(format!("cannot send that: {e}")),
            },
            _ => Command::Invalid("usage: /msg NICK TEXT".into()),
        },
        "query" => match arg {
            "" => Command::Invalid("usage: /query NICK".into()),
            n if n.contains(char::is_whitespace) => {
                Command::Invalid("/query takes one nick (then type to it)".into())
            }
            n => Command::Query(bare_nick(n)),
        },
        "rooms" | "list" => no_arg(Command::Rooms),
        "close" => no_arg(Command::Close),
        "topic" => match arg {
            "" => Command::Topic(None),
            t if t.chars().count() > shared::rooms::MAX_TOPIC_CHARS => Command::Invalid(format!(
                "a topic is at most {} characters",
                shared::rooms::MAX_TOPIC_CHARS
            )),
            t => match validate_text(t) {
                Ok(()) => Command::Topic(Some(t.to_owned())),
                Err(e) => Command::Invalid(format!("cannot set that: {e}")),
            },
        },
        "away" => Command::Away((!arg.is_empty()).then(|| arg.to_owned())),
        "send" => match arg {
            "" => Command::Invalid("usage: /send PATH [NICK]".into()),
            a => Command::Send(a.to_owned()),
        },
        "accept" | "decline" | "cancel" => match arg {
            a if a.contains(char::is_whitespace) => {
                Command::Invalid(format!("/{name} takes one transfer id"))
            }
            a => {
                let id = (!a.is_empty()).then(|| a.to_ascii_lowercase());
                match name.to_ascii_lowercase().as_str() {
                    "accept" => Command::Accept(id),
                    "decline" => Command::Decline(id),
                    _ => Command::Cancel(id),
                }
            }
        },
        "back" => no_arg(Command::Away(None)),
        "search" | "grep" => match arg {
            "" => Command::Invalid("usage: /search WORDS".into()),
            w => Command::Search(w.to_owned()),
        },
        "trust" | "forget" => match (arg, name.to_ascii_lowercase().as_str()) {
            ("", n) => Command::Invalid(format!("usage: /{n} NICK")),
            (a, _) if a.contains(char::is_whitespace) => {
                Command::Invalid(format!("/{name} takes one nick"))
            }
            (a, "trust") => Command::Trust(a.to_owned()),
            (a, _) => Command::Forget(a.to_owned()),
        },
        "me" => match arg {
            "" => Command::Invalid("usage: /me ACTION".into()),
            a => match validate_text(a) {
                Ok(()) => Command::Me(a.to_owned()),
                Err(e) => Command::Invalid(format!("cannot send that: {e}")),
            },
        },
        _ => Command::Invalid(format!("unknown command /{name} (try /help)")),
    })
}

/// A nick as typed: `@bob`, as the buffer list names a conversation, is
/// bob.
fn bare_nick(nick: &str) -> String {
    nick.strip_prefix('@').unwrap_or(nick).to_owned()
}

fn say(text: String) -> Command {
    match validate_text(&text) {
        Ok(()) => Command::Say(text),
        Err(e) => Command::Invalid(format!("cannot send that: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse("hello"), Some(Command::Say("hello".into())));
        assert_eq!(parse("   "), None);
        assert_eq!(
            parse("//etc/passwd"),
            Some(Command::Say("/etc/passwd".into()))
        );
        assert_eq!(parse("/nick bob"), Some(Command::Nick("bob".into())));
        assert_eq!(parse("/NICK  bob "), Some(Command::Nick("bob".into())));
        assert!(matches!(parse("/nick"), Some(Command::Invalid(m)) if m.contains("usage")));
        assert!(
            matches!(parse("/nick a b"), Some(Command::Invalid(m)) if m.contains("whitespace"))
        );
        assert!(matches!(
            parse(&format!("/nick {}", "x".repeat(21))),
            Some(Command::Invalid(_))
        ));
        assert_eq!(parse("/me waves"), Some(Command::Me("waves".into())));
        assert!(matches!(parse("/me"), Some(Command::Invalid(m)) if m.contains("usage")));
        assert_eq!(parse("/users"), Some(Command::Users));
        assert_eq!(parse("/who"), Some(Command::Users));
        assert!(matches!(parse("/who x"), Some(Command::Invalid(_))));
        assert_eq!(parse("/help"), Some(Command::Help));
        assert_eq!(parse("/trust bob"), Some(Command::Trust("bob".into())));
        assert_eq!(
            parse("/search deploy fri*"),
            Some(Command::Search("deploy fri*".into()))
        );
        assert!(matches!(parse("/search"), Some(Command::Invalid(m)) if m.contains("usage")));
        assert_eq!(parse("/forget bob"), Some(Command::Forget("bob".into())));
        assert!(matches!(parse("/trust"), Some(Command::Invalid(m)) if m.contains("usage")));
        assert!(matches!(parse("/trust a b"), Some(Command::Invalid(_))));
        assert_eq!(parse("/whois bob"), Some(Command::Whois("bob".into())));
        assert_eq!(parse("/whois"), Some(Command::Whois(String::new())));
        assert_eq!(
            parse("/send ~/My Report.pdf bob"),
            Some(Command::Send("~/My Report.pdf bob".into()))
        );
        assert!(matches!(parse("/send"), Some(Command::Invalid(m)) if m.contains("usage")));
        assert_eq!(parse("/accept"), Some(Command::Accept(None)));
        assert_eq!(
            parse("/decline 0A1b"),
            Some(Command::Decline(Some("0a1b".into())))
        );
        assert!(matches!(parse("/accept a b"), Some(Command::Invalid(_))));
        assert_eq!(parse("/cancel"), Some(Command::Cancel(None)));
        assert_eq!(parse("/fingerprint"), Some(Command::Whois(String::new())));
        assert_eq!(parse("/clear"), Some(Command::Clear));
        assert_eq!(parse("/quit"), Some(Command::Quit));
        assert_eq!(parse("/q bye"), Some(Command::Quit));
        assert_eq!(parse("/shutdown"), Some(Command::Shutdown));
        assert_eq!(parse("/join #Ops"), Some(Command::Join("#ops".into())));
        assert_eq!(parse("/join ops"), Some(Command::Join("#ops".into())));
        assert!(matches!(parse("/join"), Some(Command::Invalid(m)) if m.contains("usage")));
        assert!(matches!(parse("/join #a b"), Some(Command::Invalid(m)) if m.contains("only")));
        assert_eq!(parse("/part"), Some(Command::Part(None)));
        assert_eq!(
            parse("/part #ops"),
            Some(Command::Part(Some("#ops".into())))
        );
        assert_eq!(
            parse("/msg bob  the code is 4711 "),
            Some(Command::Msg {
                nick: "bob".into(),
                text: "the code is 4711".into()
            })
        );
        assert!(matches!(parse("/msg bob"), Some(Command::Invalid(m)) if m.contains("usage")));
        assert_eq!(parse("/query bob"), Some(Command::Query("bob".into())));
        assert_eq!(parse("/query @bob"), Some(Command::Query("bob".into())));
        assert!(matches!(parse("/query"), Some(Command::Invalid(_))));
        assert_eq!(parse("/rooms"), Some(Command::Rooms));
        assert_eq!(parse("/close"), Some(Command::Close));
        assert_eq!(parse("/topic"), Some(Command::Topic(None)));
        assert_eq!(
            parse("/topic deploys on Fridays"),
            Some(Command::Topic(Some("deploys on Fridays".into())))
        );
        assert!(
            matches!(parse(&format!("/topic {}", "x".repeat(301))), Some(Command::Invalid(m)) if m.contains("300"))
        );
        assert!(
            matches!(parse("/dance"), Some(Command::Invalid(m)) if m.contains("unknown command /dance"))
        );
        assert!(
            matches!(parse(&"x".repeat(5000)), Some(Command::Invalid(m)) if m.contains("4096"))
        );
    }
}
