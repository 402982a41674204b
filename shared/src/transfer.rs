//! File transfer (the groundwork of issue 15), the parts both ends agree
//! on: what an offered file may be called where it lands, and how its
//! bytes are checked chunk by chunk.
//!
//! A name comes from a peer, so it is hostile until made safe: only its
//! last component is kept (no folders climbed out of, no absolute paths),
//! control and direction-changing characters become `_`, a NUL refuses the
//! offer, a name that hides (`.bashrc`) or that Windows reserves (`CON`)
//! gets a `_` in front, and it is cut to 240 bytes keeping its extension
//! (so that with a numbered sibling's ` (N)` and `.part` it still fits
//! the 255 bytes most file systems allow).
//! A folder's tree keeps its shape, each part made safe the same way, at
//! most 32 deep. What would overwrite a file lands as a numbered sibling
//! (`report (1).pdf`) instead; partial data lives in `NAME.part`.
//!
//! A file is cut into 1 MiB chunks, each hashed with BLAKE3; the offer
//! names the root, a BLAKE3 hash over the size, the chunk size and every
//! chunk's hash, so the receiver checks the list it is sent against the
//! offer, then every chunk against the list: a chunk that does not match
//! is fetched again, and what is verified on disk is where a cut transfer
//! resumes.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bytes of one chunk.
pub const CHUNK: usize = 1 << 20;
/// Bytes of a name a file system allows, at most (most allow 255) ...
const NAME_MAX: usize = 255;
/// ... and of an offered name, at most: room is left for ` (10000)` and
/// `.part`.
pub const MAX_NAME_BYTES: usize = NAME_MAX - 8 - PART_SUFFIX.len() - 2;
/// Folders deep inside an offered tree, at most.
pub const MAX_DEPTH: usize = 32;
/// An extension kept whole when a long name is cut, at most.
const MAX_EXTENSION_BYTES: usize = 16;
/// Numbered siblings tried before giving up.
const MAX_SIBLINGS: u32 = 10_000;
/// What partial data is called: the final name and this.
pub const PART_SUFFIX: &str = ".part";

const ROOT_CONTEXT: &str = "p2pchat 2026-11 file root";

/// Why an offered name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty, or only dots and slashes")]
    Empty,
    #[error("the name holds a NUL byte")]
    Nul,
    #[error("the path climbs out of its folder (..)")]
    Climbs,
    #[error("the path is more than {MAX_DEPTH} folders deep")]
    TooDeep,
}

/// Windows' reserved device names: a file called so cannot be opened there.
const RESERVED: &[&str] = &["CON", "PRN", "AUX", "NUL"];

fn reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end();
    let upper = stem.to_ascii_uppercase();
    RESERVED.contains(&upper.as_str())
        || ((upper.starts_with("COM") || upper.starts_with("LPT"))
            && upper.len() == 4
            && upper.as_bytes()[3].is_ascii_digit())
}

/// Characters a name shows or a terminal reads otherwise than they look.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One part of a name made safe: see the module's rules.
fn safe_part(part: &str) -> Result<String, NameError> {
    if part.contains('\0') {
        return Err(NameError::Nul);
    }
    let cleaned: String = part
        .chars()
        .map(|c| if unsafe_char(c) { '_' } else { c })
        .collect();
    // Windows drops trailing dots and spaces; leading spaces only mislead.
    let cleaned = cleaned.trim_start_matches(' ').trim_end_matches(['.', ' ']);
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        return Err(NameError::Empty);
    }
    let mut name = if cleaned.starts_with('.') || reserved(cleaned) {
        format!("_{cleaned}")
    } else {
        cleaned.to_owned()
    };
    if name.len() > MAX_NAME_BYTES {
        name = cut_keeping_extension(&name);
    }
    Ok(name)
}

/// `name` cut to [`MAX_NAME_BYTES`] at a character boundary, its short
/// extension kept.
fn cut_keeping_extension(name: &str) -> String {
    let ext = match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= MAX_EXTENSION_BYTES => &name[i..],
        _ => "",
    };
    let room = MAX_NAME_BYTES - ext.len();
    let stem = &name[..name.len() - ext.len()];
    let mut end = room.min(stem.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ext}", &stem[..end])
}

/// The name an offered file lands under: its last component, made safe.
pub fn safe_name(offered: &str) -> Result<String, NameError> {
    if offered.contains('\0') {
        return Err(NameError::Nul);
    }
    let last = offered
        .rsplit(['/', '\\'])
        .find(|p| !p.is_empty() && *p != "." && *p != "..")
        .ok_or(NameError::Empty)?;
    safe_part(last)
}

