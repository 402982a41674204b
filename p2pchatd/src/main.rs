//! `p2pchatd`: parse flags, set up logging, run the node until a signal.

use std::process::ExitCode;

use clap::Parser;
use p2pchatd::cli::Cli;
use p2pchatd::{logging, node};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.config() {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    if let Err(e) = logging::init(cli.log_filter()) {
        return fail(&e, 2);
    }
    // One thread: the daemon waits on sockets, and a single-threaded
    // runtime wakes tasks without cross-thread handoffs.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&e.into(), 1),
    };
    let own_folder = cli.socket_path().1;
    let result = runtime.block_on(async {
        let bound = node::bind(&config, own_folder)?;
        let shutdown = CancellationToken::new();
        node::cancel_on_signals(shutdown.clone())?;
        node::serve(config, bound, shutdown, |_| {}).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, 1),
    }
}

#[allow(clippy::print_stderr)]
fn fail(e: &anyhow::Error, code: u8) -> ExitCode {
    // The single-instance message is the whole line (DESIGN §2).
    if e.downcast_ref::<p2pchatd::api::ApiBindError>().is_some() {
        eprintln!("{e}");
    } else {
        eprintln!("p2pchatd: {e:#}");
    }
    ExitCode::from(code)
}
