//! A Noise dialer that plays any p2pchatd peer (any key, any nick), or
//! misbehaves on purpose: garbage after the preamble, a replayed
//! handshake, bad frames after a good one; and the acceptor's side, for a
//! peer that serves a daemon's file fetch as it likes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use ed25519_dalek::{Signer, SigningKey};
use shared::authorship::CAP_SEALS;
use shared::keys::hex;
use shared::secure::{
    Hello, MAX_FRAME_PLAINTEXT, NOISE_XX, NOISE_XX_PSK, PREAMBLE, PROLOGUE, STATIC_KEY_CONTEXT,
    frame_header, next_frame,
};
use shared::wire::PeerMessage;
use snow::StatelessTransportState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A finished handshake with a daemon.
pub struct NoiseLink {
    pub stream: TcpStream,
    state: StatelessTransportState,
    tx: u64,
    rx: u64,
    /// Sealed bytes read but not yet opened, and plaintext not yet a line.
    raw: BytesMut,
    plain: Vec<u8>,
    /// What this side sent during the handshake, to replay.
    pub handshake_bytes: Vec<u8>,
    /// The daemon's hello.
    pub theirs: Hello,
}

/// Handshakes with the daemon at `to` as the holder of `secret`, named
/// `nick`; with `psk`, as a holder of that network key.
pub async fn dial(
    to: SocketAddr,
    secret: [u8; 32],
    nick: &str,
    psk: Option<[u8; 32]>,
) -> Result<NoiseLink, String> {
    dial_with_caps(to, secret, nick, psk, &[CAP_SEALS]).await
}

/// As [`dial`], saying `caps` in the hello.
pub async fn dial_with_caps(
    to: SocketAddr,
    secret: [u8; 32],
    nick: &str,
    psk: Option<[u8; 32]>,
    caps: &[&str],
) -> Result<NoiseLink, String> {
    dial_as(to, secret, nick, psk, caps, None).await
}

/// A fetch of offer `id` (PROTOCOL-p2pchatd §10), as the holder of
/// `secret`: the daemon at `to` then sends the listing.
pub async fn fetch(to: SocketAddr, secret: [u8; 32], id: &str) -> Result<NoiseLink, String> {
    dial_as(to, secret, "fetcher", None, &[], Some(id)).await
}

async fn dial_as(
    to: SocketAddr,
    secret: [u8; 32],
    nick: &str,
    psk: Option<[u8; 32]>,
    caps: &[&str],
    fetch: Option<&str>,
) -> Result<NoiseLink, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let pattern = if psk.is_some() {
        NOISE_XX_PSK
    } else {
        NOISE_XX
    };
    let params = pattern.parse().map_err(|x: snow::Error| e(&x))?;
    let keys = snow::Builder::new(pattern.parse().map_err(|x: snow::Error| e(&x))?)
        .generate_keypair()
        .map_err(|x| e(&x))?;
    let mut b = snow::Builder::new(params)
        .local_private_key(&keys.private)
        .map_err(|x| e(&x))?
        .prologue(PROLOGUE)
        .map_err(|x| e(&x))?;
    if let Some(k) = &psk {
        b = b.psk(0, k).map_err(|x| e(&x))?;
    }
    let mut hs = b.build_initiator().map_err(|x| e(&x))?;
    let mut hello = hello(secret, &keys.public, nick, caps);
    hello.fetch = fetch.map(str::to_owned);
    let mut stream = TcpStream::connect(to).await.map_err(|x| e(&x))?;
    let mut msg = vec![0u8; 4096];
    let mut sent = PREAMBLE.to_vec();
    let n = hs.write_message(&[], &mut msg).map_err(|x| e(&x))?;
    sent.extend_from_slice(&frame_header(n));
    sent.extend_from_slice(&msg[..n]);
    stream.write_all(&sent).await.map_err(|x| e(&x))?;
    let mut raw = BytesMut::new();
    let second = handshake_frame(&mut raw, &mut stream).await?;
    let mut payload = vec![0u8; 4096];
    let n = hs.read_message(&second, &mut payload).map_err(|x| e(&x))?;
    let theirs = Hello::decode(&payload[..n]).map_err(|x| e(&x))?;
    let n = hs
        .write_message(&hello.encode(), &mut msg)
        .map_err(|x| e(&x))?;
    let mut third = frame_header(n).to_vec();
    third.extend_from_slice(&msg[..n]);
    stream.write_all(&third).await.map_err(|x| e(&x))?;
    sent.extend_from_slice(&third);
    let state = hs.into_stateless_transport_mode().map_err(|x| e(&x))?;
    Ok(NoiseLink::new(stream, state, raw, sent, theirs))
}

/// The next handshake frame, reading `stream` as needed (5 s at most).
async fn handshake_frame(raw: &mut BytesMut, stream: &mut TcpStream) -> Result<BytesMut, String> {
    loop {
        if let Some(f) = next_frame(raw) {
            return Ok(f);
        }
        raw.reserve(4096);
        match tokio::time::timeout(Duration::from_secs(5), stream.read_buf(raw)).await {
            Ok(Ok(0)) => return Err("closed".into()),
            Ok(Ok(_)) => {}
            Ok(Err(x)) => return Err(x.to_string()),
            Err(_) => return Err("no answer".into()),
        }
    }
}

/// Our hello as the holder of `secret`, vouching for `static_public`.
fn hello(secret: [u8; 32], static_public: &[u8], nick: &str, caps: &[&str]) -> Hello {
    let signing = SigningKey::from_bytes(&secret);
    let mut vouched = STATIC_KEY_CONTEXT.to_vec();
    vouched.extend_from_slice(static_public);
    Hello {
        key: hex(&signing.verifying_key().to_bytes()),
        sig: hex(&signing.sign(&vouched).to_bytes()),
        nick: nick.into(),
        heartbeat_ms: 2000,
        instance: "test".into(),
        caps: caps.iter().map(|c| (*c).to_owned()).collect(),
        fetch: None,
    }
}

