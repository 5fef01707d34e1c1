//! What a verified ID token yields (SPEC §14): the identity (`identity_claim`), the
//! session's roles (`roles_claim`), and the `allow` rules.
//!
//! Choices where §14 is silent (README "Sign in with your identity provider"):
//! - `allow.groups` is checked against the `roles_claim` when one is set (the claim
//!   the session's roles come from), else against the `groups` claim;
//! - `roles` takes an array of strings; any other shape gives no roles, and an
//!   element that could not travel in a comma-joined header (a comma, a control
//!   character) is dropped, so that the session token never becomes unusable;
//! - with both `email_domains` and `groups`, both must pass.

use serde_json::{Map, Value};

use super::OidcError;
use crate::config::LoginAllow;

/// The identity: the `identity_claim`'s value, a non-empty string that is a valid
/// header value (SPEC §8), else the provider's answer is unusable.
pub fn identity(claims: &Map<String, Value>, identity_claim: &str) -> Result<String, OidcError> {
    match claims.get(identity_claim) {
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= 1024
                && !s.chars().any(char::is_control)
                && http::HeaderValue::from_str(s).is_ok() =>
        {
            Ok(s.clone())
        }
        Some(_) => Err(OidcError::ProviderError(format!(
            "the ID token's {identity_claim} is not a usable identity"
        ))),
        None => Err(OidcError::ProviderError(format!(
            "the ID token has no {identity_claim}"
        ))),
    }
}

/// The strings of an array claim; anything else is none.
fn string_array(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).collect()
        }
        _ => Vec::new(),
    }
}

/// The session's roles from `roles_claim` (SPEC §14: strings only; else empty).
pub fn roles(claims: &Map<String, Value>, roles_claim: Option<&str>) -> Vec<String> {
    let Some(name) = roles_claim else {
        return Vec::new();
    };
    string_array(claims.get(name))
        .into_iter()
        .filter(|r| !r.is_empty() && !r.contains(',') && !r.chars().any(char::is_control))
        .map(String::from)
        .collect()
}

/// The domain of an email address: the part after its only `@`, lowercased; `None`
/// when there is not exactly one `@` or either side is empty.
pub fn email_domain(email: &str) -> Option<String> {
    let (local, domain) = email.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return None;
    }
    Some(domain.to_ascii_lowercase())
}

/// SPEC §14 `allow`: empty lists allow anyone the provider signs in.
pub fn check_allow(
    allow: &LoginAllow,
    claims: &Map<String, Value>,
    roles_claim: Option<&str>,
) -> Result<(), OidcError> {
    if !allow.email_domains.is_empty() {
        // Only a verified address says anything about who this is.
        if claims.get("email_verified") != Some(&Value::Bool(true)) {
            return Err(OidcError::AccessDenied(
                "email_domains is set and the email is not verified".into(),
            ));
        }
        let domain = claims
            .get("email")
            .and_then(Value::as_str)
            .and_then(email_domain)
            .ok_or_else(|| OidcError::AccessDenied("no usable email address".into()))?;
        if !allow.email_domains.contains(&domain) {
            return Err(OidcError::AccessDenied(format!(
                "email domain {domain:?} is not allowed"
            )));
        }
    }
    if !allow.groups.is_empty() {
        let claim = roles_claim.unwrap_or("groups");
        let has = string_array(claims.get(claim));
        if !allow.groups.iter().any(|g| has.contains(&g.as_str())) {
            return Err(OidcError::AccessDenied(format!(
                "not in any allowed group ({claim})"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_email_domain_is_the_part_after_the_only_at() {
        let table = [
            ("alice@example.com", Some("example.com")),
            ("Alice@EXAMPLE.com", Some("example.com")),
            ("a@evil@example.com", None),
            ("@example.com", None),
            ("alice@", None),
            ("alice", None),
            (
                "alice@example.com.evil.example",
                Some("example.com.evil.example"),
            ),
            ("alice@sub.example.com", Some("sub.example.com")),
        ];
        for (email, want) in table {
            assert_eq!(email_domain(email).as_deref(), want, "{email}");
        }
    }

    #[test]
    fn email_domains_need_a_verified_address_and_compare_exactly() {
        let allow = LoginAllow {
            email_domains: vec!["example.com".into()],
            groups: vec![],
        };
        let ok = |email: &str, verified: Value| {
            check_allow(
                &allow,
                &map(json!({"email": email, "email_verified": verified})),
                None,
            )
            .is_ok()
        };
        assert!(ok("alice@example.com", json!(true)));
        assert!(ok("ALICE@Example.COM", json!(true)));
        assert!(!ok("alice@example.com", json!(false)));
        assert!(
            !ok("alice@example.com", json!("true")),
            "a string is not true"
        );
        assert!(!ok("a@evil@example.com", json!(true)));
        assert!(!ok("alice@sub.example.com", json!(true)));
        assert!(!ok("alice@example.com.evil.example", json!(true)));
        assert!(!ok("alice@evilexample.com", json!(true)));
        assert!(check_allow(&allow, &map(json!({"email_verified": true})), None).is_err());
        // Nothing set: anyone.
        assert!(check_allow(&LoginAllow::default(), &map(json!({})), None).is_ok());
    }

    #[test]
    fn groups_come_from_the_roles_claim_or_else_groups() {
        let allow = LoginAllow {
            email_domains: vec![],
            groups: vec!["staff".into()],
        };
        let c = map(json!({"groups": ["guests"], "realm_roles": ["staff"]}));
        assert!(check_allow(&allow, &c, None).is_err());
        assert!(check_allow(&allow, &c, Some("realm_roles")).is_ok());
        let c = map(json!({"groups": ["guests", "staff"]}));
        assert!(check_allow(&allow, &c, None).is_ok());
        let c = map(json!({"groups": "staff"}));
        assert!(check_allow(&allow, &c, None).is_err(), "not an array");
    }

    #[test]
    fn roles_are_strings_only_and_identities_clean_header_values() {
        let c = map(json!({
            "groups": ["staff", "admin"],
            "mixed": ["a", 1],
            "one": "admin",
            "commas": ["a,b", "c"],
            "email": "alice@example.com",
            "evil": "alice\r\nX-User: admin",
            "num": 5,
        }));
        assert_eq!(roles(&c, Some("groups")), ["staff", "admin"]);
        assert!(roles(&c, Some("mixed")).is_empty());
        assert!(roles(&c, Some("one")).is_empty());
        assert_eq!(roles(&c, Some("commas")), ["c"]);
        assert!(roles(&c, None).is_empty());
        assert_eq!(identity(&c, "email").unwrap(), "alice@example.com");
        assert!(identity(&c, "evil").is_err());
        assert!(identity(&c, "num").is_err());
        assert!(identity(&c, "missing").is_err());
    }
}