/// Where a file of an offered folder lands, inside the download folder:
/// each part made safe, the tree's shape kept; `..` refuses the offer.
pub fn safe_path(offered: &str) -> Result<PathBuf, NameError> {
    let mut out = PathBuf::new();
    let mut depth = 0;
    for part in offered.split(['/', '\\']) {
        match part {
            "" | "." => continue,
            ".." => return Err(NameError::Climbs),
            p => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(NameError::TooDeep);
                }
                out.push(safe_part(p)?);
            }
        }
    }
    if depth == 0 {
        return Err(NameError::Empty);
    }
    debug_assert!(out.components().all(|c| matches!(c, Component::Normal(_))));
    Ok(out)
}

/// Where `rel` (from [`safe_path`]) lands in `dir` without overwriting:
/// itself, or its first free numbered sibling (`name (1).ext`); a name
/// whose `.part` is there counts as taken. `None` when all are taken.
pub fn unique_destination(dir: &Path, rel: &Path) -> Option<PathBuf> {
    unique_destination_from(dir, rel, &mut 0)
}

/// [`unique_destination`], looking from number `*next` on (0: the name
/// itself first) and moving `*next` past the one given: a caller placing
/// many files of one name keeps one counter for it, so the n-th costs a
/// look or two instead of n.
pub fn unique_destination_from(dir: &Path, rel: &Path, next: &mut u32) -> Option<PathBuf> {
    let first = dir.join(rel);
    let free = |p: &Path| !p.exists() && !part_of(p).exists();
    if *next == 0 {
        *next = 1;
        if free(&first) {
            return Some(first);
        }
    }
    let name = rel.file_name()?.to_string_lossy().into_owned();
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name.as_str(), ""),
    };
    while *next <= MAX_SIBLINGS {
        let n = *next;
        *next += 1;
        let p = first.with_file_name(format!("{stem} ({n}){ext}"));
        if free(&p) {
            return Some(p);
        }
    }
    None
}

/// Where a file's partial data lives until it is whole and verified.
pub fn part_of(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(PART_SUFFIX);
    dest.with_file_name(name)
}

/// The download folder: `$XDG_DOWNLOAD_DIR/p2pchat` (the environment, or
/// the user's `user-dirs.dirs`), else `~/Downloads/p2pchat`.
pub fn download_dir(home: Option<&Path>, config_home: Option<&Path>) -> Option<PathBuf> {
    let from_env = std::env::var_os("XDG_DOWNLOAD_DIR").map(PathBuf::from);
    let from_file = || {
        let dirs = config_home
            .map(Path::to_path_buf)
            .or_else(|| home.map(|h| h.join(".config")))?
            .join("user-dirs.dirs");
        let text = std::fs::read_to_string(dirs).ok()?;
        user_dirs_download(&text, home?)
    };
    let base = from_env
        .filter(|p| p.is_absolute())
        .or_else(from_file)
        .or_else(|| home.map(|h| h.join("Downloads")))?;
    Some(base.join("p2pchat"))
}

/// `XDG_DOWNLOAD_DIR` of a `user-dirs.dirs` file (`"$HOME/..."` or an
/// absolute path, as xdg-user-dirs writes it).
fn user_dirs_download(text: &str, home: &Path) -> Option<PathBuf> {
    let value = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("XDG_DOWNLOAD_DIR="))?
        .trim_matches('"');
    match value.strip_prefix("$HOME") {
        Some(rest) => Some(home.join(rest.trim_start_matches('/'))),
        None => Some(PathBuf::from(value)).filter(|p| p.is_absolute()),
    }
}

/// A file's chunk hashes, and the root the offer names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub size: u64,
    pub chunk: u32,
    pub hashes: Vec<[u8; 32]>,
}

impl Manifest {
    /// Reads `r` to its end, hashing each chunk.
    pub fn of(mut r: impl Read) -> io::Result<Self> {
        let mut buf = vec![0u8; CHUNK];
        let mut hashes = Vec::new();
        let mut size = 0u64;
        loop {
            let n = read_full(&mut r, &mut buf)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hashes.push(*blake3::hash(&buf[..n]).as_bytes());
            if n < CHUNK {
                break;
            }
        }
        Ok(Self {
            size,
            chunk: u32::try_from(CHUNK).unwrap_or(u32::MAX),
            hashes,
        })
    }

    /// The manifest of a file of `size` in [`CHUNK`]s with these hashes
    /// (as a sender lists them).
    pub fn listed(size: u64, hashes: Vec<[u8; 32]>) -> Self {
        Self {
            size,
            chunk: u32::try_from(CHUNK).unwrap_or(u32::MAX),
            hashes,
        }
    }

