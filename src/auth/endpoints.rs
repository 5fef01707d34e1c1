//! The identity endpoints the gateway answers itself (SPEC §3).

use std::net::IpAddr;

use aws_lc_rs::digest::{digest, SHA256};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::passwords::{needs_rehash, PoolError};
use crate::body::{empty, json, Body};
use crate::config::IdentityEndpoint;
use crate::edge::error::ApiError;
use crate::edge::ConnInfo;
use crate::state::Runtime;
use crate::store::{Rotation, StoreError, User, UserStore};

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> ApiError {
        match e {
            PoolError::Full => ApiError::Overloaded { retry_after: 1 },
            PoolError::Failed(m) => ApiError::Internal(m),
        }
    }
}

/// Runs a store call off the event loop (SPEC §13), bounded by
/// `identity.store_timeout`: a dead or silent store is a 503 `store_unavailable`
/// with `Retry-After`, never a hang or a 500 (SPEC §9).
async fn store<T: Send + 'static>(
    rt: &Runtime,
    f: impl FnOnce(&dyn UserStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let s = rt.store.clone();
    let limit = rt.config.identity.store_timeout;
    let retry_after = limit.as_secs_f64().ceil().max(1.0) as u64;
    let unavailable = |why: String| {
        tracing::warn!(error = %why, "user store unavailable");
        ApiError::StoreUnavailable { retry_after }
    };
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(move || f(s.as_ref()))).await {
        Err(_) => Err(unavailable(format!(
            "no answer within {}ms",
            limit.as_millis()
        ))),
        Ok(Err(e)) => Err(ApiError::Internal(e.to_string())),
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(StoreError::Conflict))) => Err(ApiError::UserExists),
        Ok(Ok(Err(StoreError::Unavailable(why)))) => Err(unavailable(why)),
        Ok(Ok(Err(StoreError::Backend(m)))) => Err(ApiError::Internal(m)),
    }
}

/// SPEC §3: usernames are 3–64 characters of `a-z 0-9 . _ @ -`, lowercased on input.
pub fn normalize_username(raw: &str) -> Result<String, ApiError> {
    // ASCII folding only: Unicode lowercasing maps KELVIN SIGN (U+212A) to 'k',
    // which would let a character outside the allowed set through.
    let u = raw.to_ascii_lowercase();
    let ok = (3..=64).contains(&u.chars().count())
        && u.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'@' | b'-')
        });
    if ok {
        Ok(u)
    } else {
        Err(ApiError::InvalidRequest(
            "username must be 3-64 characters of a-z, 0-9, '.', '_', '@', '-'".into(),
        ))
    }
}

/// Is the body of this media type (parameters such as `; charset=utf-8` aside)?
pub(crate) fn has_media_type(req: &Request<Incoming>, media: &str) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(media))
}

/// Reads a JSON object body within `identity.max_body`.
async fn read_json(
    rt: &Runtime,
    req: Request<Incoming>,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    if !has_media_type(&req, "application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = read_body(rt, req).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiError::InvalidRequest(
            "the body must be a JSON object".into(),
        )),
    }
}

/// Reads a whole body within `identity.max_body`.
pub(crate) async fn read_body(rt: &Runtime, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let max = rt.config.identity.max_body;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge),
        Err(_) => Err(ApiError::InvalidRequest(
            "the request body could not be read".into(),
        )),
    }
}

fn string_field(m: &serde_json::Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match m.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(ApiError::InvalidRequest(format!(
            "\"{key}\" must be a string"
        ))),
    }
}

fn sha256_hex(s: &str) -> String {
    crate::ids::hex(digest(&SHA256, s.as_bytes()).as_ref())
}

