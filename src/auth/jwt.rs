//! Access tokens: issue (login, refresh) and verify (every protected request).
//!
//! SPEC §4: the algorithm and keys come from config only — the token's `alg`
//! never chooses, `kid` selects among configured keys only, `none` never passes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::cache::TokenCache;
use super::keys::{jwt_alg, KeySet};
use crate::config::{Config, Tokens};

/// Tokens longer than this are refused before any parsing (the header cap is 64 KiB).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

fn bad(s: impl Into<String>) -> TokenError {
    TokenError(s.into())
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A verified caller, ready to be injected: computed once per distinct token.
#[derive(Debug)]
pub struct Verified {
    pub sub: String,
    pub claims: Map<String, Value>,
    pub exp: u64,
    pub nbf: Option<u64>,
    /// Identity and claim headers to set upstream (already checked as header values).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Claims as a map that refuses duplicate top-level keys: `{"sub":"a","sub":"admin"}`
/// would otherwise mean different things to different JSON parsers.
struct StrictClaims(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictClaims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictClaims;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<StrictClaims, A::Error> {
                let mut out = Map::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate claim {k:?}")));
                    }
                    out.insert(k, v);
                }
                Ok(StrictClaims(out))
            }
        }
        d.deserialize_map(V)
    }
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

pub struct Verifier {
    alg: jsonwebtoken::Algorithm,
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
    leeway: u64,
    identity_header: HeaderName,
    claim_headers: Vec<(HeaderName, String)>,
    cache: TokenCache,
}

impl Verifier {
    pub fn new(config: &Config, keys: &KeySet) -> Verifier {
        let t = &config.tokens;
        let mut validation = Validation::new(jwt_alg(t.algorithm));
        validation.set_issuer(&[&t.issuer]);
        validation.set_audience(&[&t.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = t.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        Verifier {
            alg: jwt_alg(t.algorithm),
            keys: keys.verifying.clone(),
            validation,
            leeway: t.leeway.as_secs(),
            identity_header: config.forward.identity_header.clone(),
            claim_headers: config.forward.claim_headers.clone(),
            cache: TokenCache::new(16_384),
        }
    }

    /// Verifies a bearer token; a token seen before costs a cache lookup.
    pub fn verify(&self, token: &str) -> Result<Arc<Verified>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad("token too large"));
        }
        let now = now_secs();
        if let Some(v) = self.cache.get(token) {
            // Time claims are re-checked on every hit; entries never outlive exp.
            if now <= v.exp + self.leeway && v.nbf.is_none_or(|n| n <= now + self.leeway) {
                return Ok(v);
            }
        }
        let v = Arc::new(self.verify_uncached(token, now)?);
        self.cache.insert(token, v.clone());
        Ok(v)
    }

    fn verify_uncached(&self, token: &str, now: u64) -> Result<Verified, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match unknown_alg(token) {
            Some(alg) => self.wrong_alg(&alg),
            None => bad(describe(e.kind())),
        })?;
        // The token's alg never chooses (SPEC §4); say so before looking at keys.
        if header.alg != self.alg {
            return Err(self.wrong_alg(&format!("{:?}", header.alg)));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| bad("token has no kid"))?;
        let key = self.keys.get(kid).ok_or_else(|| bad("unknown kid"))?;
        let data = jsonwebtoken::decode::<StrictClaims>(token, key, &self.validation).map_err(
            |e| match e.kind() {
                // The signature held; jsonwebtoken stumbled on a claim's type and
                // may call it malformed JSON. Name the claim instead.
                ErrorKind::Json(_)
                | ErrorKind::InvalidClaimFormat(_)
                | ErrorKind::MissingRequiredClaim(_) => unverified_claims(token)
                    .and_then(|c| time_claims(&c).err())
                    .unwrap_or_else(|| bad(describe(e.kind()))),
                other => bad(describe(other)),
            },
        )?;
        let claims = data.claims.0;
        let (exp, nbf) = time_claims(&claims)?;
        let exp = exp.ok_or_else(|| bad("missing required claim exp"))?;
        if exp + self.leeway < now {
            return Err(bad("token expired"));
        }
        let sub = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(bad("sub must be a non-empty string")),
        };
        if let Some(roles) = claims.get("roles") {
            let ok = roles
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string));
            if !ok {
                return Err(bad("roles must be an array of strings"));
            }
        }
        let mut headers = Vec::with_capacity(1 + self.claim_headers.len());
        headers.push((self.identity_header.clone(), header_value("sub", &sub)?));
        for (h, claim) in &self.claim_headers {
            if let Some(v) = claims.get(claim) {
                if let Some(hv) = claim_header_value(claim, v)? {
                    headers.push((h.clone(), hv));
                }
            }
        }
        Ok(Verified {
            sub,
            claims,
            exp,
            nbf,
            headers,
        })
    }
}

impl Verifier {
    fn wrong_alg(&self, alg: &str) -> TokenError {
        let alg: String = alg.chars().take(32).collect();
        bad(format!(
            "algorithm {alg:?} is not the configured one ({:?})",
            self.alg
        ))
    }
}

