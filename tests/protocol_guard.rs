//! Request heads the gateway refuses itself, with its JSON error body, before
//! hyper's parser would answer them bare (SPEC §8): heads that are too slow (408),
//! too large however far past `max_header_bytes` (431), malformed header lines and
//! raw non-ASCII bytes in the request target (400). Nothing refused is forwarded.
mod common;
use common::*;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn assert_json_error(what: &str, r: &Raw, status: u16, code: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{what}: {r:?}"
    );
    assert_eq!(r.json()["error"], code, "{what}: {r:?}");
    assert!(r.header("x-request-id").is_some(), "{what}: {r:?}");
}

fn with_server(up: SocketAddr, extra: &str) -> Cfg {
    let mut cfg = Cfg::new(up);
    cfg.server.push_str(extra);
    cfg
}

/// Writes `head` (which may never end), then reads until the gateway closes;
/// panics if it stays silent for 20 s.
fn send_and_read(addr: SocketAddr, head: &[u8]) -> (Vec<u8>, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    // The gateway may answer and close before every byte is written.
    let _ = s.write_all(head);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "no close after 20 s; got {:?}",
                    String::from_utf8_lossy(&buf)
                )
            }
            Err(_) => break,
        }
    }
    (buf, started.elapsed())
}

#[test]
fn a_client_that_stalls_inside_its_headers_gets_408_json_then_the_connection_closes() {
    let up = Upstream::start();
    let gw = Gateway::start(&with_server(up.addr, "header_read_timeout = \"1s\"\n"));
    let (buf, took) = send_and_read(
        gw.addr,
        b"GET /public/x HTTP/1.1\r\nHost: gw.test\r\nX-Slow: 1\r\n",
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_json_error("slow head", &parse_response(&buf), 408, "request_timeout");
    assert_eq!(up.count(), 0);
}

#[test]
fn a_connection_that_sends_nothing_is_closed_without_a_response() {
    // Browsers open connections speculatively: an unasked 408 would be read as the
    // answer to their next request.
    let up = Upstream::start();
    let gw = Gateway::start(&with_server(up.addr, "header_read_timeout = \"1s\"\n"));
    let (buf, took) = send_and_read(gw.addr, b"");
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn headers_however_far_past_max_header_bytes_get_the_json_431() {
    let up = Upstream::start();
    let gw = Gateway::start(&with_server(up.addr, "max_header_bytes = \"2KiB\"\n"));
    for size in [3_000, 5_000, 64 << 10, 1 << 20] {
        let big = format!("X-Big: {}", "a".repeat(size));
        let r = get(gw.addr, "/public/x", &[&big]);
        assert_json_error(&format!("{size} bytes"), &r, 431, "headers_too_large");
        // Many small headers count the same as one large one.
        let many: Vec<String> = (0..size / 20)
            .map(|i| format!("X-H{i}: vvvvvvvv"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let r = get(gw.addr, "/public/x", &many);
        assert_json_error(
            &format!("{} headers", many.len()),
            &r,
            431,
            "headers_too_large",
        );
    }
    // A request line alone past the limit.
    let r = get(gw.addr, &format!("/public/{}", "p".repeat(100_000)), &[]);
    assert_json_error("long target", &r, 431, "headers_too_large");
    assert_eq!(up.count(), 0);
    let ok = format!("X-Big: {}", "a".repeat(1500));
    assert_eq!(get(gw.addr, "/public/x", &[&ok]).status, 200);
}

#[test]
fn obs_fold_and_malformed_header_lines_get_the_json_400() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let cases: &[(&str, &[u8])] = &[
        ("obs-fold with a space", b"X-Note: a\r\n b\r\n"),
        ("obs-fold with a tab", b"X-Note: a\r\n\tX-User: admin\r\n"),
        ("no colon", b"X-Note\r\n"),
        ("space before the colon", b"X-User : admin\r\n"),
        ("tab before the colon", b"X-User\t: admin\r\n"),
        ("empty name", b": v\r\n"),
        ("space in the name", b"X Note: v\r\n"),
        ("separator in the name", b"X(Note): v\r\n"),
        ("bare CR in a value", b"X-Note: a\rX-User: admin\r\n"),
        ("NUL in a value", b"X-Note: a\0b\r\n"),
        ("DEL in a value", b"X-Note: a\x7fb\r\n"),
        (
            "two different Content-Lengths",
            b"Content-Length: 1\r\nContent-Length: 2\r\n",
        ),
        (
            "a Content-Length that is not a number",
            b"Content-Length: 1x\r\n",
        ),
        (
            "Content-Length and Transfer-Encoding",
            b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "a transfer coding other than chunked last",
            b"Transfer-Encoding: chunked, gzip\r\n",
        ),
    ];
    for (what, lines) in cases {
        let mut req = b"POST /public/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n".to_vec();
        req.extend_from_slice(lines);
        req.extend_from_slice(b"\r\n");
        let r = raw_bytes(gw.addr, &req);
        assert_json_error(what, &r, 400, "invalid_request");
    }
    // Request lines that are not HTTP/1.x.
    for (what, line) in [
        ("no version", &b"GET /public/x\r\n"[..]),
        ("an unknown version", b"GET /public/x HTTP/1.7\r\n"),
        ("two spaces", b"GET  /public/x HTTP/1.1\r\n"),
        ("a lower-case version", b"GET /public/x http/1.1\r\n"),
        (
            "a method that is not a token",
            b"G(T /public/x HTTP/1.1\r\n",
        ),
    ] {
        let mut req = line.to_vec();
        req.extend_from_slice(b"Host: gw.test\r\nConnection: close\r\n\r\n");
        let r = raw_bytes(gw.addr, &req);
        assert_json_error(what, &r, 400, "invalid_request");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn raw_non_ascii_bytes_in_the_target_get_400_and_are_never_forwarded() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    for target in [
        &b"/public/caf\xc3\xa9"[..],
        b"/public/\xff",
        b"/public/x?q=\xe9",
        b"/public/\xc0\xae\xc0\xae/protected",
        b"/public/x\x7f",
    ] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        let r = raw_bytes(gw.addr, &req);
        assert_json_error(&String::from_utf8_lossy(target), &r, 400, "invalid_request");
    }
    assert_eq!(up.count(), 0);
}

/// A connection that has had one bodiless GET answered (kept alive), ready for more.
fn kept_alive(gw: &Gateway) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    (&s).write_all(b"GET /public/ok HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut len = 0;
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        if l == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (s, r)
}

#[test]
fn on_a_kept_alive_connection_later_bad_or_stalled_heads_are_refused_too() {
    let up = Upstream::start();
    let gw = Gateway::start(&with_server(up.addr, "header_read_timeout = \"1s\"\n"));
    let later: &[(&str, &[u8], u16)] = &[
        (
            "non-ASCII target",
            b"GET /public/caf\xc3\xa9 HTTP/1.1\r\nHost: gw.test\r\n\r\n",
            400,
        ),
        (
            "obs-fold",
            b"GET /public/x HTTP/1.1\r\nHost: gw.test\r\nX-A: 1\r\n X-User: a\r\n\r\n",
            400,
        ),
        (
            "a stalled head",
            b"GET /public/x HTTP/1.1\r\nHost: gw.test\r\n",
            408,
        ),
    ];
    for (what, second, status) in later {
        let (s, mut r) = kept_alive(&gw);
        (&s).write_all(second).unwrap();
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        let code = if *status == 400 {
            "invalid_request"
        } else {
            "request_timeout"
        };
        assert_json_error(what, &parse_response(&rest), *status, code);
    }
    assert_eq!(
        up.count(),
        later.len(),
        "only the first GET of each connection"
    );
}

#[test]
fn pipelined_requests_after_a_guarded_head_are_all_answered() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let two = b"GET /public/a HTTP/1.1\r\nHost: gw.test\r\n\r\nPOST /public/b HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    let (buf, _) = send_and_read(gw.addr, two);
    let text = String::from_utf8_lossy(&buf);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].body, b"abc");
}

