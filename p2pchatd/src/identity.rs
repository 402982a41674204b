//! Who this daemon is, for good: an Ed25519 key pair in a file of the
//! user's own (`$XDG_DATA_HOME/p2pchat/identity`, or `--identity`). Its
//! public key names us on the network (the peer id, the fingerprint) and
//! vouches for the key each encrypted link is made with.
//!
//! The file is made once, atomically, mode 0600 in a 0700 folder. One that
//! cannot be read, is not an identity, or is readable by others stops the
//! daemon with the file's name and the fix: it is never overwritten or
//! made anew behind the user's back, since a new key is a new person to
//! every peer that knew the old one.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use shared::keys::{KEY_LEN, fingerprint_of, hex, peer_id_of, unhex};

/// The line that holds the key in the file.
const KEY_LINE: &str = "ed25519-secret-key";
const HEADER: &str = "# p2pchat identity: who you are to your peers.\n\
# Keep it to yourself (mode 0600); copy it to keep your name on another machine.\n";

/// This daemon's key, and the names derived from it.
pub struct Identity {
    key: SigningKey,
    peer_id: String,
    fingerprint: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

/// Why the identity could not be used. Each names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read identity file {}; fix its permissions or restore it", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "identity file {} is not a p2pchat identity ({why}); restore it, or move it away to make a new one (peers will see a new key)",
        .path.display()
    )]
    Malformed { path: PathBuf, why: &'static str },
    #[error(
        "identity file {} may be read by others (mode {mode:04o}); make it yours alone: chmod 600 {}",
        .path.display(), .path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("cannot create identity file {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Identity {
    /// The identity at `path`, made there first if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::create(path),
            Err(source) => Err(IdentityError::Unreadable {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn load(path: &Path) -> Result<Self, IdentityError> {
        let unreadable = |source| IdentityError::Unreadable {
            path: path.to_owned(),
            source,
        };
        let meta = fs::metadata(path).map_err(unreadable)?;
        if meta.mode() & 0o077 != 0 {
            return Err(IdentityError::Exposed {
                path: path.to_owned(),
                mode: meta.mode() & 0o7777,
            });
        }
        if meta.len() > 4096 {
            return Err(IdentityError::Malformed {
                path: path.to_owned(),
                why: "too large",
            });
        }
        let text = fs::read_to_string(path).map_err(unreadable)?;
        let malformed = |why| IdentityError::Malformed {
            path: path.to_owned(),
            why,
        };
        let mut secret = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some(hex_key) = line.strip_prefix(KEY_LINE) else {
                return Err(malformed("an unknown line"));
            };
            if secret.is_some() {
                return Err(malformed("two keys"));
            }
            secret = Some(
                unhex::<KEY_LEN>(hex_key.trim())
                    .ok_or(malformed("a key that is not 64 hex digits"))?,
            );
        }
        let secret = secret.ok_or(malformed("no key"))?;
        Ok(Self::from_secret(&secret))
    }

    fn create(path: &Path) -> Result<Self, IdentityError> {
        let create = |source| IdentityError::Create {
            path: path.to_owned(),
            source,
        };
        let mut secret = [0u8; KEY_LEN];
        getrandom::fill(&mut secret).map_err(|e| create(io::Error::other(e.to_string())))?;
        let me = Self::from_secret(&secret);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(create)?;
        }
        let text = format!("{HEADER}{KEY_LINE} {}\n", hex(&secret));
        write_private(path, text.as_bytes()).map_err(create)?;
        tracing::info!(path = %path.display(), peer_id = me.peer_id, "made a new identity");
        Ok(me)
    }

    /// An identity from a known secret (tests, and loading).
    pub fn from_secret(secret: &[u8; KEY_LEN]) -> Self {
        let key = SigningKey::from_bytes(secret);
        let public = key.verifying_key().to_bytes();
        Self {
            peer_id: peer_id_of(&public),
            fingerprint: fingerprint_of(&public),
            key,
        }
    }

    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn public_key(&self) -> [u8; KEY_LEN] {
        self.key.verifying_key().to_bytes()
    }
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// X25519 between our key and `theirs`, both read as their Montgomery
    /// forms: the same secret on both sides. `None` for a key that is not
    /// a point.
    pub(crate) fn agree(&self, theirs: &[u8; KEY_LEN]) -> Option<[u8; 32]> {
        let theirs = VerifyingKey::from_bytes(theirs).ok()?.to_montgomery();
        Some(theirs.mul_clamped(self.key.to_scalar_bytes()).to_bytes())
    }
}

/// Length of a network key (a Noise PSK).
pub const NETWORK_KEY_LEN: usize = 32;

/// Why a network key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetworkKeyError {
    #[error("cannot read network key {}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "network key {} holds {len} bytes, not {NETWORK_KEY_LEN}; make one with `p2pchat keygen`",
        .path.display()
    )]
    Length { path: PathBuf, len: u64 },
    #[error(
        "network key {} may be read by others (mode {mode:04o}); make it yours alone: chmod 600 {}",
        .path.display(), .path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
}

/// The network key in `path`: 32 bytes, readable by the user alone.
pub fn load_network_key(path: &Path) -> Result<[u8; NETWORK_KEY_LEN], NetworkKeyError> {
    let unreadable = |source| NetworkKeyError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(unreadable)?;
    if meta.mode() & 0o077 != 0 {
        return Err(NetworkKeyError::Exposed {
            path: path.to_owned(),
            mode: meta.mode() & 0o7777,
        });
    }
    if meta.len() != NETWORK_KEY_LEN as u64 {
        return Err(NetworkKeyError::Length {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    let bytes = fs::read(path).map_err(unreadable)?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| NetworkKeyError::Length {
            path: path.to_owned(),
            len: b.len() as u64,
        })
}

/// Whether `signature` is `key`'s over `message`.
pub(crate) fn verify(key: &[u8; KEY_LEN], message: &[u8], signature: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(key).is_ok_and(|k| {
        k.verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    })
}

/// Writes `bytes` to `path` as a file only the user may read, atomically:
/// a reader sees the old file or the new one, never half of one.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("p2pchat-id-{:016x}", fastrand::u64(..)));
        fs::create_dir(&d).unwrap();
        d
    }

    #[test]
    fn made_once_then_the_same_across_loads() {
        let dir = temp();
        let path = dir.join("sub/identity");
        let a = Identity::load_or_create(&path).unwrap();
        let b = Identity::load_or_create(&path).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(a.fingerprint(), b.fingerprint());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let sig = a.sign(b"hello");
        assert!(verify(&a.public_key(), b"hello", &sig));
        assert!(!verify(&a.public_key(), b"hellO", &sig));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_bad_file_is_refused_never_replaced() {
        let dir = temp();
        let path = dir.join("identity");
        for (text, why) in [
            ("garbage\n", "unknown line"),
            ("ed25519-secret-key 1234\n", "64 hex"),
            ("# nothing\n", "no key"),
        ] {
            write_private(&path, text.as_bytes()).unwrap();
            let e = Identity::load_or_create(&path).unwrap_err().to_string();
            assert!(
                e.contains(&path.display().to_string()) && e.contains(why),
                "{e}"
            );
            assert_eq!(fs::read_to_string(&path).unwrap(), text, "left as it was");
        }
        Identity::load_or_create(&dir.join("good")).unwrap();
        let good = dir.join("good");
        fs::set_permissions(&good, fs::Permissions::from_mode(0o640)).unwrap();
        let e = Identity::load_or_create(&good).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("0640"), "{e}");
        fs::remove_dir_all(dir).unwrap();
    }
}
