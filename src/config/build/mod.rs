//! The one validation pass: spanned TOML → typed `Config`, collecting every error.
//! One file per section; this one assembles them.

mod api_keys;
mod forward;
mod forward_auth;
mod identity;
mod issuer;
mod rate_limit;
mod route;
mod route_policy;
mod server;
mod session;
mod telemetry;
mod tokens;
mod upstream;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, Method};
use toml::de::{DeTable, DeValue};

use super::reader::{join, Issue, Reader};
use super::values::{parse_duration, parse_rate, parse_secret_ref, parse_size, Cidr, SecretRef};
use super::*;
use forward::*;
use forward_auth::*;
use identity::*;
use issuer::*;
use rate_limit::*;
use route::*;
use server::*;
use session::*;
use telemetry::*;
use tokens::*;
use upstream::*;

const TOP: &[&str] = &[
    "server",
    "admin",
    "identity",
    "rate_limit",
    "tokens",
    "forward",
    "upstream",
    "route",
    "session",
    "issuer",
    "telemetry",
    "audit",
    "forward_auth",
    "api_keys",
];

pub fn build(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigErrors> {
    let mut r = Reader::new(text);
    let doc = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let (line, col) = r.line_col(e.span().map(|s| s.start).unwrap_or(0));
            let reason = e.message().trim().to_string();
            return Err(ConfigErrors {
                origin: origin.into(),
                issues: vec![Issue {
                    line,
                    col,
                    path: String::new(),
                    reason,
                }],
            });
        }
    };
    let doc = doc.get_ref();
    r.only_known(doc, "", TOP);
    let empty = DeTable::new();
    let section = |r: &mut Reader, key: &str| r.table(doc, "", key).map(|(t, _)| t);

    let server_t = section(&mut r, "server").unwrap_or(&empty);
    let server = server(&mut r, server_t, base);
    let admin = section(&mut r, "admin").map(|t| admin(&mut r, t));
    let identity_t = section(&mut r, "identity").unwrap_or(&empty);
    let identity = identity(&mut r, identity_t, base);
    let rl_t = section(&mut r, "rate_limit").unwrap_or(&empty);
    let rate_limit = rate_limit(&mut r, rl_t, base);
    let tokens_t = section(&mut r, "tokens").unwrap_or(&empty);
    let tokens = tokens(&mut r, tokens_t, base);
    let forward_t = section(&mut r, "forward").unwrap_or(&empty);
    let forward = forward(&mut r, forward_t);
    let forward_auth = section(&mut r, "forward_auth").and_then(|t| {
        forward_auth(
            &mut r,
            t,
            identity.as_ref().filter(|i| i.enabled).map(|i| &i.paths),
        )
    });
    let session = section(&mut r, "session").and_then(|t| session(&mut r, t));
    let api_keys = section(&mut r, "api_keys")
        .map(|t| api_keys::api_keys(&mut r, t))
        .unwrap_or_default();
    let upstreams: Vec<Upstream> = r
        .tables(doc, "", "upstream")
        .into_iter()
        .enumerate()
        .filter_map(|(i, (t, span))| upstream(&mut r, t, &format!("upstream[{i}]"), span, base))
        .collect();
    let mut names = HashSet::new();
    for (i, (t, _)) in r.tables(doc, "", "upstream").into_iter().enumerate() {
        if let Some((n, span)) = r.string(t, &format!("upstream[{i}]"), "name") {
            if !names.insert(n.clone()) {
                r.error(
                    &span,
                    &format!("upstream[{i}].name"),
                    format!("upstream {n:?} is defined twice"),
                );
            }
        }
    }
    let session_cookie = session.as_ref().is_some_and(|s| s.cookie);
    let issuers = issuers(&mut r, doc, base, session_cookie);
    let telemetry = section(&mut r, "telemetry").map(|t| telemetry(&mut r, t));
    let audit = section(&mut r, "audit").and_then(|t| audit(&mut r, t, base));
    let identity_enabled = identity.as_ref().is_none_or(|i| i.enabled);
    if let (true, Some(t)) = (identity_enabled, &tokens) {
        // SPEC §10: the token's iss chooses, so authgate's own iss must name nothing else.
        for (i, (it, _)) in r.tables(doc, "", "issuer").into_iter().enumerate() {
            if let Some(f) = Reader::field(it, "issuer") {
                if matches!(f.value.get_ref(), DeValue::String(v) if v.as_ref() == t.issuer) {
                    r.error(
                        &f.span,
                        &format!("issuer[{i}].issuer"),
                        "equals tokens.issuer: authgate's own tokens carry that iss",
                    );
                }
            }
        }
    }
    let mut routes = Vec::new();
    let mut seen = HashSet::new();
    for (i, (t, span)) in r.tables(doc, "", "route").into_iter().enumerate() {
        let p = format!("route[{i}]");
        let route_issuers = route_issuers(&mut r, t, &p, &issuers, identity_enabled);
        if let Some(mut route) = route(&mut r, t, &p, span.clone(), &upstreams) {
            route.issuers = route_issuers;
            api_keys::check_route(&mut r, t, &p, &route, api_keys.enabled);
            if route.auth != AuthMode::Public && !identity_enabled && issuers.is_empty() {
                let at = Reader::field(t, "auth")
                    .map(|f| f.span)
                    .unwrap_or(span.clone());
                r.error(
                    &at,
                    &format!("{p}.auth"),
                    "no token can pass: [identity] enabled = false and no [[issuer]] is configured",
                );
            }
            let mut methods: Vec<String> = route
                .methods
                .iter()
                .flatten()
                .map(|m| m.to_string())
                .collect();
            methods.sort();
            let key = (route.host.clone(), route.path.clone(), methods);
            if !seen.insert(key) {
                let at = Reader::field(t, "path").map(|f| f.span).unwrap_or(span);
                r.error(
                    &at,
                    &format!("{p}.path"),
                    "another route has the same host, path and methods",
                );
            }
            routes.push(route);
        }
    }

    if !r.issues.is_empty() {
        r.issues.sort_by_key(|i| (i.line, i.col));
        return Err(ConfigErrors {
            origin: origin.into(),
            issues: r.issues,
        });
    }
    // Every part is Some when no issue was recorded.
    match (server, identity, rate_limit, tokens, forward) {
        (Some(server), Some(identity), Some(rate_limit), Some(tokens), Some(forward)) => {
            Ok(Config {
                origin: origin.into(),
                base_dir: base.to_path_buf(),
                server,
                admin: admin.flatten(),
                identity,
                rate_limit,
                tokens,
                forward,
                upstreams,
                routes,
                session: session.unwrap_or_default(),
                issuers,
                telemetry: telemetry.unwrap_or_default(),
                audit,
                forward_auth,
                api_keys,
            })
        }
        _ => Err(ConfigErrors {
            origin: origin.into(),
            issues: vec![Issue {
                line: 1,
                col: 1,
                path: String::new(),
                reason: "invalid configuration".into(),
            }],
        }),
    }
}

