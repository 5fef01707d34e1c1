//! The provider's side of a sign-in (SPEC §14): its endpoints from discovery, the
//! authorization request (PKCE S256, state, nonce) and the token request.
//!
//! Every request to the provider goes through the issuer's own HTTPS client (system
//! roots plus its `ca`, SPEC §10) and runs on the key-fetch runtime, never on an
//! event-loop worker (SPEC §13). Failures are classified once here: the provider
//! unreachable, silent or 5xx is `provider_unavailable`; a 4xx, a body that is not
//! the JSON expected, or no `id_token` is `provider_error`.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;

use super::OidcError;
use crate::config::issuer::check_fetch_url;
use crate::config::{ClientAuth, LoginConfig};
use crate::verify::issuers::fetch::{self, Discovery, FetchError, HttpsClient, FETCH_TIMEOUT};
use crate::verify::issuers::IssuerState;

/// A token response larger than this is refused (an ID token with many groups is a
/// few KiB).
const MAX_TOKEN_RESPONSE: usize = 1024 * 1024;

/// Runs `work` on the key-fetch runtime and waits for it from wherever the caller is.
async fn off_worker<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, OidcError>> + Send + 'static,
) -> Result<T, OidcError> {
    let rt = fetch::runtime()
        .ok_or_else(|| OidcError::ProviderUnavailable("no key-fetch runtime".into()))?;
    rt.spawn(work)
        .await
        .map_err(|e| OidcError::ProviderUnavailable(format!("provider request task: {e}")))?
}

/// The provider's endpoints: the discovery document as last read by the issuer's key
/// loop, else read now (and remembered).
pub async fn discovery(issuer: &Arc<IssuerState>) -> Result<Arc<Discovery>, OidcError> {
    if let Some(d) = issuer.discovered() {
        return Ok(d);
    }
    let client = issuer.client().clone();
    let url = issuer.cfg.issuer.clone();
    let d = off_worker(async move {
        fetch::discover(&client, &url)
            .await
            .map_err(discovery_error)
    })
    .await?;
    Ok(issuer.remember_discovery(d))
}

/// A failed discovery, classified. `discover` wraps the transport failure in its
/// message (the key loop's metrics count it as `discovery_failed`), so the class is
/// read back from the texts `FetchError` writes for them.
fn discovery_error(e: FetchError) -> OidcError {
    let text = e.to_string();
    let transport = matches!(e, FetchError::Connect { .. } | FetchError::Timeout { .. })
        || text.contains("cannot reach")
        || text.contains("did not answer within")
        || text.contains(" answered 5");
    if transport {
        OidcError::ProviderUnavailable(text)
    } else {
        OidcError::ProviderError(text)
    }
}