#[tokio::test]
async fn http2_prior_knowledge_still_reaches_the_gateway() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c.get(gw.url("/public/h2")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
}

// ------------------------------------------ later heads: after a body, over TLS

/// Reads one response (Content-Length framed) off a kept-alive connection.
fn read_one<R: BufRead>(r: &mut R) -> Raw {
    let mut head = Vec::new();
    let mut len = 0;
    loop {
        let mut l = String::new();
        assert!(r.read_line(&mut l).unwrap() > 0, "closed mid-head");
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        head.extend_from_slice(l.as_bytes());
        if l == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    head.extend_from_slice(&body);
    parse_response(&head)
}

/// Everything until the gateway closes (a TLS close without close_notify ends it too).
fn read_rest<R: Read>(r: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "no close after 20 s; got {:?}",
                    String::from_utf8_lossy(&out)
                )
            }
            Err(_) => return out,
        }
    }
}

const POST_FIRST: &[u8] =
    b"POST /public/first HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\nhello";
const GET_FIRST: &[u8] = b"GET /public/first HTTP/1.1\r\nHost: gw.test\r\n\r\n";

/// The second heads that must get the guard's answers, and the good one.
fn later_heads() -> Vec<(&'static str, Vec<u8>, u16, &'static str)> {
    let mut big = b"GET /public/x HTTP/1.1\r\nHost: gw.test\r\nX-Big: ".to_vec();
    big.extend_from_slice(&[b'a'; 64 << 10]);
    big.extend_from_slice(b"\r\n\r\n");
    vec![
        (
            "obs-fold",
            b"GET /public/x HTTP/1.1\r\nHost: gw.test\r\nX-A: 1\r\n X-User: a\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
        ("64 KiB of headers", big, 431, "headers_too_large"),
        (
            "a stalled head",
            b"GET /public/x HTTP/1.1\r\nHost: gw.test\r\n".to_vec(),
            408,
            "request_timeout",
        ),
    ]
}

/// On one connection made by `connect`: `first` (answered 200, kept alive), then
/// each bad second head (the guard's JSON answer, then a close), then a good one.
fn later_heads_are_guarded<S: Read + Write>(
    up: &Upstream,
    connect: impl Fn() -> S,
    first: &[u8],
    first_body: &[u8],
) {
    for (what, second, status, code) in later_heads() {
        up.clear();
        let mut r = BufReader::new(connect());
        r.get_mut().write_all(first).unwrap();
        let one = read_one(&mut r);
        assert_eq!(one.status, 200, "{what}: first: {one:?}");
        assert_eq!(one.header("connection"), None, "{what}: kept alive");
        // The gateway may answer and close before every byte is written.
        let _ = r.get_mut().write_all(&second);
        let started = Instant::now();
        let rest = read_rest(&mut r);
        let resp = parse_response(&rest);
        assert_json_error(what, &resp, status, code);
        assert_eq!(resp.header("connection"), Some("close"), "{what}");
        if status == 408 {
            assert!(started.elapsed() >= Duration::from_millis(900), "{what}");
        }
        let seen = up.requests();
        assert_eq!(
            seen.len(),
            1,
            "{what}: only the first request went upstream"
        );
        assert_eq!(seen[0].body, first_body, "{what}");
    }
    // A good second request is served on the same connection.
    up.clear();
    let mut r = BufReader::new(connect());
    r.get_mut().write_all(first).unwrap();
    assert_eq!(read_one(&mut r).status, 200);
    r.get_mut()
        .write_all(b"POST /public/second HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\n\r\nabc")
        .unwrap();
    assert_eq!(read_one(&mut r).status, 200);
    r.get_mut()
        .write_all(b"GET /public/third HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .unwrap();
    assert_eq!(read_one(&mut r).status, 200);
    let seen = up.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].body, first_body);
    assert_eq!(seen[1].uri, "/public/second");
    assert_eq!(seen[1].body, b"abc");
    assert_eq!(seen[2].uri, "/public/third");
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

#[test]
fn after_a_request_with_a_body_later_heads_are_refused_by_the_guard_too() {
    let up = Upstream::start();
    let gw = Gateway::start(&with_server(up.addr, SLOW_AND_SMALL));
    later_heads_are_guarded(&up, || tcp(gw.addr), POST_FIRST, b"hello");
}

const SLOW_AND_SMALL: &str = "header_read_timeout = \"1s\"\nmax_header_bytes = \"8KiB\"\n";

/// A gateway serving HTTPS (self-signed for "localhost") and a client config trusting it.
fn tls_gateway(up: &Upstream) -> (Gateway, Arc<rustls::ClientConfig>) {
    authgate::install_crypto();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = TempDir::new("guard-tls");
    std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let mut cfg = with_server(up.addr, SLOW_AND_SMALL);
    cfg.server
        .push_str("tls = { cert = \"file:cert.pem\", key = \"file:key.pem\" }\n");
    let gw = Gateway::start_in(dir, &cfg.render(), &[], "serve").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (gw, Arc::new(client))
}

fn tls(addr: SocketAddr, cfg: &Arc<rustls::ClientConfig>) -> impl Read + Write {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
    rustls::StreamOwned::new(conn, tcp(addr))
}

#[test]
fn over_tls_every_head_on_a_kept_alive_connection_is_guarded() {
    let up = Upstream::start();
    let (gw, cfg) = tls_gateway(&up);
    later_heads_are_guarded(&up, || tls(gw.addr, &cfg), GET_FIRST, b"");
    later_heads_are_guarded(&up, || tls(gw.addr, &cfg), POST_FIRST, b"hello");
}

#[test]
fn a_pipelined_bad_head_after_a_good_request_is_refused_by_the_guard() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let mut both = POST_FIRST.to_vec();
    both.extend_from_slice(
        b"GET /public/x HTTP/1.1\r\nHost: gw.test\r\nX-A: 1\r\n\tX-User: a\r\n\r\n",
    );
    let (buf, _) = send_and_read(gw.addr, &both);
    let text = String::from_utf8_lossy(&buf);
    let second = text
        .find("HTTP/1.1 400")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_json_error(
        "pipelined obs-fold",
        &parse_response(&buf[second..]),
        400,
        "invalid_request",
    );
    assert_eq!(up.count(), 1);
}
