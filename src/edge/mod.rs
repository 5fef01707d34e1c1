//! Per-request entry: request id, header limits, path normalisation, dispatch
//! to an identity endpoint, a forward-auth endpoint or a route (the decision
//! itself is `decide`, shared with forward-auth), access log and metrics.

pub mod api_key;
pub mod cors;
pub mod decide;
mod forward_auth;
pub mod normalize;
pub mod route_limit;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderValue, AUTHORIZATION, HOST};
use http::{HeaderMap, Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::body::Body;
use crate::config::{AuthMode, Route};
use crate::error::ApiError;
use crate::header_names::X_REQUEST_ID;
use crate::identity::session;
use crate::proxy::headers::ClientInfo;
use crate::proxy::{forward, Outgoing};
use crate::request::{request_host, ConnInfo};
use crate::state::{App, RouteRef, Snapshot};
use crate::verify::verified::{satisfies, Verified};

/// What the access log says about one request.
#[derive(Default)]
struct Trace {
    path: Option<String>,
    route: Option<RouteRef>,
    /// The upstream (its name) and, once one answered, the target that did.
    upstream: Option<(usize, Option<usize>)>,
    /// The verified caller, or the name an identity endpoint acted for.
    caller: Option<Arc<Verified>>,
    user: Option<String>,
    /// SPEC §18: the request's trace, and whether the client's `traceparent` was valid.
    tc: (crate::trace::TraceContext, bool),
    /// SPEC §17: a CORS route's index and the request's origin when allowed.
    cors: Option<(usize, Option<HeaderValue>)>,
    /// SPEC §17: `RateLimit-Policy` and `RateLimit` of a limited route.
    rate: Option<route_limit::Headers>,
}

/// SPEC §17: remembers a CORS route and the request's origin when it is allowed.
fn note_cors(rt: &Snapshot, index: usize, h: &HeaderMap) -> Option<(usize, Option<HeaderValue>)> {
    let c = rt.router.routes().get(index)?.cors.as_ref()?;
    Some((index, cors::allowed_origin(c, h)))
}

/// SPEC §17: the route's CORS answer and rate-limit headers go on whatever the
/// response is — the upstream's, or the gateway's own 401/403/429/502.
fn apply_route_policies(rt: &Snapshot, trace: &mut Trace, resp: &mut Response<Body>) {
    if let Some(h) = trace.rate.take() {
        route_limit::apply(h, resp);
    }
    if let Some((idx, origin)) = trace.cors.take() {
        if let Some(c) = rt.router.routes().get(idx).and_then(|r| r.cors.as_ref()) {
            cors::apply(c, origin, resp);
        }
    }
}

/// RFC 9112 §3.2: more than one `Host`, or none in an HTTP/1.1 request without an
/// authority, is a 400 — the router could read one host and a backend another.
fn check_host<B>(req: &Request<B>) -> Result<(), ApiError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(ApiError::InvalidRequest("more than one Host header".into())),
        (None, None) if req.version() == Version::HTTP_11 && req.uri().authority().is_none() => {
            Err(ApiError::InvalidRequest(
                "an HTTP/1.1 request needs a Host header".into(),
            ))
        }
        _ => Ok(()),
    }
}

