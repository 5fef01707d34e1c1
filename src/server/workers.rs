//! SPEC §13: the event-loop workers. Each worker is a current-thread tokio runtime
//! on a thread of its own, with its own listening socket per address
//! (`SO_REUSEPORT`: the kernel spreads new connections over the workers), its own
//! upstream connections (`proxy::pool`, thread-local) and its own hyper builders.
//! Nothing crosses threads on the request path except the config snapshot (read
//! through `ArcSwap`) and the `max_connections` semaphore, which stays global.
//!
//! What never runs on a worker: password hashing (its own threads), store calls
//! (`spawn_blocking`), key fetches and reload (the control runtime), log writing
//! (the log thread).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::ServeError;
use crate::config::{Config, Workers};
use crate::state::App;

/// How many workers `server.workers` asks for: `auto` is one per core.
pub fn count(c: &Config) -> usize {
    match c.server.workers {
        Workers::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Workers::Count(n) => n.max(1),
    }
}

/// One listening socket per worker on `addr`. With port 0 the first socket picks
/// the port and the others join it, so every worker listens on the same address.
pub fn bind(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, ServeError> {
    let err = |e: io::Error| ServeError(format!("cannot listen on {addr}: {e}"));
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(n);
    let mut at = addr;
    for _ in 0..n {
        let l = listen_socket(at).map_err(err)?;
        at = l.local_addr().map_err(err)?;
        out.push(l);
    }
    Ok(out)
}

fn listen_socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As tokio's own bind does: a restart must not wait for TIME_WAIT.
    s.set_reuse_address(true)?;
    // Only sockets of the same user can join the group (Linux), so another
    // account cannot take a share of the connections.
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// The running workers.
pub struct Pool {
    done: Vec<oneshot::Receiver<()>>,
}

/// Starts one thread per entry of `listeners` (that worker's sockets) and returns
/// once every worker has registered its sockets with its runtime: the ready line
/// and `READY=1` come after that (STYLE habit 7).
pub async fn start(
    listeners: Vec<Vec<std::net::TcpListener>>,
    app: Arc<App>,
    stop: watch::Receiver<bool>,
) -> Result<Pool, ServeError> {
    let mut ready = Vec::new();
    let mut done = Vec::new();
    for (i, socks) in listeners.into_iter().enumerate() {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let (app, stop) = (app.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("authgate-w{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("worker {i}: cannot start: {e}")));
                        return;
                    }
                };
                rt.block_on(worker(socks, app, stop, ready_tx));
                // In-flight work past the grace period ends with the runtime.
                drop(rt);
                let _ = done_tx.send(());
            })
            .map_err(|e| ServeError(format!("cannot start worker {i}: {e}")))?;
        ready.push(ready_rx);
        done.push(done_rx);
    }
    for r in ready {
        match r.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServeError(e)),
            Err(_) => return Err(ServeError("a worker stopped while starting".into())),
        }
    }
    Ok(Pool { done })
}

impl Pool {
    /// Waits for every worker to finish its drain (each bounds it by
    /// `shutdown_grace`); `limit` guards against a worker that never answers.
    pub async fn join(self, limit: Duration) {
        let all = async {
            for d in self.done {
                let _ = d.await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("a worker did not stop within the shutdown grace");
        }
    }
}

async fn worker(
    socks: Vec<std::net::TcpListener>,
    app: Arc<App>,
    stop: watch::Receiver<bool>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut fds = Vec::with_capacity(socks.len());
    for s in socks {
        match TcpListener::from_std(s) {
            Ok(l) => fds.push(l),
            Err(e) => {
                let _ = ready.send(Err(format!("cannot register a listener: {e}")));
                return;
            }
        }
    }
    let _ = ready.send(Ok(()));
    crate::proxy::pool::spawn_sweeper();
    // Every connection holds a receiver: `closed()` is "all connections done".
    let (alive, _) = watch::channel(());
    let loops: Vec<_> = fds
        .into_iter()
        .map(|fd| tokio::spawn(accept_loop(fd, app.clone(), stop.clone(), alive.clone())))
        .collect();
    for l in loops {
        let _ = l.await;
    }
    // Listeners are closed now; in-flight requests get up to shutdown_grace.
    let grace = app.current.load().config.server.shutdown_grace;
    if tokio::time::timeout(grace, alive.closed()).await.is_err() {
        tracing::warn!("shutdown grace elapsed; closing remaining connections");
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    alive: watch::Sender<()>,
) {
    loop {
        // At max_connections new connections wait unaccepted (SPEC §8). A worker
        // waits for a free slot without holding it while its own queue is empty,
        // so it never keeps one a connection queued at another worker needs; the
        // slot is taken after accept(). A race between workers for the last slot
        // leaves at most one accepted connection per worker parked, unread, until
        // a slot frees (README).
        tokio::select! {
            p = app.conns.acquire() => match p { Ok(p) => drop(p), Err(_) => return },
            _ = stop.changed() => return,
        }
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let permit = tokio::select! {
            p = app.conns.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let (app, stop, alive) = (app.clone(), stop.clone(), alive.subscribe());
        tokio::spawn(async move {
            super::conn::serve(stream, peer, app, stop).await;
            drop((permit, alive));
        });
    }
}
