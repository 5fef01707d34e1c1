//! One client connection on a worker: wait for its first bytes, TLS, choose
//! HTTP/1.1 or HTTP/2, serve, drain on SIGTERM.
//!
//! HTTP/1.x (cleartext or TLS) is served one request per hyper connection: the
//! head reader (`head.rs`) reads and checks each head first (SPEC §8: JSON 400/408/431), hyper is
//! given exactly that request's bytes (head and Content-Length body; the next
//! head stays with us), and after a response that leaves the connection reusable
//! hyper is told to stop and the next head goes to the head reader again. What the
//! client sees is one ordinary keep-alive connection: hyper has already written
//! the response head without `Connection: close` when it is told to stop, and
//! stopping an idle connection writes nothing. A request whose body was not read
//! to its end, a chunked one, an upgrade or `Connection: close` hands the rest of
//! the connection to hyper as before.
//!
//! Idle memory: nothing of hyper's exists before a connection's first
//! bytes (the task holds only the socket until it is readable) nor between
//! keep-alive requests on cleartext, where the connection goes back to that same
//! small wait (its 8 KiB read and write buffers, the service and the boxed
//! per-connection state are freed and made again at the next request's bytes).

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, UPGRADE};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::body::Body;
use crate::config::Config;
use crate::request::ConnInfo;
use crate::state::App;

use super::head;

/// The hyper builders of one config snapshot, rebuilt per worker when a reload
/// swaps the snapshot (they carry its limits and timeouts).
struct Protocols {
    config: Arc<Config>,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

thread_local! {
    static PROTOCOLS: RefCell<Option<Arc<Protocols>>> = const { RefCell::new(None) };
}

fn protocols(app: &App) -> Arc<Protocols> {
    let config = app.current.load().config.clone();
    PROTOCOLS.with(|p| {
        let mut p = p.borrow_mut();
        match p.as_ref() {
            Some(cur) if Arc::ptr_eq(&cur.config, &config) => cur.clone(),
            _ => {
                let new = Arc::new(build(config));
                *p = Some(new.clone());
                new
            }
        }
    })
}

/// Every limit set explicitly (STYLE habit 6).
fn build(c: Arc<Config>) -> Protocols {
    let mut h1 = http1::Builder::new();
    h1
        // Without a timer hyper's header_read_timeout is silently inactive.
        .timer(TokioTimer::new())
        // Slowloris bound, from the first byte of each request (the wait for that
        // byte is bounded by `idle_wait`).
        .header_read_timeout(idle_wait(&c))
        .keep_alive(true)
        // Our own check answers 431 with JSON up to max_header_bytes; hyper's
        // buffer cap is the hard backstop beyond it.
        .max_buf_size((c.server.max_header_bytes * 2).max(8192));
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(c.server.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(c.server.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20));
    Protocols { config: c, h1, h2 }
}

fn head_limits(c: &Config) -> head::HeadLimits {
    head::HeadLimits {
        idle: idle_wait(c),
        timeout: c.server.header_read_timeout,
        max_bytes: c.server.max_header_bytes,
    }
}

/// How long a connection may sit without bytes: before its first request and
/// between keep-alive requests, min(idle_timeout, header_read_timeout) — see README.
fn idle_wait(c: &Config) -> Duration {
    c.server.header_read_timeout.min(c.server.idle_timeout)
}

/// Serves one accepted connection until it closes or the gateway drains.
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // Made at the first bytes and kept while idle: the peer's text is formatted
    // once per connection, not per request.
    let mut info: Option<Arc<ConnInfo>> = None;
    let mut idle: Option<IdleWait> = None;
    loop {
        let wait = idle_wait(&app.current.load().config);
        let first = match info {
            // Unknown yet whether TLS or HTTP/2 follows: the bytes stay in the socket.
            None => readable(&stream, wait, &mut stop).await.then(BytesMut::new),
            // Known cleartext HTTP/1.1: the bytes are read at once, for the head reader.
            Some(_) => first_bytes(&stream, wait, &stop, &mut idle).await,
        };
        let Some(first) = first else {
            if info.is_some() {
                let _ = stream.shutdown().await;
            }
            return;
        };
        // Everything bigger lives in this box, made only now that bytes arrived
        // and freed when a cleartext HTTP/1.1 connection goes idle again.
        let ready = serve_ready(stream, peer, app.clone(), stop.clone(), info, first);
        match Box::pin(ready).await {
            Some((s, i)) => (stream, info) = (s, Some(i)),
            None => return,
        }
    }
}

