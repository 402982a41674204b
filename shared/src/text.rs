//! Rules for nicks, texts and ids (DESIGN §2), and how foreign input that
//! breaks them is made safe to show.

use std::borrow::Cow;

use crate::limits::{MAX_MESSAGE_ID_BYTES, MAX_NICK_CHARS, MAX_PEER_ID_BYTES, MAX_TEXT_BYTES};

/// Why a nick, text or id was refused. The message is meant for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("nick is empty")]
    EmptyNick,
    #[error("nick is longer than {MAX_NICK_CHARS} characters")]
    NickTooLong,
    #[error("nick may not contain whitespace or control characters")]
    NickBadChar,
    #[error("text is empty")]
    EmptyText,
    #[error("text is longer than {MAX_TEXT_BYTES} bytes")]
    TextTooLong,
    #[error("text may not contain control characters (tab is allowed)")]
    TextBadChar,
    #[error("id is empty, longer than {max} bytes, or contains whitespace")]
    BadId { max: usize },
}

/// A nick: 1-20 characters, no whitespace, no control characters.
pub fn validate_nick(nick: &str) -> Result<(), TextError> {
    if nick.is_empty() {
        return Err(TextError::EmptyNick);
    }
    if nick.chars().count() > MAX_NICK_CHARS {
        return Err(TextError::NickTooLong);
    }
    if nick.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TextError::NickBadChar);
    }
    Ok(())
}

/// A chat text: 1-4096 bytes, no control characters but tab.
pub fn validate_text(text: &str) -> Result<(), TextError> {
    if text.is_empty() {
        return Err(TextError::EmptyText);
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(TextError::TextTooLong);
    }
    if text.chars().any(is_forbidden_in_text) {
        return Err(TextError::TextBadChar);
    }
    Ok(())
}

/// A peer id: 1-128 bytes, no whitespace or control characters.
pub fn validate_peer_id(id: &str) -> Result<(), TextError> {
    validate_id(id, MAX_PEER_ID_BYTES)
}

/// A message id: 1-128 bytes, no whitespace or control characters.
pub fn validate_message_id(id: &str) -> Result<(), TextError> {
    validate_id(id, MAX_MESSAGE_ID_BYTES)
}

fn validate_id(id: &str, max: usize) -> Result<(), TextError> {
    if id.is_empty() || id.len() > max || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TextError::BadId { max });
    }
    Ok(())
}

fn is_forbidden_in_text(c: char) -> bool {
    c.is_control() && c != '\t'
}

/// Makes a nick that arrived from the network showable: whitespace and control
/// characters become `_`, it is cut to 20 characters as ours are, an empty
/// one is `?`. Go users may pick nicks our own rules refuse; they are still
/// shown, within the same bounds.
pub fn sanitize_foreign_nick(nick: &str) -> Cow<'_, str> {
    let clean = nick.chars().count() <= MAX_NICK_CHARS
        && !nick.is_empty()
        && !nick.chars().any(|c| c.is_whitespace() || c.is_control());
    if clean {
        return Cow::Borrowed(nick);
    }
    let s: String = nick
        .chars()
        .take(MAX_NICK_CHARS)
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() {
        Cow::Borrowed("?")
    } else {
        Cow::Owned(s)
    }
}

/// Makes a text that arrived from the network safe to store and show: control
/// characters other than tab become U+FFFD (so no peer can drive a terminal),
/// and it is cut to 4096 bytes on a character boundary.
pub fn sanitize_foreign_text(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_TEXT_BYTES && !text.chars().any(is_forbidden_in_text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(MAX_TEXT_BYTES));
    for c in text.chars() {
        let c = if is_forbidden_in_text(c) {
            '\u{FFFD}'
        } else {
            c
        };
        if out.len() + c.len_utf8() > MAX_TEXT_BYTES {
            break;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nick_rules() {
        assert!(validate_nick("alice").is_ok());
        assert!(validate_nick("ålice_ö-ü.漢字").is_ok());
        assert!(validate_nick(&"x".repeat(20)).is_ok());
        assert!(
            validate_nick(&"漢".repeat(20)).is_ok(),
            "counted in characters"
        );
        assert_eq!(validate_nick(""), Err(TextError::EmptyNick));
        assert_eq!(validate_nick(&"x".repeat(21)), Err(TextError::NickTooLong));
        assert_eq!(validate_nick("a b"), Err(TextError::NickBadChar));
        assert_eq!(validate_nick("a\tb"), Err(TextError::NickBadChar));
        assert_eq!(validate_nick("a\u{1b}b"), Err(TextError::NickBadChar));
        assert_eq!(validate_nick("a\u{a0}b"), Err(TextError::NickBadChar));
    }

    #[test]
    fn text_rules() {
        assert!(validate_text("hello\tworld 🌍").is_ok());
        assert!(validate_text(&"é".repeat(2048)).is_ok());
        assert_eq!(validate_text(""), Err(TextError::EmptyText));
        assert_eq!(
            validate_text(&"é".repeat(2049)),
            Err(TextError::TextTooLong)
        );
        assert_eq!(validate_text("a\nb"), Err(TextError::TextBadChar));
        assert_eq!(validate_text("\u{1b}[2J"), Err(TextError::TextBadChar));
        assert_eq!(validate_text("a\u{7f}"), Err(TextError::TextBadChar));
    }

    #[test]
    fn ids() {
        assert!(validate_peer_id("alice_75").is_ok());
        assert!(validate_peer_id("").is_err());
        assert!(validate_peer_id("a b").is_err());
        assert!(validate_peer_id(&"a".repeat(129)).is_err());
        assert!(validate_message_id("52041141e026c365").is_ok());
        assert!(validate_message_id("x\n").is_err());
    }

    #[test]
    fn sanitizes_foreign_input() {
        assert!(matches!(sanitize_foreign_nick("bob"), Cow::Borrowed("bob")));
        assert_eq!(sanitize_foreign_nick("Bob Smith"), "Bob_Smith");
        assert_eq!(sanitize_foreign_nick(""), "?");
        assert_eq!(
            sanitize_foreign_nick(&"y".repeat(60_000)).chars().count(),
            MAX_NICK_CHARS
        );
        assert!(validate_nick(&sanitize_foreign_nick(&"漢 ".repeat(30))).is_ok());
        assert!(matches!(
            sanitize_foreign_text("hi\tthere"),
            Cow::Borrowed(_)
        ));
        assert_eq!(sanitize_foreign_text("a\u{1b}[2Jb"), "a\u{FFFD}[2Jb");
        let long = "é".repeat(3000);
        let cut = sanitize_foreign_text(&long);
        assert!(cut.len() <= MAX_TEXT_BYTES && validate_text(&cut).is_ok());
    }
}
