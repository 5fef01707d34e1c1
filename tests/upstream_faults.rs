//! The upstream fault matrix (SPEC §5, §8): upstreams that misbehave at every
//! point of an exchange, each a raw TCP server scripted in the test. The gateway
//! answers 502/504 for an upstream's fault (never 500), never hangs, never makes
//! up a body it did not receive, and leaks no connection.
mod common;
use common::*;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- a scripted upstream

/// One accepted upstream connection, as the script sees it.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    /// Reads one request head (through the blank line); None on EOF or error.
    fn read_head(&mut self) -> Option<String> {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let n = self.r.read_until(b'\n', &mut head).ok()?;
            if n == 0 {
                return None;
            }
        }
        Some(String::from_utf8_lossy(&head).into_owned())
    }

    /// Reads one request head and the Content-Length body after it.
    fn read_request(&mut self) -> Option<String> {
        let head = self.read_head()?;
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).ok()?;
        Some(head)
    }

    fn write(&mut self, b: &[u8]) -> bool {
        self.w.write_all(b).and_then(|_| self.w.flush()).is_ok()
    }

    /// Closes with a TCP RST (SO_LINGER 0) instead of a FIN.
    fn reset(self) {
        let _ = socket2::SockRef::from(&self.w).set_linger(Some(Duration::ZERO));
    }

    /// Waits (at most `max`) for the gateway to close its end, without reading
    /// what it sent — for upstreams that never read the request body.
    fn hold(self, max: Duration) {
        let deadline = Instant::now() + max;
        let _ = self.w.set_nonblocking(true);
        while Instant::now() < deadline {
            let mut b = [0u8; 1];
            match self.w.peek(&mut b) {
                Ok(0) => return,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // Unread data (Ok(1)) is what we expect; an error means reset.
                Ok(_) => {}
                Err(_) => return,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A raw TCP upstream: every accepted connection runs `script(n, conn)` on its own
/// thread, `n` counting connections from 0.
struct Scripted {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
}

impl Scripted {
    fn start(script: impl Fn(usize, &mut Conn) -> Option<()> + Send + Sync + 'static) -> Scripted {
        Self::start_owned(move |n, mut c| {
            script(n, &mut c);
        })
    }

    /// As `start`, for scripts that end the connection themselves (reset, hold).
    fn start_owned(script: impl Fn(usize, Conn) + Send + Sync + 'static) -> Scripted {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let c = conns.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let n = c.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                std::thread::spawn(move || {
                    let Ok(w) = s.try_clone() else { return };
                    script(
                        n,
                        Conn {
                            r: BufReader::new(s),
                            w,
                        },
                    );
                });
            }
        });
        Scripted { addr, conns }
    }

    fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------- the client side

#[derive(Debug, PartialEq)]
enum End {
    /// The gateway closed the connection (FIN or RST).
    Closed,
    /// Nothing more came within the read timeout: a hang.
    Hung,
}

/// Sends `request` on a fresh connection and reads until the gateway closes it;
/// `Hung` if it stays silent for `patience`.
fn exchange(addr: SocketAddr, request: &[u8], patience: Duration) -> (Vec<u8>, End) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(patience)).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (buf, End::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (buf, End::Hung)
            }
            Err(_) => return (buf, End::Closed),
        }
    }
}

fn get_req(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n").into_bytes()
}

fn head_and_body(buf: &[u8]) -> (Raw, Vec<u8>) {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    (parse_response(buf), buf[end + 4..].to_vec())
}

fn assert_error(r: &Raw, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    assert_eq!(r.json()["error"], code, "{r:?}");
}

fn cfg(up: SocketAddr, timeout: &str) -> Cfg {
    let mut c = Cfg::new(up);
    // Upstream connections are pooled per worker: with one, a second request
    // reuses the first one's connection, which the keep-alive cases rely on.
    c.server.push_str("workers = 1\n");
    c.rest = c
        .rest
        .replace("timeout = \"2s\"", &format!("timeout = \"{timeout}\""));
    c
}

