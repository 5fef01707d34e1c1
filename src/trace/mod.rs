//! W3C Trace Context (SPEC §18): which trace a request belongs to, and the
//! `traceparent` the upstream receives. A valid client `traceparent` keeps its
//! trace id and sampled flag, with the gateway's own span id as the new parent;
//! an absent or malformed one starts a new trace. The span export (OTLP/HTTP
//! JSON, off the workers) lives in `otlp.rs`.
//!
//! Cost on the request path: one header lookup, a 55-byte parse, two PRNG words,
//! and the one `HeaderValue` forwarded upstream; no other allocation.

pub mod otlp;

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The trace one request belongs to, hex-encoded as it is logged and forwarded.
#[derive(Clone, Copy)]
pub struct TraceContext {
    pub trace_id: [u8; 32],
    /// The gateway's own span id: the parent the upstream sees.
    pub span_id: [u8; 16],
    /// The client's span id, when it sent a valid `traceparent`.
    pub parent_id: Option<[u8; 16]>,
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl Default for TraceContext {
    fn default() -> Self {
        TraceContext {
            trace_id: [b'0'; 32],
            span_id: [b'0'; 16],
            parent_id: None,
            flags: 0,
        }
    }
}

/// A client `traceparent`'s parts, when it is valid (W3C Trace Context level 1 §3.2).
#[derive(Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 32],
    pub parent_id: [u8; 16],
    pub flags: u8,
}

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex_byte(h: u8, l: u8) -> u8 {
    let v = |c: u8| if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
    (v(h) << 4) | v(l)
}

/// Parses one `traceparent` value strictly. Version `00` is exactly 55 bytes;
/// a later version is read the same way in its first 55 bytes, which must be
/// followed by the end or `-` (forward compatibility, §3.2.2.1); `ff` is invalid.
pub fn parse(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let (version, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    if !is_lower_hex(version) || version == b"ff" {
        return None;
    }
    if version == b"00" && v.len() != 55 {
        return None;
    }
    if v.len() > 55 && v[55] != b'-' {
        return None;
    }
    if !is_lower_hex(trace) || !is_lower_hex(parent) || !is_lower_hex(flags) {
        return None;
    }
    if trace.iter().all(|&c| c == b'0') || parent.iter().all(|&c| c == b'0') {
        return None;
    }
    let mut p = Parent {
        trace_id: [0; 32],
        parent_id: [0; 16],
        flags: hex_byte(flags[0], flags[1]),
    };
    p.trace_id.copy_from_slice(trace);
    p.parent_id.copy_from_slice(parent);
    // A later version's flags may mean more; only "sampled" is understood here.
    if version != b"00" {
        p.flags &= 1;
    }
    Some(p)
}

fn hex_into(out: &mut [u8], b: &[u8]) {
    for (i, x) in b.iter().enumerate() {
        out[2 * i] = HEX[(x >> 4) as usize];
        out[2 * i + 1] = HEX[(x & 15) as usize];
    }
}

/// A non-zero 8-byte id from the per-thread PRNG (ids.rs): unique, not secret.
fn span_id() -> [u8; 16] {
    let mut n = crate::ids::next_u64();
    if n == 0 {
        n = 1;
    }
    let mut out = [0u8; 16];
    hex_into(&mut out, &n.to_le_bytes());
    out
}

impl TraceContext {
    /// The request's trace: the client's when its one `traceparent` is valid,
    /// else a new one, sampled with probability `sample_ratio`. Also reports
    /// whether the client's header was valid: only then is `tracestate` kept.
    pub fn from_headers(h: &HeaderMap, sample_ratio: f64) -> (TraceContext, bool) {
        let mut all = h.get_all(&TRACEPARENT).iter();
        let parent = match (all.next(), all.next()) {
            // Two headers: two parsers could pick different ones (§3.2: invalid).
            (Some(v), None) => parse(v.as_bytes()),
            _ => None,
        };
        match parent {
            Some(p) => (
                TraceContext {
                    trace_id: p.trace_id,
                    span_id: span_id(),
                    parent_id: Some(p.parent_id),
                    flags: p.flags,
                },
                true,
            ),
            None => {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&crate::ids::next_u64().to_le_bytes());
                id[8..].copy_from_slice(&(crate::ids::next_u64() | 1).to_le_bytes());
                let mut trace_id = [0u8; 32];
                hex_into(&mut trace_id, &id);
                // 53 random bits as a fraction in [0, 1).
                let draw = (crate::ids::next_u64() >> 11) as f64 / ((1u64 << 53) as f64);
                let sampled = sample_ratio >= 1.0 || draw < sample_ratio;
                (
                    TraceContext {
                        trace_id,
                        span_id: span_id(),
                        parent_id: None,
                        flags: u8::from(sampled),
                    },
                    // A `tracestate` without a valid parent belongs to no trace.
                    false,
                )
            }
        }
    }

    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    pub fn trace_id_str(&self) -> &str {
        // Always ASCII hex (written by hex_into or checked by parse).
        std::str::from_utf8(&self.trace_id).unwrap_or("-")
    }

    /// `00-<trace-id>-<span-id>-<flags>`, built on the stack.
    pub fn traceparent(&self) -> [u8; 55] {
        let mut b = [b'-'; 55];
        b[0] = b'0';
        b[1] = b'0';
        b[3..35].copy_from_slice(&self.trace_id);
        b[36..52].copy_from_slice(&self.span_id);
        hex_into(&mut b[53..55], &[self.flags]);
        b
    }

    /// Sets the forwarded `traceparent`; with an invalid client `traceparent`
    /// its `tracestate` goes too (W3C: not parsed when the parent is invalid).
    pub fn write(&self, h: &mut HeaderMap, client_valid: bool) {
        if !client_valid {
            h.remove(&TRACESTATE);
        }
        if let Ok(v) = HeaderValue::from_bytes(&self.traceparent()) {
            h.insert(TRACEPARENT.clone(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_version_00_traceparent_is_parsed() {
        let p = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(&p.trace_id, b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(&p.parent_id, b"00f067aa0ba902b7");
        assert_eq!(p.flags, 1);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn a_later_version_is_read_in_its_first_55_bytes() {
        let p = parse(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-whatever").unwrap();
        assert_eq!(p.flags, 1);
        assert!(parse(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
    }

    #[test]
    fn the_forwarded_traceparent_keeps_the_trace_and_names_the_gateway_span() {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(GOOD));
        let (t, valid) = TraceContext::from_headers(&h, 0.0);
        assert!(valid && t.sampled());
        let out = t.traceparent();
        let p = parse(&out).unwrap();
        assert_eq!(p.trace_id, t.trace_id);
        assert_ne!(&p.parent_id, b"00f067aa0ba902b7");
        assert_eq!(p.flags, 1);
    }

    #[test]
    fn two_headers_or_none_start_a_new_sampled_or_unsampled_trace() {
        let mut h = HeaderMap::new();
        h.append(&TRACEPARENT, HeaderValue::from_static(GOOD));
        h.append(&TRACEPARENT, HeaderValue::from_static(GOOD));
        let (t, valid) = TraceContext::from_headers(&h, 1.0);
        assert!(!valid && t.sampled() && t.parent_id.is_none());
        assert_ne!(&t.trace_id, b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(parse(&t.traceparent()).is_some());
        let (t, valid) = TraceContext::from_headers(&HeaderMap::new(), 0.0);
        assert!(!valid && !t.sampled());
    }
}
