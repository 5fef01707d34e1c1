//! The identity core every front-end shares: authenticate a password, issue a token
//! pair, rotate a refresh token, revoke a family or a user. The JSON endpoints
//! (`json.rs`), the browser forms (`browser.rs`) and sign-in through a provider call
//! these; none of them calls another front-end.

use std::net::IpAddr;

use aws_lc_rs::digest::{digest, SHA256};
use serde_json::{json, Value};

use super::passwords::needs_rehash;
use super::username::normalize_username;
use crate::error::ApiError;
use crate::state::Snapshot;
use crate::store::{Rotation, SessionInfo, StoreError, User, UserStore};

/// Runs a store call off the event loop (SPEC §13), bounded by
/// `identity.store_timeout`: a dead or silent store is a 503 `store_unavailable`
/// with `Retry-After`, never a hang or a 500 (SPEC §9).
pub(crate) async fn store<T: Send + 'static>(
    rt: &Snapshot,
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

pub(crate) fn sha256_hex(s: &str) -> String {
    crate::ids::hex(digest(&SHA256, s.as_bytes()).as_ref())
}

pub(crate) fn outcome(kind: &'static str, o: &'static str) {
    metrics::counter!(kind, "outcome" => o).increment(1);
}

/// `authgate_logins_total{outcome}` for one login, JSON or form.
pub(crate) fn count_login<T>(r: &Result<T, ApiError>) {
    let o = match r {
        Ok(_) => "success",
        Err(ApiError::InvalidCredentials) => "invalid_credentials",
        Err(ApiError::RateLimited { .. }) => "rate_limited",
        Err(ApiError::Internal(_))
        | Err(ApiError::Overloaded { .. })
        | Err(ApiError::StoreUnavailable { .. }) => "error",
        Err(_) => "invalid_request",
    };
    outcome("authgate_logins_total", o);
    crate::audit::login(o);
}

/// `login_per_ip`: every attempt counts, failed or not.
pub(crate) async fn check_login_ip(rt: &Snapshot, ip: IpAddr) -> Result<(), ApiError> {
    rt.limits
        .login_ip(ip)
        .await
        .map_err(|s| ApiError::RateLimited { retry_after: s })
}

