//! The browser's side of sign-in through a provider (SPEC §14): `GET /oauth2/start`
//! opens a flow and sends the browser to the provider; `GET /oauth2/callback` finishes
//! it into authgate's own session cookies (SPEC §12), or shows a plain error page
//! naming the failure's class. `POST /oauth2/backchannel-logout` is in `logout.rs`.
//!
//! A flow is bound to the browser that started it by the `__Host-authgate-oidc`
//! cookie (one per browser, reused by every flow it starts, so tabs each finish on
//! their own); the store keeps only SHA-256 of the state and of that cookie, and
//! hands a flow out once, to its own browser only.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response, StatusCode};

use super::claims::{check_allow, identity, roles};
use super::provider::{self, AuthRequest};
use super::tokens::verify_id_token;
use super::{constant_time_eq, OidcError, BINDING_COOKIE, FLOW_TTL_SECS};
use crate::body::{empty, full, Body};
use crate::config::{IssuerConfig, LoginConfig};
use crate::error::ApiError;
use crate::identity::browser::{escape, page_headers};
use crate::identity::cookies::set_session_cookies;
use crate::identity::core::{issue_session_pair, sha256_hex, store};
use crate::identity::session::{cookie, safe_return_to, set_cookie};
use crate::state::Snapshot;
use crate::store::{Flow, SessionInfo};
use crate::verify::issuers::IssuerState;

/// The query's parameters; `None` when one appears twice (two parsers could read
/// different values).
fn query_params(q: Option<&str>) -> Option<HashMap<String, String>> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return None;
        }
    }
    Some(out)
}

/// A login issuer by name, with its state (keys, discovery, HTTPS client).
fn login_issuer<'a>(
    rt: &'a Snapshot,
    name: &str,
) -> Option<(&'a IssuerConfig, &'a LoginConfig, Arc<IssuerState>)> {
    let (i, c, l) = rt.config.login_issuers().find(|(_, c, _)| c.name == name)?;
    let state = rt.verifier.issuers().list.get(i)?.clone();
    Some((c, l, state))
}

/// `authgate_oidc_logins_total{issuer,outcome}`: `success` or the failure's class.
fn count(issuer: &str, outcome: &'static str) {
    metrics::counter!("authgate_oidc_logins_total", "issuer" => issuer.to_string(), "outcome" => outcome)
        .increment(1);
}

/// The plain error page of a failed sign-in: the class and a sentence, escaped,
/// under the sign-in page's CSP; no cookie is set.
fn error_page(rt: &Snapshot, e: ApiError) -> Response<Body> {
    let login = &rt.config.identity.paths.login;
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>Sign-in failed</title>\n\
         <style>body {{ font: 16px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 32rem; padding: 0 1rem; }} code {{ font-weight: 600; }}</style>\n\
         </head>\n<body>\n<main>\n<h1>Sign-in failed</h1>\n<p><code>{}</code></p>\n<p>{}</p>\n\
         <p><a href=\"{}\">Back to sign-in</a></p>\n</main>\n</body>\n</html>\n",
        escape(e.code()),
        escape(&e.message()),
        escape(login),
    );
    let mut r = e.into_page(html);
    page_headers(r.headers_mut());
    r
}

/// `GET /oauth2/start?issuer=NAME&return_to=/path` (SPEC §14).
pub async fn start<B>(
    rt: &Snapshot,
    req: &Request<B>,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::MethodNotAllowed("GET, HEAD"));
    }
    let params = query_params(req.uri().query());
    let name = params
        .as_ref()
        .and_then(|p| p.get("issuer"))
        .map(String::as_str)
        .unwrap_or("");
    let Some((cfg, login, issuer)) = login_issuer(rt, name) else {
        // An unknown issuer, or one without `login`, starts nothing.
        return Ok((error_page(rt, ApiError::NotFound), None));
    };
    let return_to = params
        .as_ref()
        .and_then(|p| p.get("return_to"))
        .and_then(|r| safe_return_to(r))
        .unwrap_or("/")
        .to_string();
    match start_flow(rt, req, login, &issuer, return_to).await {
        Ok(r) => Ok((r, None)),
        Err(e) => {
            tracing::warn!(issuer = %cfg.name, error = %e, "sign-in could not start");
            count(&cfg.name, e.code());
            Ok((error_page(rt, e), None))
        }
    }
}