/// Open file descriptors of a process (sockets included).
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Polls until the gateway holds at most `baseline` descriptors again.
fn assert_fds_settle(gw: &Gateway, baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut now = fds(gw.pid());
    while now > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        now = fds(gw.pid());
    }
    assert!(now <= baseline, "{now} descriptors open, {baseline} before");
}

/// Content-Length response bytes that are not periodic: a lost or repeated chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| b'a' + ((i.wrapping_mul(2654435761) >> 24) % 26) as u8)
        .collect()
}

const PATIENCE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- the matrix

#[test]
fn an_upstream_reset_before_the_response_is_502() {
    let up = Scripted::start_owned(|_, mut c| {
        if c.read_request().is_some() {
            c.reset();
        }
    });
    let gw = Gateway::start(&cfg(up.addr, "5s"));
    let (buf, _) = exchange(gw.addr, &get_req("/public/x"), PATIENCE);
    assert_error(&head_and_body(&buf).0, 502, "upstream_unavailable");
    // A bodiless GET may be replayed once on a fresh connection (RFC 9110 §9.2.2).
    assert_eq!(up.connections(), 2);
    let post = b"POST /public/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello";
    let (buf, _) = exchange(gw.addr, post, PATIENCE);
    assert_error(&head_and_body(&buf).0, 502, "upstream_unavailable");
    // A request with a body is never replayed.
    assert_eq!(up.connections(), 3);
}

#[test]
fn an_upstream_reset_mid_body_truncates_the_response_without_a_hang_or_a_made_up_body() {
    let sent = pattern(4000);
    let s = sent.clone();
    let up = Scripted::start_owned(move |_, mut c| {
        if c.read_request().is_some() {
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
            c.write(head);
            c.write(&s);
            std::thread::sleep(Duration::from_millis(200));
            c.reset();
        }
    });
    let gw = Gateway::start(&cfg(up.addr, "5s"));
    let (buf, end) = exchange(gw.addr, &get_req("/public/x"), PATIENCE);
    assert_eq!(end, End::Closed, "the client was left hanging");
    let (head, body) = head_and_body(&buf);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("100000"));
    assert!(body.len() < 100000, "a full body was made up");
    assert_eq!(body, sent[..body.len()], "the bytes are not what was sent");
}

#[test]
fn a_chunked_body_cut_by_a_reset_never_gets_its_last_chunk() {
    let up = Scripted::start_owned(|_, mut c| {
        if c.read_request().is_some() {
            c.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
            std::thread::sleep(Duration::from_millis(200));
            c.write(b"6\r\n world\r\n");
            std::thread::sleep(Duration::from_millis(200));
            c.reset();
        }
    });
    let gw = Gateway::start(&cfg(up.addr, "5s"));
    let (buf, end) = exchange(gw.addr, &get_req("/public/x"), PATIENCE);
    assert_eq!(end, End::Closed, "the client was left hanging");
    let (head, body) = head_and_body(&buf);
    assert_eq!(head.status, 200);
    let text = String::from_utf8_lossy(&body);
    // Whatever arrived is a prefix of what was sent, and the terminating
    // zero-size chunk that would claim a complete body never comes.
    assert!(
        !text.contains("\r\n0\r\n") && !text.starts_with("0\r\n"),
        "{text:?}"
    );
    assert!(
        "5\r\nhello\r\n6\r\n world\r\n".starts_with(text.as_ref()),
        "{text:?}"
    );
}

#[test]
fn informational_responses_before_the_answer_are_skipped() {
    let up = Scripted::start(|_, c| {
        c.read_request()?;
        c.write(b"HTTP/1.1 100 Continue\r\n\r\n");
        c.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n");
        c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Final: yes\r\n\r\nanswer");
        None
    });
    let gw = Gateway::start(&cfg(up.addr, "5s"));
    let (buf, end) = exchange(gw.addr, &get_req("/public/x"), PATIENCE);
    assert_eq!(end, End::Closed);
    let (head, body) = head_and_body(&buf);
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("x-final"), Some("yes"));
    assert_eq!(body, b"answer");
    // Exactly one response went to the client.
    assert_eq!(
        String::from_utf8_lossy(&buf).matches("HTTP/1.1 ").count(),
        1
    );
}

