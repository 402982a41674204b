//! Running as a service: forking into the background (`--daemon`), telling
//! systemd we are ready and how many peers we have (sd-notify), and where a
//! background daemon logs.
//!
//! `--daemon` forks before any tokio runtime exists (forking a live runtime
//! breaks its I/O driver). The parent does not return: it waits on a pipe
//! until the daemon says it serves (exit 0) or why it could not (exit 1),
//! so `p2pchatd --daemon && p2pchat say hi` just works.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::mesh::Mesh;

/// How long the parent of `--daemon` waits for the daemon to be ready.
const READY_WAIT: Duration = Duration::from_secs(15);

/// `$XDG_STATE_HOME/p2pchat/p2pchatd.log`, else
/// `~/.local/state/p2pchat/p2pchatd.log`; the folder is created (0700).
pub fn log_file() -> anyhow::Result<PathBuf> {
    let dir = shared::cli::state_dir().context("neither XDG_STATE_HOME nor HOME is set")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.join("p2pchatd.log"))
}

/// The daemon's end of the pipe to the waiting parent.
#[derive(Debug)]
pub struct ReadyPipe(File);

impl ReadyPipe {
    /// Tells the parent we serve; it exits 0.
    pub fn ready(mut self) {
        let _ = self.0.write_all(b"ok\n");
    }

    /// Tells the parent why we could not start; it prints it and exits 1.
    pub fn failed(mut self, why: &str) {
        let _ = writeln!(self.0, "{why}");
    }
}

/// Where a process stands after [`daemonize`].
#[derive(Debug)]
pub enum Forked {
    /// This is the daemon: serve, and tell the waiting parent through the
    /// pipe.
    Daemon(ReadyPipe),
    /// This process is done (the parent heard the daemon's verdict, or the
    /// child could not detach and told it so): exit with this status.
    Exit(u8),
}

/// Forks into the background, with stderr appended to `log`. Must run
/// before any thread or runtime exists.
pub fn daemonize(log: &std::path::Path) -> anyhow::Result<Forked> {
    let log_out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let (read_end, write_end) = nix::unistd::pipe().context("cannot create a pipe")?;
    let outcome = daemonize::Daemonize::new()
        .working_directory("/")
        .umask(0o077)
        .stdout(daemonize::Stdio::devnull())
        .stderr(log_out)
        .execute();
    match outcome {
        daemonize::Outcome::Parent(Ok(_)) => {
            drop(write_end);
            Ok(Forked::Exit(wait_for_daemon(read_end, log)))
        }
        daemonize::Outcome::Parent(Err(e)) => Err(anyhow::anyhow!("cannot fork: {e}")),
        daemonize::Outcome::Child(Ok(_)) => {
            drop(read_end);
            Ok(Forked::Daemon(ReadyPipe(File::from(write_end))))
        }
        daemonize::Outcome::Child(Err(e)) => {
            ReadyPipe(File::from(write_end)).failed(&format!("p2pchatd: cannot detach: {e}"));
            Ok(Forked::Exit(1))
        }
    }
}

/// In the parent: the daemon's verdict, as an exit status.
#[allow(clippy::print_stderr)]
fn wait_for_daemon(read_end: OwnedFd, log: &std::path::Path) -> u8 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut said = String::new();
        let _ = File::from(read_end).read_to_string(&mut said);
        let _ = tx.send(said);
    });
    match rx.recv_timeout(READY_WAIT) {
        Ok(said) if said.trim() == "ok" => 0,
        Ok(said) if !said.trim().is_empty() => {
            eprintln!("{}", said.trim());
            1
        }
        Ok(_) => {
            eprintln!(
                "p2pchatd: the daemon exited before it was ready; see {}",
                log.display()
            );
            1
        }
        Err(_) => {
            eprintln!(
                "p2pchatd: the daemon was not ready within {} s; see {}",
                READY_WAIT.as_secs(),
                log.display()
            );
            1
        }
    }
}

/// Tells systemd (when it started us, `Type=notify`) that we serve.
pub fn notify_ready(mesh: &Mesh) {
    let status = status_line(mesh);
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Keeps systemd's status line (`systemctl --user status`) at the current
/// peer count until `stop`; then says we are stopping.
pub async fn report_status(mesh: Mesh, stop: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut topology = mesh.watch_topology();
    let mut last = String::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            r = topology.changed() => if r.is_err() { break },
        }
        let status = status_line(&mesh);
        if status != last {
            let _ = sd_notify::notify(&[NotifyState::Status(&status)]);
            last = status;
        }
    }
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn status_line(mesh: &Mesh) -> String {
    let (connected, known) = mesh.counts();
    format!(
        "{connected} peers connected, {known} known, as {}",
        mesh.nick()
    )
}

/// Nice 10 for the calling thread, which does background work (the
/// store's writes, a file transfer's bookkeeping): under load, chat lines
/// go first.
pub(crate) fn background_priority(what: &str) {
    // On Linux, a thread id names that thread alone.
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10) {
        tracing::debug!("could not lower the priority of {what}: {e}");
    }
}

/// The idle class (`SCHED_IDLE`) for the calling thread: it runs on the
/// CPU nothing else wants, and any other thread that wakes (the chat's
/// above all) takes the CPU from it at once, where a thread at nice 10
/// keeps it for the rest of its slice. The thread can never leave the
/// class. Where it is refused (a sandbox), nice 10.
///
/// Only for a thread that takes no lock the daemon's thread takes, and
/// that nothing waits on synchronously: under an outside load on every
/// core it may not run for seconds.
pub(crate) fn idle_priority(what: &str) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` lives across the call, which only reads it; pid 0
    // is the calling thread.
    #[allow(unsafe_code)]
    let set = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param) };
    if set != 0 {
        tracing::debug!(
            "could not put {what} in the idle class ({}); nice 10",
            std::io::Error::last_os_error()
        );
        background_priority(what);
    }
}