/// The secrets of one authorization request. `state` and `nonce` are 256 random bits
/// each, the PKCE verifier too (43 base64url characters, RFC 7636 §4.1).
pub struct AuthRequest {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl AuthRequest {
    pub fn new() -> AuthRequest {
        let r = || crate::ids::b64url(&crate::ids::random_bytes::<32>());
        AuthRequest {
            state: r(),
            nonce: r(),
            verifier: r(),
        }
    }
}

impl Default for AuthRequest {
    fn default() -> Self {
        Self::new()
    }
}

/// RFC 7636 §4.2: `BASE64URL(SHA256(verifier))`.
pub fn code_challenge(verifier: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// The authorization endpoint's URL with the request's parameters (OIDC Core §3.1.2.1,
/// RFC 7636): code flow, PKCE S256 always.
pub fn authorization_url(
    d: &Discovery,
    login: &LoginConfig,
    r: &AuthRequest,
) -> Result<String, OidcError> {
    let endpoint = d.authorization_endpoint.as_deref().ok_or_else(|| {
        OidcError::ProviderError("discovery names no authorization_endpoint".into())
    })?;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &login.client_id)
        .append_pair("redirect_uri", &login.redirect_uri)
        .append_pair("scope", &login.scopes.join(" "))
        .append_pair("state", &r.state)
        .append_pair("nonce", &r.nonce)
        .append_pair("code_challenge", &code_challenge(&r.verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    Ok(format!("{endpoint}{sep}{query}"))
}

/// RP-initiated logout (OpenID RP-Initiated Logout 1.0 §2): the end-session URL with
/// the ID token as hint; `None` when the provider names no end-session endpoint.
pub fn end_session_url(
    d: &Discovery,
    login: &LoginConfig,
    id_token: &str,
    post_logout_redirect_uri: &str,
) -> Option<String> {
    let endpoint = d.end_session_endpoint.as_deref()?;
    let mut q = form_urlencoded::Serializer::new(String::new());
    if !id_token.is_empty() {
        q.append_pair("id_token_hint", id_token);
    }
    q.append_pair("post_logout_redirect_uri", post_logout_redirect_uri)
        .append_pair("client_id", &login.client_id);
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    Some(format!("{endpoint}{sep}{}", q.finish()))
}

/// The form of the token request and its `Authorization` header, if any
/// (RFC 6749 §4.1.3; client_secret_basic per §2.3.1: id and secret are each
/// form-urlencoded before the Basic encoding).
fn token_request_parts(
    login: &LoginConfig,
    secret: &[u8],
    code: &str,
    verifier: &str,
) -> (String, Option<String>) {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", &login.redirect_uri)
        .append_pair("code_verifier", verifier);
    let secret_enc: String = form_urlencoded::byte_serialize(secret).collect();
    match login.client_auth {
        ClientAuth::Basic => {
            let id: String = form_urlencoded::byte_serialize(login.client_id.as_bytes()).collect();
            let basic = STANDARD.encode(format!("{id}:{secret_enc}"));
            (form.finish(), Some(format!("Basic {basic}")))
        }
        ClientAuth::Post => {
            form.append_pair("client_id", &login.client_id);
            // The secret is appended already encoded, byte for byte.
            let body = format!("{}&client_secret={secret_enc}", form.finish());
            (body, None)
        }
    }
}

/// What the token endpoint answered, as far as sign-in uses it.
pub struct TokenResponse {
    pub id_token: String,
}

/// Redeems the code at the token endpoint (with the PKCE verifier), within
/// [`FETCH_TIMEOUT`] connect to last byte.
pub async fn exchange(
    issuer: &Arc<IssuerState>,
    d: &Discovery,
    login: &LoginConfig,
    secret: &[u8],
    code: &str,
    verifier: &str,
) -> Result<TokenResponse, OidcError> {
    let url = d
        .token_endpoint
        .clone()
        .ok_or_else(|| OidcError::ProviderError("discovery names no token_endpoint".into()))?;
    check_fetch_url(&url).map_err(OidcError::ProviderError)?;
    let uri: Uri = url
        .parse()
        .map_err(|_| OidcError::ProviderError("token_endpoint is not a URL".into()))?;
    let (body, authorization) = token_request_parts(login, secret, code, verifier);
    let mut req = Request::post(uri)
        .header(ACCEPT, "application/json")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(CONTENT_LENGTH, body.len())
        .header(USER_AGENT, concat!("authgate/", env!("CARGO_PKG_VERSION")));
    if let Some(a) = authorization {
        req = req.header(AUTHORIZATION, a);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| OidcError::ProviderError(format!("token request: {e}")))?;
    let client: HttpsClient = issuer.client().clone();
    off_worker(async move {
        let work = async {
            let resp = client.request(req).await.map_err(|e| {
                OidcError::ProviderUnavailable(format!(
                    "cannot reach the token endpoint {url}: {}",
                    fetch::error_chain(&e)
                ))
            })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        OidcError::ProviderError("token response larger than 1 MiB".into())
                    } else {
                        OidcError::ProviderUnavailable(format!("token response: {e}"))
                    }
                })?
                .to_bytes();
            classify(status, &body)
        };
        tokio::time::timeout(FETCH_TIMEOUT, work)
            .await
            .map_err(|_| {
                OidcError::ProviderUnavailable(format!(
                    "the token endpoint did not answer within {FETCH_TIMEOUT:?}"
                ))
            })?
    })
    .await
}