#[test]
fn a_status_line_that_is_not_http_is_502() {
    let answers: &[&[u8]] = &[
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"hello world\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/3.0 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    ];
    for answer in answers {
        let a = answer.to_vec();
        let up = Scripted::start(move |_, c| {
            c.read_request()?;
            c.write(&a);
            // Hold the connection: the verdict must come from the bytes, not an EOF.
            std::thread::sleep(Duration::from_secs(8));
            None
        });
        let gw = Gateway::start(&cfg(up.addr, "5s"));
        let started = Instant::now();
        let (buf, _) = exchange(gw.addr, &get_req("/public/x"), PATIENCE);
        let shown = String::from_utf8_lossy(answer);
        let (head, _) = head_and_body(&buf);
        assert_eq!(head.status, 502, "{shown:?} → {head:?}");
        assert_eq!(head.json()["error"], "upstream_unavailable", "{shown:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{shown:?}: waited for the timeout"
        );
    }
}

#[test]
fn oversized_or_too_many_response_headers_are_502() {
    let huge = format!("X-Big: {}\r\n", "a".repeat(64 * 1024)).repeat(16);
    let many: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    for headers in [huge, many] {
        let h = headers.clone();
        let up = Scripted::start(move |_, c| {
            c.read_request()?;
            c.write(format!("HTTP/1.1 200 OK\r\n{h}Content-Length: 2\r\n\r\nok").as_bytes());
            std::thread::sleep(Duration::from_secs(2));
            None
        });
        let gw = Gateway::start(&cfg(up.addr, "5s"));
        let (buf, _) = exchange(gw.addr, &get_req("/public/x"), PATIENCE);
        let (head, _) = head_and_body(&buf);
        assert_error(&head, 502, "upstream_unavailable");
        assert!(!gw.logs().contains("panicked"), "{}", gw.logs());
    }
}

#[test]
fn a_kept_alive_connection_closed_as_a_request_goes_out_is_retried_on_a_fresh_one() {
    // Connection 0 answers one request, keeps alive, then reads the next request
    // and closes without a byte of answer (an upstream's keep-alive timeout racing
    // the gateway's reuse). Every later connection answers "fresh".
    let up = Scripted::start_owned(|n, mut c| {
        if n == 0 {
            if c.read_request().is_none() {
                return;
            }
            c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst");
            let _ = c.read_request();
            return; // FIN, nothing answered
        }
        while c.read_request().is_some() {
            if !c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh") {
                return;
            }
        }
    });
    let gw = Gateway::start(&cfg(up.addr, "5s"));
    let (buf, _) = exchange(gw.addr, &get_req("/public/one"), PATIENCE);
    let (head, body) = head_and_body(&buf);
    assert_eq!((head.status, body.as_slice()), (200, &b"first"[..]));
    let (buf, _) = exchange(gw.addr, &get_req("/public/two"), PATIENCE);
    let (head, body) = head_and_body(&buf);
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(body, b"fresh");
    assert_eq!(
        up.connections(),
        2,
        "the pooled connection was reused, then a fresh one"
    );
}

#[test]
fn a_request_with_a_body_is_never_replayed_after_a_kept_alive_connection_closes() {
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let up = Scripted::start_owned(move |n, mut c| {
        while c.read_request().is_some() {
            s.fetch_add(1, Ordering::SeqCst);
            if n == 0 && s.load(Ordering::SeqCst) == 2 {
                return; // the POST: read, then closed unanswered
            }
            if !c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") {
                return;
            }
        }
    });
    let gw = Gateway::start(&cfg(up.addr, "5s"));
    let (buf, _) = exchange(gw.addr, &get_req("/public/one"), PATIENCE);
    assert_eq!(head_and_body(&buf).0.status, 200);
    let post = b"POST /public/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello";
    let (buf, _) = exchange(gw.addr, post, PATIENCE);
    assert_error(&head_and_body(&buf).0, 502, "upstream_unavailable");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "the POST reached the upstream twice"
    );
}