/// The header's `alg` when it is a string jsonwebtoken does not even know
/// (`none`, `None`, ...): such a header fails to parse, and "malformed JSON"
/// would hide what the token tried.
fn unknown_alg(token: &str) -> Option<String> {
    use base64::Engine;
    let part = token.split('.').next()?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    let header: Map<String, Value> = serde_json::from_slice(&json).ok()?;
    let alg = header.get("alg")?.as_str()?;
    alg.parse::<jsonwebtoken::Algorithm>()
        .is_err()
        .then(|| alg.to_string())
}

/// The payload as JSON, for explaining a failure only: never trusted.
fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token).ok()
}

/// `exp`, `nbf` and `iat`, each absent or a whole number of seconds. SPEC §4: a
/// time claim of the wrong JSON type is invalid, not absent.
fn time_claims(claims: &Map<String, Value>) -> Result<(Option<u64>, Option<u64>), TokenError> {
    let get = |c: &str| match claims.get(c) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("claim {c} must be a whole number of seconds"))),
    };
    let exp = get("exp")?;
    let nbf = get("nbf")?;
    get("iat")?;
    Ok((exp, nbf))
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

/// Does the token carry what the route requires? Arrays match if they contain any
/// listed value; `scope`/`scp` strings split on spaces.
pub fn satisfies(claims: &Map<String, Value>, require: &[(String, Vec<String>)]) -> bool {
    require.iter().all(|(claim, wanted)| {
        let has = |s: &str| wanted.iter().any(|w| w == s);
        match claims.get(claim) {
            Some(Value::String(s)) if claim == "scope" || claim == "scp" => s.split(' ').any(has),
            Some(Value::String(s)) => has(s),
            Some(Value::Array(a)) => a.iter().any(|v| match v {
                Value::String(s) => has(s),
                other => has(&other.to_string()),
            }),
            Some(Value::Number(n)) => has(&n.to_string()),
            Some(Value::Bool(b)) => has(&b.to_string()),
            _ => false,
        }
    })
}

#[derive(serde::Serialize)]
struct AccessClaims<'a> {
    sub: &'a str,
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    /// SPEC §9: the issuing instant in ms, so a revocation and a login within
    /// one second are told apart (see auth::revocation).
    iat_ms: u64,
    nbf: u64,
    exp: u64,
    jti: String,
    roles: &'a [String],
}

pub struct Issuer {
    header: Header,
    key: EncodingKey,
    issuer: String,
    audience: String,
    ttl: u64,
}

impl Issuer {
    pub fn new(t: &Tokens, keys: &KeySet) -> Issuer {
        let mut header = Header::new(jwt_alg(t.algorithm));
        header.kid = Some(keys.signing_kid.clone());
        Issuer {
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
        let now_ms = crate::store::now_ms();
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
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|e| bad(format!("signing failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_claims_are_refused() {
        let r: Result<StrictClaims, _> = serde_json::from_str(r#"{"sub":"a","sub":"admin"}"#);
        assert!(r.is_err());
        let ok: StrictClaims = serde_json::from_str(r#"{"sub":"a","x":1}"#).unwrap();
        assert_eq!(ok.0.len(), 2);
    }

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

    #[test]
    fn time_claims_of_the_wrong_type_are_errors_not_absent() {
        let ok = json!({"exp": 10, "nbf": 5, "iat": 5});
        assert_eq!(
            time_claims(ok.as_object().unwrap()),
            Ok((Some(10), Some(5)))
        );
        assert_eq!(time_claims(&Map::new()), Ok((None, None)));
        for (c, v) in [
            ("exp", json!("10")),
            ("exp", json!(null)),
            ("exp", json!(1.5)),
            ("exp", json!(-1)),
            ("nbf", json!([5])),
            ("iat", json!("yesterday")),
        ] {
            let mut m = Map::new();
            m.insert(c.into(), v);
            let e = time_claims(&m).unwrap_err();
            assert!(e.0.contains(c), "{e}");
        }
    }

    #[test]
    fn unknown_algorithms_are_named() {
        use base64::Engine;
        let enc = |h: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h);
        let t = format!("{}.e30.", enc(r#"{"alg":"nOnE"}"#));
        assert_eq!(unknown_alg(&t).as_deref(), Some("nOnE"));
        let t = format!("{}.e30.", enc(r#"{"alg":"HS256"}"#));
        assert_eq!(unknown_alg(&t), None);
        assert_eq!(unknown_alg("garbage"), None);
    }

    #[test]
    fn requirements_match_any_listed_value() {
        let c = json!({"roles": ["user", "admin"], "scope": "read write", "tier": "gold"});
        let c = c.as_object().unwrap();
        let req =
            |k: &str, v: &[&str]| vec![(k.to_string(), v.iter().map(|s| s.to_string()).collect())];
        assert!(satisfies(c, &req("roles", &["admin"])));
        assert!(!satisfies(c, &req("roles", &["root"])));
        assert!(satisfies(c, &req("scope", &["write"])));
        assert!(!satisfies(c, &req("tier", &["silver"])));
        assert!(!satisfies(c, &req("missing", &["x"])));
    }
}

#[cfg(test)]
#[path = "jwt_props.rs"]
mod props;
