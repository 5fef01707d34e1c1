//! Request heads read and checked before hyper sees them, so that what hyper
//! would refuse bare (or silently) gets the gateway's JSON error (SPEC §8):
//! - a head not complete within `header_read_timeout` of its first byte → 408
//!   (a connection that sent nothing is closed without an answer: browsers open
//!   connections speculatively and would read an unasked 408 as the answer to
//!   their next request);
//! - a head past `max_header_bytes`, however far → 431;
//! - a malformed request line or header line (obs-fold, no colon, whitespace before
//!   the colon, control bytes, raw non-ASCII in the target, conflicting framing) → 400.
//!
//! Interface: [`next_head`] reads from a stream, after the bytes already read from
//! it, until a whole head is there, and hands every byte back (for hyper, in front
//! of the stream) with where the request ends — or answers and closes.
//! `server::conn` calls it before each hyper connection it starts, which is before
//! every HTTP/1.x request head it serves (TLS or not).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ApiError;

/// Why a head was refused; `edge::error` turns it into the status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    Timeout,
    TooLarge,
    Malformed(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// How long the first byte may take (the keep-alive idle wait); a connection
    /// that sends nothing in it is closed unanswered.
    pub idle: Duration,
    /// From the first byte to the end of the head.
    pub timeout: Duration,
    pub max_bytes: usize,
}

/// How the body after a checked head is framed (RFC 9112 §6.3; a request with
/// neither header has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// A checked head and every byte read with it.
#[derive(Debug)]
pub struct Head {
    /// The head (leading empty lines included) and whatever followed it.
    pub bytes: Bytes,
    /// Where the head ends in `bytes`.
    pub len: usize,
    pub framing: Framing,
}

/// How much a head read asks the socket for at a time.
pub const READ_SIZE: usize = 4096;

/// What a refused client may still send us, read and dropped so that it sees the
/// answer instead of a reset (lingering close, as nginx does).
const LINGER_BYTES: usize = 4 << 20;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Reads until `buf` (bytes already read from `s`) holds a complete request head
/// and checks it. `Some(bytes)`: everything read, head first, to be put in front
/// of the stream for hyper; `None`: the connection is done (answered and closed,
/// or closed by the client).
pub async fn next_head<S>(
    s: &mut S,
    mut buf: BytesMut,
    limits: HeadLimits,
    peer: std::net::IpAddr,
) -> Option<Head>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let now = tokio::time::Instant::now();
    let mut deadline = now
        + if buf.is_empty() {
            limits.idle
        } else {
            limits.timeout
        };
    let mut scanned = 0;
    let verdict = loop {
        match scan(&buf, scanned, limits.max_bytes) {
            Scan::Complete(start, end) => break check_head(&buf[start..end]).map(|f| (end, f)),
            Scan::TooLarge => break Err(HeadError::TooLarge),
            Scan::Partial => scanned = buf.len(),
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_SIZE);
        }
        let first = buf.is_empty();
        match tokio::time::timeout_at(deadline, s.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(_)) if first => deadline = tokio::time::Instant::now() + limits.timeout,
            Ok(Ok(_)) => {}
            Err(_) if buf.iter().all(|b| matches!(b, b'\r' | b'\n')) => return None,
            Err(_) => break Err(HeadError::Timeout),
        }
    };
    match verdict {
        Ok((len, framing)) => Some(Head {
            bytes: buf.freeze(),
            len,
            framing,
        }),
        Err(e) => {
            // Boxed: only a refused head pays for the answer's state.
            Box::pin(refuse(s, e, peer)).await;
            None
        }
    }
}

#[cfg_attr(test, derive(Debug, PartialEq))]
enum Scan {
    /// The head spans `start..end` (leading empty lines skipped, RFC 9112 §2.2).
    Complete(usize, usize),
    Partial,
    TooLarge,
}

