//! Temp folders that clean up after themselves.

use std::path::{Path, PathBuf};

/// A fresh folder under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), prefix)
    }

    /// A fresh folder under `parent` (say, `/dev/shm` for one in memory).
    pub fn new_in(parent: &Path, prefix: &str) -> Self {
        let dir = parent.join(format!(
            "{prefix}{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir(&dir).expect("temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
