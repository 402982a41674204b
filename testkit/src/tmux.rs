//! Drives the real `p2pchat` TUI in a private tmux server: start it in a
//! session of a given size, type into it, read the screen, see it exit.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long a screen or an exit is waited for.
const SCREEN_WAIT: Duration = Duration::from_secs(10);
/// How often the screen is read again while waiting.
const POLL: Duration = Duration::from_millis(20);

/// A tmux server of its own, killed when dropped.
pub struct Tmux {
    name: String,
}

impl Tmux {
    /// `None` (and a note) when tmux is not installed.
    pub fn new() -> Option<Self> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("skipped: tmux is not installed (.ci/run installs it)");
            return None;
        }
        Some(Self {
            name: format!("p2pchat-it-{}-{}", std::process::id(), fastrand::u32(..)),
        })
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.name, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Runs `cmd` in a new 100x30 session.
    pub fn start(&self, session: &str, cmd: &str) {
        self.start_sized(session, cmd, 100, 30);
    }

    /// Runs `cmd` in a new session of `width` x `height`; the pane stays
    /// after its program exits, so a test can see that it did.
    pub fn start_sized(&self, session: &str, cmd: &str, width: u16, height: u16) {
        let (w, h) = (width.to_string(), height.to_string());
        let out = self.tmux(&["new-session", "-d", "-s", session, "-x", &w, "-y", &h, cmd]);
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.tmux(&["set-option", "-t", session, "remain-on-exit", "on"]);
    }

    /// Runs `cmd` in a new session like [`start_sized`](Self::start_sized),
    /// with every byte it writes to the terminal also appended to `log`
    /// (escape sequences and all), from its first.
    pub fn start_recorded(&self, session: &str, cmd: &str, log: &std::path::Path) {
        // A shell first, so the recording is on before the program starts.
        self.start_sized(session, "sh", 100, 30);
        let pipe = format!("cat >> '{}'", log.display());
        let out = self.tmux(&["pipe-pane", "-o", "-t", session, &pipe]);
        assert!(out.status.success(), "tmux pipe-pane");
        self.enter(session, &format!("exec {cmd}"));
    }

    /// The screen with its colours and attributes as escape sequences.
    pub fn screen_styled(&self, session: &str) -> String {
        String::from_utf8_lossy(
            &self
                .tmux(&["capture-pane", "-p", "-e", "-t", session])
                .stdout,
        )
        .into_owned()
    }

    pub fn screen(&self, session: &str) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", session]).stdout)
            .into_owned()
    }

    /// Types `text` literally.
    pub fn keys(&self, session: &str, text: &str) {
        self.tmux(&["send-keys", "-t", session, "-l", text]);
    }

    /// Presses a key by its tmux name (`Escape`, `F1`, `C-c`).
    pub fn press(&self, session: &str, key: &str) {
        self.tmux(&["send-keys", "-t", session, key]);
    }

    /// Types `text`, then Enter.
    pub fn enter(&self, session: &str, text: &str) {
        self.keys(session, text);
        self.press(session, "Enter");
    }

    /// Waits until the screen satisfies `pred`; returns it.
    pub fn wait(&self, session: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen(session);
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < SCREEN_WAIT,
                "timed out waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(POLL);
        }
    }

    pub fn exited(&self, session: &str) -> bool {
        let out = self.tmux(&["list-panes", "-t", session, "-F", "#{pane_dead}"]);
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    pub fn wait_exit(&self, session: &str) {
        let start = Instant::now();
        while !self.exited(session) {
            assert!(
                start.elapsed() < SCREEN_WAIT,
                "p2pchat did not exit; the screen:\n{}",
                self.screen(session)
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}
