//! Encrypted, authenticated links between p2pchatd peers (the wire is in
//! `shared::secure`): the Noise handshake both ways, with each side's
//! identity key vouching for its Noise static key, then transport frames
//! sealed and opened around the same JSON lines a plaintext link carries.
//!
//! The static key is made fresh at every start; the identity key signs it
//! once. The transport is stateless (explicit nonces), so a link's reader
//! and writer each keep their own counter and share the keys without a
//! lock. Every failure ends only the connection it happened on.

use shared::authorship::CAP_SEALS;
use shared::rooms::CAP_ROOMS;
use shared::sync::{CAP_SYNC, valid_life};
use shared::transfer::CAP_FILES;
use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use shared::keys::{KEY_LEN, hex, peer_id_of};
use shared::line::LineReader;
use shared::secure::{
    Hello, HelloError, MAX_FRAME_PLAINTEXT, MAX_HANDSHAKE_FRAME, NOISE_XX, NOISE_XX_PSK, PREAMBLE,
    PROLOGUE, STATIC_KEY_CONTEXT, frame_header, next_frame,
};
use shared::text::sanitize_foreign_nick;
use snow::{HandshakeState, StatelessTransportState};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::identity::{Identity, verify};

/// Raw bytes read at once while a Noise link reads frames.
const RAW_CHUNK: usize = 4096;

/// Why a Noise handshake or frame failed; the connection ends with it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecureError {
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("closed during the handshake")]
    Closed,
    #[error("not a p2pchat noise hello")]
    Preamble,
    #[error("a handshake message of {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Hello(#[from] HelloError),
    #[error("the identity key's signature over the link key does not verify")]
    BadSignature,
}

/// This daemon's side of every Noise handshake.
pub(crate) struct Secure {
    psk: Option<[u8; 32]>,
    static_private: Vec<u8>,
    /// The identity key, hex, and its signature over our static key, hex.
    key: String,
    sig: String,
}

/// The peer as its verified hello says.
#[derive(Debug, Clone)]
pub(crate) struct PeerHello {
    pub(crate) key: [u8; KEY_LEN],
    pub(crate) peer_id: String,
    pub(crate) nick: String,
    pub(crate) heartbeat_ms: u64,
    /// It sends seals and takes relayed runs ([`CAP_SEALS`]).
    pub(crate) seals: bool,
    /// Its life, if it said a valid one: what its seals are of.
    pub(crate) life: Option<Arc<str>>,
    /// It takes part in catch-up ([`CAP_SYNC`]).
    pub(crate) sync: bool,
    /// It takes rooms and direct messages ([`CAP_ROOMS`]).
    pub(crate) rooms: bool,
    /// It takes file offers ([`CAP_FILES`]).
    pub(crate) files: bool,
    /// The connection fetches this offer's files; it is no link.
    pub(crate) fetch: Option<String>,
}

/// A finished handshake: who is on the other end, and the link's halves.
pub(crate) struct Established {
    pub(crate) peer: PeerHello,
    pub(crate) opener: Opener,
    pub(crate) sealer: Sealer,
}

/// What we say of ourselves in a handshake, besides the keys.
pub(crate) struct OurHello {
    pub(crate) nick: String,
    pub(crate) heartbeat_ms: u64,
    pub(crate) instance: String,
    pub(crate) caps: Vec<String>,
    /// A fetch of this offer, not a link.
    pub(crate) fetch: Option<String>,
}

impl Secure {
    /// A fresh static key, vouched for by `identity`; with a network key,
    /// only its holders can finish a handshake with us.
    pub(crate) fn new(identity: &Identity, psk: Option<[u8; 32]>) -> Result<Self, SecureError> {
        let keypair = snow::Builder::new(pattern(psk.is_some()).parse()?).generate_keypair()?;
        let mut vouched = STATIC_KEY_CONTEXT.to_vec();
        vouched.extend_from_slice(&keypair.public);
        Ok(Self {
            psk,
            key: hex(&identity.public_key()),
            sig: hex(&identity.sign(&vouched)),
            static_private: keypair.private,
        })
    }

