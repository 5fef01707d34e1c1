//! One client connection on a worker: wait for its first bytes, TLS, choose
//! HTTP/1.1 or HTTP/2, serve, drain on SIGTERM.
//!
//! Issue 10, idle memory: nothing of hyper's exists before a connection's first
//! bytes (the task holds only the socket until it is readable), and between
//! keep-alive requests on cleartext HTTP/1.1 the hyper connection is ended after
//! each bodiless request (its 8 KiB read and write buffers freed) and a new one is
//! started when the next request's bytes arrive. What the client sees is one
//! ordinary keep-alive connection: hyper has already written the response head
//! without `Connection: close` when it is told to stop, and stopping an idle
//! connection writes nothing.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, UPGRADE};
use http::{Request, Response, StatusCode, Version};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use crate::body::Body;
use crate::config::Config;
use crate::edge::ConnInfo;
use crate::state::App;

use super::guard;

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

fn head_limits(c: &Config) -> guard::HeadLimits {
    guard::HeadLimits {
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
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let wait = idle_wait(&app.current.load().config);
    if !readable(&stream, wait, &mut stop).await {
        return;
    }
    // Everything bigger lives in this box, made only now that bytes arrived.
    Box::pin(serve_ready(stream, peer, app, stop)).await
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

async fn serve_ready(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
) {
    let protos = protocols(&app);
    // The TLS and HTTP/2 states are large and boxed on their own: a cleartext
    // HTTP/1.1 connection, idle most of its life, carries none of their size.
    let acceptor = app.tls.load().as_ref().clone();
    if let Some(acceptor) = acceptor {
        return Box::pin(serve_tls(acceptor, stream, peer, app, stop, protos)).await;
    }
    if h2_preface(&stream, &protos.config).await {
        let svc = service(app, Arc::new(ConnInfo::new(peer, false)), None);
        let conn = protos.h2.serve_connection(TokioIo::new(stream), svc);
        Box::pin(drive(conn, &mut stop, None)).await;
        return;
    }
    drop(protos);
    serve_h1(stream, peer, app, stop).await
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
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let svc = service(app, Arc::new(ConnInfo::new(peer, true)), None);
    if h2 {
        let io = TokioIo::new(tls);
        drive(protos.h2.serve_connection(io, svc), &mut stop, None).await;
    } else {
        // SPEC §8: the first head is checked by the guard (JSON 400/408/431);
        // later ones on this connection are hyper's and edge's.
        let mut tls = tls;
        let limits = head_limits(&protos.config);
        let Some(read) = guard::next_head(&mut tls, Bytes::new(), limits, peer.ip()).await else {
            return;
        };
        let io = TokioIo::new(guard::Prefixed::new(tls, read));
        let conn = protos.h1.serve_connection(io, svc).with_upgrades();
        drive(conn, &mut stop, None).await;
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

/// HTTP/1.1 on a cleartext socket, giving hyper's buffers back between requests.
async fn serve_h1(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
) {
    let release = Arc::new(Notify::new());
    let mut svc = service(
        app.clone(),
        Arc::new(ConnInfo::new(peer, false)),
        Some(release.clone()),
    );
    let mut prefix = Bytes::new();
    loop {
        let protos = protocols(&app);
        // SPEC §8: each head that starts a hyper connection is read and checked by
        // the guard first, so what hyper would refuse bare (or a stalled head it
        // would close silently) gets the JSON 400/408/431.
        let limits = head_limits(&protos.config);
        let Some(read) = guard::next_head(&mut stream, prefix, limits, peer.ip()).await else {
            return;
        };
        prefix = read;
        let io = TokioIo::new(Rewind { stream, prefix });
        // Boxed: the connection's state exists only while a request is served.
        let mut conn = Box::new(protos.h1.serve_connection(io, svc).with_upgrades());
        drop(protos);
        let released = drive(&mut *conn, &mut stop, Some(&release)).await;
        let Some(parts) = conn.into_parts() else {
            return; // upgraded (WebSocket): the tunnel task owns the socket now
        };
        let rw = parts.io.into_inner();
        stream = rw.stream;
        if !released || *stop.borrow() {
            let _ = stream.shutdown().await;
            return;
        }
        svc = parts.service;
        // Bytes hyper had read past the request (pipelining) go first, then any
        // of the old prefix hyper never read.
        prefix = match (parts.read_buf.is_empty(), rw.prefix.is_empty()) {
            (_, true) => parts.read_buf,
            (true, false) => rw.prefix,
            (false, false) => {
                let mut b = BytesMut::from(&parts.read_buf[..]);
                b.extend_from_slice(&rw.prefix);
                b.freeze()
            }
        };
        if prefix.is_empty() {
            let wait = idle_wait(&app.current.load().config);
            if !readable(&stream, wait, &mut stop).await {
                let _ = stream.shutdown().await;
                return;
            }
        }
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

/// Polls `conn` to its end, asking it to finish on drain and, when `release`
/// fires (a response that leaves the connection reusable was produced), once the
/// current response is written. Returns whether the end was such a release.
async fn drive<C: Graceful>(
    conn: C,
    stop: &mut watch::Receiver<bool>,
    release: Option<&Notify>,
) -> bool {
    let mut conn = std::pin::pin!(conn);
    let (mut released, mut draining) = (false, *stop.borrow());
    if draining {
        conn.as_mut().graceful();
    }
    loop {
        tokio::select! {
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection closed with error");
                    return false;
                }
                return released && !draining;
            }
            _ = async {
                match release {
                    Some(r) => r.notified().await,
                    None => std::future::pending().await,
                }
            }, if release.is_some() && !released && !draining => {
                released = true;
                conn.as_mut().graceful();
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful();
            }
        }
    }
}

/// Whether the connection may be handed back to idle after this request: an
/// HTTP/1.1 request without a body (nothing of it can be left unread on the
/// socket), no `Connection: close`, no upgrade.
fn reusable(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.body().is_end_stream()
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

/// The edge service of one connection; with `release`, it signals each response
/// after which the connection can go idle without hyper's state.
fn service(
    app: Arc<App>,
    info: Arc<ConnInfo>,
    release: Option<Arc<Notify>>,
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
        let release = release.clone().filter(|_| reusable(&req));
        let fut = crate::edge::serve(app.clone(), info.clone(), req);
        Box::pin(async move {
            let resp = fut.await?;
            if let Some(r) = release {
                if resp.status() != StatusCode::SWITCHING_PROTOCOLS
                    && !resp.headers().contains_key(CONNECTION)
                {
                    r.notify_one();
                }
            }
            Ok(resp)
        })
    })
}

/// The socket, with bytes already read from it in front.
struct Rewind {
    stream: TcpStream,
    prefix: Bytes,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    /// hyper shuts the socket down when a connection ends; whether it really
    /// ends is decided in `serve_h1`, which shuts it down itself.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
