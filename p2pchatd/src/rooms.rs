//! The rooms this daemon is in besides `#general`, kept across restarts in
//! `rooms` in the state folder (one name a line, rewritten atomically), and
//! their topics, in `topics.json` beside it.
//! Which rooms the linked peers are in is the mesh's (`rooms` lines);
//! what a room is and how it travels is [`shared::rooms`].

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use shared::rooms::{GENERAL, MAX_JOINED, MAX_TOPIC_CHARS, Topic, parse_room};
use tracing::warn;

use crate::identity::write_private;

/// The files, in the state folder.
pub(crate) const ROOMS_FILE: &str = "rooms";
const TOPICS_FILE: &str = "topics.json";
/// Largest file read back: every topic whole, with room to spare (the
/// text is JSON: a character may take six bytes escaped).
const MAX_FILE: u64 = ((MAX_JOINED + 1) * (MAX_TOPIC_CHARS * 6 + 512)) as u64;

/// Why a room cannot be joined or left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RoomsError {
    #[error("{GENERAL} is every peer's room, Go peers too; it cannot be left")]
    General,
    #[error("in {MAX_JOINED} rooms already; part one first")]
    Full,
}

/// The rooms we are in, `#name` each, and the topics of those that have
/// one (`#general` too).
#[derive(Debug, Default)]
pub(crate) struct Joined {
    path: Option<PathBuf>,
    rooms: BTreeSet<String>,
    topics: BTreeMap<String, Topic>,
}

/// What [`save`] writes: the rooms file and the topics file, each with its
/// text.
pub(crate) type Snapshot = [(PathBuf, String); 2];

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
        let mut topics = BTreeMap::new();
        if let Some(p) = &path {
            let file = p.with_file_name(TOPICS_FILE);
            let read: Option<BTreeMap<String, Topic>> = match read_bounded(&file) {
                Ok(Some(text)) => serde_json::from_str(&text)
                    .inspect_err(
                        |e| warn!(path = %file.display(), "topics not read ({e}); none kept"),
                    )
                    .ok(),
                Ok(None) => None,
                Err(e) => {
                    warn!(path = %file.display(), "cannot read the topics ({e}); none kept");
                    None
                }
            };
            topics = read
                .unwrap_or_default()
                .into_iter()
                .filter(|(r, t)| {
                    (*r == GENERAL || rooms.contains(r))
                        && t.text.chars().count() <= MAX_TOPIC_CHARS
                })
                .collect();
        }
        Self {
            path,
            rooms,
            topics,
        }
    }

    /// `room`'s topic, if it has one.
    pub(crate) fn topic(&self, room: &str) -> Option<&Topic> {
        self.topics.get(room)
    }

    /// Takes `topic` for `room` (one we are in) if it is newer than the
    /// one held; true when it was.
    pub(crate) fn set_topic(&mut self, room: &str, topic: Topic) -> bool {
        if !self.contains(room) || self.topics.get(room).is_some_and(|t| !topic.newer_than(t)) {
            return false;
        }
        self.topics.insert(room.to_owned(), topic);
        true
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
        self.topics.remove(room);
        Ok(self.rooms.remove(room))
    }

    /// What [`save`] writes, as the rooms and topics are now.
    pub(crate) fn snapshot(&self) -> Option<Snapshot> {
        let path = self.path.clone()?;
        let mut text = String::new();
        for r in &self.rooms {
            text.push_str(r);
            text.push('\n');
        }
        let topics = serde_json::to_string_pretty(&self.topics).unwrap_or_default();
        Some([(path.with_file_name(TOPICS_FILE), topics), (path, text)])
    }
}

/// Keeps the rooms joined and their topics (a [`Joined::snapshot`]) for
/// the next start.
pub(crate) fn save(snapshot: &Snapshot) {
    for (path, text) in snapshot {
        if let Err(e) = write_private(path, text.as_bytes()) {
            warn!(path = %path.display(), "cannot keep the rooms joined ({e}); they last until the daemon stops");
        }
    }
}

/// A state file's text; `None` when there is none yet.
fn read_bounded(path: &Path) -> io::Result<Option<String>> {
    match shared::config::read_bounded(path, MAX_FILE) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        r => r.map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
        // Topics: the newest wins, and they outlive a restart.
        let mut j = back;
        let at = |s| chrono::DateTime::from_timestamp(s, 0).unwrap();
        let topic = |text: &str, s| Topic {
            text: text.into(),
            by: "kb".into(),
            nick: "bob".into(),
            at: at(s),
        };
        assert!(j.set_topic("#ops", topic("deploys on Friday", 10)));
        assert!(!j.set_topic("#ops", topic("older", 5)));
        assert!(!j.set_topic("#nope", topic("not ours", 20)));
        save(&j.snapshot().unwrap());
        let back = Joined::load(Some(&dir));
        assert_eq!(back.topic("#ops").unwrap().text, "deploys on Friday");
        // Every room with the longest topic still reads back.
        let mut j = back;
        let rooms: Vec<String> = j.rooms().cloned().collect();
        for r in &rooms {
            assert!(j.set_topic(r, topic(&"é\"".repeat(MAX_TOPIC_CHARS / 2), 30)));
        }
        save(&j.snapshot().unwrap());
        let back = Joined::load(Some(&dir));
        assert!(rooms.iter().all(|r| back.topic(r).is_some()));
        fs::remove_dir_all(dir).unwrap();
    }
}