/// Where the head in `buf` ends; `scanned` bytes were already searched (a client
/// sending a byte at a time costs linear work, not quadratic).
fn scan(buf: &[u8], scanned: usize, max: usize) -> Scan {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    let head = &buf[start..];
    // The head ends at the first empty line: "\n\r\n" or "\n\n". memchr finds the
    // line ends: this runs before every request, so it is vector code, not a
    // byte-wise loop.
    let from = scanned.saturating_sub(start + 2);
    let end = head.get(from..).and_then(|h| {
        memchr::memchr_iter(b'\n', h).find_map(|j| {
            let i = from + j;
            match (head.get(i + 1), head.get(i + 2)) {
                (Some(b'\n'), _) => Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => Some(i + 3),
                _ => None,
            }
        })
    });
    match end {
        Some(n) if n <= max => Scan::Complete(start, start + n),
        Some(_) => Scan::TooLarge,
        None if head.len() > max => Scan::TooLarge,
        None => Scan::Partial,
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// The lines of a head, CR LF or bare LF ended (as `split` would give them).
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(head);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b'\n', r) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

// The byte checks below look at every byte without stopping early, so they compile
// to vector code; a head is checked before every request.

/// Whether every byte is visible ASCII (0x21..=0x7e).
fn all_visible(s: &[u8]) -> bool {
    !s.iter()
        .fold(false, |bad, &b| bad | (b.wrapping_sub(0x21) > 0x7e - 0x21))
}

/// Whether a field value is free of control bytes (HTAB, SP, VCHAR, obs-text).
fn valid_value(s: &[u8]) -> bool {
    !s.iter().fold(false, |bad, &b| {
        bad | ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
    })
}

/// Checks one complete head (request line through the empty line) strictly, as
/// RFC 9112 §3 and §5 read; what passes is also what hyper and the upstreams'
/// strict parsers accept. Ok: how the body that follows is framed.
pub fn check_head(head: &[u8]) -> Result<Framing, HeadError> {
    use HeadError::Malformed;
    let mut lines = lines(head);
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed("the request line is not METHOD TARGET VERSION"));
    };
    if method.is_empty() || !method.iter().all(|b| is_tchar(*b)) {
        return Err(Malformed("the method is not a token"));
    }
    if target.is_empty() || !all_visible(target) {
        return Err(Malformed(
            "the request target must be visible ASCII (percent-encode other bytes)",
        ));
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(Malformed("the HTTP version is not HTTP/1.1 or HTTP/1.0"));
    }
    let mut framing = FramingRules::default();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if memchr::memchr(b'\r', line).is_some() {
            return Err(Malformed("a bare CR in a header line"));
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err(Malformed("a folded header line (obs-fold)"));
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err(Malformed("a header line without a colon"));
        };
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(Malformed("a malformed header name"));
        }
        if !valid_value(value) {
            return Err(Malformed("a control character in a header value"));
        }
        framing.header(name, value)?;
    }
    framing.framing()
}

/// How a request body is framed (RFC 9112 §6.3), read header by header.
#[derive(Default)]
struct FramingRules<'a> {
    content_length: Option<&'a [u8]>,
    /// Some: a Transfer-Encoding was seen, and whether its last coding is chunked.
    chunked_last: Option<bool>,
}