/// Waits until `stream` has bytes; false on EOF, error, timeout or drain.
/// A one-byte peek, not `readable()`: readiness can be reported before any byte
/// is there (seen with a freshly accepted socket), and acting on that would build
/// the connection's whole state for nothing.
async fn readable(stream: &TcpStream, wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    let mut byte = [0u8; 1];
    tokio::select! {
        r = stream.peek(&mut byte) => matches!(r, Ok(n) if n > 0),
        _ = tokio::time::sleep(wait) => false,
        _ = stop.changed() => false,
    }
}

/// The keep-alive wait's timer and drain signal, made at a connection's first
/// keep-alive wait and kept (~0.3 KiB): moving a registered timer to a later
/// deadline is an atomic store, where a new timer per request was a timer-wheel
/// insert and removal, and the drain signal stays registered instead of joining
/// and leaving the watch's waiters each time.
struct IdleWait {
    timer: Pin<Box<tokio::time::Sleep>>,
    drain: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Completes when the gateway starts draining, or when the drain channel closes
/// (the gateway going away counts as a drain).
fn drain_signal(stop: &watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let mut rx = stop.clone();
    Box::pin(async move { while rx.changed().await.is_ok() && !*rx.borrow() {} })
}

/// Between keep-alive requests: waits for the next bytes and reads them into the
/// buffer the head reader goes on with (None on EOF, error, timeout or drain). A peek
/// first would cost one more syscall per request. The buffer is made
/// only once readiness is reported, and dropped at once if no byte came with it.
async fn first_bytes(
    stream: &TcpStream,
    wait: Duration,
    stop: &watch::Receiver<bool>,
    idle: &mut Option<IdleWait>,
) -> Option<BytesMut> {
    if *stop.borrow() {
        return None;
    }
    let deadline = tokio::time::Instant::now() + wait;
    let w = match idle {
        Some(w) => {
            w.timer.as_mut().reset(deadline);
            w
        }
        None => idle.insert(IdleWait {
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            drain: drain_signal(stop),
        }),
    };
    let read = async {
        loop {
            stream.readable().await.ok()?;
            let mut buf = BytesMut::with_capacity(head::READ_SIZE);
            match stream.try_read_buf(&mut buf) {
                Ok(0) => return None,
                Ok(n) => {
                    if n < head::READ_SIZE {
                        drained(stream);
                    }
                    return Some(buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return None,
            }
        }
    };
    // Biased: no random branch order to draw; either end is final.
    tokio::select! {
        biased;
        r = read => r,
        _ = w.timer.as_mut() => None,
        _ = w.drain.as_mut() => None,
    }
}

/// After a read that did not fill its buffer, the socket had no more bytes: tokio
/// is told so, and the next read waits for epoll instead of asking the kernel.
/// Without it, hyper's read past the request's end (to see a client close) made
/// one recvfrom per request that always came back EAGAIN. Sound with
/// edge-triggered epoll: bytes that arrive after the read are a new event.
fn drained(stream: &TcpStream) {
    let _ = stream.try_io(Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}

/// Serves the connection; Some: a cleartext HTTP/1.1 connection gone idle
/// between requests, for `serve` to wait on. `info`: None for the first bytes
/// (after them the connection is known to be cleartext HTTP/1.1).
async fn serve_ready(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    info: Option<Arc<ConnInfo>>,
    first: BytesMut,
) -> Option<(TcpStream, Arc<ConnInfo>)> {
    if info.is_none() {
        let protos = protocols(&app);
        // The TLS and HTTP/2 states are large and boxed on their own: a cleartext
        // HTTP/1.1 connection, idle most of its life, carries none of their size.
        let acceptor = app.tls.load().as_ref().clone();
        if let Some(acceptor) = acceptor {
            Box::pin(serve_tls(acceptor, stream, peer, app, stop, protos)).await;
            return None;
        }
        if h2_preface(&stream, &protos.config).await {
            let svc = service(app, Arc::new(ConnInfo::new(peer, false)), None);
            let conn = protos.h2.serve_connection(TokioIo::new(stream), svc);
            Box::pin(drive(conn, &mut stop, None)).await;
            return None;
        }
    }
    let info = info.unwrap_or_else(|| Arc::new(ConnInfo::new(peer, false)));
    serve_h1(stream, info, app, stop, first).await
}

async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    protos: Arc<Protocols>,
) {
    let timeout = protos.config.server.header_read_timeout;
    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        let svc = service(app, Arc::new(ConnInfo::new(peer, true)), None);
        let io = TokioIo::new(tls);
        drive(protos.h2.serve_connection(io, svc), &mut stop, None).await;
    } else {
        drop(protos);
        // Never handed back: without a peek, a TLS connection waits in the head reader.
        let info = Arc::new(ConnInfo::new(peer, true));
        let _ = serve_h1(tls, info, app, stop, BytesMut::new()).await;
    }
}

/// Cleartext HTTP/2 with prior knowledge starts with this preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Peeks (without consuming) until the bytes rule the preface in or out.
async fn h2_preface(stream: &TcpStream, c: &Config) -> bool {
    let mut buf = [0u8; 24];
    let deadline = tokio::time::Instant::now() + c.server.header_read_timeout;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 || buf[..n] != PREFACE[..n] {
            return false;
        }
        if n == PREFACE.len() {
            return true;
        }
        // A prefix of the preface so far: wait for more bytes.
        if tokio::time::timeout_at(deadline, stream.readable())
            .await
            .is_err()
        {
            return false;
        }
    }
}

/// A transport HTTP/1.x is served on.
trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The plain socket, whose next bytes can be waited for without reading them.
    fn tcp(&self) -> Option<&TcpStream>;
}

