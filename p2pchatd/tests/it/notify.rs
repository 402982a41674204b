//! Mentions while no client is attached: the daemon runs the configured
//! notify command, once per mention, with who, where and what as separate
//! arguments, never through a shell.

use std::path::Path;
use std::time::Duration;

use testkit::*;

const T: Duration = Duration::from_secs(10);

/// Records read back from the recorder: one per run, its arguments.
fn records(out: &Path) -> Vec<Vec<String>> {
    let raw = std::fs::read(out).unwrap_or_default();
    raw.split(|&b| b == b'\n')
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .collect()
}

/// What the command recorded, once it ran `n` times.
async fn wait_records(out: &Path, n: usize) -> Vec<Vec<String>> {
    wait_until(&format!("{n} notify runs"), T, || async {
        let r = records(out);
        (r.len() >= n).then_some(r)
    })
    .await
}

#[tokio::test]
async fn a_mention_runs_the_notify_command_once_with_verbatim_arguments() {
    let net = TestNet::new();
    let out = net.dir.path().join("notified");
    // The recorder writes its arguments NUL-separated, one run per line.
    let recorder = net.dir.path().join("record.sh");
    std::fs::write(
        &recorder,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done >> '{}'\necho >> '{}'\n",
            out.display(),
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &recorder,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let config = net.home_of("alice").join("config/p2pchat/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            "[notify]\nhighlight = [\"deploy\"]\ncommand = [\"{}\", \"from {{nick}}\", \"{{room}}\", \"{{text}}\"]\n",
            recorder.display()
        ),
    )
    .unwrap();
    let [alice, bob] = net.linked(["alice", "bob"]).await;

    // No client is attached to alice.
    let tricky = "alice: \"quoted\" 'single' $(touch pwned) `id` ; done";
    bob.say(tricky).await;
    let r = wait_records(&out, 1).await;
    assert_eq!(r[0], ["from bob", "#general", tricky]);
    assert!(!net.dir.path().join("pwned").exists());

    // Not a mention, then a highlight word: only the second runs it.
    bob.say("malice is no mention").await;
    bob.say("DEPLOY is out").await;
    let r = wait_records(&out, 2).await;
    assert_eq!(r[1][2], "DEPLOY is out");
    // A direct message always does, its room the sender's.
    bob.say_to(None, Some("alice"), "psst").await.unwrap();
    let r = wait_records(&out, 3).await;
    assert_eq!(r[2], ["from bob", "@bob", "psst"]);
    // Our own lines never notify, nor does a new nick's old name.
    alice.say("alice talks to herself about deploy").await;
    alice.p2pchat(&["nick", "alicia"]).await;
    bob.say("alice?").await;
    bob.say("alicia!").await;
    let r = wait_records(&out, 4).await;
    assert_eq!(r[3][2], "alicia!");
    // One at a time, in order: a mention run twice would come before this.
    bob.say("alicia, last").await;
    let r = wait_records(&out, 5).await;
    assert_eq!(r[4][2], "alicia, last", "each mention ran it once: {r:?}");
}
