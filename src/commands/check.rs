//! `check`: validate the config and the keys it names, like `nginx -t`.

use super::*;

/// Line and column of a key in the config text, for errors found after parsing.
pub(super) fn position(text: &str, section: &str, key: &str) -> (usize, usize) {
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return (1, 1);
    };
    let span = doc
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref() == section)
        .map(|(k, v)| match v.get_ref() {
            toml::de::DeValue::Table(t) => t
                .iter()
                .find(|(kk, _)| kk.get_ref() == key)
                .map(|(kk, _)| kk.span())
                .unwrap_or_else(|| k.span()),
            _ => k.span(),
        });
    let r = crate::config::reader::Reader::new(text);
    span.map(|s| r.line_col(s.start)).unwrap_or((1, 1))
}

/// Line and column of `key` in the `i`-th `[[upstream]]` (else of the table).
fn upstream_position(text: &str, i: usize, key: &str) -> (usize, usize) {
    array_position(text, "upstream", i, key)
}

/// Line and column of `key` in the `i`-th `[[array]]` table (else of the table).
fn array_position(text: &str, array: &str, i: usize, key: &str) -> (usize, usize) {
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return (1, 1);
    };
    let span = doc
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref() == array)
        .and_then(|(_, v)| match v.get_ref() {
            toml::de::DeValue::Array(a) => a.get(i).map(|item| match item.get_ref() {
                toml::de::DeValue::Table(t) => t
                    .iter()
                    .find(|(k, _)| k.get_ref() == key)
                    .map(|(k, _)| k.span())
                    .unwrap_or_else(|| item.span()),
                _ => item.span(),
            }),
            _ => None,
        });
    let r = crate::config::reader::Reader::new(text);
    span.map(|s| r.line_col(s.start)).unwrap_or((1, 1))
}

