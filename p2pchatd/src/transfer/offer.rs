//! What `send` offers: the paths given, folders walked (regular files
//! only, symbolic links not followed), every file hashed chunk by chunk.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use shared::keys::hex;
use shared::transfer::{
    Listed, MAX_DEPTH, MAX_FILES, MAX_LISTING_BYTES, MAX_OFFER_BYTES, MAX_SHOWN_NAMES, Manifest,
};

use super::Source;

/// An offer ready to go: its listing, the files behind it, the names it
/// shows and its size.
pub(super) struct Built {
    pub(super) listing: Vec<u8>,
    pub(super) sources: Vec<Source>,
    pub(super) names: Vec<String>,
    pub(super) bytes: u64,
}

/// Walks and hashes `paths` (absolute). Blocking.
pub(super) fn build(paths: &[PathBuf]) -> Result<Built, String> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for p in paths {
        let meta = fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let top = p
            .file_name()
            .ok_or_else(|| format!("{} names no file or folder", p.display()))?
            .to_string_lossy()
            .into_owned();
        if meta.is_file() {
            found.push((top, p.clone()));
        } else if meta.is_dir() {
            walk(p, &top, 1, &mut found)?;
        } else {
            return Err(format!("{} is not a file or a folder", p.display()));
        }
        if found.len() > MAX_FILES {
            return Err(format!("more than {MAX_FILES} files in one offer"));
        }
    }
    if found.is_empty() {
        return Err("there are no files in what was given".into());
    }
    let mut listed = Vec::with_capacity(found.len());
    let mut sources = Vec::with_capacity(found.len());
    let mut bytes = 0u64;
    for (name, path) in found {
        let (source, root) = hash(&path)?;
        bytes = bytes.saturating_add(source.size);
        if bytes > MAX_OFFER_BYTES {
            return Err(format!(
                "one offer holds at most {}",
                shared::transfer::human_bytes(MAX_OFFER_BYTES)
            ));
        }
        listed.push(Listed {
            name,
            size: source.size,
            root: hex(&root),
        });
        sources.push(source);
    }
    let listing = serde_json::to_vec(&listed).map_err(|e| e.to_string())?;
    if listing.len() > MAX_LISTING_BYTES {
        return Err("the names of these files are too long to list in one offer".into());
    }
    let names = listed
        .iter()
        .take(MAX_SHOWN_NAMES)
        .map(|l| l.name.clone())
        .collect();
    Ok(Built {
        listing,
        sources,
        names,
        bytes,
    })
}

/// Adds the regular files under `dir`, named `prefix/...`, in name order.
fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    found: &mut Vec<(String, PathBuf)>,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "{} is more than {MAX_DEPTH} folders deep",
            dir.display()
        ));
    }
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for e in entries {
        let kind = e
            .file_type()
            .map_err(|x| format!("{}: {x}", e.path().display()))?;
        let name = format!("{prefix}/{}", e.file_name().to_string_lossy());
        if kind.is_file() {
            found.push((name, e.path()));
            if found.len() > MAX_FILES {
                return Err(format!("more than {MAX_FILES} files in one offer"));
            }
        } else if kind.is_dir() {
            walk(&e.path(), &name, depth + 1, found)?;
        }
    }
    Ok(())
}

/// A file's source record and root, read once.
fn hash(path: &Path) -> Result<(Source, [u8; 32]), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = fs::File::open(path).map_err(err)?;
    let before = file.metadata().map_err(err)?;
    let manifest = Manifest::of(&file).map_err(err)?;
    if manifest.size != before.len() {
        return Err(format!("{} changed while it was read", path.display()));
    }
    let hashes: Vec<u8> = manifest.hashes.iter().flatten().copied().collect();
    Ok((
        Source {
            path: path.to_owned(),
            size: manifest.size,
            modified: modified_ns(&before),
            hashes,
        },
        manifest.root(),
    ))
}

/// When a file was last modified, in nanoseconds since the epoch.
pub(super) fn modified_ns(m: &fs::Metadata) -> Option<u64> {
    let secs = u64::try_from(m.mtime()).ok()?;
    let nanos = u64::try_from(m.mtime_nsec()).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}
