//! Access tokens: issue (login, refresh) and verify (every protected request).
//!
//! SPEC §4: the algorithm and keys come from config only — the token's `alg`
//! never chooses, `kid` selects among configured keys only, `none` never passes.
//! SPEC §10: the token's `iss` chooses between authgate's own keys and an external
//! issuer's; `kid` then chooses among that issuer's keys only.
//!
//! The uncached path parses the header once, reads the payload into typed
//! slots (no `serde_json::Map`), checks the signature with keys parsed at load time,
//! and builds the identity header values once; they stay with the cached entry.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use serde_json::Value;

use super::cache::TokenCache;
use super::issuers::{IssuerSet, IssuerState, LookupError};
use super::jwk::{Check, VerifyKey};
use super::token::TokenError;
use super::token::{self, audience_matches, time, Alg, ClaimPlan, Claims, Slot};
use super::verified::Verified;
use crate::config::{Config, IssuerRef, Tokens};
use crate::error::ApiError;
use crate::identity::signing_keys::{jwt_alg, KeySet};

/// Tokens longer than this are refused before any parsing (the header cap is 64 KiB).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

fn bad(s: impl Into<String>) -> TokenError {
    TokenError(s.into())
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// 401 invalid_token, with the reason for `error_description`.
    #[error("{0}")]
    Invalid(#[from] TokenError),
    /// SPEC §10: the token's issuer has no keys yet: 503 issuer_unavailable.
    #[error("issuer {issuer} has no keys yet")]
    Unavailable { issuer: String, retry_after: u64 },
}

/// A claim value as a header value: strings as is, numbers and booleans printed,
/// arrays comma-joined. Anything that would not be a clean header is an error.
fn claim_header_value(name: &str, v: &Value) -> Result<Option<HeaderValue>, TokenError> {
    fn scalar(name: &str, v: &Value) -> Result<String, TokenError> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(bad(format!("claim {name} cannot be forwarded as a header"))),
        }
    }
    let text = match v {
        Value::Null => return Ok(None),
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for i in items {
                let s = scalar(name, i)?;
                if s.contains(',') {
                    return Err(bad(format!(
                        "claim {name} has an element containing a comma"
                    )));
                }
                parts.push(s);
            }
            parts.join(",")
        }
        other => scalar(name, other)?,
    };
    header_value(name, &text).map(Some)
}

/// SPEC §8: CR, LF, NUL or any control byte make the token invalid, never a mangled header.
fn header_value(name: &str, s: &str) -> Result<HeaderValue, TokenError> {
    if s.chars().any(|c| c.is_control()) {
        return Err(bad(format!("claim {name} contains control characters")));
    }
    HeaderValue::from_str(s).map_err(|_| bad(format!("claim {name} is not a valid header value")))
}

/// authgate's own tokens: one algorithm, the configured keys, `iss` and `aud`.
struct OwnTokens {
    alg: jsonwebtoken::Algorithm,
    iss: String,
    audiences: Vec<String>,
    keys: HashMap<String, VerifyKey>,
}

impl OwnTokens {
    fn new(t: &Tokens, keys: &KeySet) -> Result<OwnTokens, TokenError> {
        let alg = jwt_alg(t.algorithm);
        let mut out = HashMap::with_capacity(keys.verifying.len());
        for (kid, dec) in &keys.verifying {
            let key = if alg == jsonwebtoken::Algorithm::HS256 {
                VerifyKey::hmac(dec.try_get_as_bytes().map_err(|e| bad(e.to_string()))?)
            } else {
                let jwk = jsonwebtoken::jwk::Jwk::from_decoding_key(dec, Some(alg))
                    .map_err(|e| bad(format!("key {kid}: {e}")))?;
                let v = serde_json::to_value(&jwk).map_err(|e| bad(e.to_string()))?;
                VerifyKey::from_jwk(&v, &[alg]).map_err(|e| bad(format!("key {kid}: {e}")))?
            };
            out.insert(kid.clone(), key);
        }
        Ok(OwnTokens {
            alg,
            iss: t.issuer.clone(),
            audiences: vec![t.audience.clone()],
            keys: out,
        })
    }
}

