//! Mentions: where a line names you (your nick, or a word you asked to be
//! highlighted on). The daemon uses it to notify, the TUI to highlight and
//! ring; both must agree on what counts, so the rule lives here.
//!
//! A mention is a whole word, matched without regard to case: `alice`
//! matches "Alice: look" and "ping @alice!", not "malice" or "alice_b".

use std::ops::Range;

/// Words that make a line a mention: your nick and the configured words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Highlights {
    words: Vec<String>,
}

/// Highlight words are at most this long; longer ones are ignored.
pub const MAX_HIGHLIGHT_CHARS: usize = 64;
/// At most this many highlight words are kept.
pub const MAX_HIGHLIGHTS: usize = 64;

impl Highlights {
    /// `nick` (if any) and `words`; empty, blank and overlong words are
    /// dropped, and at most [`MAX_HIGHLIGHTS`] kept.
    pub fn new<'a>(nick: Option<&'a str>, words: impl IntoIterator<Item = &'a str>) -> Self {
        let mut out: Vec<String> = Vec::new();
        for w in nick.into_iter().chain(words) {
            let w = w.trim();
            if w.is_empty()
                || w.chars().count() > MAX_HIGHLIGHT_CHARS
                || out.iter().any(|o| eq_fold(o, w))
            {
                continue;
            }
            if out.len() == MAX_HIGHLIGHTS {
                break;
            }
            out.push(w.to_owned());
        }
        Self { words: out }
    }

    /// Whether `text` mentions any of the words.
    pub fn matches(&self, text: &str) -> bool {
        self.words.iter().any(|w| find_word(text, w, 0).is_some())
    }

    /// The byte ranges of `text` that are mentions, in order, not
    /// overlapping.
    pub fn ranges(&self, text: &str) -> Vec<Range<usize>> {
        let mut found: Vec<Range<usize>> = Vec::new();
        for w in &self.words {
            let mut from = 0;
            while let Some(r) = find_word(text, w, from) {
                from = r.end;
                found.push(r);
            }
        }
        found.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
        let mut out: Vec<Range<usize>> = Vec::with_capacity(found.len());
        for r in found {
            match out.last() {
                Some(last) if r.start < last.end => {}
                _ => out.push(r),
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn eq_fold(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// The first whole-word, case-blind match of `word` in `text` at or after
/// byte `from`.
fn find_word(text: &str, word: &str, from: usize) -> Option<Range<usize>> {
    if word.is_ascii() {
        return find_ascii_word(text, word, from);
    }
    let starts = text
        .char_indices()
        .filter(|&(i, _)| i >= from)
        .map(|(i, _)| i);
    for start in starts {
        let rest = &text[start..];
        let Some(len) = prefix_fold(rest, word) else {
            continue;
        };
        let end = start + len;
        if bounded(text, start..end, word) {
            return Some(start..end);
        }
    }
    None
}

/// Whether the match `at` of `word` in `text` is a whole word. A word that
/// starts or ends in punctuation (`@ops`) is bounded by what it is; one
/// that starts or ends in a word character needs a non-word neighbour.
fn bounded(text: &str, at: Range<usize>, word: &str) -> bool {
    let before = text[..at.start].chars().next_back();
    let after = text[at.end..].chars().next();
    let first_word = word.chars().next().is_some_and(is_word_char);
    let last_word = word.chars().next_back().is_some_and(is_word_char);
    !(first_word && before.is_some_and(is_word_char)
        || last_word && after.is_some_and(is_word_char))
}

/// [`find_word`] for an ASCII word: bytes compared, no case tables (the
/// daemon checks every line it receives).
fn find_ascii_word(text: &str, word: &str, from: usize) -> Option<Range<usize>> {
    let (t, w) = (text.as_bytes(), word.as_bytes());
    let first = *w.first()?;
    let mut i = from;
    while i + w.len() <= t.len() {
        // ASCII matched here, so `i` and its end are char boundaries.
        if t[i].eq_ignore_ascii_case(&first)
            && t[i..i + w.len()].eq_ignore_ascii_case(w)
            && bounded(text, i..i + w.len(), word)
        {
            return Some(i..i + w.len());
        }
        i += 1;
    }
    None
}

/// If `text` starts with `word` (case-blind), the byte length it takes in
/// `text`.
fn prefix_fold(text: &str, word: &str) -> Option<usize> {
    let mut t = text.char_indices();
    for w in word.chars() {
        let (_, c) = t.next()?;
        if c != w && !c.to_lowercase().eq(w.to_lowercase()) {
            return None;
        }
    }
    Some(t.next().map_or(text.len(), |(i, _)| i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_any_case() {
        let h = Highlights::new(Some("alice"), ["deploy", "@ops"]);
        assert!(h.matches("Alice: look"));
        assert!(h.matches("ping @alice!"));
        assert!(h.matches("DEPLOY now"));
        assert!(h.matches("paging @ops"));
        assert!(!h.matches("malice aforethought"));
        assert!(!h.matches("alice_b is here"));
        assert!(!h.matches("redeployment"));
        assert!(!h.matches("ops"));
        assert_eq!(h.ranges("alice, deploy: Alice"), vec![0..5, 7..13, 15..20]);
    }

    #[test]
    fn unicode_and_bounds() {
        let h = Highlights::new(Some("Zoë"), ["", "  ", &"x".repeat(65)]);
        assert_eq!(h.words.len(), 1, "blank and overlong words are dropped");
        assert_eq!(h.ranges("hi ZOË!"), vec![3..7]);
        assert!(!h.matches("zoëy"));
        assert!(Highlights::new(None, []).is_empty());
        let many: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
        let h = Highlights::new(None, many.iter().map(String::as_str));
        assert_eq!(h.words.len(), MAX_HIGHLIGHTS);
    }

    #[test]
    fn overlapping_words_give_one_range() {
        let h = Highlights::new(Some("bob"), ["bob smith"]);
        assert_eq!(h.ranges("bob smith here"), vec![0..9]);
    }
}
