//! The one validation pass: spanned TOML → typed `Config`, collecting every error.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, Method};
use toml::de::{DeTable, DeValue};

use super::reader::{join, Issue, Reader};
use super::values::{parse_duration, parse_rate, parse_secret_ref, parse_size, Cidr, SecretRef};
use super::*;

const TOP: &[&str] = &[
    "server",
    "admin",
    "identity",
    "rate_limit",
    "tokens",
    "forward",
    "upstream",
    "route",
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
    let rate_limit = rate_limit(&mut r, rl_t);
    let tokens_t = section(&mut r, "tokens").unwrap_or(&empty);
    let tokens = tokens(&mut r, tokens_t, base);
    let forward_t = section(&mut r, "forward").unwrap_or(&empty);
    let forward = forward(&mut r, forward_t);
    let upstreams: Vec<Upstream> = r
        .tables(doc, "", "upstream")
        .into_iter()
        .enumerate()
        .filter_map(|(i, (t, span))| upstream(&mut r, t, &format!("upstream[{i}]"), span))
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
    let mut routes = Vec::new();
    let mut seen = HashSet::new();
    for (i, (t, span)) in r.tables(doc, "", "route").into_iter().enumerate() {
        let p = format!("route[{i}]");
        if let Some(route) = route(&mut r, t, &p, span.clone(), &upstreams) {
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

fn listen_addr(
    r: &mut Reader,
    s: &str,
    span: &std::ops::Range<usize>,
    path: &str,
) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            r.error(
                span,
                path,
                format!("{s:?} is not an address:port (e.g. \"127.0.0.1:8080\" or \"[::]:443\")"),
            );
            None
        }
    }
}

fn server(r: &mut Reader, t: &DeTable, base: &Path) -> Option<Server> {
    let p = "server";
    r.only_known(
        t,
        p,
        &[
            "listen",
            "tls",
            "header_read_timeout",
            "idle_timeout",
            "max_connections",
            "max_header_bytes",
            "shutdown_grace",
            "trusted_proxies",
        ],
    );
    let mut listen = Vec::new();
    match Reader::field(t, "listen")
        .map(|f| (f.span, matches!(f.value.get_ref(), DeValue::String(_))))
    {
        Some((span, true)) => {
            if let Some((s, _)) = r.string(t, p, "listen") {
                listen.extend(listen_addr(r, &s, &span, "server.listen"));
            }
        }
        Some((span, false)) => {
            if let Some((v, _)) = r.strings(t, p, "listen") {
                for (i, s) in v.iter().enumerate() {
                    listen.extend(listen_addr(r, s, &span, &format!("server.listen[{i}]")));
                }
                if v.is_empty() {
                    r.error(&span, "server.listen", "needs at least one address");
                }
            }
        }
        None => listen.push(SocketAddr::from(([127, 0, 0, 1], 8080))),
    }
    let tls = r.table(t, p, "tls").and_then(|(tt, span)| {
        let tp = "server.tls";
        r.only_known(tt, tp, &["cert", "key"]);
        let get = |r: &mut Reader, key: &str| match r.string(tt, tp, key) {
            Some((s, sp)) => parse_secret_ref(&s, base)
                .map_err(|e| r.error(&sp, &join(tp, key), e))
                .ok(),
            None => {
                r.error(
                    &span,
                    &join(tp, key),
                    "missing (\"file:PATH\" of a PEM file)",
                );
                None
            }
        };
        let cert = get(r, "cert");
        let key = get(r, "key");
        Some(Tls {
            cert: cert?,
            key: key?,
        })
    });
    let header_read_timeout = duration(r, t, p, "header_read_timeout", "10s");
    let idle_timeout = duration(r, t, p, "idle_timeout", "60s");
    let shutdown_grace = duration(r, t, p, "shutdown_grace", "30s");
    let max_connections = r
        .bounded(t, p, "max_connections", 1, 1_000_000)
        .unwrap_or(10_000) as usize;
    let max_header_bytes = size(r, t, p, "max_header_bytes", 64 * 1024);
    if Reader::field(t, "max_header_bytes").is_some()
        && !(1024..=16 << 20).contains(&max_header_bytes)
    {
        let span = Reader::field(t, "max_header_bytes")
            .map(|f| f.span)
            .unwrap_or(0..0);
        r.error(
            &span,
            "server.max_header_bytes",
            "must be between 1KiB and 16MiB",
        );
    }
    if header_read_timeout.is_zero() {
        if let Some(f) = Reader::field(t, "header_read_timeout") {
            r.error(
                &f.span,
                "server.header_read_timeout",
                "must be greater than zero",
            );
        }
    }
    let mut trusted_proxies = Vec::new();
    if let Some((v, span)) = r.strings(t, p, "trusted_proxies") {
        for (i, s) in v.iter().enumerate() {
            match Cidr::parse(s) {
                Ok(c) => trusted_proxies.push(c),
                Err(e) => r.error(&span, &format!("server.trusted_proxies[{i}]"), e),
            }
        }
    }
    Some(Server {
        listen,
        tls,
        header_read_timeout,
        idle_timeout,
        max_connections,
        max_header_bytes: max_header_bytes as usize,
        shutdown_grace,
        trusted_proxies,
    })
}

