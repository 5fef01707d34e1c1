//! Listeners, connections, limits, signals (reload, drain) and readiness.

mod admin;
mod conn;
pub mod head;
pub mod tls;
pub mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::state::{App, Snapshot};
use crate::store::StoreOptions;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(pub String);

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError(format!("cannot listen on {addr}: {e}")))
}

/// Runs the gateway until SIGTERM/SIGINT. This runtime is the control plane
/// (signals, reload, admin listener, health checks); connections are served by
/// the workers (SPEC §13).
pub async fn run(config_path: PathBuf, config: Config) -> Result<(), ServeError> {
    let tls = tls::acceptor(&config).map_err(ServeError)?;
    // Opening a store connects and migrates: blocking work, off the event loop.
    let rt = tokio::task::spawn_blocking(move || {
        let store = crate::store::open_for(&config)
            .map_err(|e| ServeError(format!("identity.store: {e}")))?;
        let rt = Snapshot::build(config, store, None).map_err(|e| ServeError(e.to_string()))?;
        // SPEC §9: revocations survive restarts: all of them are in force before
        // the first request.
        rt.revocations
            .poll(rt.store.as_ref())
            .map_err(|e| ServeError(format!("identity.store: reading revocations: {e}")))?;
        Ok::<_, ServeError>(rt)
    })
    .await
    .map_err(|e| ServeError(e.to_string()))??;
    let config = rt.config.clone();
    crate::audit::configure(config.audit.as_ref());
    crate::trace::otlp::start_from(&config.telemetry);
    crate::verify::revocation::spawn_poller(rt.store.clone(), Arc::downgrade(&rt.revocations));
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
    let n = workers::count(&config);
    let mut per_worker: Vec<Vec<std::net::TcpListener>> = (0..n).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for addr in &config.server.listen {
        let socks = workers::bind(*addr, n)?;
        if let Some(a) = socks.first().and_then(|s| s.local_addr().ok()) {
            bound.push(a);
        }
        for (w, s) in per_worker.iter_mut().zip(socks) {
            w.push(s);
        }
    }
    let admin = match &config.admin {
        Some(a) => Some(bind(a.listen).await?),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let pool = workers::start(per_worker, app.clone(), stop_rx.clone()).await?;
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    for a in &bound {
        tracing::info!(target: "authgate::ready", workers = n, "listening on {a} ({scheme})");
    }
    if let Some(a) = admin.as_ref().and_then(|l| l.local_addr().ok()) {
        tracing::info!(target: "authgate::ready", "admin listening on {a}");
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    crate::metrics::spawn_upkeep();
    spawn_pruner(app.clone());
    let admin_loop = admin.map(|l| tokio::spawn(admin::serve(l, app.clone(), stop_rx.clone())));

    wait_for_stop(signals, &app, &bound).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // Listeners close at once; in-flight requests get up to shutdown_grace.
    let grace = app.current.load().config.server.shutdown_grace;
    tracing::info!(grace = ?grace, "draining");
    let _ = stop_tx.send(true);
    if let Some(l) = admin_loop {
        let _ = l.await;
    }
    pool.join(grace + Duration::from_secs(1)).await;
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
    let prev = old.clone();
    let (old_store, old_revs) = (old.store.clone(), old.revocations.clone());
    let old_key = (
        old.config.identity.store.clone(),
        StoreOptions::of(&old.config.identity),
        old.config.issues_tokens(),
    );
    let built = tokio::task::spawn_blocking(move || {
        let cfg = Config::load_file(&path).map_err(|e| e.to_string())?;
        let tls = tls::acceptor(&cfg)?;
        let opts = StoreOptions::of(&cfg.identity);
        let same = (cfg.identity.store.clone(), opts, cfg.issues_tokens()) == old_key;
        let store = if same {
            old_store
        } else {
            crate::store::open_for(&cfg).map_err(|e| format!("identity.store: {e}"))?
        };
        let mut rt = Snapshot::build(cfg, store, Some(&prev)).map_err(|e| e.to_string())?;
        if same {
            // The same store: the same revocations and poller.
            let c = &rt.config;
            old_revs.configure(
                c.identity.revocation_poll,
                c.tokens.access_ttl + c.tokens.leeway,
            );
            rt.revocations = old_revs;
        } else {
            rt.revocations
                .poll(rt.store.as_ref())
                .map_err(|e| format!("identity.store: reading revocations: {e}"))?;
        }
        Ok::<_, String>((rt, tls, same))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match built {
        Ok((mut rt, tls, same_store)) => {
            if !same_store {
                crate::verify::revocation::spawn_poller(
                    rt.store.clone(),
                    Arc::downgrade(&rt.revocations),
                );
            }
            rt.limits.carry_over(&old.limits);
            rt.carry_over_issuer_keys(&old);
            let c = &rt.config;
            if c.server.listen != old.config.server.listen {
                tracing::warn!(now = ?bound, configured = ?c.server.listen, "server.listen changed: needs a restart; keeping the old listeners");
            }
            if c.admin.as_ref().map(|a| a.listen) != old.config.admin.as_ref().map(|a| a.listen) {
                tracing::warn!("admin.listen changed: needs a restart");
            }
            if c.telemetry.otlp_endpoint != old.config.telemetry.otlp_endpoint {
                tracing::warn!("telemetry.otlp_endpoint changed: needs a restart");
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
            crate::audit::configure(app.current.load().config.audit.as_ref());
            crate::audit::config_reload(true);
            tracing::info!(config = %app.config_path.display(), "configuration reloaded");
        }
        Err(errors) => {
            metrics::counter!("authgate_config_reloads_total", "outcome" => "failure").increment(1);
            crate::audit::reopen(old.config.audit.as_ref());
            crate::audit::config_reload(false);
            for line in errors.lines() {
                tracing::error!(error = %line, "reload refused; the previous configuration stays in force");
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}
