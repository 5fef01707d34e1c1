//! CORS at the edge (SPEC §17): the gateway answers a route's preflights itself
//! (before authentication: a preflight never carries credentials) and sets the
//! allowance on every other response of the route — the upstream's and the
//! gateway's own errors alike — replacing whatever `Access-Control-*` the
//! upstream sent, so that the route's config is the one CORS policy.
//!
//! Origins match exactly (scheme, host, port; scheme and host case-insensitive,
//! default ports dropped): a look-alike such as `https://app.example.com.evil`
//! or the `http://` twin of an `https://` origin is another origin. The allowed
//! origin is echoed, never `*`, so a `"*"` policy (only without credentials)
//! still yields one exact origin per response.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::config::Cors;
use crate::state::Snapshot;

/// `Origin` when `cors` allows it: the value to echo in `Access-Control-Allow-Origin`.
pub fn allowed_origin(cors: &Cors, h: &HeaderMap) -> Option<HeaderValue> {
    let v = h.get(ORIGIN)?;
    let s = v.to_str().ok()?;
    // Browsers serialise origins canonically (lowercase, default port dropped), so
    // the exact comparison is the usual hit; any other spelling is canonicalised.
    // `null` (sandboxed frames, file:, some redirects) parses as no origin.
    let hit = cors.origins.iter().any(|o| o.eq_ignore_ascii_case(s))
        || crate::config::parse_origin(s).is_ok_and(|c| cors.origins.contains(&c))
        || (cors.any_origin && crate::config::parse_origin(s).is_ok());
    hit.then(|| v.clone())
}

/// A preflight for a route with `cors`, answered here: `Some((route, response))`.
/// The route is the one the *requested* method would take, so a route limited
/// to `methods = ["POST"]` still has its preflight answered.
pub fn preflight<B>(
    rt: &Snapshot,
    host: Option<&str>,
    path: &str,
    req: &Request<B>,
) -> Option<(usize, Response<Body>)> {
    if req.method() != Method::OPTIONS || !req.headers().contains_key(ORIGIN) {
        return None;
    }
    let asked = req.headers().get(ACCESS_CONTROL_REQUEST_METHOD)?;
    let method = Method::from_bytes(asked.as_bytes()).ok()?;
    let (idx, route) = rt.router.find(host, &method, path)?;
    let cors = route.cors.as_ref()?;
    let mut resp = Response::new(crate::body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.append(VARY, HeaderValue::from_static("Origin"));
    let origin = allowed_origin(cors, req.headers());
    if let (Some(origin), true, true) = (
        origin,
        cors.methods.contains(&method),
        headers_allowed(cors, req.headers()),
    ) {
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(ACCESS_CONTROL_ALLOW_METHODS, cors.allow_methods.clone());
        if let Some(v) = &cors.allow_headers {
            h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        h.insert(ACCESS_CONTROL_MAX_AGE, cors.max_age_value.clone());
        if cors.credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
    Some((idx, resp))
}

/// Every name in `Access-Control-Request-Headers` is in the policy's `headers`.
fn headers_allowed(cors: &Cors, h: &HeaderMap) -> bool {
    h.get_all(ACCESS_CONTROL_REQUEST_HEADERS).iter().all(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .all(|n| {
                    cors.headers
                        .iter()
                        .any(|a| a.as_str().eq_ignore_ascii_case(n))
                })
        })
    })
}

/// Sets the route's CORS answer on a response: the upstream's `Access-Control-*`
/// removed, then the allowance for `origin` (when it was allowed), and `Vary: Origin`
/// in any case, since the answer depends on it.
pub fn apply(cors: &Cors, origin: Option<HeaderValue>, resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    for name in [
        ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        ACCESS_CONTROL_EXPOSE_HEADERS,
        ACCESS_CONTROL_ALLOW_METHODS,
        ACCESS_CONTROL_ALLOW_HEADERS,
        ACCESS_CONTROL_MAX_AGE,
    ] {
        h.remove(name);
    }
    let varies = h.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("origin"))
        })
    });
    if !varies {
        h.append(VARY, HeaderValue::from_static("Origin"));
    }
    let Some(origin) = origin else { return };
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if cors.credentials {
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(v) = &cors.expose_value {
        h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn policy(origins: &str) -> Cors {
        let text = format!(
            "[[upstream]]\nname = \"app\"\ntargets = [\"http://127.0.0.1:9000\"]\n\n\
             [[route]]\npath = \"/\"\nupstream = \"app\"\ncors = {{ origins = {origins} }}\n"
        );
        let c = Config::load_str(&text, "t.toml", Path::new("/")).unwrap();
        c.routes[0].cors.clone().unwrap()
    }

    fn origin(o: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        h
    }

    #[test]
    fn origins_match_exactly_in_any_canonical_spelling() {
        let c = policy("[\"https://app.example.com\", \"http://127.0.0.1:3000\"]");
        for ok in [
            "https://app.example.com",
            "HTTPS://APP.example.com",
            "https://app.example.com:443",
            "http://127.0.0.1:3000",
        ] {
            assert_eq!(allowed_origin(&c, &origin(ok)).unwrap(), ok);
        }
        for bad in [
            "https://app.example.com.evil",
            "http://app.example.com",
            "https://app.example.com:444",
            "https://x.app.example.com",
            "http://127.0.0.1:3001",
            "null",
            "https://app.example.com/",
        ] {
            assert!(allowed_origin(&c, &origin(bad)).is_none(), "{bad}");
        }
        assert!(allowed_origin(&c, &HeaderMap::new()).is_none());
    }

    #[test]
    fn a_star_policy_echoes_each_real_origin_and_refuses_null() {
        let c = policy("[\"*\"]");
        assert_eq!(
            allowed_origin(&c, &origin("https://any.example")).unwrap(),
            "https://any.example"
        );
        assert!(allowed_origin(&c, &origin("null")).is_none());
    }
}