fn admin(r: &mut Reader, t: &DeTable) -> Option<Admin> {
    r.only_known(t, "admin", &["listen"]);
    let (s, span) = r.string(t, "admin", "listen")?;
    Some(Admin {
        listen: listen_addr(r, &s, &span, "admin.listen")?,
    })
}

fn identity(r: &mut Reader, t: &DeTable, base: &Path) -> Option<Identity> {
    let p = "identity";
    r.only_known(
        t,
        p,
        &[
            "store",
            "registration",
            "min_password_length",
            "max_password_length",
            "max_body",
            "password_hash",
            "paths",
            "hash_concurrency",
            "hash_queue",
        ],
    );
    let store = match r.string(t, p, "store") {
        Some((s, span)) => {
            if let Some(path) = s.strip_prefix("sqlite:") {
                if path.is_empty() {
                    r.error(&span, "identity.store", "\"sqlite:\" needs a path");
                }
                StoreUrl::Sqlite(base.join(path))
            } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
                StoreUrl::Postgres(s)
            } else {
                r.error(
                    &span,
                    "identity.store",
                    "expected \"sqlite:PATH\" or \"postgres://...\"",
                );
                StoreUrl::Sqlite(base.join("data/users.db"))
            }
        }
        None => StoreUrl::Sqlite(base.join("data/users.db")),
    };
    let registration_open = match r.string(t, p, "registration") {
        Some((s, _)) if s == "open" => true,
        Some((s, _)) if s == "closed" => false,
        Some((s, span)) => {
            r.error(
                &span,
                "identity.registration",
                format!("{s:?}: expected \"open\" or \"closed\""),
            );
            true
        }
        None => true,
    };
    let min = r.bounded(t, p, "min_password_length", 1, 4096).unwrap_or(8) as usize;
    let max = r
        .bounded(t, p, "max_password_length", 1, 65536)
        .unwrap_or(1024) as usize;
    if min > max {
        let span = Reader::field(t, "min_password_length")
            .map(|f| f.span)
            .unwrap_or(0..0);
        r.error(
            &span,
            "identity.min_password_length",
            format!("is greater than max_password_length ({max})"),
        );
    }
    let max_body = size(r, t, p, "max_body", 16 * 1024) as usize;
    let mut password_hash = HashParams {
        memory_kib: 19456,
        iterations: 2,
        parallelism: 1,
    };
    if let Some((ht, _)) = r.table(t, p, "password_hash") {
        let hp = "identity.password_hash";
        r.only_known(ht, hp, &["memory_kib", "iterations", "parallelism"]);
        if let Some(v) = r.bounded(ht, hp, "memory_kib", 8, 4 << 20) {
            password_hash.memory_kib = v as u32;
        }
        if let Some(v) = r.bounded(ht, hp, "iterations", 1, 100) {
            password_hash.iterations = v as u32;
        }
        if let Some(v) = r.bounded(ht, hp, "parallelism", 1, 64) {
            password_hash.parallelism = v as u32;
        }
        if password_hash.memory_kib < 8 * password_hash.parallelism {
            let span = Reader::field(ht, "memory_kib")
                .map(|f| f.span)
                .unwrap_or(0..0);
            r.error(
                &span,
                "identity.password_hash.memory_kib",
                "must be at least 8 × parallelism",
            );
        }
    }
    let mut paths = IdentityPaths {
        register: "/register".into(),
        login: "/login".into(),
        refresh: "/token/refresh".into(),
        logout: "/logout".into(),
        jwks: "/.well-known/jwks.json".into(),
    };
    if let Some((pt, _)) = r.table(t, p, "paths") {
        let pp = "identity.paths";
        r.only_known(pt, pp, &["register", "login", "refresh", "logout", "jwks"]);
        for (key, slot) in [
            ("register", &mut paths.register),
            ("login", &mut paths.login),
            ("refresh", &mut paths.refresh),
            ("logout", &mut paths.logout),
            ("jwks", &mut paths.jwks),
        ] {
            if let Some((s, span)) = r.string(pt, pp, key) {
                match crate::edge::normalize::normalize_path(&s) {
                    Ok(n) if n == s && s.starts_with('/') => *slot = s,
                    _ => r.error(
                        &span,
                        &join(pp, key),
                        format!("{s:?} is not a canonical absolute path"),
                    ),
                }
            }
        }
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let hash_concurrency = r
        .bounded(t, p, "hash_concurrency", 1, 256)
        .map(|v| v as usize)
        .unwrap_or(cores);
    let hash_queue = r.bounded(t, p, "hash_queue", 0, 100_000).unwrap_or(64) as usize;
    Some(Identity {
        store,
        registration_open,
        min_password_length: min,
        max_password_length: max,
        max_body,
        password_hash,
        paths,
        hash_concurrency,
        hash_queue,
    })
}

