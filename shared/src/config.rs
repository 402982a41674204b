//! The settings file both programs read: `$XDG_CONFIG_HOME/p2pchat/config.toml`
//! (default `~/.config/p2pchat/config.toml`), or `--config PATH` /
//! `P2PCHAT_CONFIG`. Flags and environment variables override it.
//!
//! A key this version does not know is a warning naming it (a typo must
//! not stop the daemon); a value of the wrong type or out of range is an
//! error naming the file, the line and the key.

use std::net::{IpAddr, SocketAddrV4};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::text::validate_nick;

/// Environment variable that names the settings file.
pub const CONFIG_ENV: &str = "P2PCHAT_CONFIG";
/// The file's name inside `$XDG_CONFIG_HOME/p2pchat`.
pub const CONFIG_FILE: &str = "config.toml";
/// A settings file larger than this is refused (it is a few KiB at most).
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// The commented example `p2pchat config --print-default` prints.
pub const DEFAULT_CONFIG: &str = include_str!("config.default.toml");

/// What the file says. Every key is optional; `None` leaves the built-in
/// default (or the flag) in force.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct FileConfig {
    pub nick: Option<String>,
    pub network: Network,
    pub history: History,
    pub notify: Notify,
    pub files: Files,
    pub tui: Tui,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Network {
    pub interfaces: Option<Vec<String>>,
    pub peers: Option<Vec<String>>,
    pub multicast: Option<SocketAddrV4>,
    pub discovery: Option<bool>,
    pub listen: Option<IpAddr>,
    pub port: Option<u16>,
    pub require_encryption: Option<bool>,
    pub network_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct History {
    pub held: Option<u32>,
    pub retain_days: Option<u32>,
    pub retain_messages: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Notify {
    pub highlight: Vec<String>,
    pub command: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Files {
    pub download_dir: Option<PathBuf>,
    pub max_offer_size: Option<String>,
    pub auto_accept: Option<AutoAccept>,
}

/// Whose offers are accepted without asking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoAccept {
    /// Nobody's: every offer waits for `accept` (the default).
    #[default]
    Never,
    /// Peers whose fingerprint was compared (`p2pchat trust`).
    Verified,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Tui {
    pub time_format: Option<String>,
    pub mouse: Option<bool>,
    pub color: Option<bool>,
    pub bell: Option<bool>,
}

/// Keys this version knows, per table ("" is the top level).
const KNOWN: &[(&str, &[&str])] = &[
    (
        "",
        &["nick", "network", "history", "notify", "files", "tui"],
    ),
    (
        "network",
        &[
            "interfaces",
            "peers",
            "multicast",
            "discovery",
            "listen",
            "port",
            "require_encryption",
            "network_key",
        ],
    ),
    ("history", &["held", "retain_days", "retain_messages"]),
    ("notify", &["highlight", "command"]),
    ("files", &["download_dir", "max_offer_size", "auto_accept"]),
    ("tui", &["time_format", "mouse", "color", "bell"]),
];

/// Bounds on values, shared with the flags that set the same things.
pub const HELD_RANGE: std::ops::RangeInclusive<u32> = 1..=1_000_000;
pub const RETAIN_DAYS_RANGE: std::ops::RangeInclusive<u32> = 1..=36_500;
pub const RETAIN_MESSAGES_RANGE: std::ops::RangeInclusive<u64> = 1_000..=1_000_000_000;
/// At most this many arguments in the notify command, each this long.
const MAX_COMMAND_ARGS: usize = 64;
const MAX_ARG_BYTES: usize = 4096;

/// A settings file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}{message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default(),
        key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

/// A file read and checked: its settings and what to warn about.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub config: FileConfig,
    /// The file read, `None` when there is none.
    pub path: Option<PathBuf>,
    /// Unknown keys, each naming the file, line and key.
    pub warnings: Vec<String>,
}

/// The default place: `$XDG_CONFIG_HOME/p2pchat/config.toml`, else
/// `~/.config/p2pchat/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    crate::cli::config_dir().map(|d| d.join(CONFIG_FILE))
}

/// The file `--config` names, else `P2PCHAT_CONFIG`, else the default;
/// and whether it was named (a named file must exist).
pub fn path_to_read(given: Option<&Path>) -> Option<(PathBuf, bool)> {
    given
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os(CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .map(|p| (std::path::absolute(&p).unwrap_or(p), true))
        .or_else(|| default_path().map(|p| (p, false)))
}

/// Reads and checks the settings file (see [`path_to_read`]). A default
/// file that does not exist is no settings at all.
pub fn load(given: Option<&Path>) -> Result<Loaded, ConfigError> {
    let Some((path, named)) = path_to_read(given) else {
        return Ok(Loaded::default());
    };
    let fail = |message: String| ConfigError {
        file: path.clone(),
        line: None,
        key: None,
        message,
    };
    let text = match read_bounded(&path, MAX_CONFIG_BYTES) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => {
            return Ok(Loaded::default());
        }
        Err(e) => return Err(fail(format!("cannot read it: {e}"))),
        Ok(t) => t,
    };
    let (config, warnings) = parse(&text, &path)?;
    Ok(Loaded {
        config,
        path: Some(path),
        warnings,
    })
}

/// The text of a regular file of at most [`MAX_CONFIG_BYTES`] (a FIFO or a
/// device is refused, never read without end).
/// A regular file's text, refused past `max` bytes (read no further, so a
/// FIFO or a file that grows cannot hold the reader).
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    f.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB; is it the right file?",
            max / 1024
        )));
    }
    Ok(text)
}