/// Checks a username and password under `login_per_user` (SPEC §3, §8): the
/// shared core of the JSON and the form login.
pub(crate) async fn authenticate(
    rt: &Snapshot,
    raw_user: &str,
    password: String,
) -> Result<User, ApiError> {
    if password.chars().count() > rt.config.identity.max_password_length {
        return Err(ApiError::InvalidRequest("password too long".into()));
    }
    // A malformed name cannot exist: it still costs a full hash (no user probing).
    let username = normalize_username(raw_user).ok();
    let limit_key = username.clone().unwrap_or_else(|| raw_user.to_lowercase());
    crate::audit::note_user(username.as_deref());
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
            // SPEC §16: a service account never logs in. It is refused like an
            // unknown name, after the same dummy hash, so timing tells nothing.
            user.as_ref()
                .filter(|u| !u.service)
                .map(|u| u.password_hash.clone()),
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
    pub fn body(&self, rt: &Snapshot) -> Value {
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
    rt: &Snapshot,
    username: &str,
    roles: &[String],
    rotated: Option<String>,
) -> Result<TokenPair, ApiError> {
    issue(rt, username, roles, SessionInfo::default(), rotated).await
}

/// The pair of a session signed in through a provider (SPEC §14): the access token
/// carries `idp` and the session's roles; the refresh row carries the session.
/// `rotated` continues a rotation chain (the row is already stored).
pub(crate) async fn issue_session_pair(
    rt: &Snapshot,
    sub: &str,
    session: SessionInfo,
    rotated: Option<String>,
) -> Result<TokenPair, ApiError> {
    let roles = session.roles.clone();
    issue(rt, sub, &roles, session, rotated).await
}

/// Signs the access token (with `idp` for a provider's identity) and, unless a
/// rotation already stored it, starts a refresh family carrying `session`.
async fn issue(
    rt: &Snapshot,
    sub: &str,
    roles: &[String],
    session: SessionInfo,
    rotated: Option<String>,
) -> Result<TokenPair, ApiError> {
    let signer = rt
        .signer
        .as_ref()
        .ok_or_else(|| ApiError::Internal("no signing key".into()))?;
    let idp = (!session.idp.is_empty()).then_some(session.idp.as_str());
    let access = signer
        .issue_for(sub, idp, roles)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let refresh = match rotated {
        Some(r) => r,
        None => {
            let refresh = crate::ids::b64url(&crate::ids::random_bytes::<32>());
            let hash = sha256_hex(&refresh);
            let family = crate::ids::hex(&crate::ids::random_bytes::<16>());
            let user = sub.to_string();
            let exp = crate::clock::now_secs() + rt.config.tokens.refresh_ttl.as_secs();
            store(rt, move |s| {
                s.insert_refresh(&hash, &family, &user, exp, &session)
            })
            .await?;
            refresh
        }
    };
    Ok(TokenPair { access, refresh })
}

/// Spends a refresh token and issues the next pair of its family (SPEC §3).
pub(crate) async fn rotate(rt: &Snapshot, old: &str) -> Result<(String, TokenPair), ApiError> {
    let new = crate::ids::b64url(&crate::ids::random_bytes::<32>());
    let (old_h, new_h) = (sha256_hex(old), sha256_hex(&new));
    let now = crate::clock::now_secs();
    let exp = now + rt.config.tokens.refresh_ttl.as_secs();
    let rotated = store(rt, move |s| s.rotate_refresh(&old_h, &new_h, now, exp)).await?;
    let username = match rotated {
        Rotation::Rotated { username, session } if session.is_sso() => {
            return rotate_session(rt, username, session, new, now).await;
        }
        Rotation::Rotated { username, .. } => username,
        Rotation::Reused { username } => {
            crate::audit::refresh_reuse(&username);
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

/// SPEC §14: a session signed in through a provider is re-issued from its refresh
/// row (its identity has no `users` row), while its issuer still offers sign-in and
/// `session_ttl` since the sign-in has not passed.
async fn rotate_session(
    rt: &Snapshot,
    sub: String,
    session: SessionInfo,
    new: String,
    now: u64,
) -> Result<(String, TokenPair), ApiError> {
    let ttl = rt
        .config
        .login_issuers()
        .find(|(_, c, _)| c.name == session.idp)
        .map(|(_, _, l)| l.session_ttl.as_secs());
    let live = ttl.is_some_and(|t| session.session_start.saturating_add(t) > now);
    if !live {
        // The token just stored for this family is never handed out: end the family.
        let h = sha256_hex(&new);
        let _ = store(rt, move |s| s.revoke_family(&h, now)).await;
        tracing::info!(user = %sub, idp = %session.idp, "sign-in session over (session_ttl, or its issuer no longer offers sign-in)");
        return Err(ApiError::InvalidGrant);
    }
    let pair = issue_session_pair(rt, &sub, session, Some(new)).await?;
    Ok((sub, pair))
}

/// Revokes the family of a refresh token (SPEC §3 logout); its user and session
/// (SPEC §14: the logout at the provider needs the session's ID token).
pub(crate) async fn revoke_session(
    rt: &Snapshot,
    token: &str,
) -> Result<(String, SessionInfo), ApiError> {
    let h = sha256_hex(token);
    let now = crate::clock::now_secs();
    match store(rt, move |s| s.revoke_family(&h, now)).await? {
        Rotation::Rotated { username, session } => {
            crate::audit::emit(crate::audit::Event::Logout, &username);
            Ok((username, session))
        }
        Rotation::Reused { .. } | Rotation::Invalid => Err(ApiError::InvalidGrant),
    }
}

/// SPEC §9: every access and refresh token of `username` issued until now dies:
/// on this gateway at once, on the others at their next revocation poll.
/// `username` is a revocation key: `corp:alice@example.com` for a provider identity.
pub(crate) async fn revoke_everywhere(rt: &Snapshot, username: &str) -> Result<(), ApiError> {
    let at = crate::clock::now_ms();
    let u = username.to_string();
    store(rt, move |s| s.revoke_user(&u, at)).await?;
    rt.revocations.merge(&[crate::store::Revocation {
        username: username.to_string(),
        not_before_ms: at,
        updated_ms: 0,
    }]);
    crate::audit::emit(crate::audit::Event::Revoke { by: "logout" }, username);
    tracing::info!(user = %username, "logged out everywhere: every token revoked");
    Ok(())
}