fn rate_limit(r: &mut Reader, t: &DeTable) -> Option<RateLimit> {
    let p = "rate_limit";
    r.only_known(
        t,
        p,
        &[
            "login_per_ip",
            "login_per_user",
            "register_per_ip",
            "backend",
        ],
    );
    let rate = |r: &mut Reader, key: &str, default: &str| {
        let (s, span) = r.string(t, p, key).unwrap_or((default.to_string(), 0..0));
        parse_rate(&s).unwrap_or_else(|e| {
            r.error(&span, &join(p, key), e);
            None
        })
    };
    let login_per_ip = rate(r, "login_per_ip", "20/min");
    let login_per_user = rate(r, "login_per_user", "5/min");
    let register_per_ip = rate(r, "register_per_ip", "10/hour");
    if let Some((_, span)) = r.string(t, p, "backend") {
        r.error(&span, "rate_limit.backend", "a shared (Redis) rate-limit backend is not supported by this build; remove the key to limit in process");
    }
    Some(RateLimit {
        login_per_ip,
        login_per_user,
        register_per_ip,
    })
}

fn tokens(r: &mut Reader, t: &DeTable, base: &Path) -> Option<Tokens> {
    let p = "tokens";
    r.only_known(
        t,
        p,
        &[
            "algorithm",
            "signing_key",
            "secret",
            "previous_keys",
            "issuer",
            "audience",
            "access_ttl",
            "refresh_ttl",
            "leeway",
        ],
    );
    let algorithm = match r.string(t, p, "algorithm") {
        Some((s, span)) => Algorithm::parse(&s).unwrap_or_else(|| {
            r.error(
                &span,
                "tokens.algorithm",
                format!("{s:?}: expected EdDSA, ES256, RS256 or HS256"),
            );
            Algorithm::EdDSA
        }),
        None => Algorithm::EdDSA,
    };
    let secret_key = |r: &mut Reader, key: &str| {
        r.string(t, p, key).and_then(|(s, span)| {
            parse_secret_ref(&s, base)
                .map_err(|e| r.error(&span, &join(p, key), e))
                .ok()
        })
    };
    let mut signing_key = secret_key(r, "signing_key");
    let secret = secret_key(r, "secret");
    if algorithm == Algorithm::HS256 {
        if secret.is_none() && Reader::field(t, "secret").is_none() {
            let span = Reader::field(t, "algorithm")
                .map(|f| f.span)
                .unwrap_or(0..0);
            r.error(
                &span,
                "tokens.secret",
                "HS256 needs secret = \"env:NAME\" or \"file:PATH\" (at least 32 bytes)",
            );
        }
        if let Some(f) = Reader::field(t, "signing_key") {
            r.error(
                &f.span,
                "tokens.signing_key",
                "not used with HS256 (use tokens.secret)",
            );
        }
    } else {
        if let Some(f) = Reader::field(t, "secret") {
            r.error(
                &f.span,
                "tokens.secret",
                format!("only used with HS256, not {}", algorithm.name()),
            );
        }
        if signing_key.is_none() && Reader::field(t, "signing_key").is_none() {
            signing_key = Some(SecretRef::File(base.join("data/signing-key.pem")));
        }
    }
    let mut previous_keys = Vec::new();
    if let Some((v, span)) = r.strings(t, p, "previous_keys") {
        for (i, s) in v.iter().enumerate() {
            match parse_secret_ref(s, base) {
                Ok(k) => previous_keys.push(k),
                Err(e) => r.error(&span, &format!("tokens.previous_keys[{i}]"), e),
            }
        }
    }
    let text = |r: &mut Reader, key: &str, default: &str| {
        let v = r.string(t, p, key);
        match v {
            Some((s, span)) if s.is_empty() => {
                r.error(&span, &join(p, key), "must not be empty");
                s
            }
            Some((s, _)) => s,
            None => default.to_string(),
        }
    };
    let issuer = text(r, "issuer", "authgate");
    let audience = text(r, "audience", "api");
    let access_ttl = duration(r, t, p, "access_ttl", "15m");
    let refresh_ttl = duration(r, t, p, "refresh_ttl", "14d");
    let leeway = duration(r, t, p, "leeway", "30s");
    for (key, v) in [("access_ttl", access_ttl), ("refresh_ttl", refresh_ttl)] {
        if v.is_zero() {
            if let Some(f) = Reader::field(t, key) {
                r.error(&f.span, &join(p, key), "must be greater than zero");
            }
        }
    }
    Some(Tokens {
        algorithm,
        signing_key,
        secret,
        previous_keys,
        issuer,
        audience,
        access_ttl,
        refresh_ttl,
        leeway,
    })
}

