//! The terminal UI: `p2pchat` with no subcommand.
//!
//! Elm-shaped: [`state::State`] is plain data, [`update::update`] turns an
//! [`update::Action`] (a key, a daemon event, a tick) into state changes
//! and [`update::Effect`]s without I/O, [`view::view`] draws the state.
//! This module owns the terminal and the loop that feeds actions in and
//! carries effects out; [`session`] owns the link to the daemon.

mod command;
mod session;
mod state;
mod theme;
mod update;
mod view;
mod wrap;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossterm::event::{
    DisableBracketedPaste, DisableFocusChange, DisableMouseCapture, EnableBracketedPaste,
    EnableFocusChange, EnableMouseCapture, Event, EventStream, MouseEventKind,
};
use futures_util::StreamExt;
use ratatui::DefaultTerminal;
use tokio::sync::{mpsc, oneshot};

use crate::client::{Client, ClientError};
use session::Request;
pub use state::Settings;
use state::{Clock, State};
use theme::Theme;
use update::{Action, Effect, update};

/// Actions from the session waiting for the loop. Full: the session waits
/// (and so stops reading the daemon, which gaps it if it lags that far).
const ACTION_QUEUE: usize = 1024;
/// Requests from the loop to the session.
const REQUEST_QUEUE: usize = 64;
/// Peer list refresh for what has no event (peers heard but not linked).
const PEERS_EVERY: Duration = Duration::from_secs(10);
/// How long `/shutdown` waits for the daemon's answer.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// How the TUI was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub socket: PathBuf,
    pub autostart: bool,
    /// Flags for a daemon we start (`--nick`, `--interface`, ...).
    pub daemon_args: Vec<String>,
    /// Hidden, for `make bench`: write the ms from `started` to the first
    /// frame that shows the attached history into this file.
    pub first_frame_report: Option<PathBuf>,
    pub started: Instant,
    /// The settings file's `[tui]` (and highlight words).
    pub settings: Settings,
    /// Colours on (the settings' `color`; NO_COLOR still wins).
    pub color: bool,
    /// What the settings file had to warn about, shown in the view.
    pub warnings: Vec<String>,
    /// The settings file read, passed on to a daemon we start.
    pub config: Option<PathBuf>,
}

/// Why the TUI could not run; printed with the terminal intact.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Start(String),
    #[error("terminal: {0}")]
    Terminal(#[from] io::Error),
}

impl TuiError {
    /// 2 when no daemon answers and none was to be started, else 1, as
    /// the shell commands do.
    pub fn exit_code(&self) -> std::process::ExitCode {
        match self {
            Self::Client(ClientError::NotRunning(_)) => std::process::ExitCode::from(2),
            _ => std::process::ExitCode::from(1),
        }
    }
}