/// A duration key with its default.
fn duration(r: &mut Reader, t: &DeTable, path: &str, key: &str, default: &str) -> Duration {
    match r.string(t, path, key) {
        Some((s, span)) => parse_duration(&s).unwrap_or_else(|e| {
            r.error(&span, &join(path, key), e);
            Duration::ZERO
        }),
        None => parse_duration(default).unwrap_or(Duration::ZERO),
    }
}

/// A size key (integer bytes or "64KiB") with its default.
fn size(r: &mut Reader, t: &DeTable, path: &str, key: &str, default: u64) -> u64 {
    let Some(f) = Reader::field(t, key) else {
        return default;
    };
    let parsed = match f.value.get_ref() {
        DeValue::String(s) => parse_size(s),
        DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix())
            .map_err(|_| "must be a positive integer".to_string()),
        _ => Err("expected a size such as \"64KiB\" or an integer of bytes".to_string()),
    };
    parsed.unwrap_or_else(|e| {
        r.error(&f.span, &join(path, key), e);
        default
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        Config::load_str(text, "gateway.toml", Path::new("/etc/authgate"))
    }

    pub(crate) const MINIMAL: &str = r#"
[[upstream]]
name = "app"
targets = ["http://127.0.0.1:9000"]

[[route]]
path = "/protected"
upstream = "app"
"#;

    #[test]
    fn defaults_match_the_spec() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.server.max_header_bytes, 64 * 1024);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
        assert!(c.server.trusted_proxies.is_empty());
        assert!(c.admin.is_none());
        assert_eq!(
            c.identity.store,
            StoreUrl::Sqlite("/etc/authgate/data/users.db".into())
        );
        assert!(c.identity.registration_open);
        assert_eq!(c.identity.min_password_length, 8);
        assert_eq!(c.identity.max_password_length, 1024);
        assert_eq!(c.identity.max_body, 16 * 1024);
        assert_eq!(
            c.identity.password_hash,
            HashParams {
                memory_kib: 19456,
                iterations: 2,
                parallelism: 1
            }
        );
        assert_eq!(c.identity.paths.refresh, "/token/refresh");
        assert_eq!(c.identity.paths.jwks, "/.well-known/jwks.json");
        assert_eq!(c.identity.hash_queue, 64);
        assert_eq!(c.identity.store_timeout, Duration::from_secs(2));
        assert_eq!(c.identity.store_pool, 16);
        assert_eq!(c.identity.revocation_poll, Duration::from_secs(1));
        assert_eq!(c.rate_limit.login_per_ip.unwrap().count, 20);
        assert_eq!(c.rate_limit.login_per_user.unwrap().count, 5);
        assert_eq!(
            c.rate_limit.register_per_ip.unwrap().per,
            Duration::from_secs(3600)
        );
        assert_eq!(c.tokens.algorithm, Algorithm::EdDSA);
        assert_eq!(
            c.tokens.signing_key,
            Some(SecretRef::File("/etc/authgate/data/signing-key.pem".into()))
        );
        assert_eq!(c.tokens.issuer, "authgate");
        assert_eq!(c.tokens.audience, "api");
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(900));
        assert_eq!(c.tokens.refresh_ttl, Duration::from_secs(14 * 86400));
        assert_eq!(c.tokens.leeway, Duration::from_secs(30));
        assert_eq!(c.forward.identity_header, "x-user");
        assert!(c.forward.claim_headers.is_empty());
        let u = &c.upstreams[0];
        assert_eq!(u.targets, vec!["127.0.0.1:9000"]);
        assert_eq!(u.connect_timeout, Duration::from_secs(2));
        assert_eq!(u.timeout, Duration::from_secs(30));
        assert_eq!(u.unhealthy_cooldown, Duration::from_secs(10));
        assert_eq!(u.retries, 1);
        assert_eq!(c.routes[0].auth, AuthMode::Required);
        assert!(!c.routes[0].strip_prefix);
        // SPEC §12: sessions off unless asked for.
        assert_eq!(c.session, Session::default());
        assert!(!c.session.cookie && !c.session.login_page);
        assert!(c.session.allowed_origins.is_empty());
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let text = r#"[server]
listen = ["127.0.0.1:8080"]
idle_timeout = "forever"
colour = "blue"

