//! Listeners, connections, limits, signals (reload, drain) and readiness.

mod admin;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::state::{App, Runtime};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(pub String);

/// One shared hyper builder, every limit set explicitly.
pub fn http_builder(c: &Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        // Without a timer hyper's header_read_timeout is silently inactive.
        .timer(TokioTimer::new())
        // Slowloris bound. hyper also applies it while a keep-alive connection waits
        // for its next request, so idle HTTP/1.1 connections close after
        // min(idle_timeout, header_read_timeout) — see README.
        .header_read_timeout(c.server.header_read_timeout.min(c.server.idle_timeout))
        .keep_alive(true)
        // Our own check answers 431 with JSON up to max_header_bytes; hyper's
        // buffer cap is the hard backstop beyond it.
        .max_buf_size((c.server.max_header_bytes * 2).max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(c.server.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(c.server.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError(format!("cannot listen on {addr}: {e}")))
}

/// Runs the gateway until SIGTERM/SIGINT.
pub async fn run(config_path: PathBuf, config: Config) -> Result<(), ServeError> {
    let store =
        crate::store::open(&config.identity.store).map_err(|e| ServeError(e.to_string()))?;
    let tls = tls::acceptor(&config).map_err(ServeError)?;
    let rt = tokio::task::spawn_blocking(move || Runtime::build(config, store))
        .await
        .map_err(|e| ServeError(e.to_string()))?
        .map_err(|e| ServeError(e.to_string()))?;
    let config = rt.config.clone();
    rt.start_background();
    let app = Arc::new(App {
        current: ArcSwap::from_pointee(rt),
        config_path,
        tls: ArcSwap::from_pointee(tls),
        conns: Arc::new(Semaphore::new(config.server.max_connections)),
    });

    // Handlers go in before the ready line: a SIGHUP sent the moment we say we are
    // listening must reload, not kill the process (the default action).
    let signals = Signals::install()?;
    let mut listeners = Vec::new();
    for addr in &config.server.listen {
        listeners.push(bind(*addr).await?);
    }
    let admin = match &config.admin {
        Some(a) => Some(bind(a.listen).await?),
        None => None,
    };
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let bound: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    for a in &bound {
        tracing::info!(target: "authgate::ready", "listening on {a} ({scheme})");
    }
    if let Some(a) = admin.as_ref().and_then(|l| l.local_addr().ok()) {
        tracing::info!(target: "authgate::ready", "admin listening on {a}");
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    crate::metrics::spawn_upkeep();
    spawn_pruner(app.clone());

    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = Vec::new();
    for l in listeners {
        loops.push(tokio::spawn(accept_loop(
            l,
            app.clone(),
            graceful.clone(),
            stop_rx.clone(),
        )));
    }
    if let Some(l) = admin {
        loops.push(tokio::spawn(admin::serve(l, app.clone(), stop_rx.clone())));
    }

    wait_for_stop(signals, &app, &bound).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // Listeners close at once; in-flight requests get up to shutdown_grace.
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    let grace = app.current.load().config.server.shutdown_grace;
    tracing::info!(connections = graceful.count(), grace = ?grace, "draining");
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        return Err(ServeError(
            "internal: connection tracker still shared".into(),
        ));
    };
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed; closing remaining connections");
    }
    tracing::info!("stopped");
    Ok(())
}

fn spawn_pruner(app: Arc<App>) {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_secs(60));
        loop {
            t.tick().await;
            app.current.load().limits.prune();
        }
    });
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // At max_connections new connections wait unaccepted (SPEC §8).
        let permit = tokio::select! {
            p = app.conns.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
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
        let app = app.clone();
        // The builder of the config in force when the connection arrives (reloadable).
        let hyper = app.current.load().http.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            serve_conn(stream, peer, app, hyper, watcher).await;
            drop(permit);
        });
    }
}