/// Parses and checks `text`, read from `file`; returns the settings and a
/// warning per unknown key.
pub fn parse(text: &str, file: &Path) -> Result<(FileConfig, Vec<String>), ConfigError> {
    let error = |span: Option<Range<usize>>, key: Option<String>, message: String| ConfigError {
        file: file.to_owned(),
        line: span.map(|s| line_of(text, s.start)),
        key,
        message,
    };
    let doc = DeTable::parse(text)
        .map_err(|e| error(e.span(), None, e.message().trim_end().to_owned()))?;
    let config: FileConfig = toml::from_str(text).map_err(|e| {
        let at = e.span().and_then(|s| key_at(&doc, s.start));
        let (key, span) = match at {
            Some((k, s)) => (Some(k), Some(s)),
            None => (None, e.span()),
        };
        error(span, key, e.message().trim_end().to_owned())
    })?;
    if let Err((key, message)) = check(&config) {
        let span = span_of(&doc, key);
        return Err(error(span, Some(key.to_owned()), message));
    }
    let warnings = unknown_keys(&doc)
        .into_iter()
        .map(|(key, span, hint)| {
            format!(
                "{}:{}: unknown key `{key}` (ignored){hint}",
                file.display(),
                line_of(text, span.start)
            )
        })
        .collect();
    Ok((config, warnings))
}

