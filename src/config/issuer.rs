//! `[[issuer]]` (SPEC §10): identity providers whose tokens the gateway accepts.

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
}