/// Makes sure a daemon answers on the socket, starting one unless told not
/// to. Returns a note for the view, if any. Runs before the terminal is
/// taken over, so a failure prints normally.
pub(crate) async fn ensure_daemon(opts: &Options) -> Result<Option<String>, TuiError> {
    match Client::connect(&opts.socket).await {
        Ok(_) if opts.daemon_args.is_empty() => return Ok(None),
        Ok(_) => {
            return Ok(Some(format!(
                "p2pchatd was already running, so {} did not apply (use /nick to rename)",
                opts.daemon_args
                    .iter()
                    .filter(|a| a.starts_with("--"))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }
        Err(ClientError::NotRunning(_)) if opts.autostart => {}
        Err(e) => return Err(e.into()),
    }
    let out = tokio::process::Command::new(daemon_program())
        .arg("--daemon")
        .arg("--socket")
        .arg(&opts.socket)
        .args(
            opts.config
                .iter()
                .flat_map(|c| [std::ffi::OsStr::new("--config"), c.as_os_str()]),
        )
        .args(&opts.daemon_args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| TuiError::Start(format!("cannot start p2pchatd: {e}")))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(TuiError::Start(if why.is_empty() {
            format!("p2pchatd did not start ({})", out.status)
        } else {
            why
        }));
    }
    Ok(Some(
        "started p2pchatd in the background; /quit leaves it running".into(),
    ))
}

/// Restarts the daemon of another version: `systemctl --user restart` when
/// systemd started it, else `shutdown` and a new one of ours. The session
/// re-attaches by itself.
async fn restart_daemon(
    opts: &Options,
    systemd: bool,
    requests: &mpsc::Sender<Request>,
) -> state::LineKind {
    use state::LineKind::{Error, Info};
    if systemd {
        let out = tokio::process::Command::new("systemctl")
            .args(["--user", "restart", "p2pchatd"])
            .stdin(std::process::Stdio::null())
            .output()
            .await;
        return match out {
            Ok(o) if o.status.success() => Info("systemd restarted p2pchatd".into()),
            Ok(o) => Error(format!(
                "systemctl --user restart p2pchatd failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Error(format!("cannot run systemctl: {e}")),
        };
    }
    let (tx, rx) = oneshot::channel();
    let _ = requests.send(Request::Shutdown(tx)).await;
    match tokio::time::timeout(SHUTDOWN_WAIT, rx).await {
        Ok(Ok(Ok(()))) => {}
        _ => return Error("p2pchatd did not stop; restart it by hand".into()),
    }
    // Its socket goes once it has stopped; then ours starts.
    let deadline = Instant::now() + SHUTDOWN_WAIT;
    while opts.socket.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if opts.socket.exists() {
        return Error("p2pchatd has not let go of its socket; restart it by hand".into());
    }
    // The same flags as the first start.
    let fresh = Options {
        autostart: true,
        ..opts.clone()
    };
    match ensure_daemon(&fresh).await {
        Ok(_) => Info("started this version's p2pchatd; re-attaching".into()),
        Err(e) => Error(format!("could not start p2pchatd: {e}")),
    }
}

/// `p2pchatd` beside this executable (an install, a build tree), else PATH.
fn daemon_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("p2pchatd")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("p2pchatd"))
}

/// The terminal in TUI mode; dropping it restores the terminal, on every
/// exit path. Panics restore it too (see `enter`).
struct Term {
    terminal: DefaultTerminal,
}

impl Term {
    /// Takes the terminal over; the mouse is captured only if asked
    /// (captured, the terminal's own selection and link clicks need Shift).
    fn enter(mouse: bool) -> io::Result<Self> {
        // ratatui's init installs a panic hook that restores raw mode and
        // the main screen; ours also stops mouse capture and paste mode.
        let terminal = ratatui::try_init()?;
        let ratatui_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = release(&mut io::stdout());
            ratatui_hook(info);
        }));
        crossterm::execute!(io::stdout(), EnableBracketedPaste, EnableFocusChange)?;
        if mouse {
            crossterm::execute!(io::stdout(), EnableMouseCapture)?;
        }
        Ok(Self { terminal })
    }
}

/// Gives back what `enter` took beyond ratatui's raw mode and screen.
fn release(out: &mut impl Write) -> io::Result<()> {
    crossterm::execute!(out, DisableBracketedPaste, DisableFocusChange)?;
    // Only sent when it was on: a terminal that never saw it on is left
    // untouched.
    if MOUSE_ON.load(std::sync::atomic::Ordering::Relaxed) {
        crossterm::execute!(out, DisableMouseCapture)?;
    }
    Ok(())
}

/// Whether mouse capture is on now (the panic hook reads it).
static MOUSE_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn set_mouse(on: bool) -> io::Result<()> {
    MOUSE_ON.store(on, std::sync::atomic::Ordering::Relaxed);
    if on {
        crossterm::execute!(io::stdout(), EnableMouseCapture)
    } else {
        crossterm::execute!(io::stdout(), DisableMouseCapture)
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = release(&mut io::stdout());
        ratatui::restore();
    }
}

