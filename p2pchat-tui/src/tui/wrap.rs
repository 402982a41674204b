//! Wrapping by display width: CJK and emoji take two columns, combining
//! marks none. Breaks at spaces when it can, inside a word when it must.

use unicode_width::UnicodeWidthChar;

/// Display width of one character (control characters count as 0; the
/// daemon never lets them through).
pub(super) fn char_width(c: char) -> usize {
    c.width().unwrap_or(0)
}

pub(super) fn str_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// Splits `text` into rows: the first row has `first` columns, the others
/// `rest`. Spaces at a break are dropped. Always at least one row.
pub(super) fn wrap(text: &str, first: usize, rest: usize) -> Vec<&str> {
    let mut rows = Vec::new();
    let mut avail = first.max(1);
    let mut start = 0;
    while start < text.len() {
        let mut width = 0;
        let mut end = start;
        // Byte offset just after the last space seen in this row.
        let mut last_space = None;
        let mut fits_all = true;
        for (i, c) in text[start..].char_indices() {
            let w = char_width(c);
            if width + w > avail && width > 0 {
                fits_all = false;
                if c == ' ' {
                    // The row is full right before a space: break there.
                    last_space = Some(start + i);
                }
                break;
            }
            width += w;
            end = start + i + c.len_utf8();
            if c == ' ' {
                last_space = Some(end);
            }
        }
        if fits_all {
            rows.push(&text[start..]);
            break;
        }
        let cut = match last_space {
            Some(s) if s > start => s,
            _ => end,
        };
        rows.push(text[start..cut].trim_end_matches(' '));
        start = cut;
        while text[start..].starts_with(' ') {
            start += 1;
        }
        avail = rest.max(1);
    }
    if rows.is_empty() {
        rows.push("");
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaks_at_spaces() {
        assert_eq!(wrap("hello big world", 9, 9), vec!["hello big", "world"]);
        assert_eq!(wrap("hello", 10, 10), vec!["hello"]);
        assert_eq!(wrap("", 10, 10), vec![""]);
        assert_eq!(wrap("a b c d e", 3, 3), vec!["a b", "c d", "e"]);
    }

    #[test]
    fn splits_long_words_and_uses_the_first_width_first() {
        assert_eq!(wrap("abcdefgh", 3, 5), vec!["abc", "defgh"]);
        assert_eq!(
            wrap("xx abcdefghij", 4, 4),
            vec!["xx", "abcd", "efgh", "ij"]
        );
    }

    #[test]
    fn counts_display_width() {
        // Each CJK character is two columns wide.
        assert_eq!(wrap("漢字漢字漢", 4, 4), vec!["漢字", "漢字", "漢"]);
        // A wide character never straddles the edge.
        assert_eq!(wrap("a漢字", 2, 2), vec!["a", "漢", "字"]);
        assert_eq!(wrap("🎉🎉 ok", 4, 4), vec!["🎉🎉", "ok"]);
        assert_eq!(str_width("e\u{301}"), 1, "combining mark");
        for row in wrap("日本語のテキストを折り返す test of mixed 幅", 7, 7) {
            assert!(str_width(row) <= 7, "{row}");
        }
    }

    #[test]
    fn never_loops_on_tiny_widths() {
        assert_eq!(wrap("漢", 1, 1), vec!["漢"]);
        assert_eq!(wrap("ab", 0, 0), vec!["a", "b"]);
    }
}
