//! Colours and styles, with a monochrome theme for `NO_COLOR`.

use ratatui::style::{Color, Modifier, Style};

/// Ten colours that read well on dark and light terminals; a peer's colour
/// is picked from its id, so it stays the same everywhere and every time.
pub(super) const PALETTE: [Color; 10] = [
    Color::Red,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::Cyan,
    Color::LightRed,
    Color::LightGreen,
    Color::LightBlue,
    Color::LightMagenta,
];

/// FNV-1a: stable across runs and machines, unlike std's hasher.
pub(super) fn palette_index(peer_id: &str) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in peer_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // A u32 always fits a usize on the targets we build for (32/64-bit).
    usize::try_from(h).unwrap_or(0) % PALETTE.len()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Theme {
    pub color: bool,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set to anything but "" (no-color.org),
    /// or the settings say `color = false`.
    pub(super) fn from_env(color: bool) -> Self {
        Self {
            color: color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    pub(super) fn nick(self, peer_id: &str, own: bool) -> Style {
        let s = self.fg(PALETTE[palette_index(peer_id)]);
        let s = s.add_modifier(Modifier::BOLD);
        if own {
            s.add_modifier(Modifier::UNDERLINED)
        } else {
            s
        }
    }

    pub(super) fn time(self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }

    pub(super) fn join(self) -> Style {
        self.fg(Color::Green).add_modifier(Modifier::DIM)
    }

    pub(super) fn leave(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::DIM)
    }

    pub(super) fn notice(self) -> Style {
        self.fg(Color::Yellow)
    }

    pub(super) fn info(self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new().add_modifier(Modifier::ITALIC)
        }
    }

    pub(super) fn error(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    pub(super) fn status_bar(self) -> Style {
        if self.color {
            Style::new().fg(Color::White).bg(Color::Blue)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }

    pub(super) fn status_alert(self) -> Style {
        if self.color {
            Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }
    }

    pub(super) fn border(self) -> Style {
        self.fg(Color::DarkGray)
    }

    /// Words that name us: they must catch the eye.
    pub(super) fn mention(self) -> Style {
        if self.color {
            Style::new()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        }
    }

    /// A link (also an OSC 8 hyperlink where the terminal has them).
    pub(super) fn link(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::UNDERLINED)
    }

    /// A rule across the view (day change, unread lines).
    pub(super) fn rule(self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::DIM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_stable_and_spread() {
        assert_eq!(palette_index("alice_1"), palette_index("alice_1"));
        let used: std::collections::HashSet<usize> = (0..200)
            .map(|i| palette_index(&format!("peer_{i}")))
            .collect();
        assert_eq!(used.len(), PALETTE.len());
    }
}
