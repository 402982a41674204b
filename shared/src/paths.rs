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

#[cfg(test)]
mod tests {
    use super::*;

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
