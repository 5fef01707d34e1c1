//! Ending sessions signed in through a provider (SPEC §14):
//! - `POST /oauth2/backchannel-logout` (OpenID Back-Channel Logout 1.0): the provider
//!   posts a logout token; a valid one revokes the matching identities (`idp:sub`
//!   keys, so every gateway honours it within `revocation_poll`), its `jti` is
//!   recorded once; an invalid one is 400 (§2.8);
//! - RP-initiated logout (OpenID RP-Initiated Logout 1.0): where a form logout sends
//!   the browser when the issuer has `logout_at_provider = true`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::CACHE_CONTROL;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use super::provider;
use super::tokens::verify_logout_token;
use super::OidcError;
use crate::body::{empty, Body};
use crate::error::ApiError;
use crate::identity::core::{revoke_everywhere, sha256_hex, store};
use crate::identity::input::{has_media_type, read_body};
use crate::state::Snapshot;
use crate::store::{revocation_key, SessionInfo};

/// The unverified `iss` of a JWT: it only chooses whose keys verify the token.
fn unverified_iss(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(String::from)
}

fn invalid(why: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %why, "back-channel logout refused");
    ApiError::InvalidRequest("invalid logout_token".into())
}

/// `POST /oauth2/backchannel-logout` with a form body `logout_token=...`.
pub async fn backchannel(
    rt: &Snapshot,
    req: Request<Incoming>,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed("POST"));
    }
    if !has_media_type(&req, "application/x-www-form-urlencoded") {
        return Err(invalid("not a form post"));
    }
    let body = read_body(rt, req).await?;
    let mut token = None;
    for (k, v) in form_urlencoded::parse(&body) {
        if k == "logout_token" {
            if token.is_some() {
                return Err(invalid("logout_token appears twice"));
            }
            token = Some(v.into_owned());
        }
    }
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("no logout_token"))?;
    let iss = unverified_iss(&token).ok_or_else(|| invalid("not a JWT with an iss"))?;
    let (i, cfg, login) = rt
        .config
        .login_issuers()
        .find(|(_, c, _)| c.issuer == iss)
        .ok_or_else(|| invalid("its iss is no sign-in issuer"))?;
    let issuer = rt
        .verifier
        .issuers()
        .list
        .get(i)
        .cloned()
        .ok_or_else(|| invalid("no such issuer"))?;
    let now = crate::clock::now_secs();
    let leeway = rt.config.tokens.leeway.as_secs();
    let lr = match verify_logout_token(&issuer, &login.client_id, &token, leeway, now).await {
        Ok(lr) => lr,
        // No keys to check it with: not the token's fault, so not a 400.
        Err(e @ OidcError::ProviderUnavailable(_)) => return Err(e.into()),
        Err(e) => return Err(invalid(format!("issuer {}: {e}", cfg.name))),
    };
    // OpenID BCL §2.6: a jti is used once (the key names the issuer: jtis are unique
    // per issuer only).
    let jti_h = sha256_hex(&format!("{}:{}", cfg.name, lr.jti));
    let until = lr.remember_until;
    if !store(rt, move |s| s.record_logout_jti(&jti_h, until, now)).await? {
        return Err(invalid(format!("issuer {}: jti used before", cfg.name)));
    }
    let idp = cfg.name.clone();
    let (sub, sid) = (lr.sub.clone(), lr.sid.clone());
    let subjects = store(rt, move |s| {
        s.logout_subjects(&idp, sub.as_deref(), sid.as_deref(), now)
    })
    .await?;
    for s in &subjects {
        let key = revocation_key(&cfg.name, s);
        revoke_everywhere(rt, &key).await?;
        crate::audit::emit(crate::audit::Event::Revoke { by: "backchannel" }, &key);
    }
    tracing::info!(issuer = %cfg.name, sessions_of = subjects.len(), "back-channel logout");
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((r, None))
}

/// SPEC §14 `logout_at_provider`: the provider's end-session URL for a session that
/// was just logged out, with its ID token as `id_token_hint` and the sign-in page as
/// `post_logout_redirect_uri`; `None` when the session is an own user's, its issuer
/// does not ask for it, or the provider names no end-session endpoint.
pub async fn end_session_location(
    rt: &Snapshot,
    session: &SessionInfo,
    own_origin: Option<&str>,
) -> Option<String> {
    if !session.is_sso() {
        return None;
    }
    let (i, _, login) = rt
        .config
        .login_issuers()
        .find(|(_, c, l)| c.name == session.idp && l.logout_at_provider)?;
    let issuer = rt.verifier.issuers().list.get(i)?.clone();
    let d = match provider::discovery(&issuer).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(issuer = %session.idp, error = %e, "no logout at the provider");
            return None;
        }
    };
    let back = format!("{}{}", own_origin?, rt.config.identity.paths.login);
    provider::end_session_url(&d, login, &session.id_token, &back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unverified_iss_only_reads_the_payload() {
        let p = URL_SAFE_NO_PAD.encode(r#"{"iss":"https://id.example.com","sub":"a"}"#);
        assert_eq!(
            unverified_iss(&format!("e30.{p}.sig")).as_deref(),
            Some("https://id.example.com")
        );
        assert_eq!(unverified_iss("garbage"), None);
        assert_eq!(unverified_iss("a.b.c"), None);
        let p = URL_SAFE_NO_PAD.encode(r#"{"iss":5}"#);
        assert_eq!(unverified_iss(&format!("e30.{p}.sig")), None);
    }
}
