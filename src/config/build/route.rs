//! `[[route]]`: path, host, methods, auth policy, required claims, and its upstream
//! (absent: the route only answers forward-auth checks, SPEC §15).

use super::*;

pub(super) fn route(
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
            "issuers",
            "credentials",
            "rate_limit",
            "cors",
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
        // SPEC §15: a route without an upstream only answers forward-auth checks.
        None => None,
    };
    // `Some(None)`: no upstream key; `None`: a key naming no upstream (reported).
    let upstream = match Reader::field(t, "upstream") {
        None => Some(None),
        Some(_) => upstream.map(Some),
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
    let credentials = crate::config::build::api_keys::credentials(r, t, p);
    let rate_limit = super::route_policy::rate_limit(r, t, p);
    let cors = super::route_policy::cors(r, t, p);
    Some(Route {
        path: path?,
        upstream: upstream?,
        auth,
        methods,
        host,
        require,
        strip_prefix,
        issuers: None,
        credentials,
        rate_limit,
        cors,
    })
}