    /// What the offer names: one hash over the size, the chunk size and
    /// every chunk's hash, in order.
    pub fn root(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(ROOT_CONTEXT);
        h.update(&self.size.to_be_bytes());
        h.update(&self.chunk.to_be_bytes());
        for c in &self.hashes {
            h.update(c);
        }
        *h.finalize().as_bytes()
    }

    /// Whether a list of hashes received for an offer is the offer's: the
    /// count the size calls for, and the root it names.
    pub fn matches(&self, root: &[u8; 32]) -> bool {
        let chunk = u64::from(self.chunk.max(1));
        self.hashes.len() as u64 == self.size.div_ceil(chunk) && self.root() == *root
    }

    /// Whether `bytes` are chunk `i`, whole.
    pub fn verify(&self, i: usize, bytes: &[u8]) -> bool {
        let want = match self.hashes.get(i) {
            Some(h) => h,
            None => return false,
        };
        let chunk = u64::from(self.chunk);
        let len = self.size.saturating_sub(i as u64 * chunk).min(chunk);
        bytes.len() as u64 == len && blake3::hash(bytes).as_bytes() == want
    }
}

/// The capability of a peer that takes file offers (in its hello).
pub const CAP_FILES: &str = "files";
/// Files in one offer, at most.
pub const MAX_FILES: usize = 10_000;
/// Bytes of an offer's listing, at most.
pub const MAX_LISTING_BYTES: usize = 4 << 20;
/// Names an offer line shows, at most (the listing has them all).
pub const MAX_SHOWN_NAMES: usize = 8;
/// Bytes one offer may hold, at most, whatever the recipient takes: its
/// hash list is written down until it is over (32 MiB of hex at most).
pub const MAX_OFFER_BYTES: u64 = 512 << 30;
/// Offers from one peer that wait for an answer, at most; more are refused.
pub const MAX_PENDING_PER_PEER: usize = 16;
/// Characters of a shown name, at most.
const MAX_SHOWN_CHARS: usize = 120;

const LISTING_CONTEXT: &str = "p2pchat 2026-11 file listing";

/// A `file_offer` line's body: what is offered, in short; the listing
/// itself is fetched on the transfer's own connection and checked
/// against `listing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// 16 hex digits, the sender's; names the transfer on both ends.
    pub id: String,
    pub files: u64,
    pub bytes: u64,
    /// The first few files' names, for showing.
    #[serde(default)]
    pub names: Vec<String>,
    /// [`listing_root`] of the listing, hex.
    pub listing: String,
    /// The sender's chat port, where the recipient fetches (when it knows
    /// only the link's host).
    #[serde(default)]
    pub port: u16,
}

impl Offer {
    /// Whether the offer is one this version can take: a well-formed id and
    /// root, and counts within the bounds.
    pub fn check(&self) -> Result<(), &'static str> {
        if !valid_id(&self.id) {
            return Err("its id is not 16 hex digits");
        }
        if crate::keys::unhex::<32>(&self.listing).is_none() {
            return Err("its listing root is not 64 hex digits");
        }
        if self.files == 0 || self.files > MAX_FILES as u64 {
            return Err("it offers no files, or more than 10,000");
        }
        if self.names.len() > MAX_SHOWN_NAMES {
            return Err("it shows too many names");
        }
        Ok(())
    }

    /// The names to show, made safe for a terminal and cut short.
    pub fn shown_names(&self) -> Vec<String> {
        self.names.iter().map(|n| shown_name(n)).collect()
    }
}

/// A name from a peer, made safe to show (not to write: see [`safe_path`]).
pub fn shown_name(name: &str) -> String {
    name.chars()
        .map(|c| if unsafe_char(c) { '_' } else { c })
        .take(MAX_SHOWN_CHARS)
        .collect()
}

/// Whether `id` is a transfer id: 16 lowercase hex digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A `file_answer` line's body: the recipient declined the offer (or
/// refused it unseen, with a reason), either end stopped a transfer, or
/// (`done`) the recipient has every file whole. Accepting needs no line:
/// the recipient fetches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
}

/// One file of a listing: its path inside the offer (`/` between
/// folders), its size and its [`Manifest::root`], hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    pub root: String,
}

/// What an offer's `listing` names: a BLAKE3 hash over the listing's bytes.
pub fn listing_root(bytes: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(LISTING_CONTEXT);
    h.update(bytes);
    *h.finalize().as_bytes()
}