/// Writes each link on screen again, inside an OSC 8 hyperlink, in the
/// style its cells already have; the cursor stays where the frame put it.
/// Each link is written only where the frame's cells hold exactly its
/// text (found near the column the view expected), so a width the view
/// and the terminal count differently never overwrites other cells.
fn hyperlinks(buffer: &ratatui::buffer::Buffer, links: &[view::ScreenLink]) -> io::Result<()> {
    use crossterm::cursor::{MoveTo, RestorePosition, SavePosition};
    use crossterm::style::{PrintStyledContent, StyledContent};
    use ratatui::backend::IntoCrossterm;
    if links.is_empty() {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    crossterm::queue!(out, SavePosition)?;
    for l in links {
        let Some(x) = find_on_row(buffer, l) else {
            continue;
        };
        let Some(cell) = buffer.cell((x, l.y)) else {
            continue;
        };
        let style = cell.style().into_crossterm();
        let osc = format!("\x1b]8;;{}\x1b\\{}\x1b]8;;\x1b\\", l.url, l.text);
        crossterm::queue!(
            out,
            MoveTo(x, l.y),
            PrintStyledContent(StyledContent::new(style, osc))
        )?;
    }
    crossterm::queue!(out, RestorePosition)?;
    out.flush()
}

/// The column where the cells of row `l.y` spell `l.text`, nearest to
/// `l.x`; `None` when they nowhere do.
fn find_on_row(buffer: &ratatui::buffer::Buffer, l: &view::ScreenLink) -> Option<u16> {
    let area = buffer.area;
    let spells = |x: u16| -> bool {
        let mut at = x;
        let mut rest = l.text.as_str();
        while !rest.is_empty() {
            let Some(cell) = buffer.cell((at, l.y)) else {
                return false;
            };
            let sym = cell.symbol();
            let Some(after) = rest.strip_prefix(sym).filter(|_| !sym.is_empty()) else {
                return false;
            };
            rest = after;
            // A wide character takes the cells after it too.
            let w = u16::try_from(wrap::str_width(sym).max(1)).unwrap_or(1);
            at = at.saturating_add(w);
            if at > area.right() {
                return false;
            }
        }
        true
    };
    (0..area.width)
        .flat_map(|d| [l.x.checked_sub(d), l.x.checked_add(d)])
        .flatten()
        .filter(|&x| x >= area.left() && x < area.right())
        .find(|&x| spells(x))
}

/// Draws the state, then its links.
fn draw(term: &mut Term, state: &State) -> io::Result<()> {
    let mut links = Vec::new();
    let frame = term.terminal.draw(|f| links = view::view(state, f))?;
    hyperlinks(frame.buffer, &links)
}

/// Runs the TUI until the user quits.
pub async fn run(opts: Options) -> Result<(), TuiError> {
    let note = ensure_daemon(&opts).await?;
    let mut term = Term::enter(opts.settings.mouse)?;
    MOUSE_ON.store(opts.settings.mouse, std::sync::atomic::Ordering::Relaxed);
    let size = term.terminal.size()?;
    let mut state = State::new(
        size.width,
        size.height,
        Theme::from_env(opts.color),
        Clock::Local,
    );
    state.apply(opts.settings.clone());
    for w in &opts.warnings {
        state.note(state::LineKind::Error(format!("settings: {w}")));
    }
    if let Some(n) = note {
        state.note(state::LineKind::Info(n));
    }

    let (actions_tx, mut actions) = mpsc::channel(ACTION_QUEUE);
    let (requests, requests_rx) = mpsc::channel(REQUEST_QUEUE);
    let session = tokio::spawn(session::run(opts.socket.clone(), actions_tx, requests_rx));
    let mut input = EventStream::new();
    let mut peers_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + PEERS_EVERY, PEERS_EVERY);
    peers_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = stop_signals()?;
    let mut reported = opts.first_frame_report.is_none();

    draw(&mut term, &state)?;
    'main: loop {
        let first = tokio::select! {
            ev = input.next() => match ev {
                Some(Ok(ev)) => match to_action(ev) {
                    Some(a) => a,
                    None => continue,
                },
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            a = actions.recv() => match a {
                Some(a) => a,
                None => break,
            },
            _ = peers_tick.tick() => Action::Tick,
            () = stop.recv() => break,
        };
        // Take everything already waiting before drawing once: attaching
        // to a busy room is one frame, not a thousand.
        let mut batch = vec![first];
        while batch.len() < ACTION_QUEUE {
            match actions.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        for action in batch {
            for effect in update(&mut state, action) {
                match effect {
                    Effect::Quit => break 'main,
                    Effect::Shutdown => {
                        let (tx, rx) = oneshot::channel();
                        let _ = requests.send(Request::Shutdown(tx)).await;
                        match tokio::time::timeout(SHUTDOWN_WAIT, rx).await {
                            Ok(Ok(Ok(()))) => break 'main,
                            Ok(Ok(Err(e))) => {
                                state.note(state::LineKind::Error(format!("shutdown failed: {e}")))
                            }
                            _ => state.note(state::LineKind::Error(
                                "shutdown: no answer from p2pchatd".into(),
                            )),
                        }
                    }
                    Effect::Daemon(ask) => {
                        let _ = requests.send(Request::Ask(ask)).await;
                    }
                    Effect::RefreshPeers => {
                        // A refresh already queued will do.
                        let _ = requests.try_send(Request::Peers);
                    }
                    Effect::Bell => {
                        let mut out = io::stdout().lock();
                        let _ = out.write_all(b"\x07").and_then(|()| out.flush());
                    }
                    Effect::Mouse(on) => set_mouse(on)?,
                    Effect::RestartDaemon { systemd } => {
                        let note = restart_daemon(&opts, systemd, &requests).await;
                        state.note(note);
                    }
                }
            }
        }
        draw(&mut term, &state)?;
        if !reported && state.me.is_some() {
            reported = true;
            report_first_frame(&opts);
        }
    }
    session.abort();
    drop(term);
    Ok(())
}

fn to_action(ev: Event) -> Option<Action> {
    match ev {
        Event::Key(k) => Some(Action::Key(k)),
        // The wheel, and a left click (on the buffer list); moves and other
        // clicks would only redraw.
        Event::Mouse(m) => match m.kind {
            MouseEventKind::ScrollUp
            | MouseEventKind::ScrollDown
            | MouseEventKind::Down(crossterm::event::MouseButton::Left) => Some(Action::Mouse(m)),
            _ => None,
        },
        Event::Paste(p) => Some(Action::Paste(p)),
        Event::Resize(w, h) => Some(Action::Resize(w, h)),
        Event::FocusGained => Some(Action::Focus(true)),
        Event::FocusLost => Some(Action::Focus(false)),
    }
}

fn report_first_frame(opts: &Options) {
    if let Some(path) = &opts.first_frame_report {
        let ms = opts.started.elapsed().as_secs_f64() * 1000.0;
        let _ = write_report(path, ms);
    }
}

fn write_report(path: &Path, ms: f64) -> io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    writeln!(f, "{ms:.3}")
}

