//! Nicks bound to keys, trust on first use. The first key seen with a nick
//! pins it; another key that claims a pinned nick is shown as `nick~tag`
//! (from its fingerprint) and flagged a conflict, as is a plaintext peer
//! (no key) that claims one (`nick~go`). `p2pchat trust NICK` marks the key
//! that holds NICK verified after its fingerprint was compared out of band;
//! a verified nick that turns up with another key raises an alert.
//! `p2pchat forget NICK` unpins a nick.
//!
//! Kept in `known_peers.json` beside the identity, written atomically when
//! it changes, bounded in size.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shared::api::Trust;
use shared::keys::{
    KEY_LEN, fingerprint_of, hex, peer_id_of, short_tag_of, short_tag_of_id, unhex,
};

use crate::identity::write_private;

/// Keys remembered at most; the longest unseen unverified go first.
const MAX_KEYS: usize = 4096;
/// Largest file read back (~100 bytes a key).
const MAX_FILE: u64 = 4 << 20;

/// How a peer is to be shown, as its key and nick say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) trust: Trust,
    /// Its nick, or `nick~tag` when the nick belongs to another key.
    pub(crate) shown: String,
    /// A verified nick that turned up with another key: say so, loudly.
    pub(crate) alert: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KnownKey {
    nick: String,
    first_seen: i64,
    last_seen: i64,
    #[serde(default)]
    verified: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    /// Key (hex) to what we know of it.
    keys: HashMap<String, KnownKey>,
    /// Nick to the key (hex) that holds it.
    pins: HashMap<String, String>,
}

/// Why the known peers could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "known peers file {} is damaged ({why}); move it away to start afresh (every pin is lost)",
        .path.display()
    )]
    Damaged { path: PathBuf, why: String },
    #[error("cannot read known peers file {}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no key holds the nick {0}")]
    NoSuchNick(String),
    #[error(
        "{nick} is shown apart because another key holds {held}; if {held} has a new key, `p2pchat forget {held}` first"
    )]
    ShownApart { nick: String, held: String },
}

/// Keys remembered as already alerted about, at most.
const MAX_ALERTED: usize = 4096;

/// The known peers, in memory, saved to `path` (if any) on change.
#[derive(Debug)]
pub(crate) struct KnownPeers {
    path: Option<PathBuf>,
    file: File,
    /// Keys first met in this life of the daemon: `new`, not `pinned`.
    met_now: std::collections::HashSet<String>,
    /// Keys whose claim on a verified nick was already raised in this life:
    /// an alert is said once, not on every line or relayed run.
    alerted: std::collections::HashSet<String>,
    /// Our own nick and key (hex): our nick is ours, whatever the file says.
    own: Option<(String, String)>,
}

