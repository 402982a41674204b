//! Where the daemon's socket lives (DESIGN §3). Pure: the caller passes in
//! the environment.

use std::path::{Path, PathBuf};

/// File name of the API socket inside its folder.
pub const SOCKET_FILE: &str = "p2pchatd.sock";

/// Environment variable that overrides the socket path on every command.
pub const SOCKET_ENV: &str = "P2PCHAT_SOCKET";

/// `$XDG_RUNTIME_DIR/p2pchat/p2pchatd.sock`, else
/// `/tmp/p2pchat-$UID/p2pchatd.sock`.
pub fn default_socket_path(xdg_runtime_dir: Option<&Path>, uid: u32) -> PathBuf {
    match xdg_runtime_dir.filter(|d| d.is_absolute()) {
        Some(dir) => dir.join("p2pchat").join(SOCKET_FILE),
        None => PathBuf::from(format!("/tmp/p2pchat-{uid}")).join(SOCKET_FILE),
    }
}

/// Why a socket's folder cannot be trusted: someone else could have put a
/// socket of theirs where the daemon's should be, and read what is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UntrustedFolder {
    #[error("its folder {folder} belongs to uid {owner}, not to you (uid {me})")]
    NotOurs { folder: String, owner: u32, me: u32 },
    #[error("others may write in its folder {folder} (mode {mode:04o})")]
    Writable { folder: String, mode: u32 },
}

/// The rule both ends apply to the folder of the API socket: it belongs
/// to this user and nobody else may write in it. `owner` and `mode` are
/// the folder's, `me` is our effective uid.
pub fn check_socket_folder(
    folder: &Path,
    owner: u32,
    mode: u32,
    me: u32,
) -> Result<(), UntrustedFolder> {
    let folder = folder.display().to_string();
    if owner != me {
        return Err(UntrustedFolder::NotOurs { folder, owner, me });
    }
    if mode & 0o022 != 0 {
        return Err(UntrustedFolder::Writable {
            folder,
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_folder_is_ours_alone() {
        let d = Path::new("/tmp/p2pchat-1000");
        assert!(check_socket_folder(d, 1000, 0o40700, 1000).is_ok());
        assert!(check_socket_folder(d, 1000, 0o755, 1000).is_ok());
        assert_eq!(
            check_socket_folder(d, 1001, 0o700, 1000)
                .unwrap_err()
                .to_string(),
            "its folder /tmp/p2pchat-1000 belongs to uid 1001, not to you (uid 1000)"
        );
        assert!(matches!(
            check_socket_folder(d, 1000, 0o1777, 1000),
            Err(UntrustedFolder::Writable { mode: 0o1777, .. })
        ));
        assert!(check_socket_folder(d, 1000, 0o720, 1000).is_err());
    }

    #[test]
    fn xdg_then_tmp() {
        assert_eq!(
            default_socket_path(Some(Path::new("/run/user/1000")), 1000),
            Path::new("/run/user/1000/p2pchat/p2pchatd.sock")
        );
        assert_eq!(
            default_socket_path(None, 1000),
            Path::new("/tmp/p2pchat-1000/p2pchatd.sock")
        );
        assert_eq!(
            default_socket_path(Some(Path::new("relative")), 7),
            Path::new("/tmp/p2pchat-7/p2pchatd.sock")
        );
    }
}