    fn state(&self, initiator: bool) -> Result<HandshakeState, SecureError> {
        let mut b = snow::Builder::new(pattern(self.psk.is_some()).parse()?)
            .local_private_key(&self.static_private)?
            .prologue(PROLOGUE)?;
        if let Some(psk) = &self.psk {
            b = b.psk(0, psk)?;
        }
        Ok(if initiator {
            b.build_initiator()?
        } else {
            b.build_responder()?
        })
    }

    fn hello(&self, ours: OurHello) -> Vec<u8> {
        Hello {
            key: self.key.clone(),
            sig: self.sig.clone(),
            nick: ours.nick,
            heartbeat_ms: ours.heartbeat_ms,
            instance: ours.instance,
            caps: ours.caps,
            fetch: ours.fetch,
        }
        .encode()
    }

    /// Whether links need a network key.
    pub(crate) fn has_network_key(&self) -> bool {
        self.psk.is_some()
    }

    /// The dialer's side: `-> e`, `<- e, ee, s, es` with their hello,
    /// `-> s, se` with ours.
    pub(crate) async fn initiate(
        &self,
        stream: &mut TcpStream,
        ours: OurHello,
    ) -> Result<Established, SecureError> {
        let mut hs = self.state(true)?;
        let mut msg = vec![0u8; MAX_HANDSHAKE_FRAME];
        let mut out = PREAMBLE.to_vec();
        let n = hs.write_message(&[], &mut msg)?;
        push_frame(&mut out, &msg[..n]);
        stream.write_all(&out).await?;
        let mut raw = BytesMut::new();
        let second = read_frame(stream, &mut raw).await?;
        let mut payload = vec![0u8; MAX_HANDSHAKE_FRAME];
        let n = hs.read_message(&second, &mut payload)?;
        let peer = verified(&payload[..n], hs.get_remote_static())?;
        let n = hs.write_message(&self.hello(ours), &mut msg)?;
        out.clear();
        push_frame(&mut out, &msg[..n]);
        stream.write_all(&out).await?;
        established(hs, peer, raw)
    }

    /// The acceptor's side; `raw` holds what was read so far (the
    /// preamble, perhaps more).
    pub(crate) async fn respond(
        &self,
        stream: &mut TcpStream,
        mut raw: BytesMut,
        ours: OurHello,
    ) -> Result<Established, SecureError> {
        while raw.len() < PREAMBLE.len() {
            raw.reserve(PREAMBLE.len());
            if stream.read_buf(&mut raw).await? == 0 {
                return Err(SecureError::Closed);
            }
        }
        if &raw[..PREAMBLE.len()] != PREAMBLE {
            return Err(SecureError::Preamble);
        }
        let _ = raw.split_to(PREAMBLE.len());
        let mut hs = self.state(false)?;
        let first = read_frame(stream, &mut raw).await?;
        let mut payload = vec![0u8; MAX_HANDSHAKE_FRAME];
        hs.read_message(&first, &mut payload)?;
        let mut msg = vec![0u8; MAX_HANDSHAKE_FRAME];
        let n = hs.write_message(&self.hello(ours), &mut msg)?;
        let mut out = Vec::with_capacity(n + 2);
        push_frame(&mut out, &msg[..n]);
        stream.write_all(&out).await?;
        let third = read_frame(stream, &mut raw).await?;
        let n = hs.read_message(&third, &mut payload)?;
        let peer = verified(&payload[..n], hs.get_remote_static())?;
        established(hs, peer, raw)
    }
}

fn pattern(psk: bool) -> &'static str {
    if psk { NOISE_XX_PSK } else { NOISE_XX }
}

fn push_frame(out: &mut Vec<u8>, msg: &[u8]) {
    out.extend_from_slice(&frame_header(msg.len()));
    out.extend_from_slice(msg);
}

/// Reads one handshake frame, refusing one larger than a hello needs
/// before waiting for its bytes.
async fn read_frame(stream: &mut TcpStream, raw: &mut BytesMut) -> Result<BytesMut, SecureError> {
    loop {
        if raw.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([raw[0], raw[1]]));
            if len > MAX_HANDSHAKE_FRAME {
                return Err(SecureError::TooLarge(len));
            }
        }
        if let Some(frame) = next_frame(raw) {
            return Ok(frame);
        }
        raw.reserve(MAX_HANDSHAKE_FRAME);
        if stream.read_buf(raw).await? == 0 {
            return Err(SecureError::Closed);
        }
    }
}