pub(crate) fn no_store(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Handles one identity endpoint. Returns the response and, when known, the user.
pub async fn handle(
    rt: &Runtime,
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
    // SPEC §12: with the sign-in page on, /login also answers GET (the form).
    let page = which == IdentityEndpoint::Login && session.login_page;
    if page && (req.method() == Method::GET || req.method() == Method::HEAD) {
        return Ok((super::browser::page(rt, &req), None));
    }
    if req.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed(if page {
            "GET, HEAD, POST"
        } else {
            "POST"
        }));
    }
    // SPEC §12: a refresh or logout without a body uses the cookies.
    let by_cookie = session.cookie && super::browser::bodiless(&req);
    match which {
        IdentityEndpoint::Register => register(rt, req, ip).await,
        IdentityEndpoint::Login => login(rt, req, conn).await,
        IdentityEndpoint::Refresh if by_cookie => super::browser::refresh(rt, req, conn).await,
        IdentityEndpoint::Refresh => refresh(rt, req).await,
        IdentityEndpoint::Logout if by_cookie => super::browser::logout(rt, req, conn).await,
        IdentityEndpoint::Logout => logout(rt, req).await,
        IdentityEndpoint::Jwks => unreachable_jwks(),
    }
}

fn unreachable_jwks() -> Result<(Response<Body>, Option<String>), ApiError> {
    Err(ApiError::NotFound)
}

fn outcome(kind: &'static str, o: &'static str) {
    metrics::counter!(kind, "outcome" => o).increment(1);
}

async fn register(
    rt: &Runtime,
    req: Request<Incoming>,
    ip: IpAddr,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    let r = register_inner(rt, req, ip).await;
    outcome(
        "authgate_registrations_total",
        match &r {
            Ok(_) => "created",
            Err(ApiError::UserExists) => "exists",
            Err(ApiError::RateLimited { .. }) => "rate_limited",
            Err(ApiError::RegistrationClosed) => "closed",
            Err(ApiError::Internal(_))
            | Err(ApiError::Overloaded { .. })
            | Err(ApiError::StoreUnavailable { .. }) => "error",
            Err(_) => "invalid",
        },
    );
    r
}

async fn register_inner(
    rt: &Runtime,
    req: Request<Incoming>,
    ip: IpAddr,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    let id = &rt.config.identity;
    if !id.registration_open {
        return Err(ApiError::RegistrationClosed);
    }
    rt.limits
        .register_ip(ip)
        .await
        .map_err(|s| ApiError::RateLimited { retry_after: s })?;
    let body = read_json(rt, req).await?;
    let username = normalize_username(&string_field(&body, "username")?)?;
    let password = string_field(&body, "password")?;
    let chars = password.chars().count();
    if chars < id.min_password_length || chars > id.max_password_length {
        return Err(ApiError::InvalidRequest(format!(
            "password must be {} to {} characters",
            id.min_password_length, id.max_password_length
        )));
    }
    let hash = rt.passwords.hash(password).await?;
    let u = username.clone();
    store(rt, move |s| s.create_user(&u, &hash, &[])).await?;
    tracing::info!(user = %username, "registered");
    let body = json!({ "message": "User registered successfully", "username": username });
    Ok((json(StatusCode::CREATED, &body), Some(username)))
}

async fn login(
    rt: &Runtime,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    if rt.config.session.cookie && has_media_type(&req, "application/x-www-form-urlencoded") {
        return super::browser::form_login(rt, req, conn).await;
    }
    let r = login_inner(rt, req, conn).await;
    count_login(&r);
    r
}

/// `authgate_logins_total{outcome}` for one login, JSON or form.
pub(crate) fn count_login<T>(r: &Result<T, ApiError>) {
    outcome(
        "authgate_logins_total",
        match r {
            Ok(_) => "success",
            Err(ApiError::InvalidCredentials) => "invalid_credentials",
            Err(ApiError::RateLimited { .. }) => "rate_limited",
            Err(ApiError::Internal(_))
            | Err(ApiError::Overloaded { .. })
            | Err(ApiError::StoreUnavailable { .. }) => "error",
            Err(_) => "invalid_request",
        },
    );
}

/// `login_per_ip`: every attempt counts, failed or not.
pub(crate) async fn check_login_ip(rt: &Runtime, ip: IpAddr) -> Result<(), ApiError> {
    rt.limits
        .login_ip(ip)
        .await
        .map_err(|s| ApiError::RateLimited { retry_after: s })
}

