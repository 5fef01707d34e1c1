//! `explain`: which route a request would take, and what would be done to it; with
//! `--forward-auth`, what the forward-auth endpoints would answer a proxy in front
//! that describes it (SPEC §15): the query cut off, refusals as 401/403.

use super::*;

pub(super) fn explain(
    path: &Path,
    method: &str,
    raw: &str,
    host: Option<String>,
    extra: &[String],
    forward_auth: bool,
) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let fa = match (&config.forward_auth, forward_auth) {
        (None, true) => bail!(
            "{}: no [forward_auth] section: the forward-auth endpoints do not exist",
            path.display()
        ),
        (fa, true) => fa.as_ref(),
        (_, false) => None,
    };
    // What a refusal becomes: as received by a client of the proxy, or as the
    // forward-auth endpoints shape it (only 401 and 403; fail closed).
    let refused = |e: &crate::error::ApiError| {
        let status = e.status().as_u16();
        match fa {
            Some(_) if status != 401 && status != 403 => {
                format!(
                    "refused   403 (fail closed; the proxy would see {status} {}): {}",
                    e.code(),
                    e.message()
                )
            }
            _ => format!("refused   {status} {}: {}", e.code(), e.message()),
        }
    };
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| anyhow!("{method:?} is not an HTTP method"))?;
    let (raw_path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    // SPEC §15: the described URI's query (and any fragment) takes no part.
    let raw_path = match fa {
        Some(_) => raw_path.split('#').next().unwrap_or(raw_path),
        None => raw_path,
    };
    let mut headers = HeaderMap::new();
    for h in extra {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("--header {h:?}: expected 'Name: value'"))?;
        headers.append(
            HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| anyhow!("bad header name {k:?}"))?,
            HeaderValue::from_str(v.trim()).map_err(|_| anyhow!("bad header value for {k}"))?,
        );
    }
    println!(
        "request   {method} {raw} (host: {})",
        host.as_deref().unwrap_or("-")
    );
    if let Some(fa) = fa {
        println!(
            "asked     as {p}/nginx (X-Original-Method/-URI) or {p}/forward (X-Forwarded-Method/-Uri/-Host/-Proto), \
             by a peer in forward_auth.trusted (anyone else → 403); the query takes no part",
            p = fa.path
        );
    }
    // The same order of checks as edge::dispatch, so that explain agrees with the proxy.
    if headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        let e = crate::error::ApiError::InvalidRequest("more than one Authorization header".into());
        println!("{}", refused(&e));
        return Ok(ExitCode::SUCCESS);
    }
    let canon = match normalize_path(raw_path) {
        Ok(p) => p,
        Err(e) => {
            println!(
                "{}",
                refused(&crate::error::ApiError::InvalidRequest(e.to_string()))
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!(
        "path      {canon}{}",
        if canon == raw_path {
            ""
        } else {
            " (normalised)"
        }
    );
    if let Some(ep) = config.identity_endpoint(&canon).filter(|_| fa.is_none()) {
        println!("answered  by the gateway itself: {ep:?} endpoint (never forwarded)");
        return Ok(ExitCode::SUCCESS);
    }
    let router = Router::new(&config);
    let Some((i, route)) = router.find(host.as_deref(), &method, &canon) else {
        match fa {
            Some(_) => println!("refused   403 forbidden: no route matches the original request"),
            None => println!("refused   404 not_found: no route matches (never forwarded)"),
        }
        return Ok(ExitCode::SUCCESS);
    };
    let up = config.upstream_of(route);
    println!(
        "route     route[{i}] {}{} (methods {}) -> {}",
        route.host.as_deref().unwrap_or(""),
        route.path,
        route
            .methods
            .as_ref()
            .map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_else(|| "any".into()),
        up.map_or("no upstream (forward-auth checks only)".to_string(), |u| {
            format!("upstream {:?}", u.name)
        })
    );
    let policy = match route.auth {
        AuthMode::Required => {
            "required: no Bearer token → 401 missing_token; a bad one → 401 invalid_token"
        }
        AuthMode::Optional => {
            "optional: anonymous requests pass without identity headers; a bad token → 401"
        }
        AuthMode::Public => "public: tokens are not looked at; no identity header is set",
    };
    println!("auth      {policy}");
    if !route.require.is_empty() {
        let req: Vec<String> = route
            .require
            .iter()
            .map(|(c, v)| format!("{c} ∈ [{}]", v.join(", ")))
            .collect();
        println!(
            "require   {} (else 403 insufficient_scope)",
            req.join(" and ")
        );
    }
    // SPEC §17: the route's own policies.
    if let Some(l) = &route.rate_limit {
        println!("limit     {}", l.describe());
    }
    if let Some(c) = &route.cors {
        println!("cors      {}", c.describe());
    }
    let sessions = &config.session;
    if sessions.cookie && route.auth != AuthMode::Public {
        println!(
            "session   the {} cookie counts as a bearer token when there is no Authorization header; \
             with it, unsafe methods and WebSocket handshakes need Origin = the gateway's own{} (else 403 csrf_rejected){}",
            crate::identity::session::ACCESS_COOKIE,
            if sessions.allowed_origins.is_empty() {
                String::new()
            } else {
                format!(" or one of {}", sessions.allowed_origins.join(", "))
            },
            if sessions.login_page && route.auth == AuthMode::Required {
                format!(
                    "; a browser navigation without a session → 302 {}?return_to=...",
                    config.identity.paths.login
                )
            } else {
                String::new()
            }
        );
    }
    let mut credentials_refused = false;
    let token = match route.auth {
        AuthMode::Public => None,
        // SPEC §12: the header wins; without one, the session cookie stands in.
        _ => match crate::edge::bearer(&headers).and_then(|t| match t {
            Some(t) => Ok(Some(t)),
            None => crate::identity::session::access_cookie(sessions, &headers).map_err(Into::into),
        }) {
            Ok(t) => t,
            Err(e) => {
                println!("{}", refused(&e));
                credentials_refused = true;
                None
            }
        },
    };
    if route.auth != AuthMode::Public {
        let names: Vec<String> = match &route.issuers {
            Some(list) => list.iter().map(|r| issuer_label(&config, *r)).collect(),
            None => {
                let own = config.identity.enabled.then(|| "self".to_string());
                own.into_iter()
                    .chain(config.issuers.iter().map(|i| i.name.clone()))
                    .collect()
            }
        };
        println!(
            "issuers   {} (a token's iss chooses; any other issuer → 401 invalid_token)",
            names.join(", ")
        );
    }
    if fa.is_some() && token.is_none() && !credentials_refused && route.auth == AuthMode::Required {
        println!("{}", refused(&crate::error::ApiError::MissingToken));
    }
    if let Some(t) = token {
        match offline_verifier(&config).and_then(|v| verify_now(&v, t)) {
            Ok(Ok(v))
                if route
                    .issuers
                    .as_ref()
                    .is_some_and(|l| !l.contains(&v.source)) =>
            {
                println!(
                    "refused   401 invalid_token: issued by {}, which this route does not accept",
                    issuer_label(&config, v.source)
                )
            }
            Ok(Ok(v)) if satisfies(&v.claims, &route.require) => println!(
                "token     valid for {:?} (issuer {})",
                v.sub,
                issuer_label(&config, v.source)
            ),
            Ok(Ok(_)) => {
                println!("refused   403 insufficient_scope: the token lacks a required claim")
            }
            Ok(Err(e)) => println!("{}", refused(&crate::error::ApiError::from(e))),
            Err(e) => println!("token     cannot be checked: {e}"),
        }
    }
    if fa.is_some() {
        let mut names = vec![config.forward.identity_header.to_string()];
        names.extend(
            config
                .forward
                .claim_headers
                .iter()
                .map(|(h, _)| h.to_string()),
        );
        println!(
            "answers   200 with Cache-Control: no-store and, for an authenticated caller on a \
             non-public route, {} for the proxy to copy; a refusal is 401 (nginx: with Location \
             for a browser navigation when the sign-in page is on; forward: 302) or 403",
            names.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rules = HeaderRules::new(&config.forward, &config.server.trusted_proxies);
    let removed = rules.removed(&headers);
    let mut protected = vec![config.forward.identity_header.to_string()];
    protected.extend(config.forward.issuer_header.iter().map(|h| h.to_string()));
    protected.extend(
        config
            .forward
            .claim_headers
            .iter()
            .map(|(h, _)| h.to_string()),
    );
    println!(
        "removes   {}{}hop-by-hop headers and those named in Connection, any client {} (any case, '_' aliases), \
         the session cookies {} and {} from Cookie",
        removed.join(", "),
        if removed.is_empty() { "" } else { "; always: " },
        protected.join(", "),
        crate::identity::session::ACCESS_COOKIE,
        crate::identity::session::REFRESH_COOKIE,
    );
    let mut injected = Vec::new();
    if route.auth != AuthMode::Public {
        let mut from = Vec::new();
        if config.identity.enabled {
            from.push("sub (self)".to_string());
        }
        from.extend(
            config
                .issuers
                .iter()
                .map(|i| format!("{} ({})", i.identity_claim, i.name)),
        );
        injected.push(format!(
            "{} from {}",
            config.forward.identity_header,
            from.join(", ")
        ));
        injected.extend(
            config
                .forward
                .claim_headers
                .iter()
                .map(|(h, c)| format!("{h} from {c}")),
        );
        if let Some(h) = &config.forward.issuer_header {
            injected.push(format!("{h}: self or the issuer's name"));
        }
    }
    injected.extend(
        [
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "Forwarded",
            "X-Request-Id",
        ]
        .map(String::from),
    );
    println!("injects   {}", injected.join(", "));
    let fwd_path = route.forwarded_path(&canon);
    let q = query.map(|q| format!("?{q}")).unwrap_or_default();
    match up {
        Some(up) => {
            for t in &up.targets {
                println!("forwards  {method} {}://{t}{fwd_path}{q}", up.scheme());
            }
        }
        None => {
            println!("refused   404 not_found when proxied: the route has no upstream (SPEC §15)")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn issuer_label(config: &Config, r: crate::config::IssuerRef) -> String {
    match r {
        crate::config::IssuerRef::SelfIssued => "self".to_string(),
        crate::config::IssuerRef::External(i) => config.issuers[i].name.clone(),
    }
}