/// The peer's hello, checked: its identity key signed the Noise static key
/// it proved it holds.
fn verified(payload: &[u8], remote_static: Option<&[u8]>) -> Result<PeerHello, SecureError> {
    let hello = Hello::decode(payload)?;
    let (key, sig) = hello.key_and_sig()?;
    let mut vouched = STATIC_KEY_CONTEXT.to_vec();
    vouched.extend_from_slice(remote_static.ok_or(SecureError::BadSignature)?);
    if !verify(&key, &vouched, &sig) {
        return Err(SecureError::BadSignature);
    }
    Ok(PeerHello {
        peer_id: peer_id_of(&key),
        key,
        nick: sanitize_foreign_nick(&hello.nick).into_owned(),
        heartbeat_ms: hello.heartbeat_ms,
        seals: hello.caps.iter().any(|c| c == CAP_SEALS),
        life: valid_life(&hello.instance).then(|| Arc::from(hello.instance.as_str())),
        sync: hello.caps.iter().any(|c| c == CAP_SYNC),
        rooms: hello.caps.iter().any(|c| c == CAP_ROOMS),
        files: hello.caps.iter().any(|c| c == CAP_FILES),
        fetch: hello.fetch.filter(|id| shared::transfer::valid_id(id)),
    })
}

fn established(
    hs: HandshakeState,
    peer: PeerHello,
    leftover: BytesMut,
) -> Result<Established, SecureError> {
    let state = Arc::new(hs.into_stateless_transport_mode()?);
    Ok(Established {
        peer,
        opener: Opener {
            state: state.clone(),
            nonce: 0,
            raw: leftover,
        },
        sealer: Sealer { state, nonce: 0 },
    })
}

/// The reading half of a Noise link: frames in, plaintext out.
pub(crate) struct Opener {
    state: Arc<StatelessTransportState>,
    nonce: u64,
    raw: BytesMut,
}

impl Opener {
    /// Reads until some plaintext is in `lines`; `Ok(0)` at end of stream.
    /// A frame that does not open (forged, replayed, cut) is an error.
    pub(crate) async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        lines: &mut LineReader,
    ) -> io::Result<usize> {
        loop {
            let mut opened = 0;
            while let Some(frame) = next_frame(&mut self.raw) {
                let buf = lines.space();
                let start = buf.len();
                buf.resize(start + frame.len(), 0);
                let n =
                    match Self::open_frame(&self.state, &mut self.nonce, &frame, &mut buf[start..])
                    {
                        Ok(n) => n,
                        Err(e) => {
                            buf.truncate(start);
                            return Err(e);
                        }
                    };
                buf.truncate(start + n);
                opened += n;
            }
            if opened > 0 {
                return Ok(opened);
            }
            self.raw.reserve(RAW_CHUNK);
            if r.read_buf(&mut self.raw).await? == 0 {
                return Ok(0);
            }
        }
    }

    /// Opens `frame` into `out` (room for all of it) and moves the nonce
    /// on: how many bytes of plaintext. A frame that does not open
    /// (forged, replayed, cut) is an error.
    fn open_frame(
        state: &StatelessTransportState,
        nonce: &mut u64,
        frame: &[u8],
        out: &mut [u8],
    ) -> io::Result<usize> {
        let n = state.read_message(*nonce, frame, out).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame did not open: {e}"),
            )
        })?;
        *nonce += 1;
        Ok(n)
    }

    /// Whether bytes read are waiting to be opened.
    pub(crate) fn holds_bytes(&self) -> bool {
        !self.raw.is_empty()
    }

    /// Blocking, for a fetch connection's own thread: opens the next frame
    /// and appends its plaintext to `out`; `Ok(false)` at end of stream.
    pub(crate) fn open_next(
        &mut self,
        r: &mut impl io::Read,
        out: &mut Vec<u8>,
    ) -> io::Result<bool> {
        loop {
            if let Some(frame) = next_frame(&mut self.raw) {
                let start = out.len();
                out.resize(start + frame.len(), 0);
                let opened =
                    Self::open_frame(&self.state, &mut self.nonce, &frame, &mut out[start..]);
                // Only what opened stays.
                out.truncate(start + opened.as_ref().map_or(0, |n| *n));
                return opened.map(|_| true);
            }
            let at = self.raw.len();
            self.raw.resize(at + BLOCKING_CHUNK, 0);
            let n = loop {
                match r.read(&mut self.raw[at..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => break r,
                }
            };
            let n = n.inspect_err(|_| self.raw.truncate(at))?;
            self.raw.truncate(at + n);
            if n == 0 {
                return Ok(false);
            }
        }
    }
}