async fn login_inner(
    rt: &Runtime,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    check_login_ip(rt, conn.peer.ip()).await?;
    // Decided before the body is read (the headers go with the request).
    let csrf = super::browser::csrf(rt, &req, conn);
    let body = read_json(rt, req).await?;
    let raw_user = string_field(&body, "username")?;
    let password = string_field(&body, "password")?;
    // SPEC §12: `"session": true` puts the tokens in cookies instead of the body.
    let session = match body.get("session") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "\"session\" must be true or false".into(),
            ))
        }
    };
    if session {
        if !rt.config.session.cookie {
            return Err(ApiError::InvalidRequest(
                "browser sessions are off on this gateway (session.cookie = false)".into(),
            ));
        }
        // A login that sets cookies obeys the CSRF rule (login CSRF).
        csrf?;
    }
    let user = authenticate(rt, &raw_user, password).await?;
    let pair = issue_pair(rt, &user.username, &user.roles, None).await?;
    let resp = if session {
        super::browser::session_response(rt, &pair, &user.username)
    } else {
        no_store(json(StatusCode::OK, &pair.body(rt)))
    };
    Ok((resp, Some(user.username)))
}

/// Checks a username and password under `login_per_user` (SPEC §3, §8): the
/// shared core of the JSON and the form login.
pub(crate) async fn authenticate(
    rt: &Runtime,
    raw_user: &str,
    password: String,
) -> Result<User, ApiError> {
    if password.chars().count() > rt.config.identity.max_password_length {
        return Err(ApiError::InvalidRequest("password too long".into()));
    }
    // A malformed name cannot exist: it still costs a full hash (no user probing).
    let username = normalize_username(raw_user).ok();
    let limit_key = username.clone().unwrap_or_else(|| raw_user.to_lowercase());
    // Reserve this attempt's failure before hashing: a peek-then-count would let
    // concurrent guesses all pass before the first failure is counted.
    // SPEC §9: with Redis this reservation (and its refund) is shared by every gateway.
    let mut reserved = rt
        .limits
        .reserve_login_user(&limit_key)
        .await
        .map_err(|s| ApiError::RateLimited { retry_after: s })?;
    let user = match &username {
        Some(u) => {
            let u = u.clone();
            store(rt, move |s| s.get_user(&u)).await?
        }
        None => None,
    };
    let ok = rt
        .passwords
        .verify(
            password.clone(),
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await?;
    let user = match (ok, user) {
        (true, Some(u)) => u,
        _ => {
            // Only failures count toward the per-user limit: this one stays counted.
            if let Some(r) = reserved.as_mut() {
                r.failed();
            }
            // Only a well-formed name is logged: raw input could forge log lines
            // (CR/LF) or be a password typed into the name field.
            tracing::info!(user = username.as_deref().unwrap_or("-"), "login failed");
            return Err(ApiError::InvalidCredentials);
        }
    };
    if needs_rehash(rt.passwords.params(), &user.password_hash) {
        // Parameters changed in config: upgrade the stored hash now that we know the password.
        if let Ok(h) = rt.passwords.hash(password).await {
            let name = user.username.clone();
            if let Err(e) = store(rt, move |s| s.set_password(&name, &h)).await {
                tracing::warn!(user = %user.username, error = %e, "could not upgrade password hash");
            }
        }
    }
    Ok(user)
}

/// An access token and the refresh token issued with it.
pub(crate) struct TokenPair {
    pub access: String,
    pub refresh: String,
}

impl TokenPair {
    /// The JSON body of a login or refresh (SPEC §3).
    pub fn body(&self, rt: &Runtime) -> Value {
        json!({
            "access_token": self.access,
            "token_type": "Bearer",
            "expires_in": rt.config.tokens.access_ttl.as_secs(),
            "refresh_token": self.refresh,
        })
    }
}

/// A new access token and refresh token; `rotated` continues a rotation chain.
pub(crate) async fn issue_pair(
    rt: &Runtime,
    username: &str,
    roles: &[String],
    rotated: Option<String>,
) -> Result<TokenPair, ApiError> {
    let issuer = rt
        .issuer
        .as_ref()
        .ok_or_else(|| ApiError::Internal("the built-in identity is disabled".into()))?;
    let access = issuer
        .issue(username, roles)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let refresh = match rotated {
        Some(r) => r,
        None => {
            let refresh = crate::ids::b64url(&crate::ids::random_bytes::<32>());
            let hash = sha256_hex(&refresh);
            let family = crate::ids::hex(&crate::ids::random_bytes::<16>());
            let user = username.to_string();
            let exp = super::jwt::now_secs() + rt.config.tokens.refresh_ttl.as_secs();
            store(rt, move |s| s.insert_refresh(&hash, &family, &user, exp)).await?;
            refresh
        }
    };
    Ok(TokenPair { access, refresh })
}

async fn refresh(
    rt: &Runtime,
    req: Request<Incoming>,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    let body = read_json(rt, req).await?;
    let old = string_field(&body, "refresh_token")?;
    let (username, pair) = rotate(rt, &old).await?;
    Ok((
        no_store(json(StatusCode::OK, &pair.body(rt))),
        Some(username),
    ))
}

/// Spends a refresh token and issues the next pair of its family (SPEC §3).
pub(crate) async fn rotate(rt: &Runtime, old: &str) -> Result<(String, TokenPair), ApiError> {
    let new = crate::ids::b64url(&crate::ids::random_bytes::<32>());
    let (old_h, new_h) = (sha256_hex(old), sha256_hex(&new));
    let now = super::jwt::now_secs();
    let exp = now + rt.config.tokens.refresh_ttl.as_secs();
    let username = match store(rt, move |s| s.rotate_refresh(&old_h, &new_h, now, exp)).await? {
        Rotation::Rotated { username } => username,
        Rotation::Reused => {
            tracing::warn!(
                "spent refresh token presented again: family and the user's tokens revoked"
            );
            return Err(ApiError::InvalidGrant);
        }
        Rotation::Invalid => return Err(ApiError::InvalidGrant),
    };
    // Roles are read fresh, so `users set-roles` applies from the next refresh.
    let u = username.clone();
    let user = store(rt, move |s| s.get_user(&u))
        .await?
        .ok_or(ApiError::InvalidGrant)?;
    let pair = issue_pair(rt, &user.username, &user.roles, Some(new)).await?;
    Ok((username, pair))
}

async fn logout(
    rt: &Runtime,
    req: Request<Incoming>,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    let body = read_json(rt, req).await?;
    let token = string_field(&body, "refresh_token")?;
    // SPEC §9: `"everywhere": true` revokes every session of the token's user.
    let everywhere = match body.get("everywhere") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "\"everywhere\" must be true or false".into(),
            ))
        }
    };
    let username = revoke(rt, &token).await?;
    if everywhere {
        revoke_everywhere(rt, &username).await?;
    }
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok((r, Some(username)))
}

