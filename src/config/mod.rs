//! gateway.toml: read (spanned TOML) → validate (one pass, every error) → typed [`Config`].

mod build;
pub mod issuer;
pub mod reader;
pub mod redis_url;
pub mod route_policy;
pub mod store_url;
pub mod telemetry;
pub mod values;

#[cfg(test)]
mod props;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method};

pub use issuer::{ClientAuth, IssuerConfig, IssuerRef, JwksSource, LoginAllow, LoginConfig};
pub use reader::Issue;
pub use redis_url::{LimitBackend, RedisUrl};
pub use route_policy::{Cors, LimitPer, RouteLimit};
pub use store_url::PgUrl;
pub use values::{parse_origin, Cidr, Rate, SecretRef};

/// Every problem found in one config file, printed one per line as
/// `FILE:LINE:COL: key.path: reason` (SPEC §8).
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub origin: String,
    pub issues: Vec<Issue>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.path.is_empty() {
                write!(f, "{}:{}:{}: {}", self.origin, e.line, e.col, e.reason)?;
            } else {
                write!(
                    f,
                    "{}:{}:{}: {}: {}",
                    self.origin, e.line, e.col, e.path, e.reason
                )?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Set by `authgate demo`: browser sessions and the sign-in page are on for every
/// config this process loads, reloads included (the demo is opened in a browser).
static DEMO_SESSIONS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `authgate demo`: turn `session.cookie` and `session.login_page` on from now on.
pub fn enable_demo_sessions() {
    DEMO_SESSIONS.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages) and the folder relative paths start in.
    pub origin: String,
    pub base_dir: PathBuf,
    pub server: Server,
    pub admin: Option<Admin>,
    pub identity: Identity,
    pub rate_limit: RateLimit,
    pub tokens: Tokens,
    pub forward: Forward,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    pub session: Session,
    /// `[[issuer]]`: external identity providers (SPEC §10), in file order.
    pub issuers: Vec<IssuerConfig>,
    /// `[telemetry]` and `[audit]` (SPEC §18).
    pub telemetry: telemetry::Telemetry,
    pub audit: Option<telemetry::AuditTarget>,
    /// `[forward_auth]` (SPEC §15); `None` when the section is absent.
    pub forward_auth: Option<ForwardAuth>,
    /// `[api_keys]` (SPEC §16).
    pub api_keys: ApiKeys,
}

/// `[api_keys]` (SPEC §16): off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeys {
    pub enabled: bool,
    /// Where a key is presented: `None` for `Authorization: Bearer agk_...`,
    /// else a header of its own (e.g. `X-API-Key`) carrying the key itself.
    pub header: Option<HeaderName>,
}

/// SPEC §16: which credentials a route accepts (`credentials = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// Bearer tokens and the session cookie.
    pub token: bool,
    pub api_key: bool,
}

impl Default for Credentials {
    fn default() -> Credentials {
        Credentials {
            token: true,
            api_key: false,
        }
    }
}

/// `[forward_auth]` (SPEC §15): a proxy in front asks whether a request may pass.
/// Only present when the section is: no endpoint appears on a gateway that did not
/// ask for one (it would shadow a route at that path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuth {
    /// Canonical, no trailing `/`: the endpoints are `{path}/nginx` and `{path}/forward`.
    pub path: String,
    /// Peers whose description of the original request is believed.
    pub trusted: Vec<Cidr>,
}

/// Which forward-auth dialect an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardAuthKind {
    /// nginx `auth_request`: `X-Original-Method`/`-URI`; answers only 200, 401, 403.
    Nginx,
    /// Traefik ForwardAuth, Caddy `forward_auth`: `X-Forwarded-Method`/`-Uri`/...
    Forward,
}

/// `[session]` (SPEC §12): browser sessions. Off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// `/login` may put the tokens in `__Host-` cookies, and the access cookie is
    /// accepted wherever a bearer token is.
    pub cookie: bool,
    /// `GET /login` serves the sign-in form; browser navigations are sent there.
    pub login_page: bool,
    /// Canonical origins (see `values::parse_origin`) besides the gateway's own.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub tls: Option<Tls>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub shutdown_grace: Duration,
    pub trusted_proxies: Vec<Cidr>,
    /// SPEC §13: event-loop threads.
    pub workers: Workers,
}

/// `server.workers`: `"auto"` (one per core) or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    Auto,
    Count(usize),
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: SecretRef,
    pub key: SecretRef,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Postgres(PgUrl),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

