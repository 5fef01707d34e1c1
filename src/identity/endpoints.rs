//! Which front-end answers an identity endpoint (SPEC §3, §12): JWKS, the sign-in
//! page, the JSON endpoints, or the browser's cookie-based refresh and logout.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use super::input::has_media_type;
use super::{browser, json, oidc};
use crate::body::Body;
use crate::config::IdentityEndpoint;
use crate::error::ApiError;
use crate::request::ConnInfo;
use crate::state::Snapshot;

/// Handles one identity endpoint. Returns the response and, when known, the user.
pub async fn handle(
    rt: &Snapshot,
    which: IdentityEndpoint,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    let ip = conn.peer.ip();
    let session = &rt.config.session;
    if which == IdentityEndpoint::Jwks {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(ApiError::MethodNotAllowed("GET, HEAD"));
        }
        let mut r = Response::new(crate::body::full(rt.jwks.clone()));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r.headers_mut().insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        return Ok((r, None));
    }
    // SPEC §14: sign-in through a provider.
    match which {
        IdentityEndpoint::OidcStart => return oidc::flow::start(rt, &req).await,
        IdentityEndpoint::OidcCallback => return oidc::flow::callback(rt, &req).await,
        IdentityEndpoint::BackchannelLogout => return oidc::logout::backchannel(rt, req).await,
        _ => {}
    }
    // SPEC §12: with the sign-in page on, /login also answers GET (the form).
    let page = which == IdentityEndpoint::Login && session.login_page;
    if page && (req.method() == Method::GET || req.method() == Method::HEAD) {
        return Ok((browser::page(rt, &req), None));
    }
    if req.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed(if page {
            "GET, HEAD, POST"
        } else {
            "POST"
        }));
    }
    // SPEC §12: a refresh or logout without a body uses the cookies.
    let by_cookie = session.cookie && browser::bodiless(&req);
    match which {
        IdentityEndpoint::Register => json::register(rt, req, ip).await,
        // SPEC §14: without the built-in identity there are no password accounts.
        IdentityEndpoint::Login if !rt.config.identity.enabled => Err(ApiError::NotFound),
        IdentityEndpoint::Login
            if session.cookie && has_media_type(&req, "application/x-www-form-urlencoded") =>
        {
            browser::form_login(rt, req, conn).await
        }
        IdentityEndpoint::Login => json::login(rt, req, conn).await,
        IdentityEndpoint::Refresh if by_cookie => browser::refresh(rt, req, conn).await,
        IdentityEndpoint::Refresh => json::refresh(rt, req).await,
        IdentityEndpoint::Logout if by_cookie => browser::logout(rt, req, conn).await,
        IdentityEndpoint::Logout => json::logout(rt, req).await,
        IdentityEndpoint::Jwks
        | IdentityEndpoint::OidcStart
        | IdentityEndpoint::OidcCallback
        | IdentityEndpoint::BackchannelLogout => unreachable_jwks(),
    }
}

fn unreachable_jwks() -> Result<(Response<Body>, Option<String>), ApiError> {
    Err(ApiError::NotFound)
}