/// SIGTERM and SIGHUP end the TUI cleanly (the terminal is restored).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

fn stop_signals() -> io::Result<StopSignals> {
    use tokio::signal::unix::{SignalKind, signal};
    Ok(StopSignals {
        term: signal(SignalKind::terminate())?,
        hup: signal(SignalKind::hangup())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::buffer::Buffer;
    use ratatui::layout::Rect;

    /// A link is written where the frame's cells spell it, whatever width
    /// the view counted before it (an emoji sequence is 2 columns on
    /// screen, more by characters).
    #[test]
    fn links_are_found_where_the_frame_drew_them() {
        let mut buf = Buffer::empty(Rect::new(0, 0, 40, 2));
        buf.set_string(0, 1, "👍🏽 see https://e.x/a", ratatui::style::Style::new());
        let url = "https://e.x/a";
        let drawn = (0..40).find(|&x| buf[(x, 1)].symbol() == "h").unwrap();
        let link = |x| view::ScreenLink {
            x,
            y: 1,
            text: url.into(),
            url: url.into(),
        };
        assert_eq!(find_on_row(&buf, &link(drawn + 2)), Some(drawn));
        assert_eq!(find_on_row(&buf, &link(drawn)), Some(drawn));
        let elsewhere = view::ScreenLink {
            y: 0,
            ..link(drawn)
        };
        assert_eq!(find_on_row(&buf, &elsewhere), None, "not on that row");
    }
}
