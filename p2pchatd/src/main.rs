//! `p2pchatd`: parse flags, detach if asked (before any runtime exists), set
//! up logging, run the node until a signal. Only here are errors turned
//! into messages and exit statuses.

use std::error::Error;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use p2pchatd::cli::Cli;
use p2pchatd::node::{self, StartError};
use p2pchatd::service::{self, Forked, ReadyPipe};
use p2pchatd::{ApiBindError, logging};
use tokio_util::sync::CancellationToken;

/// Why the daemon did not run.
enum Failure {
    /// Bad flags or settings: exit 2.
    Usage(anyhow::Error),
    /// It could not start or serve: exit 1.
    Start(StartError),
    /// Anything else on the way (forking, the runtime): exit 1.
    Other(anyhow::Error),
}

impl Failure {
    fn status(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Start(_) | Self::Other(_) => 1,
        }
    }

    fn message(&self) -> String {
        match self {
            // The single-instance message is the whole line (DESIGN §2).
            Self::Start(e @ StartError::Api(ApiBindError::AlreadyRunning(_))) => e.to_string(),
            Self::Start(e) => format!("p2pchatd: {}", chain(e)),
            Self::Usage(e) | Self::Other(e) => format!("p2pchatd: {e:#}"),
        }
    }
}

/// An error and its sources, outermost first: `cannot listen on X: Address in use`.
fn chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.docs.write(Cli::command()) {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => return fail(None, &Failure::Other(e.into())),
    }
    let file = match cli.load_file() {
        Ok(f) => f,
        Err(e) => return fail(None, &Failure::Usage(e.into())),
    };
    for w in &file.warnings {
        warn(w);
    }
    let config = match cli.config(&file) {
        Ok(c) => c,
        Err(e) => return fail(None, &Failure::Usage(e)),
    };
    let mut pipe = None;
    if cli.daemon {
        match service::log_file().and_then(|log| service::daemonize(&log)) {
            Ok(Forked::Daemon(p)) => pipe = Some(p),
            Ok(Forked::Exit(status)) => return ExitCode::from(status),
            Err(e) => return fail(None, &Failure::Other(e)),
        }
    }
    if let Err(e) = logging::init(cli.log_filter()) {
        return fail(pipe, &Failure::Usage(e));
    }
    // One thread: the daemon waits on sockets, and a single-threaded
    // runtime wakes tasks without cross-thread handoffs.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(pipe, &Failure::Other(e.into())),
    };
    let own_folder = cli.socket_path().1;
    runtime.block_on(async {
        let started = node::bind(&config, own_folder).and_then(|bound| {
            let shutdown = CancellationToken::new();
            node::cancel_on_signals(shutdown.clone())?;
            Ok((bound, shutdown))
        });
        let (bound, shutdown) = match started {
            Ok(s) => s,
            Err(e) => return fail(pipe, &Failure::Start(e)),
        };
        let stopping = shutdown.clone();
        node::serve(config, bound, shutdown, move |mesh| {
            service::notify_ready(mesh);
            tokio::spawn(service::report_status(mesh.clone(), stopping));
            if let Some(p) = pipe {
                p.ready();
            }
        })
        .await;
        ExitCode::SUCCESS
    })
}

/// A warning about the settings, before logging is set up (its stderr
/// is the journal under systemd, the terminal by hand).
#[allow(clippy::print_stderr)]
fn warn(w: &str) {
    eprintln!("p2pchatd: warning: {w}");
}

/// Says why the daemon did not run: to the parent waiting on `--daemon`
/// (and the log file, which is then our stderr), else once to stderr.
#[allow(clippy::print_stderr)]
fn fail(pipe: Option<ReadyPipe>, failure: &Failure) -> ExitCode {
    let message = failure.message();
    match pipe {
        Some(p) => {
            tracing::error!("{message}");
            p.failed(&message);
        }
        None => eprintln!("{message}"),
    }
    ExitCode::from(failure.status())
}
