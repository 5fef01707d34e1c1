//! The runtime snapshot: everything a request needs, built fully from one
//! config and swapped atomically on reload (SPEC §6). A request loads it once,
//! so in-flight requests finish on the snapshot they started with.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::config::{Config, IdentityEndpoint};
use crate::identity::passwords::HashingThreads;
use crate::identity::signer::TokenSigner;
use crate::identity::signing_keys::KeySet;
use crate::limits::Limits;
use crate::metrics::RouteMetrics;
use crate::proxy::headers::HeaderRules;
use crate::proxy::upstream::Balancer;
use crate::routes::Router;
use crate::store::UserStore;
use crate::verify::issuers::IssuerSet;
use crate::verify::jwt::Verifier;
use crate::verify::revocation::Revocations;

pub struct Snapshot {
    pub config: Arc<Config>,
    pub router: Router,
    pub rules: HeaderRules,
    pub verifier: Verifier,
    /// Signs authgate's own tokens; `None` when `[identity] enabled = false`.
    pub signer: Option<TokenSigner>,
    pub jwks: Bytes,
    /// Kept across reloads that leave its settings alone (see `Snapshot::build`).
    pub passwords: Arc<HashingThreads>,
    pub limits: Limits,
    pub upstreams: Vec<Arc<Balancer>>,
    pub store: Arc<dyn UserStore>,
    /// SPEC §9: who is revoked since when; shared by every snapshot on one store
    /// (the server hands the same one to each reload) and filled by its poller.
    pub revocations: Arc<Revocations>,
    /// Metrics (and the log label) per route, then per identity endpoint, then
    /// "none", then "forward_auth".
    pub route_metrics: Vec<RouteMetrics>,
}

/// Which route a request took, for the access log and metrics.
#[derive(Debug, Clone, Copy)]
pub enum RouteRef {
    Route(usize),
    Endpoint(IdentityEndpoint),
    /// SPEC §15: `{forward_auth.path}/nginx` or `/forward`.
    ForwardAuth,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

impl Snapshot {
    /// `old` is the snapshot a reload replaces: its password pool is kept when the
    /// hashing settings are unchanged.
    pub fn build(
        config: Config,
        store: Arc<dyn UserStore>,
        old: Option<&Snapshot>,
    ) -> Result<Snapshot, BuildError> {
        // SPEC §10: with the built-in identity off there is no signing key to load.
        let keys = if config.issues_tokens() {
            Some(KeySet::load(&config.tokens, true).map_err(|e| BuildError(e.to_string()))?)
        } else {
            None
        };
        // SPEC §14: a client secret that cannot be read fails the start (or keeps the
        // old config on reload) instead of every sign-in.
        for (i, c, l) in config.login_issuers() {
            l.client_secret.read().map_err(|e| {
                BuildError(format!(
                    "issuer[{i}] ({}): login.client_secret: {e}",
                    c.name
                ))
            })?;
        }
        let issuers = Arc::new(IssuerSet::build(&config).map_err(|e| BuildError(e.to_string()))?);
        let verifier = Verifier::new(&config, keys.as_ref(), issuers)
            .map_err(|e| BuildError(format!("tokens: {e}")))?;
        let id = &config.identity;
        let passwords = match old.map(|o| &o.passwords) {
            Some(p) if p.is_built_with(id.password_hash, id.hash_concurrency, id.hash_queue) => {
                p.clone()
            }
            _ => Arc::new(
                HashingThreads::new(id.password_hash, id.hash_concurrency, id.hash_queue)
                    .map_err(|e| BuildError(e.to_string()))?,
            ),
        };
        let limits = Limits::new(&config.rate_limit).with_routes(&config.routes);
        let upstreams = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let before = old.and_then(|o| o.upstreams.iter().find(|p| p.name == u.name));
                Balancer::new(u, before.map(|p| p.as_ref()))
                    .map(Arc::new)
                    .map_err(|e| BuildError(format!("upstream[{i}].{e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
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
            .chain(
                [
                    crate::identity::oidc::START_PATH,
                    crate::identity::oidc::CALLBACK_PATH,
                    crate::identity::oidc::BACKCHANNEL_LOGOUT_PATH,
                ]
                .map(String::from),
            )
            .chain(["none".to_string(), "forward_auth".to_string()])
            .map(|l| RouteMetrics::new(&l))
            .collect();
        Ok(Snapshot {
            router: Router::new(&config),
            rules: HeaderRules::new(&config.forward, &config.server.trusted_proxies),
            verifier,
            signer: keys.as_ref().map(|k| TokenSigner::new(&config.tokens, k)),
            jwks: keys
                .as_ref()
                .map(|k| Bytes::from(k.jwks.to_string()))
                .unwrap_or_default(),
            passwords,
            limits,
            upstreams,
            store,
            revocations: Arc::new(Revocations::new(
                config.identity.revocation_poll,
                config.tokens.access_ttl + config.tokens.leeway,
            )),
            route_metrics,
            config: Arc::new(config),
        })
    }

    /// Starts what runs beside requests for this snapshot (active health checks);
    /// it stops by itself once the snapshot is dropped.
    pub fn start_background(&self) {
        self.limits.start();
        self.verifier.issuers().start();
        for u in &self.upstreams {
            crate::proxy::upstream::spawn_health_checks(u);
        }
    }

    /// A reload keeps the keys of issuers whose config did not change, so their tokens
    /// do not wait for the new snapshot's first fetch (which still happens at once).
    pub fn carry_over_issuer_keys(&self, old: &Snapshot) {
        self.verifier.issuers().adopt_keys(old.verifier.issuers());
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
                    IdentityEndpoint::OidcStart => 5,
                    IdentityEndpoint::OidcCallback => 6,
                    IdentityEndpoint::BackchannelLogout => 7,
                }
            }
            None => n + 8,
            Some(RouteRef::ForwardAuth) => n + 9,
        };
        &self.route_metrics[i]
    }
}

/// What lives for the whole process: the current snapshot and where it came from.
pub struct App {
    pub current: ArcSwap<Snapshot>,
    pub config_path: PathBuf,
    pub tls: ArcSwap<Option<tokio_rustls::TlsAcceptor>>,
    /// Connection slots (`max_connections`); resized on reload.
    pub conns: Arc<tokio::sync::Semaphore>,
}