impl KnownPeers {
    /// Reads `path`; a missing file is an empty one.
    pub(crate) fn load(path: &Path) -> Result<Self, TrustError> {
        let damaged = |why: String| TrustError::Damaged {
            path: path.to_owned(),
            why,
        };
        let file = match fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => File::default(),
            Err(source) => {
                return Err(TrustError::Unreadable {
                    path: path.to_owned(),
                    source,
                });
            }
            Ok(m) if m.len() > MAX_FILE => return Err(damaged("too large".into())),
            Ok(_) => {
                let bytes = fs::read(path).map_err(|source| TrustError::Unreadable {
                    path: path.to_owned(),
                    source,
                })?;
                serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?
            }
        };
        Ok(Self {
            path: Some(path.to_owned()),
            file,
            met_now: Default::default(),
            alerted: Default::default(),
            own: None,
        })
    }

    /// Known peers kept in memory only (tests).
    #[cfg(test)]
    pub(crate) fn in_memory() -> Self {
        Self {
            path: None,
            file: File::default(),
            met_now: Default::default(),
            alerted: Default::default(),
            own: None,
        }
    }

    /// A key proved itself on a link under `nick`: how to show it. Pins
    /// the nick when nobody holds it.
    pub(crate) fn met(&mut self, key: &[u8; KEY_LEN], nick: &str) -> Standing {
        let now = chrono::Utc::now().timestamp();
        let id = hex(key);
        let mut changed = false;
        let holder = self.holder(nick).map(str::to_owned);
        if holder.is_none() {
            self.file.pins.insert(nick.to_owned(), id.clone());
            changed = true;
        }
        if !self.file.keys.contains_key(&id) {
            self.met_now.insert(id.clone());
            changed = true;
        }
        let known = self
            .file
            .keys
            .entry(id.clone())
            .or_insert_with(|| KnownKey {
                nick: nick.to_owned(),
                first_seen: now,
                last_seen: now,
                verified: false,
            });
        // The nick it last used and when are saved with other changes, or
        // when an hour old: a peer changing nicks costs no disk write.
        if known.nick != nick {
            known.nick = nick.to_owned();
        }
        if now - known.last_seen >= 3600 {
            changed = true;
        }
        known.last_seen = now;
        let verified = known.verified;
        let standing = match holder {
            Some(h) if h != id => {
                if self.alerted.len() >= MAX_ALERTED {
                    self.alerted.clear();
                }
                let raise =
                    self.file.keys.get(&h).is_some_and(|k| k.verified) && self.alerted.insert(id);
                Standing {
                    trust: Trust::Conflict,
                    shown: format!("{nick}~{}", short_tag_of(key)),
                    alert: raise.then(|| {
                        format!(
                            "{nick} is verified, but a peer with another key (fingerprint {}) claims the nick",
                            fingerprint_of(key)
                        )
                    }),
                }
            }
            _ => Standing {
                trust: if verified {
                    Trust::Verified
                } else if self.met_now.contains(&id) {
                    Trust::New
                } else {
                    Trust::Pinned
                },
                shown: nick.to_owned(),
                alert: None,
            },
        };
        if changed {
            self.trim();
            self.save();
        }
        standing
    }

    /// A peer without a key under `nick`: never as a nick a key holds.
    pub(crate) fn plaintext(&self, nick: &str) -> Standing {
        let taken = self.holder(nick).is_some();
        Standing {
            trust: Trust::Plaintext,
            shown: if taken {
                format!("{nick}~go")
            } else {
                nick.to_owned()
            },
            alert: None,
        }
    }

    /// How a peer known only by its announce is shown: a nick a key holds
    /// only for that key's peer id (`nick~tag` for another key's, as its
    /// link will show it; `nick~go` for an id of no key).
    pub(crate) fn announced_as(&self, peer_id: &str, nick: &str) -> String {
        let holder = self.holder(nick).and_then(unhex::<KEY_LEN>);
        match holder {
            Some(key) if peer_id_of(&key) != peer_id => match short_tag_of_id(peer_id) {
                Some(tag) => format!("{nick}~{tag}"),
                None => format!("{nick}~go"),
            },
            _ => nick.to_owned(),
        }
    }

    /// We go by `nick` with `key`: no one else is shown by it.
    pub(crate) fn set_own(&mut self, nick: &str, key: &[u8; KEY_LEN]) {
        self.own = Some((nick.to_owned(), hex(key)));
    }

    /// The key that holds `nick`, if another peer's.
    pub(crate) fn key_of(&self, nick: &str) -> Option<[u8; KEY_LEN]> {
        self.file.pins.get(nick).and_then(|k| unhex::<KEY_LEN>(k))
    }

    /// The known key whose peer id is `peer_id`, and the nick it last used.
    pub(crate) fn by_id(&self, peer_id: &str) -> Option<([u8; KEY_LEN], String)> {
        self.file.keys.iter().find_map(|(k, known)| {
            let key = unhex::<KEY_LEN>(k)?;
            (peer_id_of(&key) == peer_id).then(|| (key, known.nick.clone()))
        })
    }

    /// The key (hex) that holds `nick`: ours for our own nick.
    fn holder(&self, nick: &str) -> Option<&str> {
        match &self.own {
            Some((n, key)) if n == nick => Some(key),
            _ => self.file.pins.get(nick).map(String::as_str),
        }
    }

    /// Marks the key holding `nick` verified; returns its fingerprint.
    pub(crate) fn verify(&mut self, nick: &str) -> Result<String, TrustError> {
        let id = self
            .file
            .pins
            .get(nick)
            .cloned()
            .ok_or_else(|| Self::no_such(nick))?;
        let key = self
            .file
            .keys
            .get_mut(&id)
            .ok_or_else(|| TrustError::NoSuchNick(nick.to_owned()))?;
        key.verified = true;
        self.save();
        Ok(unhex::<KEY_LEN>(&id).map_or_else(String::new, |k| fingerprint_of(&k)))
    }

    /// Unpins `nick` (and forgets that its key was verified).
    pub(crate) fn forget(&mut self, nick: &str) -> Result<(), TrustError> {
        let id = self
            .file
            .pins
            .remove(nick)
            .ok_or_else(|| Self::no_such(nick))?;
        if let Some(k) = self.file.keys.get_mut(&id) {
            k.verified = false;
        }
        self.save();
        Ok(())
    }

    fn no_such(nick: &str) -> TrustError {
        match nick.rsplit_once('~') {
            Some((held, _)) => TrustError::ShownApart {
                nick: nick.to_owned(),
                held: held.to_owned(),
            },
            None => TrustError::NoSuchNick(nick.to_owned()),
        }
    }

    fn trim(&mut self) {
        while self.file.keys.len() > MAX_KEYS {
            let oldest = self
                .file
                .keys
                .iter()
                .filter(|(_, k)| !k.verified)
                .min_by_key(|(_, k)| k.last_seen)
                .map(|(id, _)| id.clone());
            let Some(id) = oldest else { break };
            self.file.keys.remove(&id);
            self.file.pins.retain(|_, holder| *holder != id);
        }
    }

    fn save(&self) {
        let Some(path) = &self.path else { return };
        let mut file = serde_json::to_vec_pretty(&File {
            version: 1,
            keys: self.file.keys.clone(),
            pins: self.file.pins.clone(),
        })
        .unwrap_or_default();
        file.push(b'\n');
        if let Err(e) = write_private(path, &file) {
            tracing::warn!(path = %path.display(), error = %e, "could not save the known peers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_key_pins_a_nick_and_others_are_told_apart() {
        let mut k = KnownPeers::in_memory();
        let (alice, mallory) = ([1u8; 32], [2u8; 32]);
        assert_eq!(k.met(&alice, "alice").trust, Trust::New);
        assert_eq!(k.met(&alice, "alice").trust, Trust::New, "this life");
        let m = k.met(&mallory, "alice");
        assert_eq!(m.trust, Trust::Conflict);
        assert_eq!(m.shown, format!("alice~{}", short_tag_of(&mallory)));
        assert!(m.alert.is_none(), "alice is not verified yet");
        assert_eq!(k.plaintext("alice").shown, "alice~go");
        assert_eq!(k.plaintext("gopher").shown, "gopher");
        // Verified: a key change is an alert.
        k.verify("alice").unwrap();
        assert_eq!(k.met(&alice, "alice").trust, Trust::Verified);
        assert!(k.met(&mallory, "alice").alert.is_some());
        let again = k.met(&mallory, "alice");
        assert_eq!(again.trust, Trust::Conflict, "still told apart");
        assert!(again.alert.is_none(), "said once per life, not per line");
        // Forgotten: the nick is free, the next key pins it.
        k.forget("alice").unwrap();
        assert_eq!(k.met(&mallory, "alice").trust, Trust::New);
        assert!(k.verify("nobody").is_err());
        let e = k.verify("alice~3fa2").unwrap_err().to_string();
        assert!(e.contains("forget alice"), "{e}");
    }

    #[test]
    fn our_own_nick_is_ours() {
        let mut k = KnownPeers::in_memory();
        let (me, mallory) = ([1u8; 32], [2u8; 32]);
        k.set_own("me", &me);
        let m = k.met(&mallory, "me");
        assert_eq!(m.trust, Trust::Conflict);
        assert_ne!(m.shown, "me");
        assert_eq!(k.plaintext("me").shown, "me~go");
        let id = peer_id_of(&mallory);
        assert_eq!(k.announced_as(&id, "me"), format!("me~{}", &id[1..5]));
        assert_eq!(k.announced_as("me_1", "me"), "me~go");
        // Once we go by another nick, the old one is free.
        k.set_own("notme", &me);
        assert_eq!(k.met(&mallory, "me").shown, "me");
    }

    #[test]
    fn pins_survive_a_restart_as_pinned() {
        let dir = std::env::temp_dir().join(format!("p2pchat-trust-{:016x}", fastrand::u64(..)));
        fs::create_dir(&dir).unwrap();
        let path = dir.join("known_peers.json");
        let mut k = KnownPeers::load(&path).unwrap();
        k.met(&[1; 32], "alice");
        let mut again = KnownPeers::load(&path).unwrap();
        assert_eq!(again.met(&[1; 32], "alice").trust, Trust::Pinned);
        assert_eq!(again.met(&[2; 32], "alice").trust, Trust::Conflict);
        fs::write(&path, b"{ no").unwrap();
        let e = KnownPeers::load(&path).unwrap_err().to_string();
        assert!(e.contains("move it away"), "{e}");
        fs::remove_dir_all(dir).unwrap();
    }
}
