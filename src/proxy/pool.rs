//! Upstream connections: hyper's `client::conn::http1` (one `SendRequest` per
//! connection) with an idle pool per worker thread. A worker is a
//! current-thread runtime, so its pool is a thread-local `RefCell`: no lock and
//! no task hop on the request path; the connection's own task runs on the same
//! thread.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::body::{Body, BoxError};

/// How long an idle upstream connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per target and worker.
const MAX_IDLE: usize = 1024;

/// Which connections may serve a request: one upstream of one config snapshot
/// (its `id`, so a reload never reuses a connection made under old TLS settings),
/// one target.
pub type Key = (u64, usize);

type Sender = SendRequest<Body>;

struct Idle {
    sender: Sender,
    since: Instant,
}

#[derive(Default)]
struct Pool {
    idle: HashMap<Key, VecDeque<Idle>>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Ids of the upstreams whose snapshot is still alive, once per snapshot that
/// holds it (a reload that leaves an upstream alone passes its id on). Idle
/// connections of any other id belong to a snapshot a reload replaced: nothing
/// will check them out again, so the sweeper closes them instead of keeping them
/// for `IDLE_TIMEOUT` (the soak's open-fd count grew with every reload). Touched
/// on build, drop and sweep only, never on the request path.
static LIVE: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Records a new upstream's id as alive; returns it.
pub fn register(id: u64) -> u64 {
    if let Ok(mut live) = LIVE.lock() {
        live.push(id);
    }
    id
}

/// Drops one holder of an upstream's id; with none left its idle connections go
/// at the next sweep.
pub fn retire(id: u64) {
    if let Ok(mut live) = LIVE.lock() {
        if let Some(i) = live.iter().position(|&l| l == id) {
            live.swap_remove(i);
        }
    }
}

/// The most recently used idle connection to `key` that is still open.
pub fn checkout(key: Key) -> Option<Sender> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let q = p.idle.get_mut(&key)?;
        let now = Instant::now();
        while let Some(c) = q.pop_back() {
            if !c.sender.is_closed() && now.duration_since(c.since) < IDLE_TIMEOUT {
                return Some(c.sender);
            }
        }
        None
    })
}

fn checkin(key: Key, sender: Sender) {
    if sender.is_closed() {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let q = p.idle.entry(key).or_default();
        if q.len() >= MAX_IDLE {
            q.pop_front();
        }
        q.push_back(Idle {
            sender,
            since: Instant::now(),
        });
    })
}

/// Drops expired, closed and retired idle connections every second (per worker).
pub fn spawn_sweeper() {
    tokio::spawn(async {
        let mut t = tokio::time::interval(Duration::from_secs(1));
        loop {
            t.tick().await;
            sweep();
        }
    });
}

fn sweep() {
    let now = Instant::now();
    let live = match LIVE.lock() {
        Ok(l) => l.clone(),
        Err(_) => return,
    };
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.idle.retain(|&(id, _), q| {
            if !live.contains(&id) {
                return false;
            }
            q.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < IDLE_TIMEOUT);
            !q.is_empty()
        });
    })
}

/// A connection to an upstream: plain TCP, or TLS over it (SPEC §11).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Starts the HTTP/1.1 client connection on `stream`; its task runs on this
/// worker's runtime. Upgrades (WebSocket) are enabled. Writes blocked for
/// `send_timeout` fail the connection (`stall.rs`).
pub async fn handshake(stream: Stream, send_timeout: Duration) -> hyper::Result<Sender> {
    let io = super::stall::Guarded::new(TokioIo::new(stream), send_timeout);
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection closed with error");
        }
    });
    Ok(sender)
}

/// An upstream response body that hands its connection back to the pool once
/// it has been read to the end (and not before: HTTP/1.1 can't interleave).
pub struct Pooled {
    body: Incoming,
    back: Option<(Key, Sender)>,
    ended: bool,
}

impl Pooled {
    pub fn new(body: Incoming, key: Key, sender: Sender) -> Pooled {
        Pooled {
            body,
            back: Some((key, sender)),
            ended: false,
        }
    }
}

impl hyper::body::Body for Pooled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        r.map(|o| o.map(|f| f.map_err(|e| Box::new(e) as BoxError)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if self.ended || self.body.is_end_stream() {
            if let Some((key, sender)) = self.back.take() {
                checkin(key, sender);
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