/// Which keys a token is checked against, chosen by its `iss`.
enum Chosen<'a> {
    Own(&'a OwnTokens),
    External(usize, &'a Arc<IssuerState>),
}

pub struct Verifier {
    own: Option<OwnTokens>,
    issuers: Arc<IssuerSet>,
    plan: ClaimPlan,
    /// Claims any route requires: kept with the verified entry.
    required: Vec<String>,
    leeway: u64,
    identity_header: HeaderName,
    claim_headers: Vec<(HeaderName, String)>,
    /// SPEC §14 `forward.issuer_header`.
    issuer_header: Option<HeaderName>,
    cache: TokenCache,
}

impl Verifier {
    /// `keys` is `None` when the built-in identity is off (SPEC §10): then only the
    /// issuers' tokens can pass.
    pub fn new(
        config: &Config,
        keys: Option<&KeySet>,
        issuers: Arc<IssuerSet>,
    ) -> Result<Verifier, TokenError> {
        let own = match keys {
            Some(k) => Some(OwnTokens::new(&config.tokens, k)?),
            None => None,
        };
        let mut plan = ClaimPlan::default();
        // authgate's own tokens carry the issuing instant in ms (SPEC §9 revocation).
        plan.add("iat_ms");
        // SPEC §14: a session signed in through a provider names it.
        plan.add("idp");
        let mut required = Vec::new();
        for i in &config.issuers {
            plan.add(&i.identity_claim);
        }
        for (_, c) in &config.forward.claim_headers {
            plan.add(c);
        }
        for r in &config.routes {
            for (c, _) in &r.require {
                plan.add(c);
                if !required.contains(c) {
                    required.push(c.clone());
                }
            }
        }
        Ok(Verifier {
            own,
            issuers,
            plan,
            required,
            leeway: config.tokens.leeway.as_secs(),
            identity_header: config.forward.identity_header.clone(),
            claim_headers: config.forward.claim_headers.clone(),
            issuer_header: config.forward.issuer_header.clone(),
            cache: TokenCache::new(16_384),
        })
    }

    pub fn issuers(&self) -> &IssuerSet {
        &self.issuers
    }

    /// Verifies a bearer token; a token seen before costs a cache lookup. Waits (up
    /// to the issuer's `jwks_wait`) only for an issuer without keys yet or an unknown
    /// `kid` that may trigger a refetch.
    pub async fn verify(&self, token: &str) -> Result<Arc<Verified>, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad("token too large").into());
        }
        let now = crate::clock::now_secs();
        if let Some(v) = self.cache.get(token) {
            // Time claims are re-checked on every hit; entries never outlive exp.
            if now <= v.exp + self.leeway && v.nbf.is_none_or(|n| n <= now + self.leeway) {
                return Ok(v);
            }
        }
        let v = Arc::new(self.verify_uncached(token, now).await?);
        self.cache.insert(token, v.clone());
        Ok(v)
    }

    async fn verify_uncached(&self, token: &str, now: u64) -> Result<Verified, VerifyError> {
        let parts = token::split(token)?;
        let header = token::header(parts.header)?;
        // Read before the signature only to choose the keys; trusted only after it.
        let claims = token::claims(parts.payload, &self.plan);
        let iss = claims
            .as_ref()
            .ok()
            .and_then(|c| c.slot(Slot::Iss))
            .and_then(Value::as_str);
        let chosen = match (iss, &self.own) {
            (Some(i), Some(own)) if i == own.iss => Chosen::Own(own),
            (Some(i), _) => match self.issuers.by_iss(i) {
                Some((idx, s)) => Chosen::External(idx, s),
                None => return Err(bad("wrong issuer").into()),
            },
            // No readable iss: only authgate's own keys could apply; the signature is
            // checked first, then the claims' own fault is reported.
            (None, Some(own)) => Chosen::Own(own),
            (None, None) => {
                return Err(match claims {
                    Err(e) => e,
                    Ok(_) => bad("missing required claim iss"),
                }
                .into())
            }
        };
        let alg = match (&header.alg, &chosen) {
            (Alg::Known(a), Chosen::Own(own)) if *a == own.alg => *a,
            (Alg::Known(a), Chosen::External(_, s)) if s.cfg.algorithms.contains(a) => *a,
            (other, Chosen::Own(own)) => {
                return Err(bad(format!(
                    "algorithm {other} is not the configured one ({})",
                    super::jwk::alg_name(own.alg)
                ))
                .into())
            }
            (other, Chosen::External(_, s)) => {
                return Err(bad(format!(
                    "algorithm {other} is not allowed for issuer {}",
                    s.cfg.name
                ))
                .into())
            }
        };
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| bad("token has no kid"))?;
        let sig = token::b64(parts.signature)?;
        let external_key;
        let key: &VerifyKey = match &chosen {
            Chosen::Own(own) => own.keys.get(kid).ok_or_else(|| bad("unknown kid"))?,
            Chosen::External(_, s) => {
                external_key = s.key(kid).await.map_err(|e| match e {
                    LookupError::UnknownKid => VerifyError::Invalid(bad("unknown kid")),
                    LookupError::Unavailable { name, retry_after } => VerifyError::Unavailable {
                        issuer: name,
                        retry_after,
                    },
                })?;
                &external_key
            }
        };
        match key.verify(alg, parts.signed.as_bytes(), &sig) {
            Check::Valid => {}
            Check::BadSignature => return Err(bad("signature does not verify").into()),
            Check::AlgorithmDoesNotFit => {
                return Err(bad(format!(
                    "algorithm {} does not fit the key {kid:?}",
                    super::jwk::alg_name(alg)
                ))
                .into())
            }
        }
        let claims = claims?;
        Ok(self.check_claims(&chosen, &claims, now)?)
    }

    /// The signed claims against the chosen issuer's rules (SPEC §4, §10).
    fn check_claims(&self, chosen: &Chosen, c: &Claims, now: u64) -> Result<Verified, TokenError> {
        let exp = time(c, Slot::Exp)?;
        let nbf = time(c, Slot::Nbf)?;
        let iat = time(c, Slot::Iat)?;
        let exp = exp.ok_or_else(|| bad("missing required claim exp"))?;
        let iss = c
            .slot(Slot::Iss)
            .ok_or_else(|| bad("missing required claim iss"))?;
        let aud = c
            .slot(Slot::Aud)
            .ok_or_else(|| bad("missing required claim aud"))?;
        let (mut source, want_iss, audiences, identity_claim) = match chosen {
            Chosen::Own(o) => (IssuerRef::SelfIssued, &o.iss, &o.audiences, "sub"),
            Chosen::External(i, s) => (
                IssuerRef::External(*i),
                &s.cfg.issuer,
                &s.cfg.audiences,
                s.cfg.identity_claim.as_str(),
            ),
        };
        if matches!(chosen, Chosen::Own(_)) && c.slot(Slot::Sub).is_none() {
            return Err(bad("missing required claim sub"));
        }
        if exp + self.leeway < now {
            return Err(bad("token expired"));
        }
        if nbf.is_some_and(|n| n > now + self.leeway) {
            return Err(bad("token not yet valid (nbf)"));
        }
        if iss.as_str() != Some(want_iss.as_str()) {
            return Err(bad("wrong issuer"));
        }
        if !audience_matches(aud, audiences)? {
            return Err(bad("wrong audience"));
        }
        let sub = match c.get(&self.plan, identity_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(bad(format!("{identity_claim} must be a non-empty string"))),
        };
        if let Some(roles) = c.slot(Slot::Roles) {
            let ok = roles
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string));
            if !ok {
                return Err(bad("roles must be an array of strings"));
            }
        }
        // SPEC §14: our own token of a session signed in through a provider carries
        // `idp`; it then counts as that issuer's (a route's `issuers`, the issuer
        // header) and is revoked under `idp:sub`.
        let (origin, revocation_key) = match chosen {
            Chosen::Own(_) => match c.get(&self.plan, "idp") {
                None => ("self", Some(sub.clone())),
                Some(Value::String(idp)) => {
                    let (i, s) = self
                        .issuers
                        .list
                        .iter()
                        .enumerate()
                        .find(|(_, s)| s.cfg.name == *idp)
                        .ok_or_else(|| bad("idp names no configured issuer"))?;
                    source = IssuerRef::External(i);
                    (
                        s.cfg.name.as_str(),
                        Some(crate::store::revocation_key(idp, &sub)),
                    )
                }
                Some(_) => return Err(bad("idp must be a string")),
            },
            Chosen::External(_, s) => (s.cfg.name.as_str(), None),
        };
        let mut headers = Vec::with_capacity(2 + self.claim_headers.len());
        headers.push((
            self.identity_header.clone(),
            header_value(identity_claim, &sub)?,
        ));
        if let Some(h) = &self.issuer_header {
            headers.push((h.clone(), header_value("idp", origin)?));
        }
        for (h, claim) in &self.claim_headers {
            if let Some(v) = c.get(&self.plan, claim) {
                if let Some(hv) = claim_header_value(claim, v)? {
                    headers.push((h.clone(), hv));
                }
            }
        }
        let claims = self
            .required
            .iter()
            .filter_map(|n| c.get(&self.plan, n).map(|v| (n.clone(), v.clone())))
            .collect();
        let issued_ms = c
            .get(&self.plan, "iat_ms")
            .and_then(Value::as_u64)
            .or_else(|| iat.and_then(|s| s.checked_mul(1000)));
        Ok(Verified {
            source,
            sub,
            iat,
            issued_ms,
            exp,
            nbf,
            headers,
            claims,
            revocation_key,
        })
    }
}