/// The token endpoint's answer, classified. Only the `error` code of a refusal reaches
/// the detail (a body may hold anything).
fn classify(status: StatusCode, body: &[u8]) -> Result<TokenResponse, OidcError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if status.is_server_error() {
        return Err(OidcError::ProviderUnavailable(format!(
            "the token endpoint answered {status}"
        )));
    }
    if !status.is_success() {
        let code = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str)
            .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or("-");
        return Err(OidcError::ProviderError(format!(
            "the token endpoint answered {status} (error {code})"
        )));
    }
    let json =
        json.ok_or_else(|| OidcError::ProviderError("the token response is not JSON".into()))?;
    match json.get("id_token") {
        Some(Value::String(t)) if !t.is_empty() => Ok(TokenResponse {
            id_token: t.clone(),
        }),
        _ => Err(OidcError::ProviderError(
            "the token response has no id_token".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LoginAllow, SecretRef};
    use std::time::Duration;

    fn login(auth: ClientAuth) -> LoginConfig {
        LoginConfig {
            client_id: "auth gate".into(),
            client_secret: SecretRef::Env("X".into()),
            client_auth: auth,
            redirect_uri: "https://gw.example.com/oauth2/callback".into(),
            scopes: vec!["openid".into(), "email".into()],
            display_name: "Corp".into(),
            roles_claim: None,
            allow: LoginAllow::default(),
            session_ttl: Duration::from_secs(3600),
            logout_at_provider: false,
        }
    }

    fn disco() -> Discovery {
        Discovery {
            jwks_uri: "https://id.example.com/keys".into(),
            authorization_endpoint: Some("https://id.example.com/auth?tenant=1".into()),
            token_endpoint: Some("https://id.example.com/token".into()),
            end_session_endpoint: Some("https://id.example.com/logout".into()),
            iss_parameter_supported: true,
        }
    }

    fn params(url: &str) -> std::collections::HashMap<String, String> {
        let q = url.split_once('?').unwrap().1;
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    #[test]
    fn the_authorization_url_carries_pkce_state_and_nonce() {
        let r = AuthRequest::new();
        assert_eq!(r.state.len(), 43);
        assert_ne!(r.state, r.nonce);
        let url = authorization_url(&disco(), &login(ClientAuth::Basic), &r).unwrap();
        assert!(
            url.starts_with("https://id.example.com/auth?tenant=1&"),
            "{url}"
        );
        let p = params(&url);
        assert_eq!(p["response_type"], "code");
        assert_eq!(p["client_id"], "auth gate");
        assert_eq!(p["redirect_uri"], "https://gw.example.com/oauth2/callback");
        assert_eq!(p["scope"], "openid email");
        assert_eq!(p["state"], r.state);
        assert_eq!(p["nonce"], r.nonce);
        assert_eq!(p["code_challenge_method"], "S256");
        assert_eq!(p["code_challenge"], code_challenge(&r.verifier));
        // RFC 7636 appendix B.
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn client_secret_basic_form_encodes_id_and_secret_and_post_sends_them_in_the_body() {
        let (body, auth) = token_request_parts(&login(ClientAuth::Basic), b"s3cr:t+/", "c0de", "v");
        let p: std::collections::HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(p["grant_type"], "authorization_code");
        assert_eq!(p["code"], "c0de");
        assert_eq!(p["code_verifier"], "v");
        assert_eq!(p["redirect_uri"], "https://gw.example.com/oauth2/callback");
        assert!(!p.contains_key("client_secret"));
        let basic = auth.unwrap();
        let decoded = STANDARD
            .decode(basic.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"auth+gate:s3cr%3At%2B%2F");

        let (body, auth) = token_request_parts(&login(ClientAuth::Post), b"s3cr:t+/", "c0de", "v");
        assert!(auth.is_none());
        let p: std::collections::HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(p["client_id"], "auth gate");
        assert_eq!(p["client_secret"], "s3cr:t+/");
    }

    #[test]
    fn token_endpoint_answers_are_classified() {
        let ok = classify(
            StatusCode::OK,
            br#"{"id_token":"a.b.c","access_token":"x"}"#,
        );
        assert_eq!(ok.unwrap().id_token, "a.b.c");
        let class = |s: u16, b: &[u8]| {
            classify(StatusCode::from_u16(s).unwrap(), b)
                .err()
                .unwrap()
                .class()
        };
        assert_eq!(class(500, b"oops"), "provider_unavailable");
        assert_eq!(class(503, b""), "provider_unavailable");
        assert_eq!(
            class(400, br#"{"error":"invalid_grant"}"#),
            "provider_error"
        );
        assert_eq!(class(401, b"no"), "provider_error");
        assert_eq!(class(200, b"<html>"), "provider_error");
        assert_eq!(class(200, br#"{"access_token":"x"}"#), "provider_error");
        assert_eq!(class(200, br#"{"id_token":5}"#), "provider_error");
        // The detail never carries the body.
        let e = classify(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"code abc123"}"#,
        )
        .err()
        .unwrap();
        assert!(!e.detail().contains("abc123"), "{e}");
    }

    #[test]
    fn the_end_session_url_carries_the_hint_and_the_sign_in_page() {
        let url = end_session_url(
            &disco(),
            &login(ClientAuth::Basic),
            "h.p.s",
            "https://gw.example.com/login",
        )
        .unwrap();
        let p = params(&url);
        assert_eq!(p["id_token_hint"], "h.p.s");
        assert_eq!(
            p["post_logout_redirect_uri"],
            "https://gw.example.com/login"
        );
        assert_eq!(p["client_id"], "auth gate");
        let mut d = disco();
        d.end_session_endpoint = None;
        assert!(end_session_url(&d, &login(ClientAuth::Basic), "x", "y").is_none());
    }
}