fn header_name(
    r: &mut Reader,
    s: &str,
    span: &std::ops::Range<usize>,
    path: &str,
) -> Option<HeaderName> {
    match HeaderName::from_bytes(s.as_bytes()) {
        Ok(h) if !crate::proxy::headers::is_reserved(&h) => Some(h),
        Ok(_) => {
            r.error(
                span,
                path,
                format!("{s:?} is a header the gateway manages itself"),
            );
            None
        }
        Err(_) => {
            r.error(span, path, format!("{s:?} is not a valid header name"));
            None
        }
    }
}

fn forward(r: &mut Reader, t: &DeTable) -> Option<Forward> {
    let p = "forward";
    r.only_known(t, p, &["identity_header", "claim_headers"]);
    let identity_header = match r.string(t, p, "identity_header") {
        Some((s, span)) => header_name(r, &s, &span, "forward.identity_header"),
        None => Some(HeaderName::from_static("x-user")),
    };
    let mut claim_headers = Vec::new();
    if let Some((ct, _)) = r.table(t, p, "claim_headers") {
        for (k, v) in ct.iter() {
            let path = format!("forward.claim_headers.{}", k.get_ref());
            let Some(h) = header_name(r, k.get_ref(), &k.span(), &path) else {
                continue;
            };
            match v.get_ref() {
                DeValue::String(c) if !c.is_empty() => claim_headers.push((h, c.to_string())),
                _ => r.error(
                    &k.span(),
                    &path,
                    "expected the name of a claim (a non-empty string)",
                ),
            }
        }
    }
    let identity_header = identity_header?;
    for (h, _) in &claim_headers {
        if *h == identity_header {
            let span = Reader::field(t, "claim_headers")
                .map(|f| f.span)
                .unwrap_or(0..0);
            r.error(
                &span,
                "forward.claim_headers",
                format!("{h} is already the identity header"),
            );
        }
    }
    Some(Forward {
        identity_header,
        claim_headers,
    })
}