/// The messages of a fetch connection (PROTOCOL-p2pchatd §10), each a
/// kind byte, a big-endian `u32` length and that many bytes, inside the
/// connection's Noise frames. The dialer's hello names the offer.
pub mod fetch {
    /// Sender, first: the listing's JSON (`[Listed]`).
    pub const LISTING: u8 = 1;
    /// Receiver: `{"file": i, "from": k?}`; the sender sends file `i`'s
    /// [`HASHES`], then (from chunk `k`, or after a [`FROM`] when `k` is
    /// absent) its chunks and every later file's hashes and chunks.
    pub const GET: u8 = 2;
    /// 32 bytes per chunk of the file.
    pub const HASHES: u8 = 3;
    /// Receiver: the chunk to go on from, a big-endian `u64`.
    pub const FROM: u8 = 4;
    /// One chunk's bytes, in order.
    pub const CHUNK: u8 = 5;
    /// Receiver: every file is whole and verified.
    pub const DONE: u8 = 6;
    /// Either end: why it cannot go on (UTF-8); the transfer fails.
    pub const ERROR: u8 = 7;
    /// Bytes of a message's head.
    pub const HEAD: usize = 5;
    /// Bytes of a control message (not a chunk, listing or hash list).
    pub const MAX_CONTROL: usize = 4096;

    /// The head of a message of `kind` with `len` bytes.
    pub fn head(kind: u8, len: usize) -> [u8; HEAD] {
        let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
        [kind, len[0], len[1], len[2], len[3]]
    }

    /// A `GET`'s body.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct Get {
        pub file: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub from: Option<u64>,
    }
}

/// Bytes a chunk `i` of a file of `size` holds.
pub fn chunk_len(size: u64, i: u64) -> usize {
    let chunk = CHUNK as u64;
    usize::try_from(size.saturating_sub(i * chunk).min(chunk)).unwrap_or(CHUNK)
}

/// Chunks of a file of `size`.
pub fn chunks_of(size: u64) -> u64 {
    size.div_ceil(CHUNK as u64)
}

/// A size as people write it: `512`, `700K`, `64M`, `10G`, `2T` (powers
/// of 1024; `B`/`iB` after the letter allowed).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let t = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a size (e.g. 512M, 10G)"))
}

