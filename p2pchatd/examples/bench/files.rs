//! File transfer between two daemons on loopback, encrypted as between any
//! two p2pchatd peers: one big file, a folder of small ones, and the chat's
//! latency on the same pair while a big file moves.
//!
//! The files land in a folder in memory (`/dev/shm`) when there is one, so
//! the figures are the transfer's, not this machine's disk; the big file
//! is sent once more into a folder on disk, reported beside them.

use std::path::Path;
use std::time::{Duration, Instant};

use shared::api::{Call, SendParams, TransferInfo, TransferParams, TransferState};
use shared::event::EventBody;
use testkit::{Daemon, Subscriber, TempDir, TestNet, wait_full_mesh};

use crate::Counts;
use crate::drive::percentile;
use crate::pair::latency_samples;

const SETUP_WAIT: Duration = Duration::from_secs(10);
const TRANSFER_WAIT: Duration = Duration::from_secs(300);
/// Bytes of each small file, and how many.
const SMALL: usize = 4096;
const SMALL_FILES: usize = 1000;
/// Chat lines timed on the pair, idle and during a transfer.
const CHAT_LINES: usize = 1000;

pub(crate) struct Files {
    pub mb_per_s: f64,
    /// Into a folder on disk (`None`: the first was on disk already).
    pub disk_mb_per_s: Option<f64>,
    /// Where the first figures landed.
    pub landed_in: &'static str,
    pub big_bytes: u64,
    pub small_mb_per_s: f64,
    pub chat_p99_idle_us: f64,
    pub chat_p99_during_us: f64,
    /// Chat lines timed while the file still moved.
    pub chat_during_lines: usize,
}

pub(crate) async fn files(c: &Counts) -> Files {
    let net = TestNet::new().quiet();
    let shm = Path::new("/dev/shm");
    let memory = shm.is_dir().then(|| TempDir::new_in(shm, "p2pchat-bench-"));
    let a = net.daemon("a").await;
    let into = memory.as_ref().map(|m| m.path().display().to_string());
    let b = match &into {
        Some(dir) => net.daemon_with("b", &["--download-dir", dir]).await,
        None => net.daemon("b").await,
    };
    wait_full_mesh(&[&a, &b], SETUP_WAIT).await;
    let big_bytes: u64 = if c.quick { 256 << 20 } else { 1 << 30 };
    let big = net.dir.path().join("big.bin");
    write_random(&big, big_bytes);
    let small = net.dir.path().join("small");
    std::fs::create_dir_all(&small).expect("small files' folder");
    for i in 0..SMALL_FILES {
        write_random(&small.join(format!("f{i:04}.bin")), SMALL as u64);
    }
    // On disk before anything is timed: writeback would run under it.
    nix::unistd::sync();
    let mut at_b = b.subscribe(None).await;

    let secs = transfer(&a, &b, &mut at_b, &big).await;
    let mb_per_s = big_bytes as f64 / 1e6 / secs;
    eprintln!("  {} MiB in {:.0} ms", big_bytes >> 20, secs * 1e3);
    let secs = transfer(&a, &b, &mut at_b, &small).await;
    let small_mb_per_s = (SMALL * SMALL_FILES) as f64 / 1e6 / secs;
    eprintln!("  {SMALL_FILES} files of {SMALL} B in {:.0} ms", secs * 1e3);
    let idle = latency_samples(&a, &b, 200, CHAT_LINES).await;
    // The big file again; chat lines timed while it moves.
    let offer = offer(&a, &big).await;
    answered(&b, &mut at_b, &offer.id).await;
    let during = latency_samples(&a, &b, 0, CHAT_LINES).await;
    let still = transfers_of(&b, &offer.id).await;
    let chat_during_lines = if still.is_over() {
        eprintln!("  (the file was whole before the chat lines were: some were timed after it)");
        0
    } else {
        CHAT_LINES
    };
    done(&mut at_b, &offer.id).await;
    // To disk last: its writeback must not run under the chat's timing.
    if let Some(m) = &memory {
        // What is in memory goes, before more comes.
        for e in std::fs::read_dir(m.path()).into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir_all(e.path());
            let _ = std::fs::remove_file(e.path());
        }
    }
    let disk_mb_per_s = match memory {
        Some(_) => {
            let c = net.daemon("c").await;
            wait_full_mesh(&[&a, &b, &c], SETUP_WAIT).await;
            let mut at_c = c.subscribe(None).await;
            let secs = transfer_to(&a, &c, "c", &mut at_c, &big).await;
            eprintln!(
                "  {} MiB to a folder on disk in {:.0} ms",
                big_bytes >> 20,
                secs * 1e3
            );
            Some(big_bytes as f64 / 1e6 / secs)
        }
        None => None,
    };

    Files {
        mb_per_s,
        disk_mb_per_s,
        landed_in: if into.is_some() { "memory" } else { "disk" },
        big_bytes,
        small_mb_per_s,
        chat_p99_idle_us: percentile(&idle, 0.99),
        chat_p99_during_us: percentile(&during, 0.99),
        chat_during_lines,
    }
}

fn write_random(path: &Path, bytes: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("a file"));
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left.min(block.len() as u64)).expect("a block");
        fastrand::fill(&mut block[..n]);
        f.write_all(&block[..n]).expect("write");
        left -= n as u64;
    }
    f.flush().expect("flush");
}

async fn offer(a: &Daemon, path: &Path) -> TransferInfo {
    offer_to(a, path, "b").await
}

async fn offer_to(a: &Daemon, path: &Path, to: &str) -> TransferInfo {
    a.client()
        .await
        .call(&Call::Send(SendParams {
            paths: vec![path.display().to_string()],
            to: to.into(),
        }))
        .await
        .expect("an offer")
}

/// Waits for B to hear offer `id`, then accepts it; when it asked.
async fn answered(b: &Daemon, at_b: &mut Subscriber, id: &str) -> Instant {
    at_b.until(
        "the offer",
        SETUP_WAIT,
        |e| matches!(&e.body, EventBody::Transfer(t) if t.id == id),
    )
    .await;
    let asked = Instant::now();
    let _: TransferInfo = b
        .client()
        .await
        .call(&Call::Accept(TransferParams { id: id.into() }))
        .await
        .expect("accepted");
    asked
}

async fn done(at_b: &mut Subscriber, id: &str) {
    let e = at_b
        .until(
            "the transfer's end",
            TRANSFER_WAIT,
            |e| matches!(&e.body, EventBody::Transfer(t) if t.id == id && t.state.is_over()),
        )
        .await;
    assert!(
        matches!(&e.body, EventBody::Transfer(t) if t.state == TransferState::Done),
        "the transfer failed: {e:?}"
    );
}

async fn transfers_of(b: &Daemon, id: &str) -> TransferState {
    let r: shared::api::TransfersResult = b
        .client()
        .await
        .call(&Call::Transfers)
        .await
        .expect("transfers");
    r.transfers
        .iter()
        .find(|t| t.id == id)
        .map_or(TransferState::Done, |t| t.state)
}

/// Seconds from B's accept to B's done: the offer (hashing) is not timed.
async fn transfer(a: &Daemon, b: &Daemon, at_b: &mut Subscriber, path: &Path) -> f64 {
    transfer_to(a, b, "b", at_b, path).await
}

async fn transfer_to(
    a: &Daemon,
    b: &Daemon,
    nick: &str,
    at_b: &mut Subscriber,
    path: &Path,
) -> f64 {
    let offer = offer_to(a, path, nick).await;
    let asked = answered(b, at_b, &offer.id).await;
    done(at_b, &offer.id).await;
    asked.elapsed().as_secs_f64()
}
