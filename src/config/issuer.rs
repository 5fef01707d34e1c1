//! `[[issuer]]` (SPEC §10): identity providers whose tokens the gateway accepts,
//! and `[issuer.login]` (SPEC §14): the ones browsers may sign in through.

use std::time::Duration;

use super::SecretRef;

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// `{issuer}/.well-known/openid-configuration` names the `jwks_uri`.
    Discovery,
    /// A fixed JWKS URL.
    Uri(String),
}

/// The algorithms an external issuer may use (SPEC §10: never HS*, never none).
pub const ISSUER_ALGORITHMS: &[&str] = &["RS256", "PS256", "ES256", "EdDSA"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    pub name: String,
    /// The token's `iss` must equal this, byte for byte.
    pub issuer: String,
    pub jwks: JwksSource,
    /// The token's `aud` (string or array) must contain one of these.
    pub audiences: Vec<String>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// The claim the identity header carries (`sub`, `email`, ...).
    pub identity_claim: String,
    /// Extra trust anchor (PEM) for the IdP's TLS, beside the system roots.
    pub ca: Option<SecretRef>,
    pub jwks_wait: Duration,
    pub refetch_cooldown: Duration,
    /// `[issuer.login]`: this issuer is also a sign-in provider (SPEC §14).
    pub login: Option<LoginConfig>,
}

/// The path of the gateway's OpenID Connect callback (SPEC §14). A `redirect_uri`
/// must end here: any other path would be routed elsewhere (a route, or 404).
pub const CALLBACK_PATH: &str = "/oauth2/callback";
/// Where a browser sign-in through a provider starts.
pub const START_PATH: &str = "/oauth2/start";
/// OpenID Back-Channel Logout 1.0: where providers post logout tokens.
pub const BACKCHANNEL_LOGOUT_PATH: &str = "/oauth2/backchannel-logout";

/// How the client authenticates at the token endpoint (OIDC Core §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// `allow = { email_domains = [...], groups = [...] }`: empty lists allow anyone the
/// provider signs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginAllow {
    /// Lowercased domains; compared exactly with the part after the only `@`.
    pub email_domains: Vec<String>,
    pub groups: Vec<String>,
}

/// `[issuer.login]` (SPEC §14): authorization code + PKCE as a relying party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginConfig {
    pub client_id: String,
    pub client_secret: SecretRef,
    pub client_auth: ClientAuth,
    /// Exact, as registered at the provider; its path is [`CALLBACK_PATH`].
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    /// The sign-in page's button; the issuer's name when absent.
    pub display_name: String,
    /// The ID-token claim copied into the session token's `roles`.
    pub roles_claim: Option<String>,
    pub allow: LoginAllow,
    pub session_ttl: Duration,
    pub logout_at_provider: bool,
}

/// SPEC §14: a `redirect_uri` is `https://`, or `http://` to a loopback address, its
/// path is the gateway's callback, and it carries no query, fragment or credentials.
pub fn check_redirect_uri(url: &str) -> Result<(), String> {
    check_fetch_url(url)?;
    if url.contains('#') {
        return Err(format!("{url:?}: a redirect_uri has no fragment"));
    }
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    if uri.query().is_some() {
        return Err(format!("{url:?}: a redirect_uri has no query"));
    }
    if uri.path() != CALLBACK_PATH {
        return Err(format!(
            "{url:?}: its path must be {CALLBACK_PATH}, where the gateway answers the provider; any other path would be routed elsewhere"
        ));
    }
    Ok(())
}

/// A name in a route's `issuers = [...]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerRef {
    /// authgate's own tokens.
    SelfIssued,
    /// Index into `Config::issuers`.
    External(usize),
}

/// SPEC §10: keys are fetched over HTTPS; plain http only to a loopback address.
/// Returns why a URL is refused.
pub fn check_fetch_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!("{url:?}: credentials in a URL are not allowed"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "{url:?}: plain http is allowed only to a loopback address; use https"
                ))
            }
        }
        _ => Err(format!("{url:?}: expected an https:// URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_except_to_loopback() {
        assert!(check_fetch_url("https://id.example.com/keys").is_ok());
        assert!(check_fetch_url("http://127.0.0.1:8080/keys").is_ok());
        assert!(check_fetch_url("http://[::1]:8080/keys").is_ok());
        assert!(check_fetch_url("http://localhost/keys").is_ok());
        assert!(check_fetch_url("http://id.example.com/keys").is_err());
        assert!(check_fetch_url("http://10.0.0.1/keys").is_err());
        assert!(check_fetch_url("ftp://id.example.com/keys").is_err());
        assert!(check_fetch_url("https://user:pw@id.example.com/keys").is_err());
        assert!(check_fetch_url("not a url").is_err());
    }

    #[test]
    fn redirect_uris_are_https_or_loopback_and_end_at_the_callback() {
        assert!(check_redirect_uri("https://gw.example.com/oauth2/callback").is_ok());
        assert!(check_redirect_uri("https://gw.example.com:8443/oauth2/callback").is_ok());
        assert!(check_redirect_uri("http://127.0.0.1:8080/oauth2/callback").is_ok());
        assert!(check_redirect_uri("http://localhost/oauth2/callback").is_ok());
        for bad in [
            "http://gw.example.com/oauth2/callback",
            "https://gw.example.com/callback",
            "https://gw.example.com/oauth2/callback/",
            "https://gw.example.com/oauth2/callback?x=1",
            "https://gw.example.com/oauth2/callback#x",
            "https://u:p@gw.example.com/oauth2/callback",
            "gw.example.com/oauth2/callback",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}