/// Raw bytes read at once on a fetch connection: many frames.
const BLOCKING_CHUNK: usize = 256 * 1024;

/// The writing half of a Noise link: plaintext in, frames out.
pub(crate) struct Sealer {
    state: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Sealer {
    /// Appends `plain` to `out` as frames.
    pub(crate) fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        for chunk in plain.chunks(MAX_FRAME_PLAINTEXT) {
            let at = out.len();
            out.resize(at + 2 + chunk.len() + 16, 0);
            let n = self
                .state
                .write_message(self.nonce, chunk, &mut out[at + 2..])
                .map_err(|e| io::Error::other(format!("cannot seal a frame: {e}")))?;
            out[at..at + 2].copy_from_slice(&frame_header(n));
            out.truncate(at + 2 + n);
            self.nonce += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn ours(nick: &str) -> OurHello {
        OurHello {
            nick: nick.into(),
            heartbeat_ms: 2000,
            instance: "1".into(),
            caps: vec![],
            fetch: None,
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    async fn handshake(
        a_psk: Option<[u8; 32]>,
        b_psk: Option<[u8; 32]>,
    ) -> (
        Result<Established, SecureError>,
        Result<Established, SecureError>,
    ) {
        let (ia, ib) = (
            Identity::from_secret(&[1; 32]),
            Identity::from_secret(&[2; 32]),
        );
        let (sa, sb) = (
            Secure::new(&ia, a_psk).unwrap(),
            Secure::new(&ib, b_psk).unwrap(),
        );
        let (mut ca, mut cb) = pair().await;
        let timeout = std::time::Duration::from_secs(5);
        tokio::join!(
            async {
                tokio::time::timeout(timeout, sa.initiate(&mut ca, ours("amy")))
                    .await
                    .unwrap_or(Err(SecureError::Closed))
            },
            async {
                let r = tokio::time::timeout(
                    timeout,
                    sb.respond(&mut cb, BytesMut::new(), ours("bob")),
                )
                .await;
                drop(cb);
                r.unwrap_or(Err(SecureError::Closed))
            }
        )
    }

    #[tokio::test]
    async fn both_ends_learn_who_the_other_is_and_talk() {
        let (a, b) = handshake(None, None).await;
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.peer.nick, "bob");
        assert_eq!(b.peer.nick, "amy");
        assert_eq!(a.peer.peer_id, Identity::from_secret(&[2; 32]).peer_id());
        let mut wire = Vec::new();
        a.sealer.seal(b"hello\n", &mut wire).unwrap();
        a.sealer.seal(&vec![b'x'; 100_000], &mut wire).unwrap();
        assert!(!wire.windows(5).any(|w| w == b"hello"), "sealed");
        let mut lines = LineReader::new(200_000, 1024);
        let mut r = &wire[..];
        let mut n = 0;
        while n < 6 + 100_000 {
            n += b.opener.fill(&mut r, &mut lines).await.unwrap();
        }
        assert_eq!(lines.next_line().unwrap().unwrap(), &b"hello"[..]);
        // A replayed frame does not open.
        let mut again = &wire[..];
        assert!(b.opener.fill(&mut again, &mut lines).await.is_err());
    }

    #[tokio::test]
    async fn network_keys_must_match() {
        let k1 = Some([9; 32]);
        let (a, b) = handshake(k1, k1).await;
        assert!(a.is_ok() && b.is_ok());
        let (a, b) = handshake(k1, Some([8; 32])).await;
        assert!(a.is_err() && b.is_err());
        let (a, b) = handshake(None, k1).await;
        assert!(a.is_err() && b.is_err());
    }
}