/// Revokes the family of a refresh token (SPEC §3 logout); its user.
pub(crate) async fn revoke(rt: &Runtime, token: &str) -> Result<String, ApiError> {
    let h = sha256_hex(token);
    let now = super::jwt::now_secs();
    match store(rt, move |s| s.revoke_family(&h, now)).await? {
        Rotation::Rotated { username } => Ok(username),
        Rotation::Reused | Rotation::Invalid => Err(ApiError::InvalidGrant),
    }
}

/// SPEC §9: every access and refresh token of `username` issued until now dies:
/// on this gateway at once, on the others at their next revocation poll.
pub(crate) async fn revoke_everywhere(rt: &Runtime, username: &str) -> Result<(), ApiError> {
    let at = crate::store::now_ms();
    let u = username.to_string();
    store(rt, move |s| s.revoke_user(&u, at)).await?;
    rt.revocations.merge(&[crate::store::Revocation {
        username: username.to_string(),
        not_before_ms: at,
        updated_ms: 0,
    }]);
    tracing::info!(user = %username, "logged out everywhere: every token revoked");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(normalize_username("ALICE").unwrap(), "alice");
        assert_eq!(normalize_username("a.b_c@d-e").unwrap(), "a.b_c@d-e");
        assert!(normalize_username("ab").is_err());
        assert!(normalize_username(&"a".repeat(65)).is_err());
        assert!(normalize_username("alice smith").is_err());
        assert!(normalize_username("ålice").is_err());
        assert!(normalize_username("alice\n").is_err());
        assert!(normalize_username("\u{212A}elvin").is_err());
    }
}