#[derive(Debug, Clone)]
pub struct IdentityPaths {
    pub register: String,
    pub login: String,
    pub refresh: String,
    pub logout: String,
    pub jwks: String,
}

#[derive(Debug, Clone)]
pub struct Identity {
    /// SPEC §10: false turns the built-in store, signing key and endpoints off.
    pub enabled: bool,
    pub store: StoreUrl,
    pub registration_open: bool,
    pub min_password_length: usize,
    pub max_password_length: usize,
    pub max_body: usize,
    pub password_hash: HashParams,
    pub paths: IdentityPaths,
    pub hash_concurrency: usize,
    pub hash_queue: usize,
    /// SPEC §9: bounds every store call (default 2s).
    pub store_timeout: Duration,
    /// SPEC §9: connections per gateway to a shared store (default 16).
    pub store_pool: usize,
    /// SPEC §9: how often revocations are read from the store (default 1s).
    pub revocation_poll: Duration,
}

#[derive(Debug, Clone)]
pub struct RateLimit {
    pub login_per_ip: Option<Rate>,
    pub login_per_user: Option<Rate>,
    pub register_per_ip: Option<Rate>,
    /// SPEC §9: where the counters live (default: in process).
    pub backend: LimitBackend,
    /// Every Redis key starts with it (default `"authgate:"`).
    pub key_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    EdDSA,
    ES256,
    RS256,
    HS256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
            Algorithm::HS256 => "HS256",
        }
    }

    pub fn parse(s: &str) -> Option<Algorithm> {
        match s {
            "EdDSA" => Some(Algorithm::EdDSA),
            "ES256" => Some(Algorithm::ES256),
            "RS256" => Some(Algorithm::RS256),
            "HS256" => Some(Algorithm::HS256),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub algorithm: Algorithm,
    /// Asymmetric algorithms: the private key (PKCS#8 PEM).
    pub signing_key: Option<SecretRef>,
    /// HS256: the shared secret.
    pub secret: Option<SecretRef>,
    pub previous_keys: Vec<SecretRef>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub leeway: Duration,
}

#[derive(Debug, Clone)]
pub struct Forward {
    pub identity_header: HeaderName,
    /// (header, claim), in file order.
    pub claim_headers: Vec<(HeaderName, String)>,
    /// Optional: names who vouched for the caller: `self`, an `[[issuer]]`'s name
    /// (SPEC §14), or `apikey` (SPEC §16).
    pub issuer_header: Option<HeaderName>,
}

#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    /// `host:port` authorities, reached over plain HTTP, or over TLS when `tls`
    /// is set (the targets were `https://`; one upstream never mixes the two).
    pub targets: Vec<String>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub unhealthy_cooldown: Duration,
    pub retries: u32,
    pub health_check: Option<HealthCheck>,
    pub tls: Option<UpstreamTls>,
}

impl Upstream {
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// SPEC §11: how `https://` targets are verified, and the client certificate.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    /// Trusted on top of the system roots.
    pub ca: Option<SecretRef>,
    /// The name the certificate must carry; default: the target's host.
    pub server_name: Option<String>,
    pub client_cert: Option<SecretRef>,
    pub client_key: Option<SecretRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    Optional,
    Public,
}

impl AuthMode {
    pub fn name(self) -> &'static str {
        match self {
            AuthMode::Required => "required",
            AuthMode::Optional => "optional",
            AuthMode::Public => "public",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Canonical segment prefix: starts with `/`, no trailing `/` (except `/` itself).
    pub path: String,
    /// Index into `Config::upstreams`; `None`: the route only answers forward-auth
    /// checks (SPEC §15), and a request proxied to it is 404.
    pub upstream: Option<usize>,
    pub auth: AuthMode,
    pub methods: Option<Vec<Method>>,
    /// Lowercase; `*.example.com` matches one or more labels.
    pub host: Option<String>,
    /// claim → accepted values (any one suffices).
    pub require: Vec<(String, Vec<String>)>,
    pub strip_prefix: bool,
    /// SPEC §10: the issuers whose tokens this route accepts; `None`: all configured.
    pub issuers: Option<Vec<IssuerRef>>,
    /// SPEC §16: tokens, API keys, or both.
    pub credentials: Credentials,
    /// SPEC §17: checked after authentication.
    pub rate_limit: Option<RouteLimit>,
    /// SPEC §17: answered and applied at the edge.
    pub cors: Option<Cors>,
}

impl Route {
    /// The path sent upstream for a canonical request path this route matched:
    /// with `strip_prefix`, the part after the route's prefix (at least `/`).
    pub fn forwarded_path<'a>(&self, canonical: &'a str) -> &'a str {
        if !self.strip_prefix || self.path == "/" {
            return canonical;
        }
        match canonical.get(self.path.len()..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => "/",
        }
    }
}

