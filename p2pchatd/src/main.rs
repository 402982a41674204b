//! `p2pchatd`: parse flags, detach if asked (before any runtime exists), set
//! up logging, run the node until a signal.

use std::process::ExitCode;

use clap::Parser;
use p2pchatd::cli::{Cli, generate_docs};
use p2pchatd::service::{self, ReadyPipe};
use p2pchatd::{logging, node};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match generate_docs(&cli) {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => return fail(&e.into(), 1),
    }
    let config = match cli.config() {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    let mut pipe = None;
    if cli.daemon {
        match service::log_file().and_then(|log| service::daemonize(&log)) {
            Ok(p) => pipe = Some(p),
            Err(e) => return fail(&e, 1),
        }
    }
    if let Err(e) = logging::init(cli.log_filter()) {
        return fail_daemon(pipe, &e, 2);
    }
    // One thread: the daemon waits on sockets, and a single-threaded
    // runtime wakes tasks without cross-thread handoffs.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail_daemon(pipe, &e.into(), 1),
    };
    let own_folder = cli.socket_path().1;
    let result = runtime.block_on(async {
        let bound = match node::bind(&config, own_folder) {
            Ok(b) => b,
            Err(e) => return Err((e, pipe)),
        };
        let shutdown = CancellationToken::new();
        if let Err(e) = node::cancel_on_signals(shutdown.clone()) {
            return Err((e.into(), pipe));
        }
        let stopping = shutdown.clone();
        node::serve(config, bound, shutdown, move |mesh| {
            service::notify_ready(mesh);
            tokio::spawn(service::report_status(mesh.clone(), stopping));
            if let Some(p) = pipe {
                p.ready();
            }
        })
        .await
        .map_err(|e| (e, None))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, pipe)) => fail_daemon(pipe, &e, 1),
    }
}

/// Reports a failure to the waiting parent of `--daemon` (and the log
/// file, which is the daemon's stderr), else once to stderr.
fn fail_daemon(pipe: Option<ReadyPipe>, e: &anyhow::Error, code: u8) -> ExitCode {
    match pipe {
        Some(p) => {
            tracing::error!("{e:#}");
            p.failed(&message(e));
            ExitCode::from(code)
        }
        None => fail(e, code),
    }
}

#[allow(clippy::print_stderr)]
fn fail(e: &anyhow::Error, code: u8) -> ExitCode {
    eprintln!("{}", message(e));
    ExitCode::from(code)
}

fn message(e: &anyhow::Error) -> String {
    // The single-instance message is the whole line (DESIGN §2).
    if e.downcast_ref::<p2pchatd::ApiBindError>().is_some() {
        e.to_string()
    } else {
        format!("p2pchatd: {e:#}")
    }
}
