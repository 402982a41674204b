//! The encrypted link between p2pchatd peers (see docs/PROTOCOL-p2pchatd.md §3):
//! what goes on the wire before and during the Noise handshake, and how
//! transport frames are cut. Pure: the daemon does the I/O and the crypto.
//!
//! A dialer that speaks Noise starts with [`PREAMBLE`], which can never
//! begin a JSON line, so an acceptor tells it from a Go peer's `join` by
//! its first byte. Every Noise message then travels as a frame: a
//! big-endian `u16` length and that many bytes.

use serde::{Deserialize, Serialize};

use crate::keys::{KEY_LEN, unhex};

/// What a Noise dialer sends first. Starts with a NUL byte: never JSON.
pub const PREAMBLE: &[u8] = b"\x00p2pchat-noise/1\n";

/// Bound into the handshake hash: both sides speak this protocol.
pub const PROLOGUE: &[u8] = b"p2pchat noise link 1";

/// The Noise protocol of a link, without and with a network key. The key
/// is mixed in before the first message (psk0), so someone without it
/// learns nothing from an answer, not even the other side's hello.
pub const NOISE_XX: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
pub const NOISE_XX_PSK: &str = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2s";

/// What the identity key signs to vouch for the link's Noise static key.
pub const STATIC_KEY_CONTEXT: &[u8] = b"p2pchat noise static key:";

/// Largest handshake frame we take: a hello is a few hundred bytes.
pub const MAX_HANDSHAKE_FRAME: usize = 2048;

/// Largest Noise message, and the plaintext one carries.
pub const MAX_FRAME: usize = 65535;
pub const MAX_FRAME_PLAINTEXT: usize = MAX_FRAME - 16;

/// Capability in announces and joins: the sender speaks Noise links.
pub const CAP_NOISE: &str = "noise";
/// Capability in announces: the sender's links need a network key.
pub const CAP_NETWORK_KEY: &str = "network-key";

/// What each side says of itself inside the encrypted handshake (in
/// message 2 from the acceptor, 3 from the dialer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The Ed25519 identity key, hex.
    pub key: String,
    /// The identity key's signature over [`STATIC_KEY_CONTEXT`] and the
    /// Noise static key of this handshake, hex.
    pub sig: String,
    pub nick: String,
    pub heartbeat_ms: u64,
    /// The sender's life (new on every start).
    #[serde(default)]
    pub instance: String,
    #[serde(default)]
    pub caps: Vec<String>,
    /// A dialer's only: the connection fetches this offer's files
    /// (PROTOCOL-p2pchatd §10); it is no link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<String>,
}

/// Why a hello was refused.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("malformed hello: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("the hello's key or signature is not hex of the right length")]
    BadKey,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        // Strings and numbers: serializing into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, HelloError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The identity key and the signature, as bytes.
    pub fn key_and_sig(&self) -> Result<([u8; KEY_LEN], [u8; 64]), HelloError> {
        let key = unhex::<KEY_LEN>(&self.key).ok_or(HelloError::BadKey)?;
        let sig = unhex::<64>(&self.sig).ok_or(HelloError::BadKey)?;
        Ok((key, sig))
    }
}

/// The frame header for `len` bytes (`len` ≤ [`MAX_FRAME`]).
pub fn frame_header(len: usize) -> [u8; 2] {
    u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes()
}

/// The next whole frame at the front of `buf`, taken off it; `None`: read
/// more. The length is two bytes, so no frame can ask for more than 64 KiB.
pub fn next_frame(buf: &mut bytes::BytesMut) -> Option<bytes::BytesMut> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    if buf.len() < 2 + len {
        return None;
    }
    let mut frame = buf.split_to(2 + len);
    Some(frame.split_off(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn a_hello_roundtrips() {
        let h = Hello {
            key: "ab".repeat(32),
            sig: "cd".repeat(64),
            nick: "alice".into(),
            heartbeat_ms: 2000,
            instance: "0123".into(),
            caps: vec![CAP_NOISE.into()],
            fetch: Some("0123456789abcdef".into()),
        };
        let back = Hello::decode(&h.encode()).unwrap();
        assert_eq!(back, h);
        assert!(back.key_and_sig().is_ok());
        let bad = Hello {
            key: "ab".into(),
            ..h
        };
        assert!(bad.key_and_sig().is_err());
        assert!(Hello::decode(b"{\"key\":1}").is_err());
    }

    #[test]
    fn frames_are_cut_whole() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame_header(3));
        buf.extend_from_slice(b"abcd");
        assert_eq!(next_frame(&mut buf).unwrap(), &b"abc"[..]);
        assert_eq!(&buf[..], b"d");
        assert!(next_frame(&mut buf).is_none());
        buf.clear();
        buf.extend_from_slice(&[0xff, 0xff]);
        buf.extend_from_slice(&[0u8; 100]);
        assert!(next_frame(&mut buf).is_none(), "waits for all 65535");
        assert!(PREAMBLE[0] == 0, "never the start of a JSON line");
    }
}