/// `Authorization: Bearer <token>`, scheme case-insensitive. `Ok(None)` when
/// there is no header or another scheme; more than one header is an error.
pub fn bearer(h: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut all = h.get_all(AUTHORIZATION).iter();
    let Some(v) = all.next() else { return Ok(None) };
    if all.next().is_some() {
        return Err(ApiError::InvalidRequest(
            "more than one Authorization header".into(),
        ));
    }
    let s = v
        .to_str()
        .map_err(|_| ApiError::InvalidToken("malformed Authorization header".into()))?;
    let (scheme, rest) = s.split_once(' ').unwrap_or((s, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(ApiError::InvalidToken("empty bearer token".into()));
    }
    Ok(Some(token))
}

/// The route's auth policy (SPEC §4, §10): the verified caller, if any.
pub async fn authorize(
    rt: &Snapshot,
    route: &Route,
    h: &HeaderMap,
) -> Result<Option<Arc<Verified>>, ApiError> {
    if route.auth == AuthMode::Public {
        // A public route never looks at tokens, and never sets identity headers.
        return Ok(None);
    }
    let bearer = bearer(h)?;
    // SPEC §16: a presented API key decides alone (never falls back to a token).
    if let Some(key) = api_key::presented(&rt.config.api_keys, h, bearer)? {
        return api_key::authorize(rt, route, key).map(Some);
    }
    // SPEC §12: the session cookie stands in for a bearer token, but only when
    // there is no Authorization header at all.
    let token = match bearer {
        Some(t) => t,
        None => match session::access_cookie(&rt.config.session, h)? {
            Some(t) => t,
            None if route.auth == AuthMode::Optional => return Ok(None),
            None => return Err(ApiError::MissingToken),
        },
    };
    if !route.credentials.token {
        return Err(ApiError::InvalidToken(
            "this route accepts only API keys".into(),
        ));
    }
    let v = rt.verifier.verify(token).await?;
    // SPEC §10: a route's `issuers` limits which issuers' tokens it accepts.
    if let Some(allowed) = &route.issuers {
        if !allowed.contains(&v.source) {
            return Err(ApiError::InvalidToken(
                "this route does not accept tokens of this issuer".into(),
            ));
        }
    }
    // SPEC §9: after the signature and claims, before the policy; cached
    // verifications pass here too, so the token cache honours revocations.
    // Revocations concern identities authgate issues tokens for: its own users and
    // sessions signed in through a provider (keyed `idp:sub`, SPEC §14), by a key
    // built once per token.
    if let Some(key) = &v.revocation_key {
        rt.revocations
            .check_issued(key, v.issued_ms)
            .map_err(|e| ApiError::InvalidToken(e.to_string()))?;
    }
    if !satisfies(&v.claims, &route.require) {
        return Err(ApiError::InsufficientScope);
    }
    Ok(Some(v))
}

fn header_bytes<B>(req: &Request<B>) -> usize {
    let u = req.uri();
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + u.scheme_str().map_or(0, |s| s.len() + 3)
        + u.authority().map_or(0, |a| a.as_str().len())
        + u.path_and_query().map_or(1, |p| p.as_str().len())
}

/// `a=1&b=2` → `a=***&b=***`: query values may carry secrets.
fn redact_query(q: &str) -> String {
    q.split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) => format!("{k}=***"),
            None => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A request's future, boxed here, once: the state machine is several KiB, and a
/// caller that wraps it (conn.rs adds the connection's release) then moves 16
/// bytes instead of copying the whole state into its own and again into its box.
pub fn serve(
    app: Arc<App>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>> {
    Box::pin(serve_request(app, conn, req))
}

async fn serve_request(
    app: Arc<App>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let rt = app.current.load_full();
    let request_id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if crate::ids::valid_request_id(v.as_bytes()) => v.clone(),
        _ => crate::ids::request_id(),
    };
    let method = req.method().clone();
    let query = req.uri().query().map(redact_query);
    let mut trace = Trace::default();
    trace.tc =
        crate::trace::TraceContext::from_headers(req.headers(), rt.config.telemetry.sample_ratio);
    let mut resp = match dispatch(&rt, &conn, req, &request_id, &mut trace).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(reason) = e.auth_failure_reason() {
                metrics::counter!("authgate_auth_failures_total", "reason" => reason).increment(1);
            }
            if let ApiError::Internal(detail) = &e {
                tracing::error!(request_id = ?request_id, error = %detail, "internal error");
            }
            e.into_response()
        }
    };
    apply_route_policies(&rt, &mut trace, &mut resp);
    resp.headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id.clone());
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    let m = rt.metrics_for(trace.route);
    m.record(status, elapsed.as_secs_f64());
    if crate::logging::access_enabled() {
        let upstream = trace.upstream.map(|(u, t)| {
            let balancer = &rt.upstreams[u];
            match t {
                Some(t) => balancer.targets[t].authority.as_str(),
                None => balancer.name.as_str(),
            }
        });
        let user = match (&trace.caller, &trace.user) {
            (Some(v), _) => v.sub.as_str(),
            (None, Some(u)) => u.as_str(),
            (None, None) => "-",
        };
        crate::logging::write_access(&crate::logging::AccessLine {
            request_id: request_id.to_str().unwrap_or(""),
            method: method.as_str(),
            path: trace.path.as_deref().unwrap_or("-"),
            query: query.as_deref().unwrap_or(""),
            route: m.label(),
            status,
            upstream: upstream.unwrap_or("-"),
            latency_micros: elapsed.as_micros() as u64,
            user,
            peer: conn.peer_text.to_str().unwrap_or("-"),
            trace_id: trace.tc.0.trace_id_str(),
        });
    }
    crate::trace::otlp::finish(
        &trace.tc.0,
        &method,
        m.label(),
        trace.path.as_deref(),
        status,
        elapsed,
    );
    Ok(resp)
}