[tokens]
algorithm = "HS256"
secret = "hunter2"

[[upstream]]
name = "app"
targets = ["http://127.0.0.1:9000"]

[[route]]
path = "/a"
upstream = "ap"
"#;
        let e = load(text).unwrap_err();
        let lines: Vec<String> = e.to_string().lines().map(String::from).collect();
        assert_eq!(
            lines,
            vec![
                "gateway.toml:3:1: server.idle_timeout: \"forever\" is not a duration (e.g. \"250ms\", \"30s\", \"15m\", \"14d\")".to_string(),
                "gateway.toml:4:1: server.colour: unknown key (expected one of: listen, tls, header_read_timeout, idle_timeout, max_connections, max_header_bytes, shutdown_grace, trusted_proxies, workers)".to_string(),
                "gateway.toml:8:1: tokens.secret: secrets are never inline: write \"env:NAME\" or \"file:PATH\"".to_string(),
                "gateway.toml:16:1: route[0].upstream: no upstream named \"ap\"".to_string(),
            ]
        );
    }

    #[test]
    fn duplicate_routes_are_an_error() {
        let text = format!("{MINIMAL}\n[[route]]\npath = \"/protected/\"\nupstream = \"app\"\n");
        let e = load(&text).unwrap_err().to_string();
        assert!(
            e.contains("route[1].path: another route has the same host, path and methods"),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let e = load("[server]\nlisten = [\"a\"\n").unwrap_err().to_string();
        assert!(e.starts_with("gateway.toml:"), "{e}");
    }

    #[test]
    fn strip_prefix_forwards_the_rest_of_the_path() {
        let text = format!("{MINIMAL}strip_prefix = true\n");
        let r = &load(&text).unwrap().routes[0];
        assert_eq!(r.forwarded_path("/protected/a/b"), "/a/b");
        assert_eq!(r.forwarded_path("/protected"), "/");
        assert_eq!(r.forwarded_path("/protected/"), "/");
        let plain = &load(MINIMAL).unwrap().routes[0];
        assert_eq!(plain.forwarded_path("/protected/a"), "/protected/a");
    }

    #[test]
    fn targets_are_http_or_https_urls_without_a_path() {
        let t = |s: &str| target(s).unwrap();
        assert_eq!(t("http://127.0.0.1:9000"), ("127.0.0.1:9000".into(), false));
        assert_eq!(t("http://app.internal"), ("app.internal:80".into(), false));
        assert_eq!(t("https://x:1"), ("x:1".into(), true));
        assert_eq!(
            t("https://billing.internal"),
            ("billing.internal:443".into(), true)
        );
        assert!(target("ftp://x:1").is_err());
        assert!(target("http://x:1/path").is_err());
        assert!(target("127.0.0.1:9000").is_err());
    }

    #[test]
    fn upstream_tls_is_for_https_targets_and_needs_cert_and_key_together() {
        let up = |targets: &str, tls: &str| {
            MINIMAL.replace(
                "targets = [\"http://127.0.0.1:9000\"]",
                &format!("targets = {targets}\n{tls}"),
            )
        };
        let c = load(&up(r#"["https://b.internal:8443"]"#, "")).unwrap();
        assert!(c.upstreams[0].tls.is_some());
        assert_eq!(c.upstreams[0].scheme(), "https");
        let c = load(&up(
            r#"["https://10.0.0.1:8443"]"#,
            r#"tls = { ca = "file:ca.pem", server_name = "b.internal" }"#,
        ))
        .unwrap();
        let tls = c.upstreams[0].tls.as_ref().unwrap();
        assert_eq!(tls.server_name.as_deref(), Some("b.internal"));
        assert!(tls.ca.is_some());
        let e = load(&up(r#"["http://b:80"]"#, r#"tls = { ca = "file:ca.pem" }"#))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("upstream[0].tls: applies to https:// targets only"),
            "{e}"
        );
        let e = load(&up(r#"["http://a:80", "https://b:443"]"#, ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mixes http:// and https://"), "{e}");
        let e = load(&up(
            r#"["https://b:443"]"#,
            r#"tls = { client_cert = "file:c.pem" }"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("upstream[0].tls.client_key: missing"), "{e}");
        let e = load(&up(r#"["https://b:443"]"#, r#"tls = { verify = false }"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream[0].tls.verify"), "{e}");
        let e = load(&up(
            r#"["https://b:443"]"#,
            r#"tls = { server_name = "not a name!" }"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("upstream[0].tls.server_name"), "{e}");
    }

    #[test]
    fn workers_is_auto_by_default_or_a_number() {
        use crate::config::Workers;
        assert_eq!(load(MINIMAL).unwrap().server.workers, Workers::Auto);
        let with = |v: &str| format!("[server]\nworkers = {v}\n{MINIMAL}");
        assert_eq!(load(&with("3")).unwrap().server.workers, Workers::Count(3));
        assert_eq!(
            load(&with("\"auto\"")).unwrap().server.workers,
            Workers::Auto
        );
        for bad in ["0", "\"many\"", "2.5"] {
            let e = load(&with(bad)).unwrap_err().to_string();
            assert!(e.contains("server.workers"), "{bad}: {e}");
        }
    }
}
