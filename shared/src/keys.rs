//! What a peer's public key (Ed25519, 32 bytes) is called: its peer id on
//! the wire, its fingerprint for people to compare, and a short tag that
//! tells two peers with one nick apart. Pure functions of the key, so every
//! peer derives the same names.

/// Length of an Ed25519 public key.
pub const KEY_LEN: usize = 32;

/// Prefix of every key-derived peer id (Go ids are `<nick>_<n>`).
pub const PEER_ID_PREFIX: char = 'k';

fn digest(context: &str, key: &[u8; KEY_LEN]) -> [u8; 32] {
    use blake2::Digest;
    let mut h = tagged(context);
    h.update(key);
    h.finalize().into()
}

/// BLAKE2s (the hash the Noise links use already) with `context` hashed
/// in first, length and all: hashes for different purposes never meet.
pub fn tagged(context: &str) -> blake2::Blake2s256 {
    use blake2::Digest;
    let mut h = blake2::Blake2s256::new();
    h.update((context.len() as u64).to_be_bytes());
    h.update(context.as_bytes());
    h
}

/// The peer id of `key`: `k` and 24 hex digits (96 bits of its hash). It
/// is the same across restarts and nick changes, and it sorts as any
/// string, so the Go dial rule (the smaller id dials) still holds.
pub fn peer_id_of(key: &[u8; KEY_LEN]) -> String {
    let d = digest("p2pchat 2026-11 peer id", key);
    let mut id = String::with_capacity(25);
    id.push(PEER_ID_PREFIX);
    for b in &d[..12] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// Whether `id` has the form of a key-derived peer id.
pub fn is_key_id(id: &str) -> bool {
    id.len() == 25
        && id.starts_with(PEER_ID_PREFIX)
        && id[1..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The fingerprint of `key`, for people to read aloud and compare out of
/// band: six groups of five digits, as Signal's safety numbers.
pub fn fingerprint_of(key: &[u8; KEY_LEN]) -> String {
    let d = digest("p2pchat 2026-11 fingerprint", key);
    d.chunks(5)
        .take(6)
        .map(|c| {
            let n = c.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
            format!("{:05}", n % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Four hex digits that tell `alice~3fa2` from the `alice` whose nick it
/// is: the first four of its peer id, so a peer known only by an announce
/// (its id, no key yet) is tagged the same as once its link proves the key.
pub fn short_tag_of(key: &[u8; KEY_LEN]) -> String {
    peer_id_of(key)[1..5].to_owned()
}

/// The tag of a key-derived peer id (see `short_tag_of`); `None` for any
/// other id.
pub fn short_tag_of_id(id: &str) -> Option<&str> {
    is_key_id(id).then(|| &id[1..5])
}

/// Hex of any bytes, lowercase.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Bytes of lowercase or uppercase hex; `None` unless exactly `N` bytes.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    unhex_vec(s)?.try_into().ok()
}

/// Bytes of lowercase or uppercase hex, any even length.
pub fn unhex_vec(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|pair| {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_distinct() {
        let a = [7u8; KEY_LEN];
        let b = [8u8; KEY_LEN];
        let id = peer_id_of(&a);
        assert_eq!(id, peer_id_of(&a));
        assert_ne!(id, peer_id_of(&b));
        assert!(is_key_id(&id) && !is_key_id("alice_75") && !is_key_id(&id.to_uppercase()));
        crate::text::validate_peer_id(&id).unwrap();
        let f = fingerprint_of(&a);
        assert_eq!(f.len(), 6 * 5 + 5);
        assert!(
            f.split(' ')
                .all(|g| g.len() == 5 && g.bytes().all(|c| c.is_ascii_digit()))
        );
        assert_ne!(f, fingerprint_of(&b));
        assert_eq!(short_tag_of(&a).len(), 4);
        assert_eq!(short_tag_of_id(&id), Some(short_tag_of(&a).as_str()));
        assert_eq!(short_tag_of_id("alice_75"), None);
    }

    #[test]
    fn hex_roundtrips() {
        let k = [0xa5u8; 4];
        assert_eq!(hex(&k), "a5a5a5a5");
        assert_eq!(unhex::<4>("a5a5a5a5"), Some(k));
        assert_eq!(unhex::<4>("A5A5A5A5"), Some(k));
        assert_eq!(unhex::<4>("a5a5a5"), None);
        assert_eq!(unhex::<4>("zzzzzzzz"), None);
    }
}