impl Socket for TcpStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

/// HTTP/1.x, each head checked by the head reader, hyper's buffers given back between
/// requests. Some: a cleartext connection gone idle, handed back so that its wait
/// holds none of this state.
async fn serve_h1<S: Socket>(
    mut stream: S,
    info: Arc<ConnInfo>,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    mut prefix: BytesMut,
) -> Option<(S, Arc<ConnInfo>)> {
    let peer = info.peer;
    let turn = Arc::new(HandOff::default());
    let mut svc = service(app.clone(), info.clone(), Some(turn.clone()));
    loop {
        let protos = protocols(&app);
        // SPEC §8: each head is read and checked by the head reader first, so what hyper
        // would refuse bare (or a stalled head it would close silently) gets the
        // JSON 400/408/431.
        let limits = head_limits(&protos.config);
        drop(protos);
        let head = if prefix.is_empty() && stream.tcp().is_none() {
            // TLS cannot peek: the head reader's read is the idle wait (`limits.idle`),
            // and a drain ends it.
            if *stop.borrow() {
                None
            } else {
                tokio::select! {
                    h = head::next_head(&mut stream, prefix, limits, peer.ip()) => h,
                    _ = stop.changed() => None,
                }
            }
        } else {
            head::next_head(&mut stream, prefix, limits, peer.ip()).await
        };
        let Some(head) = head else {
            let _ = stream.shutdown().await;
            return None;
        };
        let left = match head.framing {
            head::Framing::Length(n) => Some(head.len as u64 + n),
            // Where a chunked body ends is hyper's to find: it keeps the connection.
            head::Framing::Chunked => None,
        };
        turn.start(left.is_some());
        let io = TokioIo::new(OneRequest {
            io: stream,
            buf: head.bytes,
            next: BytesMut::new(),
            left,
            turn: turn.clone(),
        });
        // Boxed: the connection's state exists only while a request is served.
        let protos = protocols(&app);
        let mut conn = Box::new(protos.h1.serve_connection(io, svc).with_upgrades());
        drop(protos);
        let released = drive(&mut *conn, &mut stop, Some(&turn)).await;
        // Unboxed by a call: a box moved out of in place is freed only at the end
        // of its scope (~0.9 KiB per idle connection while the wait was here).
        let Some(parts) = unbox(conn).into_parts() else {
            return None; // upgraded (WebSocket): the tunnel task owns the socket now
        };
        // In a block: what is left of `parts` (hyper's 8 KiB read buffer) and of
        // the IO (the head reader's 4 KiB buffer) must not live on past this
        // request: an idle connection keeps only the small keep-alive wait.
        let whole = {
            let parts = parts;
            let io = parts.io.into_inner();
            // Reusable only if hyper consumed every byte of the request and
            // nothing more: the next byte on the connection is the next head's.
            let whole = io.left == Some(0) && parts.read_buf.is_empty();
            stream = io.io;
            svc = parts.service;
            prefix = if io.buf.is_empty() {
                io.next
            } else {
                BytesMut::from(&io.buf[..])
            };
            whole
        };
        if !released || !whole || !turn.gateway_reads() || *stop.borrow() {
            let _ = stream.shutdown().await;
            return None;
        }
        if prefix.is_empty() && stream.tcp().is_some() {
            return Some((stream, info));
        }
    }
}

