//! Log setup: tracing to stderr, filtered by `--log-level`.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Installs the global subscriber. `filter` is a level (`info`) or
/// per-target directives (`warn,p2pchatd=debug`).
pub fn init(filter: &str) -> anyhow::Result<()> {
    let targets: Targets = filter
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid --log-level {filter:?}: {e}"))?;
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(targets);
    tracing_subscriber::registry().with(stderr).try_init()?;
    Ok(())
}