/// The origin-form target sent upstream: the forwarded (canonical) path and the
/// query. When that is what the client sent, the received bytes are shared rather
/// than copied (the usual case: a canonical path and no `strip_prefix`).
fn upstream_uri(received: &Uri, forwarded_path: &str) -> Result<Uri, ApiError> {
    let query = received.query();
    if let Some(pq) = received
        .path_and_query()
        .filter(|_| forwarded_path == received.path())
    {
        return Ok(Uri::from(pq.clone()));
    }
    let mut pq = String::with_capacity(forwarded_path.len() + query.map_or(0, |q| q.len() + 1));
    pq.push_str(forwarded_path);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    // Exactly sized, so Bytes takes the allocation as it is.
    http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(pq))
        .map(Uri::from)
        // Not reached: the target was checked to be visible ASCII.
        .map_err(|_| ApiError::UpstreamUnavailable)
}

async fn dispatch(
    rt: &Snapshot,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    request_id: &HeaderValue,
    trace: &mut Trace,
) -> Result<Response<Body>, ApiError> {
    if header_bytes(&req) > rt.config.server.max_header_bytes {
        return Err(ApiError::HeadersTooLarge);
    }
    check_host(&req)?;
    // Raw bytes outside visible ASCII in the target (the head reader checks a
    // connection's first request; hyper lets them through on later ones) would be
    // forwarded as bytes a strict HTTP/1.1 parser refuses.
    if let Some(pq) = req.uri().path_and_query() {
        if !pq.as_str().bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ApiError::InvalidRequest(
                "Malformed request: the request target must be visible ASCII (percent-encode other bytes)".into(),
            ));
        }
    }
    // Two Authorization headers mean two parsers may pick different ones.
    if req.headers().get_all(AUTHORIZATION).iter().nth(1).is_some() {
        return Err(ApiError::InvalidRequest(
            "more than one Authorization header".into(),
        ));
    }
    let path = normalize::normalize_path(req.uri().path())
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let path: &str = trace.path.insert(path);
    if let Some(ep) = rt.config.identity_endpoint(path) {
        trace.route = Some(RouteRef::Endpoint(ep));
        // Boxed: the identity endpoints' futures (store calls, hashing) are several
        // KiB, and would otherwise size every proxied request's future, which is
        // copied as it is boxed per request.
        let handled = crate::identity::endpoints::handle(rt, ep, req, conn);
        let (resp, user) =
            Box::pin(crate::audit::scope(request_id, &conn.peer_text, handled)).await?;
        trace.user = user;
        return Ok(resp);
    }
    if let Some(kind) = rt.config.forward_auth_endpoint(path) {
        // SPEC §15: answered here, like the identity endpoints; never forwarded.
        return forward_auth::answer(rt, conn, kind, &req, trace).await;
    }
    let host = request_host(&req);
    // SPEC §17: a CORS preflight is answered here, before authentication.
    if let Some((idx, resp)) = cors::preflight(rt, host, path, &req) {
        trace.route = Some(RouteRef::Route(idx));
        return Ok(resp);
    }
    let ask = decide::Ask {
        host,
        method: req.method(),
        path,
        headers: req.headers(),
        websocket: crate::proxy::is_websocket(&req),
        tls: conn.tls,
        peer: conn.peer.ip(),
        described: false,
    };
    let decide::Allowed {
        index,
        route,
        identity,
    } = match decide::decide(rt, &ask).await {
        Ok(a) => a,
        Err(decide::Refused::NoRoute) => return Err(ApiError::NotFound),
        Err(decide::Refused::Denied { index, error }) => {
            trace.route = Some(RouteRef::Route(index));
            trace.cors = note_cors(rt, index, req.headers());
            return Err(error);
        }
        Err(decide::Refused::SignIn { index, error }) => {
            trace.route = Some(RouteRef::Route(index));
            trace.cors = note_cors(rt, index, req.headers());
            if let Some(reason) = error.auth_failure_reason() {
                metrics::counter!("authgate_auth_failures_total", "reason" => reason).increment(1);
            }
            return Ok(decide::sign_in(rt, path, req.uri().query()));
        }
    };
    trace.route = Some(RouteRef::Route(index));
    trace.cors = note_cors(rt, index, req.headers());
    // SPEC §15: a route without an upstream only answers forward-auth checks.
    let Some(upstream_index) = route.upstream else {
        return Err(ApiError::NotFound);
    };
    trace.caller = identity.clone();
    // SPEC §17: after authentication, so a limit can count per user.
    match route_limit::check(rt, index, identity.as_deref(), conn, req.headers()).await {
        Ok(h) => trace.rate = h,
        Err((e, h)) => {
            trace.rate = Some(h);
            return Err(e.into());
        }
    }
    let uri = upstream_uri(req.uri(), route.forwarded_path(path))?;
    // The Host header as received is shared, not copied; an absolute-form or
    // HTTP/2 authority is made into a value.
    let host_value = match req.uri().authority() {
        Some(_) => host.and_then(|h| HeaderValue::from_str(h).ok()),
        None => req.headers().get(HOST).cloned(),
    };
    let upstream = &rt.upstreams[upstream_index];
    let out = Outgoing {
        upstream,
        rules: &rt.rules,
        uri,
        identity: identity.as_deref(),
        client: ClientInfo {
            peer: conn.peer.ip(),
            peer_text: &conn.peer_text,
            tls: conn.tls,
            host: host_value.as_ref(),
            request_id,
        },
    };
    // SPEC §12: the session cookies never reach a backend.
    session::strip_cookies(req.headers_mut());
    trace.tc.0.write(req.headers_mut(), trace.tc.1);
    // SPEC §16: nor does an API key.
    api_key::strip(&rt.config.api_keys, req.headers_mut());
    trace.upstream = Some((upstream_index, None));
    match forward(out, req).await {
        Ok((resp, target)) => {
            trace.upstream = Some((upstream_index, Some(target)));
            Ok(resp)
        }
        Err(e) => {
            metrics::counter!("authgate_upstream_errors_total", "upstream" => upstream.name.clone(), "kind" => e.kind())
                .increment(1);
            tracing::warn!(upstream = %upstream.name, error = ?e, "upstream request failed");
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_single() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h).unwrap(), None);
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("bEaReR abc.def.ghi"),
        );
        assert_eq!(bearer(&h).unwrap(), Some("abc.def.ghi"));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert_eq!(bearer(&h).unwrap(), None);
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(matches!(bearer(&h), Err(ApiError::InvalidRequest(_))));
    }

    #[test]
    fn the_host_is_the_authority_without_userinfo_else_the_single_host_header() {
        let req = |uri: &str, hosts: &[&str], v: Version| {
            let mut b = Request::builder().uri(uri).version(v);
            for h in hosts {
                b = b.header(HOST, *h);
            }
            b.body(()).unwrap()
        };
        let r = req(
            "http://u:p@api.test:8080/x",
            &["evil.test"],
            Version::HTTP_11,
        );
        assert_eq!(request_host(&r), Some("api.test:8080"));
        assert!(check_host(&r).is_ok());
        let r = req("/x", &["gw.test"], Version::HTTP_11);
        assert_eq!(request_host(&r), Some("gw.test"));
        assert!(check_host(&r).is_ok());
        let r = req("/x", &["a.test", "b.test"], Version::HTTP_11);
        assert!(matches!(check_host(&r), Err(ApiError::InvalidRequest(_))));
        let r = req("/x", &[], Version::HTTP_11);
        assert!(matches!(check_host(&r), Err(ApiError::InvalidRequest(_))));
        assert!(check_host(&req("/x", &[], Version::HTTP_10)).is_ok());
        assert!(check_host(&req("http://a.test/x", &[], Version::HTTP_11)).is_ok());
    }

    #[test]
    fn the_upstream_target_shares_the_received_one_when_it_is_canonical() {
        let received: Uri = "http://gw.test/a/b?x=1".parse().unwrap();
        let u = upstream_uri(&received, "/a/b").unwrap();
        assert_eq!(u, "/a/b?x=1");
        // Shared: the same bytes, not a copy.
        let (a, b) = (
            u.path_and_query().unwrap(),
            received.path_and_query().unwrap(),
        );
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
        assert_eq!(upstream_uri(&received, "/b").unwrap(), "/b?x=1");
        let received: Uri = "/a/./b".parse().unwrap();
        assert_eq!(upstream_uri(&received, "/a/b").unwrap(), "/a/b");
    }

    #[test]
    fn query_values_are_redacted() {
        assert_eq!(
            redact_query("token=abc&page=2&flag"),
            "token=***&page=***&flag"
        );
    }
}