impl<'a> FramingRules<'a> {
    fn header(&mut self, name: &[u8], value: &'a [u8]) -> Result<(), HeadError> {
        use HeadError::Malformed;
        if name.eq_ignore_ascii_case(b"content-length") {
            // Digits only; repeated values must agree.
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                return Err(Malformed("Content-Length is not a number"));
            }
            if self.content_length.is_some_and(|v| v != value) {
                return Err(Malformed("conflicting Content-Length headers"));
            }
            self.content_length = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|b| *b == b',').next().map(trim_ows);
            self.chunked_last = Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
        }
        Ok(())
    }

    fn framing(self) -> Result<Framing, HeadError> {
        use HeadError::Malformed;
        match (self.content_length, self.chunked_last) {
            (Some(_), Some(_)) => Err(Malformed("both Content-Length and Transfer-Encoding")),
            (_, Some(false)) => Err(Malformed("the last transfer coding is not chunked")),
            (_, Some(true)) => Ok(Framing::Chunked),
            (Some(n), None) => std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse().ok())
                .map(Framing::Length)
                .ok_or(Malformed("Content-Length is not a number")),
            (None, None) => Ok(Framing::Length(0)),
        }
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Writes the JSON error with `Connection: close`, then lingers: reads and drops
/// what the client still sends (bounded) so the answer is not lost to a reset.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    e: HeadError,
    peer: std::net::IpAddr,
) {
    let err = ApiError::from(e);
    let status = err.status();
    let resp = err.into_response();
    let request_id = crate::ids::request_id();
    let body = match http_body_util::BodyExt::collect(resp.into_body()).await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {}\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        request_id.to_str().unwrap_or("-"),
    )
    .into_bytes();
    out.extend_from_slice(&body);
    tracing::info!(
        target: "authgate::access",
        request_id = request_id.to_str().unwrap_or(""),
        method = "-",
        path = "-",
        route = "-",
        status = status.as_u16(),
        upstream = "-",
        user = "-",
        peer = %peer,
        "request head refused"
    );
    if s.write_all(&out).await.is_err() || s.flush().await.is_err() {
        return;
    }
    let _ = s.shutdown().await;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        // On the heap: an array here would sit in this future's state, and through
        // `next_head` in every idle connection's task (+16 KiB each, bench idle_conns).
        let mut sink = vec![0u8; 16 * 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

impl From<HeadError> for ApiError {
    fn from(e: HeadError) -> ApiError {
        match e {
            HeadError::Timeout => ApiError::RequestTimeout,
            HeadError::TooLarge => ApiError::HeadersTooLarge,
            HeadError::Malformed(why) => {
                ApiError::InvalidRequest(format!("Malformed request: {why}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &[u8]) -> Result<Framing, HeadError> {
        check_head(s)
    }

    #[test]
    fn a_plain_head_passes_and_framing_conflicts_do_not() {
        assert_eq!(
            check(b"GET /x?a=1 HTTP/1.1\r\nHost: h\r\nX-A:  v v \r\n\r\n"),
            Ok(Framing::Length(0))
        );
        assert_eq!(
            check(b"GET / HTTP/1.0\nHost: h\n\n"),
            Ok(Framing::Length(0))
        );
        assert_eq!(
            check(b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n"),
            Ok(Framing::Length(3))
        );
        assert_eq!(
            check(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            check(b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n"),
            Ok(Framing::Length(0)),
            "obs-text in a value"
        );
        for bad in [
            &b"GET / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1 \r\n\r\n",
        ] {
            assert!(check(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_scan_finds_the_end_skips_leading_blank_lines_and_bounds_the_size() {
        assert!(matches!(
            scan(b"\r\nGET / HTTP/1.1\r\n\r\nrest", 0, 100),
            Scan::Complete(2, 20)
        ));
        assert!(matches!(
            scan(b"GET / HTTP/1.1\n\n", 0, 100),
            Scan::Complete(0, 16)
        ));
        assert!(matches!(
            scan(b"GET / HTTP/1.1\r\nX: y\r\n", 0, 100),
            Scan::Partial
        ));
        assert!(matches!(scan(&[b'a'; 101], 0, 100), Scan::TooLarge));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend_from_slice(&[b'y'; 100]);
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(scan(&big, 0, 100), Scan::TooLarge));
        // Resuming after a partial scan still finds an end that straddles reads.
        let head = b"GET / HTTP/1.1\r\nX: y\r\n\r\n";
        for split in 0..head.len() {
            assert!(
                matches!(scan(head, split, 100), Scan::Complete(0, 24)),
                "resumed at {split}"
            );
        }
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::test_cases())]

        #[test]
        fn any_bytes_never_panic_and_an_accepted_head_is_clean(
            head in prop::collection::vec(prop::sample::select(
                b"GET /a HTTP/1.1\r\n\t :;,Xx-=0\x00\x7f\xc3\xa9".to_vec()), 0..80),
            scanned in 0usize..100,
        ) {
            let _ = scan(&head, scanned.min(head.len()), 64);
            if check_head(&head).is_ok() {
                let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
                prop_assert!(line.split(|b| *b == b' ').nth(1).is_some_and(|t| t.iter().all(|b| (0x21..=0x7e).contains(b))));
                prop_assert!(!head.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'), "bare CR");
                prop_assert!(!head.windows(2).any(|w| w[0] == b'\n' && matches!(w[1], b' ' | b'\t')), "obs-fold");
            }
        }
    }

    /// Plain byte-wise versions of the memchr and branch-free checks: the
    /// reference they must agree with.
    mod reference {
        use super::super::{trim_ows, Framing, HeadError, Scan};

        pub fn scan(buf: &[u8], scanned: usize, max: usize) -> Scan {
            let start = buf
                .iter()
                .position(|b| !matches!(b, b'\r' | b'\n'))
                .unwrap_or(buf.len());
            let head = &buf[start..];
            let from = scanned.saturating_sub(start + 2);
            let end = head
                .get(from..)
                .unwrap_or_default()
                .windows(2)
                .enumerate()
                .find_map(|(i, w)| {
                    let i = i + from;
                    match w {
                        [b'\n', b'\n'] => Some(i + 2),
                        [b'\n', b'\r'] if head.get(i + 2) == Some(&b'\n') => Some(i + 3),
                        _ => None,
                    }
                });
            match end {
                Some(n) if n <= max => Scan::Complete(start, start + n),
                Some(_) => Scan::TooLarge,
                None if head.len() > max => Scan::TooLarge,
                None => Scan::Partial,
            }
        }

        fn is_tchar(b: u8) -> bool {
            b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
        }

        pub fn check_head(head: &[u8]) -> Result<Framing, HeadError> {
            use HeadError::Malformed;
            let mut lines = head
                .split(|b| *b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
            let request_line = lines.next().unwrap_or_default();
            let mut parts = request_line.split(|b| *b == b' ');
            let (Some(method), Some(target), Some(version), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(Malformed("the request line is not METHOD TARGET VERSION"));
            };
            if method.is_empty() || !method.iter().all(|b| is_tchar(*b)) {
                return Err(Malformed("the method is not a token"));
            }
            if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
                return Err(Malformed(
                    "the request target must be visible ASCII (percent-encode other bytes)",
                ));
            }
            if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
                return Err(Malformed("the HTTP version is not HTTP/1.1 or HTTP/1.0"));
            }
            // The framing rules are shared: the model checks the bytes the fast
            // version checks differently (line ends, tokens, values).
            let mut framing = super::FramingRules::default();
            for line in lines {
                if line.is_empty() {
                    break;
                }
                if line.contains(&b'\r') {
                    return Err(Malformed("a bare CR in a header line"));
                }
                if matches!(line[0], b' ' | b'\t') {
                    return Err(Malformed("a folded header line (obs-fold)"));
                }
                let Some(colon) = line.iter().position(|b| *b == b':') else {
                    return Err(Malformed("a header line without a colon"));
                };
                let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
                if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
                    return Err(Malformed("a malformed header name"));
                }
                if !value
                    .iter()
                    .all(|b| matches!(b, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff))
                {
                    return Err(Malformed("a control character in a header value"));
                }
                framing.header(name, value)?;
            }
            framing.framing()
        }
    }

    /// Heads shaped like requests (a request line, header lines, an end) whose
    /// parts are often wrong in the ways the checks look for: any single byte in
    /// a name or value, missing or doubled colons, bare CR or LF, folds, framing.
    fn head_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let token = "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,6}".prop_map(String::into_bytes);
        let chunk = prop_oneof![
            3 => token.clone(),
            2 => any::<u8>().prop_map(|b| vec![b]),
            1 => Just(b" ".to_vec()),
            1 => Just(b"\t".to_vec()),
            1 => Just(b",".to_vec()),
        ];
        let text = proptest::collection::vec(chunk, 0..5).prop_map(|v| v.concat());
        let name = prop_oneof![
            4 => token,
            1 => Just(b"Content-Length".to_vec()),
            1 => Just(b"transfer-encoding".to_vec()),
            1 => text.clone(),
        ];
        let value = prop_oneof![
            4 => text.clone(),
            1 => "[0-9]{1,3}".prop_map(String::into_bytes),
            1 => Just(b"chunked".to_vec()),
            1 => Just(b" gzip , chunked ".to_vec()),
        ];
        let end = prop_oneof![
            6 => Just(b"\r\n".to_vec()),
            1 => Just(b"\n".to_vec()),
            1 => Just(b"\r".to_vec()),
        ];
        let sep =
            prop_oneof![6 => Just(b":".to_vec()), 1 => Just(b" :".to_vec()), 1 => Just(Vec::new())];
        let line = (name, sep, value, end.clone()).prop_map(|(n, s, v, e)| [n, s, v, e].concat());
        let target = text
            .clone()
            .prop_map(|t| [b"GET /".to_vec(), t, b" HTTP/1.1\r\n".to_vec()].concat());
        let request = prop_oneof![
            3 => Just(b"GET /a?b=c HTTP/1.1\r\n".to_vec()),
            2 => target,
            1 => (text.clone(), text, end).prop_map(|(m, t, e)| [m, b" ".to_vec(), t, b" HTTP/1.0".to_vec(), e].concat()),
        ];
        let lead = prop_oneof![4 => Just(Vec::new()), 1 => Just(b"\r\n".to_vec())];
        let tail = prop_oneof![4 => Just(b"\r\n".to_vec()), 1 => Just(b"\n".to_vec()), 1 => Just(Vec::new())];
        (lead, request, proptest::collection::vec(line, 0..6), tail)
            .prop_map(|(l, r, h, t)| [l, r, h.concat(), t].concat())
    }

    proptest::proptest! {
        #[test]
        fn the_fast_checks_agree_with_the_byte_wise_reference(
            head in head_bytes(),
            scanned in 0usize..64,
            max in 0usize..256,
        ) {
            proptest::prop_assert_eq!(check_head(&head), reference::check_head(&head));
            proptest::prop_assert_eq!(scan(&head, scanned, max), reference::scan(&head, scanned, max));
        }
    }
}