/// A size for people: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Reads until `buf` is full or the end.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size(" 10K "), Ok(10 << 10));
        assert_eq!(parse_size("64G"), Ok(64 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("2tb"), Ok(2 << 40));
        for bad in ["", "G", "1.5G", "-1", "10X", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
    }

    #[test]
    fn offers_are_checked() {
        let good = Offer {
            id: "0123456789abcdef".into(),
            files: 1,
            bytes: 5,
            names: vec!["a".into()],
            listing: "ab".repeat(32),
            port: 8080,
        };
        assert_eq!(good.check(), Ok(()));
        let bad = [
            Offer {
                id: "0123".into(),
                ..good.clone()
            },
            Offer {
                id: "0123456789ABCDEF".into(),
                ..good.clone()
            },
            Offer {
                listing: "zz".into(),
                ..good.clone()
            },
            Offer {
                files: 0,
                ..good.clone()
            },
            Offer {
                files: 10_001,
                ..good.clone()
            },
            Offer {
                names: vec!["n".into(); 9],
                ..good.clone()
            },
        ];
        for o in bad {
            assert!(o.check().is_err(), "{o:?}");
        }
        let shown = Offer {
            names: vec!["a\u{1b}[2Jb\nc".into(), "x".repeat(500)],
            ..good
        }
        .shown_names();
        assert_eq!(shown[0], "a_[2Jb_c");
        assert_eq!(shown[1].chars().count(), 120);
    }

    #[test]
    fn hostile_names_land_inside_the_folder_or_are_refused() {
        for (offered, want) in [
            ("report.pdf", Ok("report.pdf")),
            ("../../.bashrc", Ok("_.bashrc")),
            ("/etc/passwd", Ok("passwd")),
            ("C:\\Windows\\system.ini", Ok("system.ini")),
            ("a\nb\rc\u{1b}[2J.txt", Ok("a_b_c_[2J.txt")),
            ("invoice\u{202e}fdp.exe", Ok("invoice_fdp.exe")),
            ("CON", Ok("_CON")),
            ("com1.txt", Ok("_com1.txt")),
            ("notes. . ", Ok("notes")),
            ("..", Err(NameError::Empty)),
            ("/", Err(NameError::Empty)),
            ("", Err(NameError::Empty)),
            ("a\0b", Err(NameError::Nul)),
        ] {
            assert_eq!(
                safe_name(offered).as_deref(),
                want.as_deref(),
                "{offered:?}"
            );
        }
        let long = format!("{}.tar.gz", "é".repeat(5000));
        let cut = safe_name(&long).unwrap();
        assert!(cut.len() <= MAX_NAME_BYTES && cut.ends_with(".gz"), "{cut}");
        assert!(safe_name(&"x".repeat(10_000)).unwrap().len() == MAX_NAME_BYTES);
    }

    #[test]
    fn a_tree_keeps_its_shape_and_never_climbs() {
        assert_eq!(
            safe_path("docs/a/b.txt").unwrap(),
            Path::new("docs/a/b.txt")
        );
        assert_eq!(safe_path("/abs//./x").unwrap(), Path::new("abs/x"));
        assert_eq!(safe_path("docs/../../x"), Err(NameError::Climbs));
        assert_eq!(safe_path("./."), Err(NameError::Empty));
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert_eq!(safe_path(&deep), Err(NameError::TooDeep));
        assert_eq!(
            safe_path("a/.git/config").unwrap(),
            Path::new("a/_.git/config")
        );
    }

    #[test]
    fn an_existing_name_gets_a_numbered_sibling() {
        let dir = std::env::temp_dir().join(format!("p2pchat-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rel = Path::new("report.pdf");
        let first = unique_destination(&dir, rel).unwrap();
        assert_eq!(first, dir.join("report.pdf"));
        std::fs::write(&first, b"x").unwrap();
        assert_eq!(
            unique_destination(&dir, rel).unwrap(),
            dir.join("report (1).pdf")
        );
        // A transfer under way holds its name too.
        std::fs::write(part_of(&dir.join("report (1).pdf")), b"x").unwrap();
        assert_eq!(
            unique_destination(&dir, rel).unwrap(),
            dir.join("report (2).pdf")
        );
        assert_eq!(part_of(&first), dir.join("report.pdf.part"));
        // One counter for one name looks on from where it stopped: a
        // name freed behind it is not looked at again.
        let mut next = 0;
        let third = unique_destination_from(&dir, rel, &mut next).unwrap();
        assert_eq!((third, next), (dir.join("report (2).pdf"), 3));
        std::fs::remove_file(dir.join("report.pdf")).unwrap();
        let fourth = unique_destination_from(&dir, rel, &mut next).unwrap();
        assert_eq!((fourth, next), (dir.join("report (3).pdf"), 4));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_download_folder_follows_xdg() {
        let home = Path::new("/home/amy");
        let text =
            "# written by xdg-user-dirs-update\nXDG_DOWNLOAD_DIR=\"$HOME/Téléchargements\"\n";
        assert_eq!(
            user_dirs_download(text, home),
            Some(PathBuf::from("/home/amy/Téléchargements"))
        );
        assert_eq!(
            user_dirs_download("XDG_DOWNLOAD_DIR=\"/data/dl\"", home),
            Some(PathBuf::from("/data/dl"))
        );
        assert_eq!(user_dirs_download("XDG_DOWNLOAD_DIR=\"rel\"", home), None);
    }

    #[test]
    fn every_chunk_is_checked_against_the_offered_root() {
        let data: Vec<u8> = (0..(2 * CHUNK + 1234))
            .map(|i| u8::try_from(i % 251).unwrap_or(0))
            .collect();
        let m = Manifest::of(&data[..]).unwrap();
        assert_eq!((m.size, m.hashes.len()), (data.len() as u64, 3));
        let root = m.root();
        assert!(m.matches(&root));
        assert!(m.verify(0, &data[..CHUNK]));
        assert!(m.verify(2, &data[2 * CHUNK..]));
        let mut flipped = data[CHUNK..2 * CHUNK].to_vec();
        flipped[17] ^= 1;
        assert!(!m.verify(1, &flipped), "a flipped byte is caught");
        assert!(
            !m.verify(2, &data[2 * CHUNK..data.len() - 1]),
            "a short chunk"
        );
        assert!(!m.verify(3, b""), "no such chunk");
        // A list that is not the offer's is refused whole.
        let mut other = m.clone();
        other.hashes.swap(0, 1);
        assert!(!other.matches(&root));
        let mut short = m;
        short.hashes.pop();
        assert!(
            !short.matches(&short.root()),
            "fewer hashes than the size needs"
        );
        let empty = Manifest::of(&b""[..]).unwrap();
        assert!(empty.hashes.is_empty() && empty.matches(&empty.root()));
    }
}
