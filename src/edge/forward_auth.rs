//! Forward-auth (SPEC §15): a proxy in front (nginx `auth_request`, Traefik
//! ForwardAuth, Caddy `forward_auth`) describes the original request in headers and
//! asks whether it may pass. This module owns reading that description — only from
//! a peer in `forward_auth.trusted` — and turning `decide`'s answer into what each
//! proxy understands. The decision itself is `edge::decide`, the proxy's own.

use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, HOST, LOCATION};
use http::{HeaderMap, Method, Request, Response, StatusCode};

use super::decide::{decide, Allowed, Ask, Refused};
use super::normalize::normalize_path;
use super::Trace;
use crate::body::{empty, Body};
use crate::config::ForwardAuthKind;
use crate::error::ApiError;
use crate::header_names::{X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::request::ConnInfo;
use crate::state::{RouteRef, Snapshot};

static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// Why a description was not believed; every one of them is a 403 (fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    #[error("the peer is not in forward_auth.trusted")]
    Untrusted,
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} is sent more than once")]
    Repeated(&'static str),
    #[error("{0} is not valid")]
    Unparsable(&'static str),
    #[error("the original path is ambiguous (SPEC §5)")]
    Path,
}

impl From<DescriptionError> for ApiError {
    fn from(e: DescriptionError) -> ApiError {
        // Not 400: nginx's auth_request understands only 200, 401 and 403, and a
        // refused description must never read as "allowed" to any proxy.
        ApiError::Forbidden(e.to_string())
    }
}

impl DescriptionError {
    fn outcome(self) -> &'static str {
        match self {
            DescriptionError::Untrusted => "untrusted",
            _ => "invalid",
        }
    }
}

/// The original request as the proxy in front describes it.
struct Described<'a> {
    method: Method,
    /// Canonical path, the query cut off first.
    path: String,
    host: Option<&'a str>,
    tls: bool,
}

/// The one value of a header: absent and repeated are both refusals.
fn single<'a>(
    h: &'a HeaderMap,
    name: &HeaderName,
    label: &'static str,
) -> Result<Option<&'a HeaderValue>, DescriptionError> {
    let mut all = h.get_all(name).iter();
    match (all.next(), all.next()) {
        (_, Some(_)) => Err(DescriptionError::Repeated(label)),
        (v, None) => Ok(v),
    }
}

fn describe<'a>(
    kind: ForwardAuthKind,
    h: &'a HeaderMap,
) -> Result<Described<'a>, DescriptionError> {
    let (method_h, uri_h, method_l, uri_l) = match kind {
        ForwardAuthKind::Nginx => (
            &X_ORIGINAL_METHOD,
            &X_ORIGINAL_URI,
            "X-Original-Method",
            "X-Original-URI",
        ),
        ForwardAuthKind::Forward => (
            &X_FORWARDED_METHOD,
            &X_FORWARDED_URI,
            "X-Forwarded-Method",
            "X-Forwarded-Uri",
        ),
    };
    let method = single(h, method_h, method_l)?.ok_or(DescriptionError::Missing(method_l))?;
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| DescriptionError::Unparsable(method_l))?;
    let uri = single(h, uri_h, uri_l)?.ok_or(DescriptionError::Missing(uri_l))?;
    // The same rule as a request target (edge::dispatch): visible ASCII only.
    let uri = uri
        .to_str()
        .ok()
        .filter(|u| u.starts_with('/') && u.bytes().all(|b| (0x21..=0x7e).contains(&b)))
        .ok_or(DescriptionError::Unparsable(uri_l))?;
    // SPEC §15: the query (and any fragment) takes no part in the decision; it is
    // cut off before the path is normalised, so `?x=/admin` names nothing.
    let raw_path = uri.split(['?', '#']).next().unwrap_or("");
    let path = normalize_path(raw_path).map_err(|_| DescriptionError::Path)?;
    let host = match single(h, &X_FORWARDED_HOST, "X-Forwarded-Host")? {
        Some(v) => Some(v),
        None => single(h, &HOST, "Host")?,
    }
    .map(|v| v.to_str().map_err(|_| DescriptionError::Unparsable("host")))
    .transpose()?;
    let tls = single(h, &X_FORWARDED_PROTO, "X-Forwarded-Proto")?
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    Ok(Described {
        method,
        path,
        host,
        tls,
    })
}

