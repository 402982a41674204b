//! The rooms this daemon is in besides `#general`, kept across restarts in
//! `rooms` in the state folder (one name a line, rewritten atomically).
//! Which rooms the linked peers are in is the mesh's (`rooms` lines);
//! what a room is and how it travels is [`shared::rooms`].

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use shared::rooms::{GENERAL, MAX_JOINED, parse_room};
use tracing::warn;

use crate::identity::write_private;

/// The file, in the state folder.
pub(crate) const ROOMS_FILE: &str = "rooms";
/// Largest file read back.
const MAX_FILE: u64 = 16 * 1024;

/// Why a room cannot be joined or left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RoomsError {
    #[error("{GENERAL} is every peer's room, Go peers too; it cannot be left")]
    General,
    #[error("in {MAX_JOINED} rooms already; part one first")]
    Full,
}

/// The rooms we are in, `#name` each.
#[derive(Debug, Default)]
pub(crate) struct Joined {
    path: Option<PathBuf>,
    rooms: BTreeSet<String>,
}

impl Joined {
    /// What `dir` holds (nothing if it has no file; a name that is not a
    /// room is skipped, and said).
    pub(crate) fn load(dir: Option<&Path>) -> Self {
        let path = dir.map(|d| d.join(ROOMS_FILE));
        let mut rooms = BTreeSet::new();
        if let Some(p) = &path {
            match read_bounded(p) {
                Ok(Some(text)) => {
                    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                        match parse_room(line) {
                            Ok(r) if r == GENERAL => {}
                            Ok(r) if rooms.len() < MAX_JOINED => {
                                rooms.insert(r);
                            }
                            Ok(r) => {
                                warn!(path = %p.display(), room = r, "more rooms than may be joined; skipped")
                            }
                            Err(e) => warn!(path = %p.display(), line, "not a room ({e}); skipped"),
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(path = %p.display(), "cannot read the rooms joined ({e}); in #general only")
                }
            }
        }
        Self { path, rooms }
    }

    pub(crate) fn contains(&self, room: &str) -> bool {
        room == GENERAL || self.rooms.contains(room)
    }

    /// Rooms besides `#general`.
    pub(crate) fn rooms(&self) -> impl Iterator<Item = &String> {
        self.rooms.iter()
    }

    /// Joins `room` (one spelling); false if already in it.
    pub(crate) fn join(&mut self, room: &str) -> Result<bool, RoomsError> {
        if self.contains(room) {
            return Ok(false);
        }
        if self.rooms.len() >= MAX_JOINED {
            return Err(RoomsError::Full);
        }
        self.rooms.insert(room.to_owned());
        Ok(true)
    }

    /// Leaves `room`; false if not in it.
    pub(crate) fn part(&mut self, room: &str) -> Result<bool, RoomsError> {
        if room == GENERAL {
            return Err(RoomsError::General);
        }
        Ok(self.rooms.remove(room))
    }

    /// What [`save`] writes: the file and its text, as the rooms are now.
    pub(crate) fn snapshot(&self) -> Option<(PathBuf, String)> {
        let path = self.path.clone()?;
        let mut text = String::new();
        for r in &self.rooms {
            text.push_str(r);
            text.push('\n');
        }
        Some((path, text))
    }
}

/// Keeps the rooms joined (a [`Joined::snapshot`]) for the next start.
pub(crate) fn save((path, text): &(PathBuf, String)) {
    if let Err(e) = write_private(path, text.as_bytes()) {
        warn!(path = %path.display(), "cannot keep the rooms joined ({e}); they last until the daemon stops");
    }
}

fn read_bounded(path: &Path) -> io::Result<Option<String>> {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
        Ok(m) if m.len() > MAX_FILE => Err(io::Error::other("too large")),
        Ok(_) => fs::read_to_string(path).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_joined_are_kept_and_bounded() {
        let dir = std::env::temp_dir().join(format!("p2pchat-rooms-{:016x}", fastrand::u64(..)));
        fs::create_dir(&dir).unwrap();
        let mut j = Joined::load(Some(&dir));
        assert!(j.contains(GENERAL));
        assert_eq!(j.join("#ops"), Ok(true));
        assert_eq!(j.join("#ops"), Ok(false));
        assert_eq!(j.part(GENERAL), Err(RoomsError::General));
        for i in 1..MAX_JOINED {
            assert_eq!(j.join(&format!("#r{i}")), Ok(true));
        }
        assert_eq!(j.join("#one-more"), Err(RoomsError::Full));
        assert_eq!(j.part("#r1"), Ok(true));
        assert_eq!(j.part("#r1"), Ok(false));
        save(&j.snapshot().unwrap());
        // A hand-edited line that is no room is skipped.
        let path = dir.join(ROOMS_FILE);
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("not a room!\n#general\n");
        fs::write(&path, text).unwrap();
        let back = Joined::load(Some(&dir));
        assert!(back.contains("#ops") && !back.contains("#r1"));
        assert_eq!(back.rooms().count(), MAX_JOINED - 1);
        fs::remove_dir_all(dir).unwrap();
    }
}