/// The acceptor's side of a handshake on `stream` (a daemon dialed us),
/// as the holder of `secret`.
pub async fn respond(
    mut stream: TcpStream,
    secret: [u8; 32],
    nick: &str,
    caps: &[&str],
) -> Result<NoiseLink, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let keys = snow::Builder::new(NOISE_XX.parse().map_err(|x: snow::Error| e(&x))?)
        .generate_keypair()
        .map_err(|x| e(&x))?;
    let mut hs = snow::Builder::new(NOISE_XX.parse().map_err(|x: snow::Error| e(&x))?)
        .local_private_key(&keys.private)
        .map_err(|x| e(&x))?
        .prologue(PROLOGUE)
        .map_err(|x| e(&x))?
        .build_responder()
        .map_err(|x| e(&x))?;
    let mut raw = BytesMut::new();
    while raw.len() < PREAMBLE.len() {
        raw.reserve(64);
        if stream.read_buf(&mut raw).await.map_err(|x| e(&x))? == 0 {
            return Err("closed".into());
        }
    }
    if &raw[..PREAMBLE.len()] != PREAMBLE {
        return Err("not a noise preamble".into());
    }
    let _ = raw.split_to(PREAMBLE.len());
    let first = handshake_frame(&mut raw, &mut stream).await?;
    let mut payload = vec![0u8; 4096];
    hs.read_message(&first, &mut payload).map_err(|x| e(&x))?;
    let mut msg = vec![0u8; 4096];
    let ours = hello(secret, &keys.public, nick, caps).encode();
    let n = hs.write_message(&ours, &mut msg).map_err(|x| e(&x))?;
    let mut second = frame_header(n).to_vec();
    second.extend_from_slice(&msg[..n]);
    stream.write_all(&second).await.map_err(|x| e(&x))?;
    let third = handshake_frame(&mut raw, &mut stream).await?;
    let n = hs.read_message(&third, &mut payload).map_err(|x| e(&x))?;
    let theirs = Hello::decode(&payload[..n]).map_err(|x| e(&x))?;
    let state = hs.into_stateless_transport_mode().map_err(|x| e(&x))?;
    Ok(NoiseLink::new(stream, state, raw, second, theirs))
}

impl NoiseLink {
    fn new(
        stream: TcpStream,
        state: StatelessTransportState,
        raw: BytesMut,
        handshake_bytes: Vec<u8>,
        theirs: Hello,
    ) -> Self {
        Self {
            stream,
            state,
            tx: 0,
            rx: 0,
            raw,
            plain: Vec::new(),
            handshake_bytes,
            theirs,
        }
    }

    /// Sends one fetch message (PROTOCOL-p2pchatd §10).
    pub async fn send_fetch(&mut self, kind: u8, body: &[u8]) -> std::io::Result<()> {
        let mut plain = shared::transfer::fetch::head(kind, body.len()).to_vec();
        plain.extend_from_slice(body);
        self.send(&plain).await
    }

    /// The next fetch message: its kind and body.
    pub async fn recv_fetch(&mut self, limit: Duration) -> Result<(u8, Vec<u8>), String> {
        use shared::transfer::fetch::HEAD;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.plain.len() >= HEAD {
                let len = u32::from_be_bytes([
                    self.plain[1],
                    self.plain[2],
                    self.plain[3],
                    self.plain[4],
                ]) as usize;
                if self.plain.len() >= HEAD + len {
                    let kind = self.plain[0];
                    let body = self.plain[HEAD..HEAD + len].to_vec();
                    self.plain.drain(..HEAD + len);
                    return Ok((kind, body));
                }
            }
            self.open_more(deadline, limit).await?;
        }
    }

    /// Sends `plain` sealed, in frames, as a daemon would.
    pub async fn send(&mut self, plain: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::new();
        for chunk in plain.chunks(MAX_FRAME_PLAINTEXT) {
            let mut sealed = vec![0u8; chunk.len() + 16];
            let n = self
                .state
                .write_message(self.tx, chunk, &mut sealed)
                .map_err(std::io::Error::other)?;
            self.tx += 1;
            out.extend_from_slice(&frame_header(n));
            out.extend_from_slice(&sealed[..n]);
        }
        self.stream.write_all(&out).await
    }

    /// The next line the daemon sends (a JSON message), opened.
    pub async fn recv(&mut self, limit: Duration) -> Result<PeerMessage, String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(nl) = self.plain.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.plain.drain(..=nl).collect();
                return PeerMessage::decode(&line[..nl]).map_err(|e| e.to_string());
            }
            self.open_more(deadline, limit).await?;
        }
    }

    /// Opens the next frame into `plain`, reading until `deadline`.
    async fn open_more(
        &mut self,
        deadline: tokio::time::Instant,
        limit: Duration,
    ) -> Result<(), String> {
        loop {
            if let Some(frame) = next_frame(&mut self.raw) {
                let mut out = vec![0u8; frame.len()];
                let n = self
                    .state
                    .read_message(self.rx, &frame, &mut out)
                    .map_err(|e| e.to_string())?;
                self.rx += 1;
                self.plain.extend_from_slice(&out[..n]);
                return Ok(());
            }
            self.raw.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.raw)).await {
                Ok(Ok(0)) => return Err("closed".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err(format!("nothing within {limit:?}")),
            }
        }
    }

    /// Sends bytes as they are, past the encryption.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }
}

/// Whether the daemon closes `stream` within `limit` (whatever it sends
/// meanwhile is read and dropped).
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}