fn upstream(
    r: &mut Reader,
    t: &DeTable,
    p: &str,
    span: std::ops::Range<usize>,
) -> Option<Upstream> {
    r.only_known(
        t,
        p,
        &[
            "name",
            "targets",
            "connect_timeout",
            "timeout",
            "unhealthy_cooldown",
            "retries",
            "health_check",
        ],
    );
    let name = r.string(t, p, "name").map(|(s, _)| s);
    if name.is_none() && Reader::field(t, "name").is_none() {
        r.error(&span, &join(p, "name"), "missing");
    }
    let mut targets = Vec::new();
    match r.strings(t, p, "targets") {
        Some((v, tspan)) => {
            if v.is_empty() {
                r.error(&tspan, &join(p, "targets"), "needs at least one target");
            }
            for (i, s) in v.iter().enumerate() {
                match target(s) {
                    Ok(a) => targets.push(a),
                    Err(e) => r.error(&tspan, &format!("{p}.targets[{i}]"), e),
                }
            }
        }
        None if Reader::field(t, "targets").is_none() => {
            r.error(&span, &join(p, "targets"), "missing")
        }
        None => {}
    }
    let connect_timeout = duration(r, t, p, "connect_timeout", "2s");
    let timeout = duration(r, t, p, "timeout", "30s");
    let unhealthy_cooldown = duration(r, t, p, "unhealthy_cooldown", "10s");
    let retries = r.bounded(t, p, "retries", 0, 10).unwrap_or(1) as u32;
    let health_check = r.table(t, p, "health_check").and_then(|(ht, hspan)| {
        let hp = join(p, "health_check");
        r.only_known(ht, &hp, &["path", "interval"]);
        let path = match r.string(ht, &hp, "path") {
            Some((s, _)) if s.starts_with('/') => s,
            Some((_, sp)) => {
                r.error(&sp, &join(&hp, "path"), "must start with /");
                return None;
            }
            None => {
                r.error(&hspan, &join(&hp, "path"), "missing");
                return None;
            }
        };
        let interval = duration(r, ht, &hp, "interval", "5s");
        Some(HealthCheck { path, interval })
    });
    Some(Upstream {
        name: name?,
        targets,
        connect_timeout,
        timeout,
        unhealthy_cooldown,
        retries,
        health_check,
    })
}

/// `http://host:port` → `host:port`. Plain HTTP only: upstreams sit on a trusted network.
fn target(s: &str) -> Result<String, String> {
    let uri: http::Uri = s.parse().map_err(|_| format!("{s:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "{s:?}: scheme {other:?} is not supported (use http://)"
            ))
        }
        None => return Err(format!("{s:?}: expected http://HOST:PORT")),
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!(
            "{s:?}: a target is scheme://host:port only, no path"
        ));
    }
    let auth = uri
        .authority()
        .ok_or_else(|| format!("{s:?}: missing host"))?;
    if auth.as_str().contains('@') {
        return Err(format!("{s:?}: credentials in the URL are not allowed"));
    }
    let port = auth.port_u16().unwrap_or(80);
    Ok(format!("{}:{port}", auth.host()))
}

