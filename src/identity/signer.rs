//! Signs authgate's own access tokens (SPEC §3): the claims, `kid` in the header,
//! the configured algorithm and key.

use jsonwebtoken::{EncodingKey, Header};

use super::signing_keys::{jwt_alg, KeySet};
use crate::config::Tokens;
use crate::verify::token::TokenError;

#[derive(serde::Serialize)]
struct AccessClaims<'a> {
    sub: &'a str,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    /// SPEC §9: the issuing instant in ms, so a revocation and a login within
    /// one second are told apart (see verify::revocation).
    iat_ms: u64,
    nbf: u64,
    exp: u64,
    jti: String,
    roles: &'a [String],
    /// SPEC §14: the `[[issuer]]` a signed-in identity came from; absent for own users.
    #[serde(skip_serializing_if = "Option::is_none")]
    idp: Option<&'a str>,
}

pub struct TokenSigner {
    header: Header,
    key: EncodingKey,
    issuer: String,
    audience: String,
    ttl: u64,
}

impl TokenSigner {
    pub fn new(t: &Tokens, keys: &KeySet) -> TokenSigner {
        let mut header = Header::new(jwt_alg(t.algorithm));
        header.kid = Some(keys.signing_kid.clone());
        TokenSigner {
            header,
            key: keys.signing.clone(),
            issuer: t.issuer.clone(),
            audience: t.audience.clone(),
            ttl: t.access_ttl.as_secs(),
        }
    }

    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    pub fn issue(&self, sub: &str, roles: &[String]) -> Result<String, TokenError> {
        self.issue_for(sub, None, roles)
    }

    /// An access token for `sub`; `idp` names the provider of a signed-in identity.
    pub fn issue_for(
        &self,
        sub: &str,
        idp: Option<&str>,
        roles: &[String],
    ) -> Result<String, TokenError> {
        let now_ms = crate::clock::now_ms();
        let now = now_ms / 1000;
        let claims = AccessClaims {
            sub,
            iss: &self.issuer,
            aud: &self.audience,
            iat: now,
            iat_ms: now_ms,
            nbf: now,
            exp: now + self.ttl,
            jti: crate::ids::uuid_v4(),
            roles,
            idp,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|e| TokenError(format!("signing failed: {e}")))
    }
}