/// One line on why a token failed, for `WWW-Authenticate` and `token inspect`.
pub fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidToken => "malformed token".into(),
        ErrorKind::InvalidSignature => "signature does not verify".into(),
        ErrorKind::InvalidAlgorithm => "algorithm is not the configured one".into(),
        ErrorKind::MissingAlgorithm => "algorithm missing".into(),
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not yet valid (nbf)".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidSubject => "wrong subject".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing required claim {c}"),
        ErrorKind::InvalidClaimFormat(c) => format!("claim {c} has the wrong type"),
        ErrorKind::Base64(_) => "malformed base64".into(),
        ErrorKind::Json(e) => format!("malformed JSON: {e}"),
        ErrorKind::Utf8(_) => "malformed UTF-8".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> ApiError {
        match e {
            VerifyError::Invalid(why) => ApiError::InvalidToken(why.0),
            VerifyError::Unavailable { retry_after, .. } => {
                ApiError::IssuerUnavailable { retry_after }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_headers_refuse_unsafe_values() {
        assert_eq!(
            claim_header_value("roles", &json!(["a", "b"]))
                .unwrap()
                .unwrap(),
            "a,b"
        );
        assert!(claim_header_value("roles", &json!(["a,admin"])).is_err());
        assert!(claim_header_value("x", &json!("a\r\nX-User: admin")).is_err());
        assert!(claim_header_value("x", &json!("a\u{0}")).is_err());
        assert!(claim_header_value("x", &json!({"a": 1})).is_err());
        assert_eq!(claim_header_value("n", &json!(5)).unwrap().unwrap(), "5");
    }
}

#[cfg(test)]
#[path = "jwt_props.rs"]
mod props;
