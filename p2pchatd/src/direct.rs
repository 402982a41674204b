//! Direct messages sealed to their recipient (docs/PROTOCOL-p2pchatd.md
//! §9): a peer that carries one on for catch-up holds only bytes it cannot
//! read.
//!
//! The key is the X25519 agreement of the author's and the recipient's
//! identity keys (their Montgomery forms), hashed with a context: both ends
//! compute it, nobody else can. Each text is XChaCha20-Poly1305 under a
//! random 24-byte nonce, with the author's and the recipient's ids as
//! associated data, so a sealed text cannot be passed off as another
//! pair's. The chain and the seal ([`shared::authorship`]) then prove who
//! wrote it and that no relay touched it.
//!
//! There is no forward secrecy for what is stored: a stolen identity key
//! opens the direct messages it sent or got. The live hop runs inside the
//! Noise link as well.

use blake2::Digest;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use shared::keys::{KEY_LEN, hex, tagged, unhex_vec};
use shared::rooms::{MAX_SEALED_BYTES, SEALED_PREFIX};

use crate::identity::Identity;

const KEY_CONTEXT: &str = "p2pchat 2026-11 direct key";
const AD: &[u8] = b"p2pchat direct 1:";
const NONCE: usize = 24;
const TAG: usize = 16;

fn cipher(me: &Identity, theirs: &[u8; KEY_LEN]) -> Option<XChaCha20Poly1305> {
    let shared = me.agree(theirs)?;
    let mut h = tagged(KEY_CONTEXT);
    h.update(shared);
    let key: [u8; 32] = h.finalize().into();
    XChaCha20Poly1305::new_from_slice(&key).ok()
}

fn associated(author: &str, to: &str) -> Vec<u8> {
    let mut ad = AD.to_vec();
    for id in [author, to] {
        ad.extend_from_slice(&(id.len() as u64).to_be_bytes());
        ad.extend_from_slice(id.as_bytes());
    }
    ad
}

/// `text`, from us to the peer with key `to_key` and id `to`, as the
/// `content` of a direct message.
pub(crate) fn seal(me: &Identity, to_key: &[u8; KEY_LEN], to: &str, text: &str) -> Option<String> {
    let cipher = cipher(me, to_key)?;
    let mut nonce = [0u8; NONCE];
    getrandom::fill(&mut nonce).ok()?;
    let mut body = text.as_bytes().to_vec();
    let tag = cipher
        .encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            &associated(me.peer_id(), to),
            &mut body,
        )
        .ok()?;
    let mut out = String::with_capacity(SEALED_PREFIX.len() + 2 * (NONCE + body.len() + TAG));
    out.push_str(SEALED_PREFIX);
    out.push_str(&hex(&nonce));
    out.push_str(&hex(&body));
    out.push_str(&hex(&tag));
    Some(out)
}

/// The text of a direct message `content` from `author` (key
/// `author_key`) to `to`, opened with our key: `None` if it was not sealed
/// for this pair, or was altered.
pub(crate) fn open(
    me: &Identity,
    author_key: &[u8; KEY_LEN],
    author: &str,
    to: &str,
    content: &str,
) -> Option<String> {
    if content.len() > MAX_SEALED_BYTES {
        return None;
    }
    let sealed = unhex_vec(content.strip_prefix(SEALED_PREFIX)?)?;
    if sealed.len() < NONCE + TAG {
        return None;
    }
    let (nonce, rest) = sealed.split_at(NONCE);
    let (body, tag) = rest.split_at(rest.len() - TAG);
    let mut body = body.to_vec();
    cipher(me, author_key)?
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &associated(author, to),
            &mut body,
            Tag::from_slice(tag),
        )
        .ok()?;
    String::from_utf8(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pair_opens_what_one_sealed_for_the_other() {
        let (amy, bob, eve) = (
            Identity::from_secret(&[1; 32]),
            Identity::from_secret(&[2; 32]),
            Identity::from_secret(&[3; 32]),
        );
        let sealed = seal(
            &amy,
            &bob.public_key(),
            bob.peer_id(),
            "the door code is tulip-zebra",
        )
        .unwrap();
        assert!(
            !sealed.contains("tulip-zebra"),
            "the text shows through the seal"
        );
        let (a, b) = (amy.peer_id(), bob.peer_id());
        // Both ends read it: the recipient, and the author (its own copy).
        assert_eq!(
            open(&bob, &amy.public_key(), a, b, &sealed).as_deref(),
            Some("the door code is tulip-zebra")
        );
        assert_eq!(
            open(&amy, &bob.public_key(), a, b, &sealed).as_deref(),
            Some("the door code is tulip-zebra")
        );
        // Nobody else, and not as another pair's.
        assert_eq!(open(&eve, &amy.public_key(), a, b, &sealed), None);
        assert_eq!(
            open(&bob, &amy.public_key(), a, eve.peer_id(), &sealed),
            None
        );
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(open(&bob, &amy.public_key(), a, b, &altered), None);
        assert_eq!(open(&bob, &amy.public_key(), a, b, "hello"), None);
        // Two seals of one text differ (fresh nonces).
        assert_ne!(
            sealed,
            seal(&amy, &bob.public_key(), b, "the door code is tulip-zebra").unwrap()
        );
    }
}
