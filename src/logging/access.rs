//! The access-log line (SPEC §6), written straight into a reused per-thread
//! buffer in the shape tracing's formatter gives every other event: text
//! `TIME  INFO authgate::access: request_id="…" method=GET …`, or one JSON object
//! with `--log-format json`. No allocation per request once the buffer has grown
//! to a line's size; the level filter is tracing's.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use super::LogFormat;

/// What the access log says about one request.
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// Already redacted (`token=***`).
    pub query: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub upstream: &'a str,
    pub latency_micros: u64,
    pub user: &'a str,
    /// The client's IP as text (made once per connection).
    pub peer: &'a str,
    /// SPEC §18: the W3C trace id, 32 hex digits.
    pub trace_id: &'a str,
}

/// Whether access lines are on (`AUTHGATE_LOG` at info for `authgate::access`).
pub fn access_enabled() -> bool {
    tracing::enabled!(target: "authgate::access", tracing::Level::INFO)
}

thread_local! {
    /// The line being written, and the date-time text of the last whole second.
    static LINE: RefCell<(Vec<u8>, u64, [u8; 19])> = const { RefCell::new((Vec::new(), u64::MAX, [0; 19])) };
}

pub fn write_access(l: &AccessLine<'_>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    LINE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (buf, sec, date) = &mut *cell;
        if *sec != now.as_secs() {
            *sec = now.as_secs();
            *date = civil(now.as_secs());
        }
        buf.clear();
        let json = super::format() == LogFormat::Json;
        let micros = now.subsec_micros();
        if json {
            buf.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(buf, date, micros);
            buf.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"authgate::access\"");
        } else {
            timestamp(buf, date, micros);
            buf.extend_from_slice(b"  INFO authgate::access:");
        }
        let mut field = |name: &str, v: Value<'_>| {
            if json {
                buf.extend_from_slice(b",\"");
                buf.extend_from_slice(name.as_bytes());
                buf.extend_from_slice(b"\":");
            } else {
                buf.push(b' ');
                buf.extend_from_slice(name.as_bytes());
                buf.push(b'=');
            }
            match v {
                Value::Quoted(s) => quoted(buf, s),
                Value::Plain(s) if json => quoted(buf, s),
                Value::Plain(s) => escaped(buf, s),
                Value::Int(n) => int(buf, n),
                Value::Millis(us) => {
                    int(buf, us / 1000);
                    buf.push(b'.');
                    let frac = us % 1000;
                    buf.extend_from_slice(&[
                        b'0' + (frac / 100) as u8,
                        b'0' + (frac / 10 % 10) as u8,
                        b'0' + (frac % 10) as u8,
                    ]);
                }
            }
        };
        field("request_id", Value::Quoted(l.request_id));
        field("method", Value::Plain(l.method));
        field("path", Value::Quoted(l.path));
        field("query", Value::Quoted(l.query));
        field("route", Value::Quoted(l.route));
        field("status", Value::Int(l.status.into()));
        field("upstream", Value::Quoted(l.upstream));
        field("latency_ms", Value::Millis(l.latency_micros));
        field("user", Value::Quoted(l.user));
        field("peer", Value::Plain(l.peer));
        field("trace_id", Value::Plain(l.trace_id));
        if json {
            buf.push(b'}');
        }
        buf.push(b'\n');
        super::append(buf, false);
    });
}

enum Value<'a> {
    Quoted(&'a str),
    Plain(&'a str),
    Int(u64),
    Millis(u64),
}

fn int(buf: &mut Vec<u8>, mut n: u64) {
    let mut d = [0u8; 20];
    let mut i = d.len();
    loop {
        i -= 1;
        d[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&d[i..]);
}

/// `"…"` with quotes, backslashes and control characters escaped: a client
/// cannot start a log line of its own (both formats read this as a string).
fn quoted(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    // Runs of bytes that need no escape (nearly always the whole value) are
    // copied at once rather than pushed one by one.
    let mut rest = s.as_bytes();
    while let Some(i) = rest.iter().position(|&c| needs_escape(c)) {
        buf.extend_from_slice(&rest[..i]);
        escape(buf, rest[i]);
        rest = &rest[i + 1..];
    }
    buf.extend_from_slice(rest);
    buf.push(b'"');
}

fn needs_escape(c: u8) -> bool {
    ESCAPED[c as usize]
}

/// Which bytes `quoted` escapes: control characters, DEL, `"` and `\`.
const ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = c < 0x20 || c == 0x7f || c == b'"' as usize || c == b'\\' as usize;
        c += 1;
    }
    t
};

fn escape(buf: &mut Vec<u8>, c: u8) {
    match c {
        b'"' => buf.extend_from_slice(b"\\\""),
        b'\\' => buf.extend_from_slice(b"\\\\"),
        b'\n' => buf.extend_from_slice(b"\\n"),
        b'\r' => buf.extend_from_slice(b"\\r"),
        b'\t' => buf.extend_from_slice(b"\\t"),
        c => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            buf.extend_from_slice(b"\\u00");
            buf.push(HEX[(c >> 4) as usize]);
            buf.push(HEX[(c & 15) as usize]);
        }
    }
}

/// A bare value (the method): anything but visible ASCII is replaced.
fn escaped(buf: &mut Vec<u8>, s: &str) {
    buf.extend(
        s.bytes()
            .map(|c| if c.is_ascii_graphic() { c } else { b'?' }),
    );
}

fn timestamp(buf: &mut Vec<u8>, date: &[u8; 19], micros: u32) {
    buf.extend_from_slice(date);
    buf.push(b'.');
    let mut d = [0u8; 6];
    let mut m = micros;
    for x in d.iter_mut().rev() {
        *x = b'0' + (m % 10) as u8;
        m /= 10;
    }
    buf.extend_from_slice(&d);
    buf.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time (H. Hinnant's days-to-civil).
pub(crate) fn civil(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let mut out = [0u8; 19];
    let put = |o: &mut [u8], v: i64| {
        let mut v = v;
        for x in o.iter_mut().rev() {
            *x = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut out[0..4], y);
    out[4] = b'-';
    put(&mut out[5..7], m);
    out[7] = b'-';
    put(&mut out[8..10], d);
    out[10] = b'T';
    put(&mut out[11..13], (rem / 3600) as i64);
    out[13] = b':';
    put(&mut out[14..16], (rem / 60 % 60) as i64);
    out[16] = b':';
    put(&mut out[17..19], (rem % 60) as i64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_instants() {
        assert_eq!(&civil(0), b"1970-01-01T00:00:00");
        assert_eq!(&civil(951_782_400), b"2000-02-29T00:00:00");
        assert_eq!(&civil(1_764_599_786), b"2025-12-01T14:36:26");
    }

    #[test]
    fn quoted_values_cannot_break_the_line() {
        let mut b = Vec::new();
        quoted(&mut b, "a\"b\\c\nd\u{1}");
        assert_eq!(b, b"\"a\\\"b\\\\c\\nd\\u0001\"");
        let mut b = Vec::new();
        quoted(&mut b, "/x/é\u{7f}y\"");
        assert_eq!(b, "\"/x/é\\u007fy\\\"\"".as_bytes());
        let mut b = Vec::new();
        int(&mut b, 0);
        int(&mut b, 1234567);
        assert_eq!(b, b"01234567");
    }
}