fn route(
    r: &mut Reader,
    t: &DeTable,
    p: &str,
    span: std::ops::Range<usize>,
    upstreams: &[Upstream],
) -> Option<Route> {
    r.only_known(
        t,
        p,
        &[
            "path",
            "upstream",
            "auth",
            "methods",
            "host",
            "require",
            "strip_prefix",
        ],
    );
    let path = match r.string(t, p, "path") {
        Some((s, sp)) => match crate::edge::normalize::normalize_path(&s) {
            Ok(n) if s.starts_with('/') => {
                let n = if n.len() > 1 {
                    n.trim_end_matches('/').to_string()
                } else {
                    n
                };
                Some(n)
            }
            _ => {
                r.error(
                    &sp,
                    &join(p, "path"),
                    format!("{s:?} is not a canonical absolute path"),
                );
                None
            }
        },
        None => {
            if Reader::field(t, "path").is_none() {
                r.error(&span, &join(p, "path"), "missing");
            }
            None
        }
    };
    let upstream = match r.string(t, p, "upstream") {
        Some((s, sp)) => match upstreams.iter().position(|u| u.name == s) {
            Some(i) => Some(i),
            None => {
                r.error(
                    &sp,
                    &join(p, "upstream"),
                    format!("no upstream named {s:?}"),
                );
                None
            }
        },
        None => {
            if Reader::field(t, "upstream").is_none() {
                r.error(&span, &join(p, "upstream"), "missing");
            }
            None
        }
    };
    let auth = match r.string(t, p, "auth") {
        Some((s, sp)) => match s.as_str() {
            "required" => AuthMode::Required,
            "optional" => AuthMode::Optional,
            "public" => AuthMode::Public,
            _ => {
                r.error(
                    &sp,
                    &join(p, "auth"),
                    format!("{s:?}: expected \"required\", \"optional\" or \"public\""),
                );
                AuthMode::Required
            }
        },
        None => AuthMode::Required,
    };
    let methods = r.strings(t, p, "methods").map(|(v, sp)| {
        let mut out = Vec::new();
        for m in v {
            let up = m.to_ascii_uppercase();
            match Method::from_bytes(up.as_bytes()) {
                Ok(m) => out.push(m),
                Err(_) => r.error(
                    &sp,
                    &join(p, "methods"),
                    format!("{m:?} is not an HTTP method"),
                ),
            }
        }
        if out.is_empty() {
            r.error(
                &sp,
                &join(p, "methods"),
                "an empty list matches nothing; remove the key to allow every method",
            );
        }
        out
    });
    let host = r.string(t, p, "host").and_then(|(s, sp)| {
        let h = s.to_ascii_lowercase();
        let bare = h.strip_prefix("*.").unwrap_or(&h);
        let ok = !bare.is_empty()
            && bare.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if ok {
            Some(h)
        } else {
            r.error(
                &sp,
                &join(p, "host"),
                format!("{s:?} is not a host name (e.g. \"api.example.com\" or \"*.example.com\")"),
            );
            None
        }
    });
    let mut require = Vec::new();
    if let Some((rt, _)) = r.table(t, p, "require") {
        for (k, v) in rt.iter() {
            let kp = format!("{p}.require.{}", k.get_ref());
            let values: Vec<String> = match v.get_ref() {
                DeValue::String(s) => vec![s.to_string()],
                DeValue::Array(a) => a
                    .iter()
                    .filter_map(|e| match e.get_ref() {
                        DeValue::String(s) => Some(s.to_string()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            if values.is_empty() {
                r.error(&k.span(), &kp, "expected a non-empty array of strings");
            } else {
                require.push((k.get_ref().to_string(), values));
            }
        }
    }
    if auth == AuthMode::Public && !require.is_empty() {
        let sp = Reader::field(t, "require").map(|f| f.span).unwrap_or(span);
        r.error(
            &sp,
            &join(p, "require"),
            "a public route does not look at tokens; use auth = \"required\"",
        );
    }
    let strip_prefix = r.boolean(t, p, "strip_prefix").unwrap_or(false);
    Some(Route {
        path: path?,
        upstream: upstream?,
        auth,
        methods,
        host,
        require,
        strip_prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        Config::load_str(text, "gateway.toml", Path::new("/etc/authgate"))
    }

    const MINIMAL: &str = r#"
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
                "gateway.toml:4:1: server.colour: unknown key (expected one of: listen, tls, header_read_timeout, idle_timeout, max_connections, max_header_bytes, shutdown_grace, trusted_proxies)".to_string(),
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
        assert_eq!(r.forwarded_path("/protected/a/b".into()), "/a/b");
        assert_eq!(r.forwarded_path("/protected".into()), "/");
        assert_eq!(r.forwarded_path("/protected/".into()), "/");
        let plain = &load(MINIMAL).unwrap().routes[0];
        assert_eq!(plain.forwarded_path("/protected/a".into()), "/protected/a");
    }

    #[test]
    fn targets_must_be_plain_http() {
        assert_eq!(target("http://127.0.0.1:9000").unwrap(), "127.0.0.1:9000");
        assert_eq!(target("http://app.internal").unwrap(), "app.internal:80");
        assert!(target("https://x:1").is_err());
        assert!(target("http://x:1/path").is_err());
        assert!(target("127.0.0.1:9000").is_err());
    }
}