async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    hyper: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
) {
    let _ = stream.set_nodelay(true);
    let acceptor = app.tls.load().as_ref().clone();
    match acceptor {
        Some(acceptor) => {
            let timeout = app.current.load().config.server.header_read_timeout;
            let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc_app = app.clone();
            let info = Arc::new(crate::edge::ConnInfo::new(peer, true));
            let svc = service_fn(move |req| {
                Box::pin(crate::edge::serve(svc_app.clone(), info.clone(), req))
            });
            let conn = hyper
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection closed with error");
            }
        }
        None => {
            let info = Arc::new(crate::edge::ConnInfo::new(peer, false));
            let svc =
                service_fn(move |req| Box::pin(crate::edge::serve(app.clone(), info.clone(), req)));
            let conn = hyper
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection closed with error");
            }
        }
    }
}

struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, ServeError> {
        use tokio::signal::unix::{signal, SignalKind};
        let s = |k: SignalKind| {
            signal(k).map_err(|e| ServeError(format!("cannot install signal handlers: {e}")))
        };
        Ok(Signals {
            hup: s(SignalKind::hangup())?,
            term: s(SignalKind::terminate())?,
            int: s(SignalKind::interrupt())?,
        })
    }
}

/// Serves SIGHUP reloads until SIGTERM or SIGINT.
async fn wait_for_stop(mut s: Signals, app: &Arc<App>, bound: &[SocketAddr]) {
    loop {
        tokio::select! {
            _ = s.hup.recv() => reload(app, bound).await,
            _ = s.term.recv() => { tracing::info!("SIGTERM: shutting down"); return; }
            _ = s.int.recv() => { tracing::info!("SIGINT: shutting down"); return; }
        }
    }
}

/// SIGHUP: parse, validate, load keys, compile → swap. On error the old config stays.
pub async fn reload(app: &Arc<App>, bound: &[SocketAddr]) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
    let path = app.config_path.clone();
    let old = app.current.load_full();
    let (old_store, old_url) = (old.store.clone(), old.config.identity.store.clone());
    let built = tokio::task::spawn_blocking(move || {
        let cfg = Config::load_file(&path).map_err(|e| e.to_string())?;
        let tls = tls::acceptor(&cfg)?;
        let store = if cfg.identity.store == old_url {
            old_store
        } else {
            crate::store::open(&cfg.identity.store).map_err(|e| format!("identity.store: {e}"))?
        };
        let rt = Runtime::build(cfg, store).map_err(|e| e.to_string())?;
        Ok::<_, String>((rt, tls))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match built {
        Ok((mut rt, tls)) => {
            rt.limits.carry_over(&old.limits);
            let c = &rt.config;
            if c.server.listen != old.config.server.listen {
                tracing::warn!(now = ?bound, configured = ?c.server.listen, "server.listen changed: needs a restart; keeping the old listeners");
            }
            if c.admin.as_ref().map(|a| a.listen) != old.config.admin.as_ref().map(|a| a.listen) {
                tracing::warn!("admin.listen changed: needs a restart");
            }
            if c.identity.store != old.config.identity.store {
                tracing::info!("identity.store changed: new requests use the new store");
            }
            let (new_max, old_max) = (c.server.max_connections, old.config.server.max_connections);
            if new_max > old_max {
                app.conns.add_permits(new_max - old_max);
            } else if new_max < old_max {
                // Slots in use are given back as their connections close.
                let freed = app.conns.forget_permits(old_max - new_max);
                if freed < old_max - new_max {
                    let conns = app.conns.clone();
                    let mut left = old_max - new_max - freed;
                    tokio::spawn(async move {
                        while left > 0 {
                            match conns.acquire().await {
                                Ok(p) => {
                                    p.forget();
                                    left -= 1;
                                }
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
            rt.start_background();
            app.current.store(Arc::new(rt));
            app.tls.store(Arc::new(tls));
            metrics::counter!("authgate_config_reloads_total", "outcome" => "success").increment(1);
            tracing::info!(config = %app.config_path.display(), "configuration reloaded");
        }
        Err(errors) => {
            metrics::counter!("authgate_config_reloads_total", "outcome" => "failure").increment(1);
            for line in errors.lines() {
                tracing::error!(error = %line, "reload refused; the previous configuration stays in force");
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}
