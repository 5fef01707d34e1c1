//! A fetched JWKS document → the keys an issuer may use (SPEC §10).
//!
//! Hostile input is expected: a document over 1 MiB, with more than 100 keys, or not
//! JSON is a failed fetch; single keys that are unusable (`use` other than `sig`, an
//! `alg` the issuer does not allow, an `oct` key, parameters that do not parse) are
//! skipped and logged, never fatal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::verify::jwk::VerifyKey;

/// SPEC §10 limits.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
pub const MAX_KEYS: usize = 100;
/// `Cache-Control: max-age` is clamped to [1 min, 24 h]; 1 h without one.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(60);
pub const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS larger than 1 MiB")]
    TooLarge,
    #[error("JWKS is not JSON: {0}")]
    NotJson(String),
    #[error("JWKS is not an object with a \"keys\" array")]
    Shape,
    #[error("JWKS has {0} keys (at most 100)")]
    TooManyKeys(usize),
    #[error("JWKS has no usable key")]
    NoUsableKey,
}

impl JwksError {
    /// The `outcome` label of `authgate_jwks_fetches_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            JwksError::TooLarge => "too_large",
            JwksError::NotJson(_) | JwksError::Shape => "invalid",
            JwksError::TooManyKeys(_) => "too_many_keys",
            JwksError::NoUsableKey => "no_usable_key",
        }
    }
}

pub type KeyMap = HashMap<String, Arc<VerifyKey>>;

/// Parses a JWKS body; `issuer` names it in the log lines about skipped keys.
pub fn parse(body: &[u8], allowed: &[Algorithm], issuer: &str) -> Result<KeyMap, JwksError> {
    if body.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| JwksError::NotJson(e.to_string()))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::Shape)?;
    if keys.len() > MAX_KEYS {
        return Err(JwksError::TooManyKeys(keys.len()));
    }
    let mut out = KeyMap::with_capacity(keys.len());
    for (i, jwk) in keys.iter().enumerate() {
        let kid = match jwk.get("kid").and_then(Value::as_str) {
            Some(k) if !k.is_empty() && k.len() <= 256 => k,
            _ => {
                // SPEC §8: a token without kid is refused, so a key without one is useless.
                tracing::warn!(issuer, index = i, "JWKS key without a usable kid skipped");
                continue;
            }
        };
        match jwk.get("use") {
            None => {}
            Some(Value::String(u)) if u == "sig" => {}
            Some(_) => {
                tracing::info!(issuer, kid, "JWKS key whose use is not sig skipped");
                continue;
            }
        }
        if out.contains_key(kid) {
            // Two keys under one kid: which one a token means is ambiguous; keep the first.
            tracing::warn!(issuer, kid, "JWKS key with a duplicate kid skipped");
            continue;
        }
        match VerifyKey::from_jwk(jwk, allowed) {
            Ok(k) => {
                out.insert(kid.to_string(), Arc::new(k));
            }
            Err(e) => tracing::warn!(issuer, kid, error = %e, "JWKS key skipped"),
        }
    }
    if out.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(out)
}

/// How long fetched keys are fresh: `Cache-Control: max-age`, clamped.
pub fn max_age(headers: &HeaderMap) -> Duration {
    let found = headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|d| {
            let (k, v) = d.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        });
    match found {
        Some(s) => Duration::from_secs(s).clamp(MIN_MAX_AGE, MAX_MAX_AGE),
        None => DEFAULT_MAX_AGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;

    fn ed_jwk(kid: &str) -> Value {
        use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
               "x": URL_SAFE_NO_PAD.encode(kp.public_key().as_ref())})
    }

    const ED: &[Algorithm] = &[Algorithm::EdDSA];

    #[test]
    fn usable_keys_are_kept_and_unusable_ones_skipped() {
        let mut enc = ed_jwk("enc");
        enc["use"] = json!("enc");
        let mut wrong_alg = ed_jwk("rs");
        wrong_alg["alg"] = json!("RS256");
        let oct = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"});
        let no_kid = json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"});
        let broken = json!({"kty": "OKP", "crv": "Ed25519", "kid": "broken", "x": "!!"});
        let doc =
            json!({"keys": [ed_jwk("good"), enc, wrong_alg, oct, no_kid, broken, ed_jwk("good")]});
        let keys = parse(doc.to_string().as_bytes(), ED, "t").unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["good"]);
    }

    #[test]
    fn an_oct_key_under_a_real_kid_is_never_usable() {
        let doc =
            json!({"keys": [{"kty": "oct", "kid": "rsa-kid", "alg": "HS256", "k": "c2VjcmV0"}]});
        let all = [Algorithm::RS256, Algorithm::HS256];
        assert_eq!(
            parse(doc.to_string().as_bytes(), &all, "t").err(),
            Some(JwksError::NoUsableKey)
        );
    }

    #[test]
    fn hostile_documents_are_failed_fetches() {
        assert!(matches!(
            parse(b"<html>", ED, "t"),
            Err(JwksError::NotJson(_))
        ));
        assert_eq!(parse(b"{\"k\":[]}", ED, "t").err(), Some(JwksError::Shape));
        assert_eq!(parse(b"[]", ED, "t").err(), Some(JwksError::Shape));
        let big = vec![b' '; MAX_JWKS_BYTES + 1];
        assert_eq!(parse(&big, ED, "t").err(), Some(JwksError::TooLarge));
        let many: Vec<Value> = (0..101)
            .map(|i| json!({"kty": "OKP", "kid": format!("k{i}")}))
            .collect();
        let doc = json!({ "keys": many }).to_string();
        assert_eq!(
            parse(doc.as_bytes(), ED, "t").err(),
            Some(JwksError::TooManyKeys(101))
        );
        assert_eq!(
            parse(b"{\"keys\":[]}", ED, "t").err(),
            Some(JwksError::NoUsableKey)
        );
    }

    #[test]
    fn max_age_is_clamped_and_defaults_to_an_hour() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(http::header::CACHE_CONTROL, v.parse().unwrap());
            max_age(&m)
        };
        assert_eq!(max_age(&HeaderMap::new()), DEFAULT_MAX_AGE);
        assert_eq!(h("public, max-age=600"), Duration::from_secs(600));
        assert_eq!(h("max-age=0"), MIN_MAX_AGE);
        assert_eq!(h("max-age=999999"), MAX_MAX_AGE);
        assert_eq!(h("no-cache"), DEFAULT_MAX_AGE);
        assert_eq!(h("max-age=abc"), DEFAULT_MAX_AGE);
    }
}
