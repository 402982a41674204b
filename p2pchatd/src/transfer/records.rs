//! Transfers written down until they are over, one file each in
//! `transfers/` of the state folder, by a thread of its own: the runtime
//! never waits on the disk, and writes happen in the order they were
//! asked for (the newest of one transfer wins when several wait).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::api::{TransferDirection, TransferInfo, TransferState};

use tracing::warn;

use super::Source;

/// Records read at a start, at most: those under way first, then the
/// newest offers.
const MAX_RECORDS: usize = 1024;
/// Bytes of one record file, at most (a listing of 10,000 files with its
/// hashes fits).
const MAX_RECORD_BYTES: u64 = 64 << 20;
/// How long a stopping daemon waits for the writer.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// A transfer as written down.
#[derive(Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) info: TransferInfo,
    pub(super) key: String,
    pub(super) listing_root: String,
    #[serde(default)]
    pub(super) port: u16,
    /// Ours: the listing's JSON and the sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) listing: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) sources: Vec<Source>,
    /// Theirs, once the listing was fetched: where each file lands, and
    /// how many landed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) dests: Vec<PathBuf>,
    #[serde(default)]
    pub(super) landed: usize,
}

enum Op {
    Write(String, Vec<u8>),
    Remove(String),
    Flush(mpsc::Sender<()>),
}

/// The writer of records; its thread starts with the first record (a
/// daemon that never sends or gets a file has none).
pub(super) struct Records {
    dir: PathBuf,
    tx: OnceLock<mpsc::Sender<Op>>,
}

impl Records {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            tx: OnceLock::new(),
        }
    }

    fn send(&self, op: Op) {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            let at = self.dir.clone();
            let spawned = std::thread::Builder::new()
                .name("p2pchat-records".into())
                .spawn(move || write_all(&at, &rx));
            if let Err(e) = spawned {
                warn!(
                    "cannot start the transfer records' writer (transfers will not resume after a restart): {e}"
                );
            }
            tx
        });
        let _ = tx.send(op);
    }

    pub(super) fn write(&self, r: &Record) {
        match serde_json::to_vec(r) {
            Ok(bytes) => self.send(Op::Write(r.info.id.clone(), bytes)),
            Err(e) => warn!(id = r.info.id, "cannot write down a transfer: {e}"),
        }
    }

    pub(super) fn remove(&self, id: &str) {
        self.send(Op::Remove(id.to_owned()));
    }

    /// Waits until what was asked before is done.
    pub(super) fn flush(&self) {
        let Some(writer) = self.tx.get() else {
            return;
        };
        let (tx, rx) = mpsc::channel();
        if writer.send(Op::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(FLUSH_WAIT);
        }
    }

    /// What the last life left: transfers under way first, then offers,
    /// then offers answered, newest first in each; a record that cannot
    /// be read is named and skipped.
    pub(super) fn load(&self) -> Vec<Record> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| {
                let modified = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (modified, e.path())
            })
            .collect();
        // Newest first; whether one is under way is known once read.
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        let mut records: Vec<Record> = found
            .into_iter()
            .filter_map(|(_, path)| {
                let r = shared::config::read_bounded(&path, MAX_RECORD_BYTES)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_str::<Record>(&b).map_err(|e| e.to_string()));
                r.inspect_err(|e| warn!(path = %path.display(), "ignored a transfer record: {e}"))
                    .ok()
            })
            .collect();
        // Under way, then offers waiting, then what we answered.
        let rank = |r: &Record| match r.info.state {
            s if s.is_over() => 2,
            TransferState::Offered if r.info.direction == TransferDirection::In => 1,
            _ => 0,
        };
        records.sort_by_key(|r| rank(r));
        records.truncate(MAX_RECORDS);
        records
    }
}

/// The writer's loop: every op in order, the last of each transfer's
/// writes when several wait; a flush answers once all before it is done.
fn write_all(dir: &Path, rx: &mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut waiting: Vec<Op> = Vec::new();
        for op in std::iter::once(first).chain(rx.try_iter()) {
            match op {
                Op::Flush(done) => {
                    apply_latest(dir, std::mem::take(&mut waiting));
                    let _ = done.send(());
                }
                op => waiting.push(op),
            }
        }
        apply_latest(dir, waiting);
    }
}

/// Applies `ops` in order, skipping any a later op of the same transfer
/// overrides.
fn apply_latest(dir: &Path, ops: Vec<Op>) {
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Op::Write(id, _) | Op::Remove(id) = op {
            last.insert(id.clone(), i);
        }
    }
    for (i, op) in ops.into_iter().enumerate() {
        let latest = match &op {
            Op::Write(id, _) | Op::Remove(id) => last.get(id) == Some(&i),
            Op::Flush(_) => true,
        };
        if latest {
            apply(dir, op);
        }
    }
}

fn apply(dir: &Path, op: Op) {
    match op {
        Op::Write(id, bytes) => {
            let path = dir.join(format!("{id}.json"));
            let written = std::fs::create_dir_all(dir)
                .and_then(|()| crate::identity::write_private(&path, &bytes));
            if let Err(e) = written {
                warn!(path = %path.display(), "cannot write down a transfer (it will not resume after a restart): {e}");
            }
        }
        Op::Remove(id) => {
            let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
        }
        Op::Flush(done) => {
            let _ = done.send(());
        }
    }
}
