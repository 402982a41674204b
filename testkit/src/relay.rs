//! A TCP relay on loopback between a dialer and a daemon, that records
//! every byte it carries, so a test can see what an eavesdropper on the
//! LAN would, and that can be cut and healed, as a partition would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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
                carried.push(tokio::spawn(pipe(ir, ow, record.clone())));
                carried.push(tokio::spawn(pipe(or, iw, record.clone())));
            }
        });
        Self {
            addr,
            seen,
            task,
            cut,
            pipes,
        }
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
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