/// The value rules beyond types; the failing key and why.
fn check(c: &FileConfig) -> Result<(), (&'static str, String)> {
    if let Some(n) = &c.nick {
        validate_nick(n).map_err(|e| ("nick", e.to_string()))?;
    }
    let net = &c.network;
    if let Some(m) = net.multicast
        && !m.ip().is_multicast()
    {
        return Err((
            "network.multicast",
            format!("{m} is not a multicast address"),
        ));
    }
    for i in net.interfaces.iter().flatten() {
        if i.trim().is_empty() || i.len() > 64 {
            return Err(("network.interfaces", format!("{i:?} is not an interface")));
        }
    }
    for p in net.peers.iter().flatten() {
        check_host_port(p).map_err(|e| ("network.peers", format!("{p:?}: {e}")))?;
    }
    let h = &c.history;
    in_range(h.held, &HELD_RANGE).map_err(|m| ("history.held", m))?;
    in_range(h.retain_days, &RETAIN_DAYS_RANGE).map_err(|m| ("history.retain_days", m))?;
    in_range(h.retain_messages, &RETAIN_MESSAGES_RANGE)
        .map_err(|m| ("history.retain_messages", m))?;
    for w in &c.notify.highlight {
        if w.trim().is_empty() || w.chars().count() > crate::mention::MAX_HIGHLIGHT_CHARS {
            return Err((
                "notify.highlight",
                format!(
                    "{w:?}: a word is 1-{} characters",
                    crate::mention::MAX_HIGHLIGHT_CHARS
                ),
            ));
        }
    }
    if c.notify.highlight.len() > crate::mention::MAX_HIGHLIGHTS {
        return Err((
            "notify.highlight",
            format!("at most {} words", crate::mention::MAX_HIGHLIGHTS),
        ));
    }
    if let Some(cmd) = &c.notify.command {
        if cmd.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(("notify.command", "the program to run is missing".into()));
        }
        if cmd.len() > MAX_COMMAND_ARGS
            || cmd
                .iter()
                .any(|a| a.len() > MAX_ARG_BYTES || a.contains('\0'))
        {
            return Err((
                "notify.command",
                format!("at most {MAX_COMMAND_ARGS} arguments of {MAX_ARG_BYTES} bytes, no NUL"),
            ));
        }
    }
    if let Some(s) = &c.files.max_offer_size {
        crate::transfer::parse_size(s).map_err(|m| ("files.max_offer_size", m))?;
    }
    if let Some(f) = &c.tui.time_format {
        check_time_format(f).map_err(|m| ("tui.time_format", m))?;
    }
    Ok(())
}

fn in_range<T: PartialOrd + std::fmt::Display>(
    v: Option<T>,
    r: &std::ops::RangeInclusive<T>,
) -> Result<(), String> {
    match v {
        Some(v) if !r.contains(&v) => {
            Err(format!("{v} is out of range ({}-{})", r.start(), r.end()))
        }
        _ => Ok(()),
    }
}

/// A strftime format chrono understands, printing something.
pub fn check_time_format(f: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if f.is_empty() || f.len() > 64 {
        return Err("a format is 1-64 bytes".into());
    }
    if StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
        return Err(format!("{f:?} is not a strftime format chrono understands"));
    }
    Ok(())
}

/// `HOST:PORT` with a host and a port of 1-65535 (`[v6]:port` too).
pub fn check_host_port(s: &str) -> Result<(), String> {
    let (host, port) = s.rsplit_once(':').ok_or("expected HOST:PORT")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("empty host".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("bad port {port:?}")),
    }
}

/// `~/x` to `$HOME/x`; other paths as they are.
pub fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_owned(),
    }
}

/// 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The dotted key whose value holds byte `offset`, and the key's span.
fn key_at(doc: &Spanned<DeTable<'_>>, offset: usize) -> Option<(String, Range<usize>)> {
    fn walk(t: &DeTable<'_>, offset: usize, prefix: &str) -> Option<(String, Range<usize>)> {
        for (k, v) in t.iter() {
            let name = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            let vs = v.span();
            if let DeValue::Table(inner) = v.get_ref()
                && let Some(found) = walk(inner, offset, &name)
            {
                return Some(found);
            }
            if vs.contains(&offset) || k.span().contains(&offset) {
                return Some((name, k.span()));
            }
        }
        None
    }
    walk(doc.get_ref(), offset, "")
}

/// The span of dotted `key`'s name in the document.
fn span_of(doc: &Spanned<DeTable<'_>>, key: &str) -> Option<Range<usize>> {
    let mut table = doc.get_ref();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let (k, v) = table.iter().find(|(k, _)| k.get_ref() == part)?;
        if parts.peek().is_none() {
            return Some(k.span());
        }
        let DeValue::Table(inner) = v.get_ref() else {
            return Some(k.span());
        };
        table = inner;
    }
    None
}