/// The forward-auth endpoint's answer. Never an `Err`: every refusal is shaped
/// here for the proxy asking, and counted in `authgate_forward_auth_total`.
pub(super) async fn answer<B>(
    rt: &Snapshot,
    conn: &ConnInfo,
    kind: ForwardAuthKind,
    req: &Request<B>,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    trace.route = Some(RouteRef::ForwardAuth);
    let (resp, route, outcome) = check(rt, conn, kind, req, trace).await;
    let label = match route {
        Some(i) => rt.metrics_for(Some(RouteRef::Route(i))).label().to_string(),
        None => "none".to_string(),
    };
    metrics::counter!("authgate_forward_auth_total", "route" => label, "outcome" => outcome)
        .increment(1);
    Ok(resp)
}

async fn check<B>(
    rt: &Snapshot,
    conn: &ConnInfo,
    kind: ForwardAuthKind,
    req: &Request<B>,
    trace: &mut Trace,
) -> (Response<Body>, Option<usize>, &'static str) {
    let h = req.headers();
    // The TCP peer, never a header: anyone else could describe any request.
    let trusted = rt
        .config
        .forward_auth
        .as_ref()
        .is_some_and(|fa| fa.trusted.iter().any(|c| c.contains(conn.peer.ip())));
    let described = if trusted {
        describe(kind, h)
    } else {
        Err(DescriptionError::Untrusted)
    };
    let d = match described {
        Ok(d) => d,
        Err(e) => {
            tracing::info!(peer = %conn.peer, reason = %e, "forward-auth description refused");
            return (refusal(kind, e.into()), None, e.outcome());
        }
    };
    let ask = Ask {
        host: d.host,
        method: &d.method,
        path: &d.path,
        headers: h,
        websocket: false,
        tls: d.tls,
        peer: conn.peer.ip(),
        described: true,
    };
    match decide(rt, &ask).await {
        Ok(Allowed {
            index, identity, ..
        }) => {
            // SPEC §17: the route's limit is part of the decision, counted once per
            // check as the proxy counts once per request. nginx's auth_request
            // knows only 401 and 403, so there the 429 becomes a 403 (`refusal`).
            let rate =
                match super::route_limit::check(rt, index, identity.as_deref(), conn, h).await {
                    Ok(rate) => rate,
                    Err((e, headers)) => {
                        let mut r = refusal(kind, e.into());
                        super::route_limit::apply(headers, &mut r);
                        return (r, Some(index), "rate_limited");
                    }
                };
            let mut r = Response::new(empty());
            if let Some(headers) = rate {
                super::route_limit::apply(headers, &mut r);
            }
            let out = r.headers_mut();
            out.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            // SPEC §15: the identity, claim and issuer headers for the proxy to
            // copy (the verifier puts every header it derives in
            // `Verified::headers`); none for anonymous callers and public routes.
            if let Some(v) = &identity {
                for (name, value) in &v.headers {
                    out.append(name.clone(), value.clone());
                }
            }
            trace.caller = identity;
            (r, Some(index), "allowed")
        }
        Err(Refused::NoRoute) => (
            refusal(
                kind,
                ApiError::Forbidden("no route matches the original request".into()),
            ),
            None,
            "no_route",
        ),
        Err(Refused::SignIn { index, error }) => {
            let redirect = super::decide::sign_in(rt, &d.path, req_query(h, kind));
            let r = match kind {
                // nginx's auth_request passes 401 and 403 only: the sign-in URL
                // rides on the 401 for `error_page 401` to send the browser to.
                ForwardAuthKind::Nginx => {
                    let mut r = error.into_response();
                    if let Some(l) = redirect.headers().get(LOCATION) {
                        r.headers_mut().insert(LOCATION, l.clone());
                    }
                    r.headers_mut()
                        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    r
                }
                ForwardAuthKind::Forward => redirect,
            };
            (r, Some(index), "unauthenticated")
        }
        Err(Refused::Denied { index, error }) => {
            let outcome = if error.status() == StatusCode::UNAUTHORIZED {
                "unauthenticated"
            } else {
                "forbidden"
            };
            (refusal(kind, error), Some(index), outcome)
        }
    }
}

