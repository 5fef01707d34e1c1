//! Random identifiers: request ids, token ids, refresh tokens.

use base64::Engine;

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // aws-lc's DRBG; failure here means the OS has no entropy source at all.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        panic!("the system random number generator failed");
    }
    b
}

/// RFC 9562 version 4 UUID, lower-case hex, from the CSPRNG (token ids).
pub fn uuid_v4() -> String {
    // Every byte is ASCII hex or '-'.
    String::from_utf8_lossy(&uuid_bytes(random_bytes())).into_owned()
}

fn uuid_bytes(mut b: [u8; 16]) -> [u8; 36] {
    const H: &[u8; 16] = b"0123456789abcdef";
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    let mut j = 0;
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            j += 1;
        }
        out[j] = H[(x >> 4) as usize];
        out[j + 1] = H[(x & 15) as usize];
        j += 2;
    }
    out
}

thread_local! {
    /// Request ids need to be unique, not secret: a per-thread xorshift128+ seeded
    /// from the CSPRNG is far cheaper than a CSPRNG call and a format! per request.
    static ID_STATE: std::cell::Cell<(u64, u64)> = std::cell::Cell::new({
        let s: [u8; 16] = random_bytes();
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&s[..8]);
        b.copy_from_slice(&s[8..]);
        (u64::from_le_bytes(a) | 1, u64::from_le_bytes(b) | 1)
    });
}

/// The next word of the per-thread PRNG (request ids, trace and span ids).
pub(crate) fn next_u64() -> u64 {
    ID_STATE.with(|c| {
        let (mut s1, s0) = c.get();
        let result = s0.wrapping_add(s1);
        s1 ^= s1 << 23;
        s1 ^= s0 ^ (s1 >> 17) ^ (s0 >> 26);
        c.set((s0, s1));
        result
    })
}

/// A fresh request id (UUID v4 shape) as a header value.
pub fn request_id() -> http::HeaderValue {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&next_u64().to_le_bytes());
    b[8..].copy_from_slice(&next_u64().to_le_bytes());
    http::HeaderValue::from_bytes(&uuid_bytes(b)).unwrap_or(http::HeaderValue::from_static("0"))
}

pub fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

pub fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// SPEC §8: a client's X-Request-Id is kept when it is 1–128 characters of
/// `A-Z a-z 0-9 . _ -`.
pub fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_have_the_v4_shape() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(valid_request_id(u.as_bytes()));
        assert_ne!(u, uuid_v4());
    }

    #[test]
    fn fast_request_ids_are_uuids_and_differ() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a.as_bytes()[14..15], b"4");
        assert!(valid_request_id(a.as_bytes()));
    }

    #[test]
    fn request_ids_are_checked() {
        assert!(valid_request_id(b"abc-123_X.y"));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id(&[b'a'; 129]));
        assert!(!valid_request_id(b"a\r\nb"));
    }
}
