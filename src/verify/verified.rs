//! What a successful verification yields, whoever issued the credential, and the
//! route's `require` check against it (SPEC §4).

use http::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::IssuerRef;

/// A verified caller, ready to be injected: computed once per distinct token.
#[derive(Debug)]
pub struct Verified {
    /// Who issued it: a route's `issuers` list is checked against this.
    pub source: IssuerRef,
    /// The identity: `sub` for authgate's tokens, the issuer's `identity_claim` else.
    pub sub: String,
    pub iat: Option<u64>,
    /// When it was issued, in ms (`iat_ms`, else `iat`): for the revocation check (SPEC §9).
    pub issued_ms: Option<u64>,
    pub exp: u64,
    pub nbf: Option<u64>,
    /// Identity and claim headers to set upstream (already checked as header values).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Only the claims some route's `require` names, for the policy check.
    pub claims: Vec<(String, Value)>,
    /// SPEC §9, §14: the key the revocation list knows this caller by, for authgate's
    /// own tokens (`alice`, or `corp:alice@example.com` for a session signed in
    /// through `corp`); `None` for another issuer's tokens. Built once per token, so
    /// the request path looks it up without allocating.
    pub revocation_key: Option<String>,
}

/// Does the token carry what the route requires? Arrays match if they contain any
/// listed value; `scope`/`scp` strings split on spaces.
pub fn satisfies(claims: &[(String, Value)], require: &[(String, Vec<String>)]) -> bool {
    require.iter().all(|(claim, wanted)| {
        let has = |s: &str| wanted.iter().any(|w| w == s);
        let value = claims.iter().find(|(n, _)| n == claim).map(|(_, v)| v);
        match value {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requirements_match_any_listed_value() {
        let c = vec![
            ("roles".to_string(), json!(["user", "admin"])),
            ("scope".to_string(), json!("read write")),
            ("tier".to_string(), json!("gold")),
        ];
        let req =
            |k: &str, v: &[&str]| vec![(k.to_string(), v.iter().map(|s| s.to_string()).collect())];
        assert!(satisfies(&c, &req("roles", &["admin"])));
        assert!(!satisfies(&c, &req("roles", &["root"])));
        assert!(satisfies(&c, &req("scope", &["write"])));
        assert!(!satisfies(&c, &req("tier", &["silver"])));
        assert!(!satisfies(&c, &req("missing", &["x"])));
    }
}