/// A browser-binding value we issued: 43 base64url characters (256 bits).
fn well_formed_binding(v: &str) -> bool {
    v.len() == 43
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn start_flow<B>(
    rt: &Snapshot,
    req: &Request<B>,
    login: &LoginConfig,
    issuer: &Arc<IssuerState>,
    return_to: String,
) -> Result<Response<Body>, ApiError> {
    let d = provider::discovery(issuer).await?;
    // One binding per browser, shared by its flows: a second tab must not end the
    // first one's flow by replacing the cookie.
    let binding = match cookie(req.headers(), BINDING_COOKIE) {
        Ok(Some(v)) if well_formed_binding(v) => v.to_string(),
        _ => crate::ids::b64url(&crate::ids::random_bytes::<32>()),
    };
    let secrets = AuthRequest::new();
    let location = provider::authorization_url(&d, login, &secrets)?;
    let now = crate::clock::now_secs();
    let flow = Flow {
        state_hash: sha256_hex(&secrets.state),
        binding_hash: sha256_hex(&binding),
        issuer: issuer.cfg.name.clone(),
        nonce: secrets.nonce,
        verifier: secrets.verifier,
        return_to,
        expires_at: now + FLOW_TTL_SECS,
    };
    store(rt, move |s| s.put_flow(&flow, now)).await?;
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::FOUND;
    let h = r.headers_mut();
    h.insert(
        LOCATION,
        HeaderValue::from_str(&location)
            .map_err(|_| OidcError::ProviderError("authorization_endpoint is not a URL".into()))?,
    );
    h.append(
        SET_COOKIE,
        set_cookie(BINDING_COOKIE, &binding, FLOW_TTL_SECS),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `GET /oauth2/callback?code&state[&iss]` or `?error&state` (SPEC §14).
pub async fn callback<B>(
    rt: &Snapshot,
    req: &Request<B>,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::MethodNotAllowed("GET, HEAD"));
    }
    let mut issuer_name = None;
    match finish(rt, req, &mut issuer_name).await {
        Ok((mut resp, sub, pair, return_to)) => {
            let name = issuer_name.as_deref().unwrap_or("-");
            tracing::info!(issuer = %name, user = %sub, "signed in through the provider");
            count(name, "success");
            crate::audit::sso_login("success", Some(&crate::store::revocation_key(name, &sub)));
            *resp.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(v) = HeaderValue::from_str(&return_to) {
                resp.headers_mut().insert(LOCATION, v);
            }
            set_session_cookies(rt, resp.headers_mut(), &pair);
            Ok((resp, Some(sub)))
        }
        Err(e) => {
            // The detail names what failed, never a code, token or secret.
            let name = issuer_name.as_deref().unwrap_or("-");
            tracing::warn!(issuer = %name, error = %e, "sign-in failed");
            count(name, e.code());
            crate::audit::sso_login(e.code(), None);
            Ok((error_page(rt, e), None))
        }
    }
}

type Finished = (
    Response<Body>,
    String,
    crate::identity::core::TokenPair,
    String,
);

async fn finish<B>(
    rt: &Snapshot,
    req: &Request<B>,
    issuer_name: &mut Option<String>,
) -> Result<Finished, ApiError> {
    let invalid = |why: &str| ApiError::from(OidcError::InvalidState(why.into()));
    let q = query_params(req.uri().query()).ok_or_else(|| invalid("a parameter appears twice"))?;
    let state = q
        .get("state")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("no state"))?;
    let binding = match cookie(req.headers(), BINDING_COOKIE) {
        Ok(Some(b)) => b,
        Ok(None) => return Err(invalid("no flow cookie: not the browser that started it")),
        Err(_) => return Err(invalid("the flow cookie appears twice")),
    };
    let (state_h, binding_h) = (sha256_hex(state), sha256_hex(binding));
    let now = crate::clock::now_secs();
    // Taken only with this browser's binding: another browser's callback neither
    // finishes nor spends the flow (login CSRF), and a flow is taken once.
    let flow = store(rt, move |s| s.take_flow(&state_h, &binding_h, now))
        .await?
        .ok_or_else(|| {
            invalid("no open flow of this browser has this state (unknown, spent or expired)")
        })?;
    if !constant_time_eq(&flow.binding_hash, &sha256_hex(binding)) {
        return Err(invalid("the flow belongs to another browser"));
    }
    *issuer_name = Some(flow.issuer.clone());
    let (cfg, login, issuer) = login_issuer(rt, &flow.issuer)
        .ok_or_else(|| invalid("the flow's issuer no longer offers sign-in"))?;
    let d = provider::discovery(&issuer).await?;
    // RFC 9207: the response names its issuer; a different one is a mix-up. When the
    // provider says it always sends `iss`, its absence is one too.
    match q.get("iss") {
        Some(iss) if iss != &cfg.issuer => {
            return Err(invalid("the iss parameter names another issuer (mix-up)"))
        }
        None if d.iss_parameter_supported => {
            return Err(invalid(
                "the provider sends iss, and this response has none",
            ))
        }
        _ => {}
    }
    if let Some(err) = q.get("error") {
        let code: String = err
            .chars()
            .take(64)
            .filter(|c| c.is_ascii_graphic())
            .collect();
        return Err(if err == "access_denied" {
            OidcError::AccessDenied(format!("the provider answered error={code}"))
        } else {
            OidcError::ProviderError(format!("the provider answered error={code}"))
        }
        .into());
    }
    let code = q
        .get("code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("no code"))?;
    let secret = read_secret(login).await?;
    let tokens = provider::exchange(&issuer, &d, login, &secret, code, &flow.verifier).await?;
    let leeway = rt.config.tokens.leeway.as_secs();
    let claims = verify_id_token(
        &issuer,
        &login.client_id,
        &tokens.id_token,
        &flow.nonce,
        leeway,
        crate::clock::now_secs(),
    )
    .await?;
    // `allow` before the identity: an address the rules refuse is access_denied,
    // whatever else is wrong with it.
    check_allow(&login.allow, &claims, login.roles_claim.as_deref())?;
    let sub = identity(&claims, &cfg.identity_claim)?;
    let text = |n: &str| {
        claims
            .get(n)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let session = SessionInfo {
        idp: cfg.name.clone(),
        roles: roles(&claims, login.roles_claim.as_deref()),
        session_start: crate::clock::now_secs(),
        sid: text("sid"),
        id_token: tokens.id_token,
        idp_sub: text("sub"),
    };
    let pair = issue_session_pair(rt, &sub, session, None).await?;
    let resp = Response::new(full(bytes::Bytes::new()));
    Ok((resp, sub, pair, flow.return_to))
}

/// The client secret, read now (a rotated file applies from the next sign-in); off
/// the event loop, since it may be a file.
async fn read_secret(login: &LoginConfig) -> Result<Vec<u8>, ApiError> {
    let s = login.client_secret.clone();
    tokio::task::spawn_blocking(move || s.read())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("client_secret: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_query_parameters_are_refused() {
        let p = query_params(Some("code=a&state=b&iss=c")).unwrap();
        assert_eq!(p["state"], "b");
        assert!(query_params(Some("state=a&state=b")).is_none());
        assert!(query_params(None).unwrap().is_empty());
    }

    #[test]
    fn only_bindings_we_could_have_issued_are_reused() {
        let b = crate::ids::b64url(&crate::ids::random_bytes::<32>());
        assert!(well_formed_binding(&b));
        assert!(!well_formed_binding("short"));
        assert!(!well_formed_binding(&format!("{}=", &b[..42])));
        assert!(!well_formed_binding(&"a".repeat(44)));
    }
}