pub(super) fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let config = match Config::load_file(path) {
        Ok(c) => c,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("{line}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let origin = path.display();
    let mut errors = Vec::new();
    let mut key_note = String::new();
    match KeySet::load(&config.tokens, false) {
        // SPEC §10: with the built-in identity off no signing key is needed.
        _ if !config.issues_tokens() => key_note = "not used: [identity] enabled = false".into(),
        Ok(k) => key_note = format!("kid {}", k.signing_kid),
        Err(KeyError::Missing(p)) => key_note = format!("{p} will be created on first start"),
        Err(e) => {
            let key = if config.tokens.algorithm == Algorithm::HS256 {
                "secret"
            } else {
                "signing_key"
            };
            let key = if e.to_string().contains("previous") {
                "previous_keys"
            } else {
                key
            };
            let (l, c) = position(&text, "tokens", key);
            errors.push(format!("{origin}:{l}:{c}: tokens.{key}: {e}"));
        }
    }
    if let Err(e) = crate::server::tls::acceptor(&config) {
        let (l, c) = position(&text, "server", "tls");
        errors.push(format!("{origin}:{l}:{c}: {e}"));
    }
    // SPEC §11: the CA, client certificate and key an https upstream names must
    // load now, not at the first request.
    for (i, u) in config.upstreams.iter().enumerate() {
        if u.tls.is_some() {
            if let Err(e) = crate::proxy::upstream::Balancer::new(u, None) {
                let (l, c) = upstream_position(&text, i, "tls");
                errors.push(format!("{origin}:{l}:{c}: upstream[{i}].{e}"));
            }
        }
    }
    // SPEC §10: an issuer's `ca` must load now, not at its first key fetch.
    if let Err(e) = crate::verify::issuers::IssuerSet::build(&config) {
        let (l, c) = array_position(&text, "issuer", e.index, "ca");
        errors.push(format!("{origin}:{l}:{c}: issuer[{}].{}", e.index, e.why));
    }
    if let StoreUrl::Postgres(u) = &config.identity.store {
        // The URL's syntax and TLS settings; the server itself is not contacted.
        if let Err(e) = crate::store::postgres::validate_url(u.as_str()) {
            let (l, c) = position(&text, "identity", "store");
            errors.push(format!("{origin}:{l}:{c}: identity.store: {e}"));
        }
    }
    if !errors.is_empty() {
        for e in errors {
            eprintln!("{e}");
        }
        return Ok(ExitCode::FAILURE);
    }
    let s = &config.server;
    let scheme = if s.tls.is_some() { "https" } else { "http" };
    println!("{origin}: configuration OK");
    for a in &s.listen {
        println!("listener  {scheme}://{a}");
    }
    if let Some(a) = &config.admin {
        println!("admin     http://{}  (/healthz /readyz /metrics)", a.listen);
    }
    let id = &config.identity;
    let store = match &id.store {
        StoreUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
        StoreUrl::Postgres(u) => format!(
            "{} (pool {}, timeout {:?}, revocation poll {:?})",
            u.redacted(),
            id.store_pool,
            id.store_timeout,
            id.revocation_poll
        ),
    };
    println!(
        "identity  {store}, registration {}, endpoints {} {} {} {} {}",
        if id.registration_open {
            "open"
        } else {
            "closed"
        },
        id.paths.register,
        id.paths.login,
        id.paths.refresh,
        id.paths.logout,
        id.paths.jwks
    );
    println!(
        "tokens    {} ({key_note}), issuer {:?}, audience {:?}, access {:?}, refresh {:?}",
        config.tokens.algorithm.name(),
        config.tokens.issuer,
        config.tokens.audience,
        config.tokens.access_ttl,
        config.tokens.refresh_ttl
    );
    let rl = &config.rate_limit;
    let rate = |r: Option<crate::config::Rate>| match r {
        Some(r) => match r.per.as_secs() {
            1 => format!("{}/sec", r.count),
            60 => format!("{}/min", r.count),
            3600 => format!("{}/hour", r.count),
            s => format!("{}/{s}s", r.count),
        },
        None => "off".into(),
    };
    let backend = match &rl.backend {
        crate::config::LimitBackend::Local => "in process".to_string(),
        crate::config::LimitBackend::Redis(u) => {
            format!("shared in {u} (keys {}…)", rl.key_prefix)
        }
    };
    println!(
        "limits    login {} per IP, {} per user, register {} per IP; {backend}",
        rate(rl.login_per_ip),
        rate(rl.login_per_user),
        rate(rl.register_per_ip)
    );
    for u in &config.upstreams {
        let scheme = u.scheme();
        let targets: Vec<String> = u
            .targets
            .iter()
            .map(|t| format!("{scheme}://{t}"))
            .collect();
        println!(
            "upstream  {}: {} (connect {:?}, timeout {:?})",
            u.name,
            targets.join(", "),
            u.connect_timeout,
            u.timeout
        );
    }
    for i in &config.issuers {
        let keys = match &i.jwks {
            crate::config::JwksSource::Discovery => "keys by discovery".to_string(),
            crate::config::JwksSource::Uri(u) => format!("keys from {u}"),
        };
        let algs: Vec<&str> = i
            .algorithms
            .iter()
            .map(|a| crate::verify::jwk::alg_name(*a))
            .collect();
        println!(
            "issuer    {}: {} ({keys}), audiences {:?}, {}, identity from {}",
            i.name,
            i.issuer,
            i.audiences,
            algs.join("/"),
            i.identity_claim
        );
    }
    for r in &config.routes {
        let methods = r
            .methods
            .as_ref()
            .map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_else(|| "*".into());
        let note = if config.identity_endpoint(&r.path).is_some() {
            "  (shadowed by the gateway's own endpoint)"
        } else {
            ""
        };
        println!(
            "route     {methods} {}{} -> {} (auth {}){note}",
            r.host.as_deref().unwrap_or(""),
            r.path,
            config
                .upstream_of(r)
                .map_or("(none: forward-auth checks only)", |u| u.name.as_str()),
            r.auth.name()
        );
    }
    Ok(ExitCode::SUCCESS)
}