// Taking the box by value is the point: it is freed on return.
#[allow(clippy::boxed_local)]
fn unbox<T>(b: Box<T>) -> T {
    *b
}

/// Who reads the connection's next request once the current one is answered: the
/// gateway's keep-alive wait (which guards every head) or hyper itself (chunked
/// bodies, HTTP/1.0, upgrades). Decided by the service, read by the IO hyper polls.
#[derive(Default)]
struct HandOff {
    state: AtomicU8,
    /// hyper's read waiting at the request's end with nothing to wake it but a
    /// HYPER_READS decision.
    waiting: Mutex<Option<Waker>>,
}

const UNDECIDED: u8 = 0;
/// The keep-alive wait takes the connection back and reads the next head itself.
const GATEWAY_READS: u8 = 1;
/// Hyper keeps the connection: it reads past the request and serves what follows.
const HYPER_READS: u8 = 2;

impl HandOff {
    fn start(&self, bounded: bool) {
        let s = if bounded { UNDECIDED } else { HYPER_READS };
        self.state.store(s, Ordering::Release);
    }

    fn decide(&self, reuse: bool) {
        if !reuse {
            self.state.store(HYPER_READS, Ordering::Release);
            if let Some(w) = self.waiting.lock().ok().and_then(|mut w| w.take()) {
                w.wake();
            }
        } else {
            // `drive` sees it after the poll in which the service decided.
            let _ = self.state.compare_exchange(
                UNDECIDED,
                GATEWAY_READS,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    fn hyper_reads(&self) -> bool {
        self.state.load(Ordering::Acquire) == HYPER_READS
    }

    fn gateway_reads(&self) -> bool {
        self.state.load(Ordering::Acquire) == GATEWAY_READS
    }
}

/// A hyper connection that can be asked to finish after its current request.
trait Graceful: Future<Output = hyper::Result<()>> {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

impl<I, S> Graceful for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Future: Send + 'static,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

impl<G: Graceful + Unpin + ?Sized> Graceful for &mut G {
    fn graceful(mut self: Pin<&mut Self>) {
        Pin::new(&mut **self).graceful()
    }
}

/// Polls `conn` to its end, asking it to finish on drain and, with a `turn`, once
/// the service has decided that the response leaves the connection reusable.
/// Returns whether the end was such a release.
///
/// The service decides inside `conn`'s poll, so the decision is read right after
/// it, without a wake-up (a `Notify` woke the task once more per request). While
/// hyper serves only the current request (hyper does not read the next one), a drain
/// needs no wake-up either: `graceful` would let that request finish all the
/// same, and `serve_h1` checks for the drain after it. Only a connection hyper
/// keeps (HTTP/2, or hyper reading the next request) waits on `stop`, so the
/// drain signal is not registered per request.
async fn drive<C: Graceful>(
    conn: C,
    stop: &mut watch::Receiver<bool>,
    turn: Option<&HandOff>,
) -> bool {
    let mut conn = std::pin::pin!(conn);
    let (mut released, mut draining) = (false, *stop.borrow());
    if draining {
        conn.as_mut().graceful();
    }
    let mut on_stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
    std::future::poll_fn(|cx| loop {
        if let Poll::Ready(r) = conn.as_mut().poll(cx) {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection closed with error");
                return Poll::Ready(false);
            }
            return Poll::Ready(released && !draining);
        }
        if draining {
            return Poll::Pending;
        }
        match turn {
            Some(t) if !released && t.gateway_reads() => {
                released = true;
                conn.as_mut().graceful();
                continue;
            }
            Some(t) if !t.hyper_reads() => return Poll::Pending,
            _ => {}
        }
        let wait = on_stop.get_or_insert_with(|| drain_signal(stop));
        if wait.as_mut().poll(cx).is_ready() {
            draining = true;
            conn.as_mut().graceful();
            continue;
        }
        return Poll::Pending;
    })
    .await
}

/// Whether the connection may be handed back to idle after this request (if its
/// body is read to the end, which `serve_h1` checks): HTTP/1.1, no
/// `Connection: close`, no upgrade.
fn reusable(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && !req.headers().contains_key(UPGRADE)
        && req.headers().get_all(CONNECTION).iter().all(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',').all(|t| {
                    let t = t.trim();
                    !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("upgrade")
                })
            })
        })
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// The edge service of one connection; with `turn`, it tells `serve_h1` after
/// each response whether the connection can go idle without hyper's state.
fn service(
    app: Arc<App>,
    info: Arc<ConnInfo>,
    turn: Option<Arc<HandOff>>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = ServiceFuture,
> + Clone
       + Send
       + Sync
       + 'static {
    service_fn(move |req: Request<Incoming>| -> ServiceFuture {
        let turn = turn.clone().map(|t| (t, reusable(&req)));
        let fut = crate::edge::serve(app.clone(), info.clone(), req);
        Box::pin(async move {
            let resp = fut.await?;
            if let Some((t, reusable)) = turn {
                t.decide(
                    reusable
                        && resp.status() != StatusCode::SWITCHING_PROTOCOLS
                        && !resp.headers().contains_key(CONNECTION),
                );
            }
            Ok(resp)
        })
    })
}

