//! Log setup (DESIGN §2): to the journal when systemd connected our stderr
//! to it, else to stderr (which `--daemon` points at its log file).

use std::io::IsTerminal;
use std::os::fd::AsFd;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// True when stderr is the journal stream systemd gave us: its
/// `device:inode` equals `$JOURNAL_STREAM` (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    want.to_str() == Some(&format!("{}:{}", st.st_dev, st.st_ino))
}

/// Installs the global subscriber. `filter` is a level (`info`) or
/// per-target directives (`warn,p2pchatd=debug`).
pub fn init(filter: &str) -> anyhow::Result<()> {
    let targets: Targets = filter
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid --log-level {filter:?}: {e}"))?;
    let mut fallback = None;
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(journal) => {
                tracing_subscriber::registry()
                    .with(
                        journal
                            .with_syslog_identifier("p2pchatd".into())
                            .with_filter(targets),
                    )
                    .try_init()?;
                return Ok(());
            }
            // The stream is still there: plain lines on it, and say why.
            Err(e) => fallback = Some(e),
        }
    }
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(targets);
    tracing_subscriber::registry().with(stderr).try_init()?;
    if let Some(e) = fallback {
        tracing::warn!(
            "stderr is the journal stream but its socket is unavailable ({e}); logging plain lines"
        );
    }
    Ok(())
}