#[test]
fn a_body_trickling_past_timeout_arrives_whole_while_each_gap_is_shorter() {
    // SPEC §2: `timeout` bounds the wait for the response headers; once they came,
    // it bounds each silence in the body (as nginx's proxy_read_timeout), not its length.
    let up = Scripted::start(|_, c| {
        c.read_request()?;
        c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
        for b in b"0123456789" {
            std::thread::sleep(Duration::from_millis(250));
            if !c.write(&[*b]) {
                return None;
            }
        }
        None
    });
    let gw = Gateway::start(&cfg(up.addr, "1s"));
    let started = Instant::now();
    let (buf, end) = exchange(gw.addr, &get_req("/public/x"), PATIENCE);
    assert!(started.elapsed() > Duration::from_secs(2));
    assert_eq!(end, End::Closed);
    let (head, body) = head_and_body(&buf);
    assert_eq!(head.status, 200);
    assert_eq!(body, b"0123456789");
}

#[test]
fn a_body_that_stalls_longer_than_timeout_is_cut_not_left_hanging() {
    let up = Scripted::start_owned(|_, mut c| {
        if c.read_request().is_none() {
            return;
        }
        c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n012");
        c.hold(Duration::from_secs(30));
    });
    let gw = Gateway::start(&cfg(up.addr, "1s"));
    let baseline = fds(gw.pid());
    let started = Instant::now();
    let (buf, end) = exchange(gw.addr, &get_req("/public/x"), PATIENCE);
    assert_eq!(end, End::Closed, "the client was left hanging");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let (head, body) = head_and_body(&buf);
    assert_eq!(head.status, 200);
    assert_eq!(body, b"012", "only what the upstream sent");
    assert_fds_settle(&gw, baseline);
}

/// A large POST whose body the upstream never reads: the writer runs on its own
/// thread (it blocks once every buffer is full); the response is read meanwhile.
fn large_post(addr: SocketAddr) -> (Vec<u8>, End) {
    let len = 32 << 20;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let head = format!(
        "POST /public/upload HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut w = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let chunk = vec![b'u'; 64 * 1024];
        for _ in 0..(len / chunk.len()) {
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (buf, End::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (buf, End::Hung)
            }
            Err(_) => return (buf, End::Closed),
        }
    }
}

#[test]
fn an_upstream_that_never_reads_a_large_body_gets_504_and_no_connection_leaks() {
    let up = Scripted::start_owned(|_, mut c| {
        if c.read_head().is_some() {
            c.hold(Duration::from_secs(30));
        }
    });
    let gw = Gateway::start(&cfg(up.addr, "1s"));
    let baseline = fds(gw.pid());
    let started = Instant::now();
    let (buf, end) = large_post(gw.addr);
    assert_ne!(
        end,
        End::Hung,
        "no answer: {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_error(&head_and_body(&buf).0, 504, "upstream_timeout");
    assert_fds_settle(&gw, baseline);
}

#[test]
fn an_upstream_that_answers_early_without_reading_the_body_is_passed_through() {
    let up = Scripted::start_owned(|_, mut c| {
        if c.read_head().is_some() {
            c.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo much");
            c.hold(Duration::from_secs(30));
        }
    });
    let gw = Gateway::start(&cfg(up.addr, "5s"));
    let baseline = fds(gw.pid());
    let (buf, end) = large_post(gw.addr);
    assert_ne!(
        end,
        End::Hung,
        "no answer: {:?}",
        String::from_utf8_lossy(&buf)
    );
    let (head, body) = head_and_body(&buf);
    assert_eq!(head.status, 413, "{head:?}");
    assert_eq!(body, b"too much");
    assert_fds_settle(&gw, baseline);
    assert_eq!(up.connections(), 1);
}