/// What a request's reads past its end may keep for the next head before they
/// wait (they only look for the client closing meanwhile).
const NEXT_MAX: usize = 16 * 1024;

/// The socket as hyper sees it for one request: the bytes the head reader read in
/// front, and reads stopped at the end of the request (`left`) until the service
/// has decided, so that hyper never parses the next head itself. Past the end, a
/// read still looks at the socket so that a client closing mid-request is seen
/// (hyper then cancels the request), keeping what arrives for the next head.
struct OneRequest<S> {
    io: S,
    /// Read from `io`, not yet given to hyper: the request's first bytes, then
    /// possibly the next head's.
    buf: Bytes,
    /// Read from `io` after the request's end while waiting.
    next: BytesMut,
    /// Bytes of the request hyper has not had yet; None: no bound (chunked).
    left: Option<u64>,
    turn: Arc<HandOff>,
}

impl<S: AsyncRead + Unpin> OneRequest<S> {
    /// At the request's end: reads only to see EOF, keeping what comes.
    fn poll_past_end(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.buf.is_empty() && self.next.len() < NEXT_MAX {
            let mut chunk = [0u8; 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                if self.next.is_empty() {
                    return Poll::Ready(Ok(())); // EOF, hyper's to see
                }
                break;
            }
            self.next.extend_from_slice(rb.filled());
        }
        // Woken by the socket or the service's decision, whichever comes first.
        if let Ok(mut w) = self.turn.waiting.lock() {
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for OneRequest<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let cap = match this.left {
            Some(n) if !this.turn.hyper_reads() => usize::try_from(n).unwrap_or(usize::MAX),
            _ => usize::MAX,
        };
        if cap == 0 {
            return this.poll_past_end(cx);
        }
        if this.buf.is_empty() && !this.next.is_empty() {
            this.buf = this.next.split().freeze();
        }
        let n = if !this.buf.is_empty() {
            let n = this.buf.len().min(out.remaining()).min(cap);
            out.put_slice(&this.buf[..n]);
            this.buf.advance(n);
            n
        } else if cap >= out.remaining() {
            let before = out.filled().len();
            ready!(Pin::new(&mut this.io).poll_read(cx, out))?;
            out.filled().len() - before
        } else {
            let mut rb = ReadBuf::new(out.initialize_unfilled_to(cap));
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            out.advance(n);
            n
        };
        this.left = this.left.map(|l| l.saturating_sub(n as u64));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for OneRequest<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    /// hyper shuts the socket down when a connection ends; whether it really
    /// ends is decided in `serve_h1`, unless hyper (or an upgrade's tunnel) has
    /// the connection.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.turn.hyper_reads() {
            return Pin::new(&mut self.io).poll_shutdown(cx);
        }
        Poll::Ready(Ok(()))
    }
}
