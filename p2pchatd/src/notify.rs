//! Mentions, told to the user while no client may be looking: each line
//! that names us (our nick, or a `[notify] highlight` word) runs the
//! configured program, as a bouncer would (senpai's `on-highlight`).
//!
//! No shell is involved: the command is an argument vector, and `{nick}`,
//! `{room}` and `{text}` inside its arguments are replaced by who said it,
//! where, and what; without any of them the three are appended. So a text
//! holding quotes or `$(...)` arrives verbatim. A burst of mentions is
//! bounded: a few run at once, the rest are dropped with a warning, and a
//! program that hangs is killed.

use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shared::mention::Highlights;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Mentions waiting for their program; more are dropped.
const QUEUE: usize = 16;
/// At most this many programs in a burst, then one per [`REFILL`].
const BURST: u32 = 5;
const REFILL: Duration = Duration::from_secs(3);
/// A program still running after this is killed.
const RUN_LIMIT: Duration = Duration::from_secs(10);

/// One line that named us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mention {
    pub nick: String,
    pub room: String,
    pub text: String,
}

/// Tells whether a line is a mention and hands it to the runner.
#[derive(Debug)]
pub(crate) struct Notifier {
    words: Vec<String>,
    highlights: Mutex<Highlights>,
    tx: mpsc::Sender<Mention>,
}

impl Notifier {
    /// A notifier for `nick` and `words`, and the task that runs
    /// `command` for each mention (spawn it; it ends with the notifier).
    pub(crate) fn new(
        command: Vec<String>,
        words: Vec<String>,
        nick: &str,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let highlights = Highlights::new(Some(nick), words.iter().map(String::as_str));
        (
            Self {
                words,
                highlights: Mutex::new(highlights),
                tx,
            },
            run(command, rx),
        )
    }

    /// Our nick changed: it is what names us from now on.
    pub(crate) fn set_nick(&self, nick: &str) {
        let h = Highlights::new(Some(nick), self.words.iter().map(String::as_str));
        *self.highlights.lock().unwrap_or_else(|p| p.into_inner()) = h;
    }

    /// A line someone else said in `room` (`None`: to us alone, which
    /// always names us); runs the program if it names us. The room of a
    /// direct message is `@` and its sender.
    pub(crate) fn heard(&self, nick: &str, room: Option<&str>, text: &str) {
        let named = room.is_none()
            || self
                .highlights
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .matches(text);
        if !named {
            return;
        }
        let m = Mention {
            nick: nick.to_owned(),
            room: room.map_or_else(|| format!("@{nick}"), str::to_owned),
            text: text.to_owned(),
        };
        if self.tx.try_send(m).is_err() {
            debug!("a mention came while many wait for the notify command; dropped");
        }
    }
}

/// The program's arguments for `m`: placeholders replaced, or the three
/// appended when there are none.
pub(crate) fn argv(command: &[String], m: &Mention) -> Vec<String> {
    const HOLES: [&str; 3] = ["{nick}", "{room}", "{text}"];
    let has_holes = command.iter().any(|a| HOLES.iter().any(|h| a.contains(h)));
    let mut out: Vec<String> = command
        .iter()
        .map(|a| {
            if has_holes {
                // One pass, so a nick holding "{text}" stays as it is.
                fill(a, m)
            } else {
                a.clone()
            }
        })
        .collect();
    if !has_holes {
        out.extend([m.nick.clone(), m.room.clone(), m.text.clone()]);
    }
    out
}

/// `arg` with each placeholder replaced, scanning it once.
fn fill(arg: &str, m: &Mention) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (value, len) = if tail.starts_with("{nick}") {
            (m.nick.as_str(), 6)
        } else if tail.starts_with("{room}") {
            (m.room.as_str(), 6)
        } else if tail.starts_with("{text}") {
            (m.text.as_str(), 6)
        } else {
            ("{", 1)
        };
        out.push_str(value);
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// Runs the program for each mention, one at a time, within the burst
/// bound; ends when the notifier is dropped.
async fn run(command: Vec<String>, mut rx: mpsc::Receiver<Mention>) {
    let mut tokens = BURST;
    let mut refilled = Instant::now();
    let mut dropped = 0u64;
    while let Some(m) = rx.recv().await {
        let earned =
            u32::try_from(refilled.elapsed().as_millis() / REFILL.as_millis()).unwrap_or(u32::MAX);
        if earned > 0 {
            tokens = tokens.saturating_add(earned).min(BURST);
            refilled = Instant::now();
        }
        if tokens == 0 {
            dropped += 1;
            if dropped == 1 || dropped.is_power_of_two() {
                warn!(
                    dropped,
                    "mentions come faster than the notify command may run"
                );
            }
            continue;
        }
        tokens -= 1;
        let args = argv(&command, &m);
        let Some((program, rest)) = args.split_first() else {
            return;
        };
        let child = tokio::process::Command::new(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                warn!(program = %program, "cannot run the notify command: {e}");
                continue;
            }
        };
        match tokio::time::timeout(RUN_LIMIT, child.wait()).await {
            Ok(Ok(status)) if !status.success() => {
                debug!(program = %program, %status, "the notify command failed");
            }
            Ok(_) => {}
            Err(_) => {
                warn!(program = %program, "the notify command ran for {RUN_LIMIT:?}; killed");
                let _ = child.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Mention {
        Mention {
            nick: "bob {text}".into(),
            room: "#general".into(),
            text: "hi \"alice\" $(rm -rf ~) {nick}".into(),
        }
    }

    #[test]
    fn holes_are_filled_once_and_never_by_a_shell() {
        let cmd: Vec<String> = ["notify-send", "{nick} in {room}", "{text}", "{x}"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            argv(&cmd, &m()),
            [
                "notify-send",
                "bob {text} in #general",
                "hi \"alice\" $(rm -rf ~) {nick}",
                "{x}"
            ]
        );
        let bare: Vec<String> = vec!["/usr/bin/logger".into()];
        assert_eq!(
            argv(&bare, &m()),
            [
                "/usr/bin/logger",
                "bob {text}",
                "#general",
                "hi \"alice\" $(rm -rf ~) {nick}"
            ]
        );
    }

    #[tokio::test]
    async fn only_mentions_of_the_current_nick_go_to_the_runner() {
        let (n, _run) = Notifier::new(vec!["true".into()], vec!["deploy".into()], "alice");
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let n = Notifier { tx, ..n };
        let ops = Some("#ops");
        n.heard("bob", ops, "malice");
        n.heard("bob", ops, "Alice?");
        n.heard("bob", Some("#general"), "deploy!");
        n.set_nick("zed");
        n.heard("bob", ops, "alice");
        n.heard("bob", ops, "zed");
        // A direct message names us, whatever it says.
        n.heard("cat", None, "psst");
        let mut got = Vec::new();
        while let Ok(m) = rx.try_recv() {
            got.push((m.room, m.text));
        }
        let got: Vec<(&str, &str)> = got.iter().map(|(r, t)| (r.as_str(), t.as_str())).collect();
        assert_eq!(
            got,
            [
                ("#ops", "Alice?"),
                ("#general", "deploy!"),
                ("#ops", "zed"),
                ("@cat", "psst")
            ]
        );
    }
}