/// Keys no table of [`KNOWN`] has: dotted name, span, and a suggestion.
fn unknown_keys(doc: &Spanned<DeTable<'_>>) -> Vec<(String, Range<usize>, String)> {
    let mut out = Vec::new();
    let known = |table: &str| KNOWN.iter().find(|(t, _)| *t == table).map(|(_, k)| *k);
    for (k, v) in doc.get_ref().iter() {
        let name = k.get_ref().as_ref();
        let top = known("").unwrap_or(&[]);
        if !top.contains(&name) {
            out.push((name.to_owned(), k.span(), hint(name, top)));
            continue;
        }
        if let (Some(keys), DeValue::Table(inner)) = (known(name), v.get_ref()) {
            for (ik, _) in inner.iter() {
                let iname = ik.get_ref().as_ref();
                if !keys.contains(&iname) {
                    out.push((format!("{name}.{iname}"), ik.span(), hint(iname, keys)));
                }
            }
        }
    }
    out.sort_by_key(|(_, s, _)| s.start);
    out
}

/// ", did you mean `x`?" for a key close to a known one.
fn hint(key: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

/// `text` with its top-level `nick` set to `nick`: the line that sets it
/// is replaced, else one is added before the first setting. Comments and
/// everything else stay as they are.
pub fn with_nick(text: &str, nick: &str) -> String {
    let escaped: String = nick
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c => vec![c],
        })
        .collect();
    let line = format!("nick = \"{escaped}\"");
    let lines: Vec<&str> = text.lines().collect();
    let is_setting = |l: &&str| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#')
    };
    let first_table = lines
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .unwrap_or(lines.len());
    let existing = lines[..first_table].iter().position(|l| {
        let t = l.trim_start();
        t.strip_prefix("nick")
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    let mut out_lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    match existing {
        Some(i) => out_lines[i] = line,
        None => {
            let at = lines.iter().position(is_setting).unwrap_or(lines.len());
            // Keep a blank line between the file's opening comments and a
            // table header that follows.
            if at < lines.len() && lines[at].trim_start().starts_with('[') {
                out_lines.insert(at, String::new());
            }
            out_lines.insert(at, line);
        }
    }
    let mut out = out_lines.join("\n");
    out.push('\n');
    out
}

/// Writes `nick` into the settings file at `path` (made, with its folder,
/// if missing), keeping everything else in it. The file is replaced
/// atomically; one that does not parse is left alone.
pub fn save_nick(path: &Path, nick: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    use std::sync::atomic::{AtomicU64, Ordering};
    /// One save at a time in this process; temp names never repeat.
    static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let _one = SAVING.lock().unwrap_or_else(|p| p.into_inner());
    // A linked file (stow, home-manager) is written where it really is.
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let old = match read_bounded(&path, MAX_CONFIG_BYTES) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if let Some(t) = &old {
        parse(t, &path).map_err(|e| format!("{e}; fix it first"))?;
    }
    let new = with_nick(old.as_deref().unwrap_or(""), nick);
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
        .map_err(|e| format!("cannot make {}: {e}", folder.display()))?;
    let mode = std::fs::metadata(&path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let tmp = folder.join(format!(
        ".{CONFIG_FILE}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(new.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> (FileConfig, Vec<String>) {
        parse(text, Path::new("/c/config.toml")).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(text, Path::new("/c/config.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_default_file_is_all_comments_and_every_key_is_known() {
        let (c, w) = parse_ok(DEFAULT_CONFIG);
        assert_eq!(c, FileConfig::default());
        assert!(w.is_empty());
        // Uncommented, every example value parses with no warning.
        let on: String = DEFAULT_CONFIG
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(s) if s.contains(" = ") && !s.starts_with('`') => s,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let (c, w) = parse_ok(&on);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.nick.as_deref(), Some("alice"));
        assert_eq!(c.network.interfaces, Some(vec!["eth0".to_owned()]));
        assert_eq!(c.notify.highlight, ["deploy", "@ops"]);
        assert_eq!(c.tui.mouse, Some(false));
        assert_eq!(c.history.retain_messages, Some(1_000_000));
    }

    #[test]
    fn unknown_keys_warn_with_line_and_a_hint() {
        let (c, w) =
            parse_ok("nick = \"a\"\nnik = \"b\"\n[tui]\nmouse = true\nmuose = 1\n[extra]\nx = 1\n");
        assert_eq!(c.tui.mouse, Some(true));
        assert_eq!(
            w,
            [
                "/c/config.toml:2: unknown key `nik` (ignored); did you mean `nick`?",
                "/c/config.toml:5: unknown key `tui.muose` (ignored); did you mean `mouse`?",
                "/c/config.toml:6: unknown key `extra` (ignored)",
            ]
        );
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        assert_eq!(
            parse_err("# x\n[network]\nport = 70000\n"),
            "/c/config.toml:3: network.port: invalid value: integer `70000`, expected u16"
        );
        assert_eq!(
            parse_err("[tui]\nmouse = \"yes\"\n"),
            "/c/config.toml:2: tui.mouse: invalid type: string \"yes\", expected a boolean"
        );
        assert_eq!(
            parse_err("nick = \"a b\"\n"),
            "/c/config.toml:1: nick: nick may not contain whitespace or control characters"
        );
        assert_eq!(
            parse_err("[network]\nmulticast = \"10.0.0.1:9999\"\n"),
            "/c/config.toml:2: network.multicast: 10.0.0.1:9999 is not a multicast address"
        );
        assert!(
            parse_err("[history]\nheld = 0\n")
                .starts_with("/c/config.toml:2: history.held: 0 is out of range")
        );
        assert!(parse_err("[tui]\ntime_format = \"%Q\"\n").contains(":2: tui.time_format:"));
        assert!(parse_err("[notify]\ncommand = []\n").contains(":2: notify.command: the program"));
        assert!(parse_err("[network]\npeers = [\"nohost\"]\n").contains(":2: network.peers:"));
        assert!(parse_err("nick = \n").starts_with("/c/config.toml:1: "));
    }

    #[test]
    fn nick_is_set_in_place() {
        assert_eq!(with_nick("", "bob"), "nick = \"bob\"\n");
        assert_eq!(
            with_nick("# hi\n\n[tui]\nmouse = true\n", "bob"),
            "# hi\n\nnick = \"bob\"\n\n[tui]\nmouse = true\n"
        );
        assert_eq!(
            with_nick("# c\nnick = \"old\" # mine\n[tui]\n", "a\"b\\"),
            "# c\nnick = \"a\\\"b\\\\\"\n[tui]\n"
        );
        let (c, _) = parse_ok(&with_nick("# c\nnick = \"x\"\n", "a\"b\\"));
        assert_eq!(c.nick.as_deref(), Some("a\"b\\"));
        // A `nick` inside a table is not the top-level one.
        let t = with_nick("[tui]\nnick = 1\n", "z");
        assert_eq!(t, "nick = \"z\"\n\n[tui]\nnick = 1\n");
    }

    #[test]
    fn nick_is_saved_keeping_the_rest() {
        let dir = std::env::temp_dir().join(format!("p2pchat-cfg-{}", std::process::id()));
        let path = dir.join("sub").join(CONFIG_FILE);
        save_nick(&path, "bob").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "nick = \"bob\"\n");
        std::fs::write(&path, "# mine\n[tui]\nmouse = true\n").unwrap();
        save_nick(&path, "carol").unwrap();
        let (c, _) = parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        assert_eq!(
            (c.nick.as_deref(), c.tui.mouse),
            (Some("carol"), Some(true))
        );
        std::fs::write(&path, "nick = \n").unwrap();
        assert!(
            save_nick(&path, "dave")
                .unwrap_err()
                .contains("fix it first")
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nick = \n",
            "left alone"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_a_regular_file_is_read() {
        let e = load(Some(Path::new("/dev/zero"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: cannot read it: not a regular file"
        );
        let e = load(Some(Path::new("/nonexistent/p2pchat.toml"))).unwrap_err();
        assert!(
            e.to_string().contains("cannot read it"),
            "a named file must exist"
        );
    }

    #[test]
    fn home_expands() {
        let home = std::env::var("HOME").unwrap_or_default();
        if !home.is_empty() {
            assert_eq!(expand_home(Path::new("~/k")), Path::new(&home).join("k"));
        }
        assert_eq!(expand_home(Path::new("/k")), Path::new("/k"));
    }
}