impl Config {
    /// Parses and validates config text; `origin` names it in messages and
    /// `base_dir` anchors relative paths.
    pub fn load_str(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        build::build(text, origin, base_dir)
    }

    pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
        let mut c = Self::read_file(path)?;
        if DEMO_SESSIONS.load(std::sync::atomic::Ordering::Relaxed) {
            c.session.cookie = true;
            c.session.login_page = true;
        }
        Ok(c)
    }

    fn read_file(path: &Path) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            origin: origin.clone(),
            issues: vec![Issue {
                line: 1,
                col: 1,
                path: String::new(),
                reason: format!("cannot read: {e}"),
            }],
        })?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
        Self::load_str(&text, &origin, &base)
    }

    pub fn upstream_of(&self, route: &Route) -> Option<&Upstream> {
        route.upstream.map(|u| &self.upstreams[u])
    }

    /// The gateway's own endpoints: they win over routes (SPEC §8).
    /// The `[[issuer]]`s browsers may sign in through (SPEC §14), with their index.
    pub fn login_issuers(&self) -> impl Iterator<Item = (usize, &IssuerConfig, &LoginConfig)> {
        self.issuers
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.login.as_ref().map(|l| (i, c, l)))
    }

    /// Does authgate issue its own tokens? With the built-in identity, or for the
    /// sessions of sign-in through a provider (SPEC §14: those need the store and the
    /// signing key even with `[identity] enabled = false`).
    pub fn issues_tokens(&self) -> bool {
        self.identity.enabled || self.login_issuers().next().is_some()
    }

    /// SPEC §14: with no password form (`[identity] enabled = false`) and exactly one
    /// sign-in provider, its name: a navigation goes straight to it.
    pub fn sole_provider(&self) -> Option<&str> {
        if self.identity.enabled {
            return None;
        }
        let mut it = self.login_issuers();
        match (it.next(), it.next()) {
            (Some((_, c, _)), None) => Some(c.name.as_str()),
            _ => None,
        }
    }

    pub fn identity_endpoint(&self, path: &str) -> Option<IdentityEndpoint> {
        let sso = self.login_issuers().next().is_some();
        if sso {
            match path {
                issuer::CALLBACK_PATH => return Some(IdentityEndpoint::OidcCallback),
                issuer::START_PATH => return Some(IdentityEndpoint::OidcStart),
                issuer::BACKCHANNEL_LOGOUT_PATH => {
                    return Some(IdentityEndpoint::BackchannelLogout)
                }
                _ => {}
            }
        }
        if !self.identity.enabled && !sso {
            return None;
        }
        let p = &self.identity.paths;
        // SPEC §14: without the built-in identity there are no password accounts, so
        // no /register; /login is the sign-in page (buttons only), and refresh,
        // logout and JWKS serve the sessions of sign-in.
        if path == p.register && self.identity.enabled {
            Some(IdentityEndpoint::Register)
        } else if path == p.login {
            Some(IdentityEndpoint::Login)
        } else if path == p.refresh {
            Some(IdentityEndpoint::Refresh)
        } else if path == p.logout {
            Some(IdentityEndpoint::Logout)
        } else if path == p.jwks {
            Some(IdentityEndpoint::Jwks)
        } else {
            None
        }
    }
}

impl Config {
    /// `{forward_auth.path}/nginx` or `/forward`: answered by the gateway itself,
    /// before routes, like the identity endpoints (SPEC §15).
    pub fn forward_auth_endpoint(&self, path: &str) -> Option<ForwardAuthKind> {
        let rest = path.strip_prefix(self.forward_auth.as_ref()?.path.as_str())?;
        match rest {
            "/nginx" => Some(ForwardAuthKind::Nginx),
            "/forward" => Some(ForwardAuthKind::Forward),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityEndpoint {
    Register,
    Login,
    Refresh,
    Logout,
    Jwks,
    /// SPEC §14: `/oauth2/start`, `/oauth2/callback`, `/oauth2/backchannel-logout`.
    OidcStart,
    OidcCallback,
    BackchannelLogout,
}