/// The original query, for the sign-in page's `return_to` only.
fn req_query(h: &HeaderMap, kind: ForwardAuthKind) -> Option<&str> {
    let name = match kind {
        ForwardAuthKind::Nginx => &X_ORIGINAL_URI,
        ForwardAuthKind::Forward => &X_FORWARDED_URI,
    };
    let uri = h.get(name)?.to_str().ok()?;
    let q = uri.split_once('?')?.1;
    Some(q.split('#').next().unwrap_or(q))
}

/// A refusal as the asking proxy understands it: nginx only 401 or 403 (anything
/// else `auth_request` turns into a 500), the forward dialect 401/403 or a 5xx
/// that says the gateway cannot decide now, or a 429 over a route's limit — never
/// a 2xx or 3xx.
fn refusal(kind: ForwardAuthKind, e: ApiError) -> Response<Body> {
    let status = e.status();
    let keep = status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || (kind == ForwardAuthKind::Forward
            && (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS));
    let mut r = e.into_response();
    if !keep {
        *r.status_mut() = StatusCode::FORBIDDEN;
    }
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in lines {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_query_is_cut_off_before_the_path_is_normalised() {
        let h = headers(&[
            ("x-original-method", "GET"),
            ("x-original-uri", "/public?x=/../admin"),
            ("host", "gw.test"),
        ]);
        let d = describe(ForwardAuthKind::Nginx, &h).unwrap();
        assert_eq!(d.path, "/public");
        assert_eq!(d.method, Method::GET);
        assert_eq!(d.host, Some("gw.test"));
        let h = headers(&[
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/a//b/../c#/admin"),
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-proto", "https"),
            ("host", "authgate.internal"),
        ]);
        let d = describe(ForwardAuthKind::Forward, &h).unwrap();
        assert_eq!(d.path, "/a/c");
        assert_eq!(d.host, Some("app.test"));
        assert!(d.tls);
    }

    #[test]
    fn a_missing_repeated_or_ambiguous_description_is_refused() {
        let ok = [("x-original-method", "GET"), ("x-original-uri", "/a")];
        assert!(describe(ForwardAuthKind::Nginx, &headers(&ok)).is_ok());
        assert_eq!(
            describe(ForwardAuthKind::Forward, &headers(&ok)).err(),
            Some(DescriptionError::Missing("X-Forwarded-Method"))
        );
        for (bad, want) in [
            (
                vec![("x-original-uri", "/a")],
                DescriptionError::Missing("X-Original-Method"),
            ),
            (
                vec![
                    ("x-original-method", "GET"),
                    ("x-original-method", "GET"),
                    ("x-original-uri", "/a"),
                ],
                DescriptionError::Repeated("X-Original-Method"),
            ),
            (
                vec![
                    ("x-original-method", "GET"),
                    ("x-original-uri", "/a"),
                    ("x-original-uri", "/b"),
                ],
                DescriptionError::Repeated("X-Original-URI"),
            ),
            (
                vec![("x-original-method", "G T"), ("x-original-uri", "/a")],
                DescriptionError::Unparsable("X-Original-Method"),
            ),
            (
                vec![("x-original-method", "GET"), ("x-original-uri", "a")],
                DescriptionError::Unparsable("X-Original-URI"),
            ),
            (
                vec![("x-original-method", "GET"), ("x-original-uri", "/a%2fb")],
                DescriptionError::Path,
            ),
            (
                vec![("x-original-method", "GET"), ("x-original-uri", "/a%00")],
                DescriptionError::Path,
            ),
            (
                vec![("x-original-method", "GET"), ("x-original-uri", "/../a")],
                DescriptionError::Path,
            ),
            (
                vec![
                    ("x-original-method", "GET"),
                    ("x-original-uri", "/a"),
                    ("x-forwarded-host", "a"),
                    ("x-forwarded-host", "b"),
                ],
                DescriptionError::Repeated("X-Forwarded-Host"),
            ),
        ] {
            assert_eq!(
                describe(ForwardAuthKind::Nginx, &headers(&bad)).err(),
                Some(want),
                "{bad:?}"
            );
        }
    }
}
