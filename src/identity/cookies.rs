//! A token pair as session cookies, and the CSRF rule applied to one request (SPEC
//! §12): shared by the browser forms, the JSON login with `"session": true`, and
//! the dispatcher's check on cookie-authenticated requests.

use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, SET_COOKIE};
use http::{Request, Response, StatusCode};
use serde_json::json;

use super::core::TokenPair;
use super::session::{
    check_csrf, clear_cookie, own_origin, set_cookie, SessionError, ACCESS_COOKIE, REFRESH_COOKIE,
};
use crate::body::{json, Body};
use crate::request::{request_host, ConnInfo};
use crate::state::Snapshot;

/// The CSRF rule for this request, with the gateway's own origin worked out
/// from the listener and `Host` (see `session::own_origin`).
pub fn csrf<B>(rt: &Snapshot, req: &Request<B>, conn: &ConnInfo) -> Result<(), SessionError> {
    let trusted = rt.rules.is_trusted(conn.peer.ip());
    let own = own_origin(req.headers(), request_host(req), conn.tls, trusted);
    check_csrf(
        req.headers(),
        own.as_deref(),
        &rt.config.session.allowed_origins,
    )
}

/// Both session cookies for a fresh pair.
pub(crate) fn set_session_cookies(rt: &Snapshot, h: &mut HeaderMap, pair: &TokenPair) {
    let t = &rt.config.tokens;
    h.append(
        SET_COOKIE,
        set_cookie(ACCESS_COOKIE, &pair.access, t.access_ttl.as_secs()),
    );
    h.append(
        SET_COOKIE,
        set_cookie(REFRESH_COOKIE, &pair.refresh, t.refresh_ttl.as_secs()),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub fn clear_session_cookies(h: &mut HeaderMap) {
    h.append(SET_COOKIE, clear_cookie(ACCESS_COOKIE));
    h.append(SET_COOKIE, clear_cookie(REFRESH_COOKIE));
}

/// 200 for a JSON login with `"session": true` or a cookie refresh: the tokens
/// go in the cookies only, never in the body, so page script never sees them.
pub(crate) fn session_response(rt: &Snapshot, pair: &TokenPair, username: &str) -> Response<Body> {
    let body = json!({ "session": true, "username": username, "expires_in": rt.config.tokens.access_ttl.as_secs() });
    let mut r = json(StatusCode::OK, &body);
    set_session_cookies(rt, r.headers_mut(), pair);
    r
}
