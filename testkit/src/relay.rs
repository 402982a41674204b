//! A TCP relay on loopback between a dialer and a daemon, that records
//! every byte it carries, so a test can see what an eavesdropper on the
//! LAN would, and that can be cut and healed, as a partition would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bytes copied at once.
const CHUNK: usize = 16 * 1024;

/// Forwards every connection made to [`Relay::addr`] to its target, both
/// ways, and keeps a copy of all it carried. Stops when dropped.
pub struct Relay {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
    /// While set, connections are closed as they come.
    cut: Arc<AtomicBool>,
    /// The copying tasks of the connections carried now.
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
    shape: Arc<Shape>,
    /// Ends the relay's own thread, when it has one (dropped with it).
    _thread: Option<tokio::sync::oneshot::Sender<()>>,
}

/// What the relay does to the bytes it carries, besides copying them.
struct Shape {
    /// Bytes a second each way of each connection, at most (0: no limit).
    rate: AtomicU64,
    /// The offset, in what a connection's target sends back, of a byte to
    /// flip, once (`u64::MAX`: none).
    flip_at: AtomicU64,
    flipped: AtomicBool,
    /// Keep a copy of everything (off for bulk transfers).
    record: AtomicBool,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay port");
        let addr = listener.local_addr().expect("relay address");
        let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
        let record = seen.clone();
        let cut = Arc::new(AtomicBool::new(false));
        let pipes: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (is_cut, carried) = (cut.clone(), pipes.clone());
        let shape = Arc::new(Shape {
            rate: AtomicU64::new(0),
            flip_at: AtomicU64::new(u64::MAX),
            flipped: AtomicBool::new(false),
            record: AtomicBool::new(true),
        });
        let shaping = shape.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if is_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                let mut carried = carried.lock().unwrap_or_else(|p| p.into_inner());
                carried.retain(|p| !p.is_finished());
                carried.push(tokio::spawn(pipe(
                    ir,
                    ow,
                    record.clone(),
                    shaping.clone(),
                    false,
                )));
                carried.push(tokio::spawn(pipe(
                    or,
                    iw,
                    record.clone(),
                    shaping.clone(),
                    true,
                )));
            }
        });
        Self {
            addr,
            seen,
            task,
            cut,
            pipes,
            shape,
            _thread: None,
        }
    }

    /// As [`Relay::start`], on a thread and runtime of its own: it carries
    /// on while the test's thread blocks (say, polling tmux).
    pub fn start_on_own_thread(target: SocketAddr) -> Self {
        let (relay_tx, relay_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("relay runtime");
            rt.block_on(async move {
                let _ = relay_tx.send(Self::start(target).await);
                let _ = stop_rx.await;
            });
        });
        let mut relay = relay_rx.recv().expect("the relay started");
        relay._thread = Some(stop_tx);
        relay
    }

    /// Carries at most `bytes_per_s` each way of each connection, as a
    /// slow network would.
    pub fn limit(&self, bytes_per_s: u64) {
        self.shape.rate.store(bytes_per_s, Ordering::SeqCst);
    }

    /// Flips one byte, once: the one at `offset` of what a connection's
    /// target sends back (the first connection to send that much).
    pub fn flip_once_at(&self, offset: u64) {
        self.shape.flip_at.store(offset, Ordering::SeqCst);
    }

    /// Whether the byte was flipped.
    pub fn flipped(&self) -> bool {
        self.shape.flipped.load(Ordering::SeqCst)
    }

    /// Stops keeping a copy of what it carries (bulk transfers).
    pub fn forget(&self) {
        self.shape.record.store(false, Ordering::SeqCst);
    }

    /// Closes every connection it carries and refuses new ones (they are
    /// accepted and closed at once), until [`Relay::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for p in self
            .pipes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            p.abort();
        }
    }

    /// Carries connections again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Everything carried so far, both ways.
    pub fn seen(&self) -> Vec<u8> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `needle` went through the relay in the clear.
    pub fn saw(&self, needle: &str) -> bool {
        crate::raw::contains(&self.seen(), needle.as_bytes())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    seen: Arc<Mutex<Vec<u8>>>,
    shape: Arc<Shape>,
    back: bool,
) {
    let mut buf = vec![0u8; CHUNK];
    let started = tokio::time::Instant::now();
    let mut carried = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if shape.record.load(Ordering::SeqCst) {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&buf[..n]);
        }
        let at = shape.flip_at.load(Ordering::SeqCst);
        if back && at >= carried && at < carried + n as u64 {
            let flip =
                shape
                    .flip_at
                    .compare_exchange(at, u64::MAX, Ordering::SeqCst, Ordering::SeqCst);
            if flip.is_ok() {
                buf[usize::try_from(at - carried).unwrap_or(0)] ^= 0x55;
                shape.flipped.store(true, Ordering::SeqCst);
            }
        }
        carried += n as u64;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        let rate = shape.rate.load(Ordering::SeqCst);
        if rate > 0 {
            let due = started + std::time::Duration::from_secs_f64(carried as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
    }
    let _ = to.shutdown().await;
}
