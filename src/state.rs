//! The runtime snapshot: everything a request needs, built fully from one
//! config and swapped atomically on reload (SPEC §6). A request loads it once,
//! so in-flight requests finish on the snapshot they started with.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::auth::jwt::{Issuer, Verifier};
use crate::auth::keys::KeySet;
use crate::auth::passwords::PasswordPool;
use crate::auth::ratelimit::Limiter;
use crate::config::{Config, IdentityEndpoint};
use crate::metrics::RouteMetrics;
use crate::proxy::headers::HeaderRules;
use crate::proxy::upstream::UpstreamPool;
use crate::routes::Router;
use crate::store::UserStore;

pub struct Limits {
    pub login_ip: Option<Arc<Limiter<IpAddr>>>,
    pub login_user: Option<Arc<Limiter<String>>>,
    pub register_ip: Option<Arc<Limiter<IpAddr>>>,
}

/// `new` takes over `old`'s counters when both exist with the same rate.
fn keep<K: std::hash::Hash + Eq + Clone>(
    new: &mut Option<Arc<Limiter<K>>>,
    old: &Option<Arc<Limiter<K>>>,
) {
    if let (Some(n), Some(o)) = (new.as_ref(), old) {
        if n.rate() == o.rate() {
            *new = Some(o.clone());
        }
    }
}

impl Limits {
    /// Keeps the counters of every limit whose rate a reload left unchanged: a
    /// reload must not hand out a fresh brute-force budget.
    pub fn carry_over(&mut self, old: &Limits) {
        keep(&mut self.login_ip, &old.login_ip);
        keep(&mut self.login_user, &old.login_user);
        keep(&mut self.register_ip, &old.register_ip);
    }

    pub fn prune(&self) {
        if let Some(l) = &self.login_ip {
            l.prune();
        }
        if let Some(l) = &self.login_user {
            l.prune();
        }
        if let Some(l) = &self.register_ip {
            l.prune();
        }
    }
}

pub struct Runtime {
    pub config: Arc<Config>,
    pub router: Router,
    pub rules: HeaderRules,
    pub verifier: Verifier,
    pub issuer: Issuer,
    pub jwks: Bytes,
    pub passwords: PasswordPool,
    pub limits: Limits,
    pub upstreams: Vec<Arc<UpstreamPool>>,
    pub store: Arc<dyn UserStore>,
    /// The connection builder with this config's limits and timeouts.
    pub http: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    /// Metrics (and the log label) per route, then per identity endpoint, then "none".
    pub route_metrics: Vec<RouteMetrics>,
}

/// Which route a request took, for the access log and metrics.
#[derive(Debug, Clone, Copy)]
pub enum RouteRef {
    Route(usize),
    Endpoint(IdentityEndpoint),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

impl Runtime {
    pub fn build(config: Config, store: Arc<dyn UserStore>) -> Result<Runtime, BuildError> {
        let keys = KeySet::load(&config.tokens, true).map_err(|e| BuildError(e.to_string()))?;
        let id = &config.identity;
        let passwords = PasswordPool::new(id.password_hash, id.hash_concurrency, id.hash_queue)
            .map_err(|e| BuildError(e.to_string()))?;
        let rl = &config.rate_limit;
        let limits = Limits {
            login_ip: rl.login_per_ip.map(|r| Arc::new(Limiter::new(r))),
            login_user: rl.login_per_user.map(|r| Arc::new(Limiter::new(r))),
            register_ip: rl.register_per_ip.map(|r| Arc::new(Limiter::new(r))),
        };
        crate::metrics::install();
        let p = &config.identity.paths;
        let route_metrics = config
            .routes
            .iter()
            .map(|r| match &r.host {
                Some(h) => format!("{h}{}", r.path),
                None => r.path.clone(),
            })
            .chain([&p.register, &p.login, &p.refresh, &p.logout, &p.jwks].map(|s| s.to_string()))
            .chain(["none".to_string()])
            .map(|l| RouteMetrics::new(&l))
            .collect();
        Ok(Runtime {
            router: Router::new(&config),
            rules: HeaderRules::new(&config.forward, &config.server.trusted_proxies),
            verifier: Verifier::new(&config, &keys),
            issuer: Issuer::new(&config.tokens, &keys),
            jwks: Bytes::from(keys.jwks.to_string()),
            passwords,
            limits,
            upstreams: config
                .upstreams
                .iter()
                .map(|u| Arc::new(UpstreamPool::new(u)))
                .collect(),
            store,
            http: Arc::new(crate::server::http_builder(&config)),
            route_metrics,
            config: Arc::new(config),
        })
    }

    /// Starts what runs beside requests for this snapshot (active health checks);
    /// it stops by itself once the snapshot is dropped.
    pub fn start_background(&self) {
        for u in &self.upstreams {
            crate::proxy::upstream::spawn_health_checks(u);
        }
    }

    /// The metrics of a route, an identity endpoint, or of unmatched requests.
    pub fn metrics_for(&self, r: Option<RouteRef>) -> &RouteMetrics {
        let n = self.config.routes.len();
        let i = match r {
            Some(RouteRef::Route(i)) => i,
            Some(RouteRef::Endpoint(e)) => {
                n + match e {
                    IdentityEndpoint::Register => 0,
                    IdentityEndpoint::Login => 1,
                    IdentityEndpoint::Refresh => 2,
                    IdentityEndpoint::Logout => 3,
                    IdentityEndpoint::Jwks => 4,
                }
            }
            None => n + 5,
        };
        &self.route_metrics[i]
    }
}

/// What lives for the whole process: the current snapshot and where it came from.
pub struct App {
    pub current: ArcSwap<Runtime>,
    pub config_path: PathBuf,
    pub tls: ArcSwap<Option<tokio_rustls::TlsAcceptor>>,
    /// Connection slots (`max_connections`); resized on reload.
    pub conns: Arc<tokio::sync::Semaphore>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rate;
    use std::time::Duration;

    fn limits(per_user: u32) -> Limits {
        let rate = |count| Rate {
            count,
            per: Duration::from_secs(60),
        };
        Limits {
            login_ip: None,
            login_user: Some(Arc::new(Limiter::new(rate(per_user)))),
            register_ip: Some(Arc::new(Limiter::new(rate(1)))),
        }
    }

    #[test]
    fn unchanged_limits_keep_their_counters_across_a_reload() {
        let old = limits(1);
        let user = "alice".to_string();
        old.login_user.as_ref().unwrap().check(&user).unwrap();
        let mut same = limits(1);
        same.carry_over(&old);
        assert!(same.login_user.as_ref().unwrap().check(&user).is_err());
        let mut changed = limits(2);
        changed.carry_over(&old);
        assert!(changed.login_user.as_ref().unwrap().check(&user).is_ok());
        assert!(Arc::ptr_eq(
            changed.register_ip.as_ref().unwrap(),
            old.register_ip.as_ref().unwrap()
        ));
    }
}
