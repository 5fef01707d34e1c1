//! The one route-and-policy decision (SPEC §2, §4, §10, §12), shared by the proxy
//! (`edge::dispatch`) and the forward-auth endpoints (`edge::forward_auth`), so
//! that what authgate would forward and what it tells a proxy in front may pass
//! can never disagree (SPEC §15). It sees a canonical path and the credentials'
//! headers; it does not read bodies, build responses or forward anything.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{HeaderMap, Method};

use super::authorize;
use crate::config::{AuthMode, Route};
use crate::error::ApiError;
use crate::identity::session;
use crate::state::Snapshot;
use crate::verify::verified::Verified;

/// The request being decided: the proxied request itself, or the original request
/// a proxy in front describes.
pub struct Ask<'a> {
    /// The host it was sent to (port and case are ignored by the router).
    pub host: Option<&'a str>,
    pub method: &'a Method,
    /// Canonical (SPEC §5), without the query: the query takes no part.
    pub path: &'a str,
    /// Where the credentials are: `Authorization`, the session cookie, `Origin`.
    pub headers: &'a HeaderMap,
    /// A WebSocket handshake (the CSRF rule applies to every one).
    pub websocket: bool,
    /// For the CSRF rule's "own origin": the scheme when nothing more is known...
    pub tls: bool,
    /// ...and whether `X-Forwarded-Proto`/`-Host` are believed: from a peer in
    /// `server.trusted_proxies`, or always for a forward-auth description (its
    /// peer was checked against `forward_auth.trusted`).
    pub peer: IpAddr,
    pub described: bool,
}

/// A route that lets this caller through.
pub struct Allowed<'s> {
    pub index: usize,
    pub route: &'s Route,
    /// The verified caller; `None` for anonymous callers and `public` routes.
    pub identity: Option<Arc<Verified>>,
}

/// Why not.
#[derive(Debug)]
pub enum Refused {
    /// No route matches host, method and path (SPEC §2).
    NoRoute,
    /// A browser navigation without a valid session on a required route with the
    /// sign-in page: it goes to the sign-in page (SPEC §12). The error says why.
    SignIn { index: usize, error: ApiError },
    /// The route's policy refuses this caller.
    Denied { index: usize, error: ApiError },
}

/// Route choice, then the CSRF rule for cookie-authenticated unsafe requests, then
/// the route's auth policy; a browser navigation that fails it is a sign-in.
pub async fn decide<'s>(rt: &'s Snapshot, ask: &Ask<'_>) -> Result<Allowed<'s>, Refused> {
    let (index, route) = rt
        .router
        .find(ask.host, ask.method, ask.path)
        .ok_or(Refused::NoRoute)?;
    let denied = |error: ApiError| Refused::Denied { index, error };
    let sessions = &rt.config.session;
    // SPEC §12: a request authenticated by the session cookie obeys the CSRF rule
    // when its method is unsafe or it opens a WebSocket.
    if route.auth != AuthMode::Public
        && session::needs_csrf_check(ask.method, ask.websocket)
        && session::access_cookie(sessions, ask.headers)
            .map_err(|e| denied(e.into()))?
            .is_some()
    {
        let trusted = ask.described || rt.rules.is_trusted(ask.peer);
        let own = session::own_origin(ask.headers, ask.host, ask.tls, trusted);
        session::check_csrf(ask.headers, own.as_deref(), &sessions.allowed_origins)
            .map_err(|e| denied(e.into()))?;
    }
    match authorize(rt, route, ask.headers).await {
        Ok(identity) => Ok(Allowed {
            index,
            route,
            identity,
        }),
        // SPEC §12: a browser navigation without a valid session goes to the
        // sign-in page; API clients keep the 401.
        Err(error @ (ApiError::MissingToken | ApiError::InvalidToken(_)))
            if (sessions.login_page || rt.config.sole_provider().is_some())
                && route.auth == AuthMode::Required
                && !ask.headers.contains_key(AUTHORIZATION)
                && session::is_navigation(ask.method, ask.headers) =>
        {
            Err(Refused::SignIn { index, error })
        }
        Err(error) => Err(denied(error)),
    }
}

/// Where a browser navigation refused for want of a session goes (SPEC §12, §14):
/// the sign-in page with `return_to`, or, with no password form and exactly one
/// provider, straight to that provider's sign-in. The proxy and forward-auth both
/// send it here, so they agree.
pub fn sign_in(
    rt: &Snapshot,
    path: &str,
    query: Option<&str>,
) -> http::Response<crate::body::Body> {
    match rt.config.sole_provider() {
        Some(name) => session::provider_redirect(name, path, query),
        None => session::login_redirect(&rt.config.identity.paths.login, path, query),
    }
}
