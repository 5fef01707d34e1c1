//! Verifying the provider's tokens (SPEC §14) with the §10 machinery: the issuer's
//! keys chosen by `kid` among that issuer's only, `alg` from its `algorithms` (never
//! `none`, never HS*: config refuses them), the signature checked with keys parsed
//! when fetched.
//!
//! ID tokens (OIDC Core §3.1.3.7): `iss` equal to the issuer, `aud` containing the
//! client_id (and `azp` equal to it when `aud` has several, or whenever present),
//! `exp` and `iat` within `leeway`, `nonce` equal to the flow's.
//! Logout tokens (OpenID Back-Channel Logout 1.0 §2.6): the same signature, `iss`,
//! `aud` and time checks, plus the back-channel `events` member, no `nonce`, `sub`
//! or `sid`, and a `jti` (used once: the caller records it in the store).

use serde_json::{Map, Value};

use super::{constant_time_eq, OidcError};
use crate::verify::issuers::{IssuerState, LookupError};
use crate::verify::jwk::Check;
use crate::verify::token::{self, Alg};

/// Larger than an access token may be (SPEC §4: 8 KiB): an ID token may carry many
/// groups. Still bounded before any parsing.
pub const MAX_ID_TOKEN_LEN: usize = 64 * 1024;

/// The member of `events` that makes a JWT a logout token.
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A logout token without `exp` counts as expiring this long after its `iat`
/// (Back-Channel Logout drafts before 1.0 final had no `exp`).
pub const LOGOUT_TOKEN_MAX_AGE: u64 = 600;

fn bad(s: impl Into<String>) -> OidcError {
    OidcError::ProviderError(s.into())
}

/// A NumericDate: a non-negative JSON number (fractions allowed, RFC 7519 §2). Any
/// other type is invalid, not absent.
fn numeric_date(c: &Map<String, Value>, name: &str) -> Result<Option<u64>, OidcError> {
    match c.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| bad(format!("claim {name} is not a NumericDate"))),
    }
}

/// Signature under the issuer's keys, then `iss`, `aud`/`azp` and the time claims.
/// Returns the claims. `exp_required` is false only for logout tokens.
async fn verify_signed(
    issuer: &IssuerState,
    client_id: &str,
    token: &str,
    leeway: u64,
    now: u64,
    exp_required: bool,
) -> Result<Map<String, Value>, OidcError> {
    if token.len() > MAX_ID_TOKEN_LEN {
        return Err(bad("token too large"));
    }
    let parts = token::split(token).map_err(|e| bad(e.0))?;
    let header = token::header(parts.header).map_err(|e| bad(e.0))?;
    let alg = match header.alg {
        Alg::Known(a) if issuer.cfg.algorithms.contains(&a) => a,
        other => {
            return Err(bad(format!(
                "algorithm {other} is not allowed for issuer {}",
                issuer.cfg.name
            )))
        }
    };
    let kid = header
        .kid
        .as_deref()
        .ok_or_else(|| bad("token has no kid"))?;
    let key = issuer.key(kid).await.map_err(|e| match e {
        LookupError::UnknownKid => bad("unknown kid"),
        LookupError::Unavailable { name, .. } => {
            OidcError::ProviderUnavailable(format!("issuer {name} has no keys"))
        }
    })?;
    let sig = token::b64(parts.signature).map_err(|e| bad(e.0))?;
    match key.verify(alg, parts.signed.as_bytes(), &sig) {
        Check::Valid => {}
        Check::BadSignature => return Err(bad("signature does not verify")),
        Check::AlgorithmDoesNotFit => return Err(bad("algorithm does not fit the key")),
    }
    let payload = token::b64(parts.payload).map_err(|e| bad(e.0))?;
    let claims = match serde_json::from_slice::<Value>(&payload) {
        Ok(Value::Object(m)) => m,
        _ => return Err(bad("the payload is not a JSON object")),
    };
    check_claims(
        &claims,
        &issuer.cfg.issuer,
        client_id,
        leeway,
        now,
        exp_required,
    )?;
    Ok(claims)
}

/// The claim checks shared by ID and logout tokens (pure, for tests).
fn check_claims(
    c: &Map<String, Value>,
    want_iss: &str,
    client_id: &str,
    leeway: u64,
    now: u64,
    exp_required: bool,
) -> Result<(), OidcError> {
    if c.get("iss").and_then(Value::as_str) != Some(want_iss) {
        return Err(bad("wrong issuer"));
    }
    let auds: Vec<&str> = match c.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).collect()
        }
        _ => return Err(bad("aud must be a string or an array of strings")),
    };
    if !auds.contains(&client_id) {
        return Err(bad("the token is not for this client (aud)"));
    }
    match c.get("azp") {
        Some(Value::String(azp)) if azp == client_id => {}
        Some(_) => return Err(bad("azp names another client")),
        None if auds.len() > 1 => return Err(bad("several audiences and no azp")),
        None => {}
    }
    let exp = numeric_date(c, "exp")?;
    let iat = numeric_date(c, "iat")?.ok_or_else(|| bad("missing required claim iat"))?;
    let nbf = numeric_date(c, "nbf")?;
    let exp = match (exp, exp_required) {
        (Some(e), _) => e,
        (None, true) => return Err(bad("missing required claim exp")),
        (None, false) => iat.saturating_add(LOGOUT_TOKEN_MAX_AGE),
    };
    if exp.saturating_add(leeway) < now {
        return Err(bad("token expired"));
    }
    if iat > now.saturating_add(leeway) {
        return Err(bad("token issued in the future (iat)"));
    }
    if nbf.is_some_and(|n| n > now.saturating_add(leeway)) {
        return Err(bad("token not yet valid (nbf)"));
    }
    Ok(())
}

/// An ID token from the token endpoint, for the flow whose nonce is `nonce`.
pub async fn verify_id_token(
    issuer: &IssuerState,
    client_id: &str,
    token: &str,
    nonce: &str,
    leeway: u64,
    now: u64,
) -> Result<Map<String, Value>, OidcError> {
    let claims = verify_signed(issuer, client_id, token, leeway, now, true).await?;
    check_nonce(&claims, nonce)?;
    Ok(claims)
}

fn check_nonce(c: &Map<String, Value>, nonce: &str) -> Result<(), OidcError> {
    match c.get("nonce").and_then(Value::as_str) {
        Some(n) if constant_time_eq(n, nonce) => Ok(()),
        Some(_) => Err(bad("nonce does not match the flow's")),
        None => Err(bad("the ID token has no nonce")),
    }
}

/// What a valid logout token asks to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    /// When the `jti` may be forgotten: past this the token is expired anyway.
    pub remember_until: u64,
}

/// A back-channel logout token (OpenID Back-Channel Logout 1.0 §2.6). The `jti`
/// single use is the caller's (it needs the store).
pub async fn verify_logout_token(
    issuer: &IssuerState,
    client_id: &str,
    token: &str,
    leeway: u64,
    now: u64,
) -> Result<LogoutRequest, OidcError> {
    let claims = verify_signed(issuer, client_id, token, leeway, now, false).await?;
    logout_request(&claims, leeway)
}

/// The logout-specific claim rules (pure, for tests).
fn logout_request(c: &Map<String, Value>, leeway: u64) -> Result<LogoutRequest, OidcError> {
    match c.get("events") {
        Some(Value::Object(ev)) if ev.get(BACKCHANNEL_EVENT).is_some_and(Value::is_object) => {}
        _ => return Err(bad("no back-channel logout event")),
    }
    if c.contains_key("nonce") {
        // §2.4: a nonce marks an ID token; refusing it stops one posing as the other.
        return Err(bad("a logout token carries no nonce"));
    }
    let text = |name: &str| -> Result<Option<String>, OidcError> {
        match c.get(name) {
            // oidc-provider writes `"sid": null` for a logout without a session.
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("{name} must be a non-empty string"))),
        }
    };
    let (sub, sid) = (text("sub")?, text("sid")?);
    if sub.is_none() && sid.is_none() {
        return Err(bad("a logout token names a sub or a sid"));
    }
    let jti = text("jti")?.ok_or_else(|| bad("a logout token has a jti"))?;
    let iat = numeric_date(c, "iat")?.unwrap_or(0);
    let exp = numeric_date(c, "exp")?.unwrap_or(iat.saturating_add(LOGOUT_TOKEN_MAX_AGE));
    Ok(LogoutRequest {
        sub,
        sid,
        jti,
        remember_until: exp.max(iat.saturating_add(LOGOUT_TOKEN_MAX_AGE)) + leeway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://id.example.com";
    const NOW: u64 = 1_800_000_000;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn id(extra: Value) -> Map<String, Value> {
        let mut m = map(json!({"iss": ISS, "aud": "authgate", "sub": "alice",
            "iat": NOW - 5, "exp": NOW + 300, "nonce": "n1"}));
        for (k, v) in map(extra) {
            if v.is_null() {
                m.remove(&k);
            } else {
                m.insert(k, v);
            }
        }
        m
    }

    fn check(c: &Map<String, Value>) -> Result<(), OidcError> {
        check_claims(c, ISS, "authgate", 30, NOW, true)
    }

    #[test]
    fn id_token_claims_are_checked_one_by_one() {
        assert!(check(&id(json!({}))).is_ok());
        let refused = [
            json!({"iss": "https://evil.example"}),
            json!({"iss": null}),
            json!({"aud": "other"}),
            json!({"aud": ["other", "third"]}),
            json!({"aud": 5}),
            json!({"aud": ["authgate", "other"]}),
            json!({"aud": ["authgate", "other"], "azp": "other"}),
            json!({"azp": "other"}),
            json!({"exp": NOW - 31}),
            json!({"exp": null}),
            json!({"exp": "soon"}),
            json!({"iat": NOW + 31}),
            json!({"iat": null}),
            json!({"nbf": NOW + 31}),
        ];
        for extra in refused {
            let c = id(extra.clone());
            assert_eq!(
                check(&c).err().map(|e| e.class()),
                Some("provider_error"),
                "{extra}"
            );
        }
        let accepted = [
            json!({"aud": ["authgate"]}),
            json!({"aud": ["authgate", "other"], "azp": "authgate"}),
            json!({"exp": NOW - 29}),
            json!({"iat": NOW + 29}),
            json!({"exp": (NOW + 10) as f64 + 0.5}),
        ];
        for extra in accepted {
            assert!(check(&id(extra.clone())).is_ok(), "{extra}");
        }
        assert!(check_nonce(&id(json!({})), "n1").is_ok());
        assert!(check_nonce(&id(json!({})), "n2").is_err());
        assert!(check_nonce(&id(json!({"nonce": null})), "n1").is_err());
        assert!(check_nonce(&id(json!({"nonce": 1})), "n1").is_err());
    }

    fn logout(extra: Value) -> Map<String, Value> {
        let mut m = map(
            json!({"iss": ISS, "aud": "authgate", "sub": "alice", "sid": "s1",
            "iat": NOW - 5, "jti": "j1",
            "events": {BACKCHANNEL_EVENT: {}}}),
        );
        for (k, v) in map(extra) {
            if v.is_null() {
                m.remove(&k);
            } else {
                m.insert(k, v);
            }
        }
        m
    }

    #[test]
    fn logout_tokens_need_the_event_a_subject_and_a_jti_and_no_nonce() {
        let ok = logout_request(&logout(json!({})), 30).unwrap();
        assert_eq!(ok.sub.as_deref(), Some("alice"));
        assert_eq!(ok.sid.as_deref(), Some("s1"));
        assert_eq!(ok.jti, "j1");
        assert!(ok.remember_until >= NOW + LOGOUT_TOKEN_MAX_AGE - 5);
        assert!(logout_request(&logout(json!({"sub": null})), 30).is_ok());
        assert!(logout_request(&logout(json!({"sid": null})), 30).is_ok());
        let mut null_sid = logout(json!({}));
        null_sid.insert("sid".into(), Value::Null);
        assert_eq!(logout_request(&null_sid, 30).unwrap().sid, None);
        let refused = [
            json!({"events": null}),
            json!({"events": {"http://example.com/other": {}}}),
            json!({"events": {BACKCHANNEL_EVENT: "yes"}}),
            json!({"events": [BACKCHANNEL_EVENT]}),
            json!({"nonce": "n1"}),
            json!({"sub": null, "sid": null}),
            json!({"jti": null}),
            json!({"jti": ""}),
            json!({"sub": 5}),
        ];
        for extra in refused {
            assert!(
                logout_request(&logout(extra.clone()), 30).is_err(),
                "{extra}"
            );
        }
        // The shared checks apply too: iat is required, exp may be absent.
        let c = logout(json!({}));
        assert!(check_claims(&c, ISS, "authgate", 30, NOW, false).is_ok());
        assert!(check_claims(
            &logout(json!({"iat": null})),
            ISS,
            "authgate",
            30,
            NOW,
            false
        )
        .is_err());
        let old = logout(json!({"iat": NOW - LOGOUT_TOKEN_MAX_AGE - 60}));
        assert!(
            check_claims(&old, ISS, "authgate", 30, NOW, false).is_err(),
            "too old without exp"
        );
        assert!(check_claims(
            &logout(json!({"aud": "other"})),
            ISS,
            "authgate",
            30,
            NOW,
            false
        )
        .is_err());
    }

    /// Real signatures through the §10 key path: a good token passes, and `none`,
    /// HS256 signed with the public key, a changed signature, an unknown kid, and a key
    /// of another type under the right kid are all refused.
    #[tokio::test]
    async fn id_tokens_verify_only_under_the_issuers_keys_and_algorithms() {
        use crate::config::{IssuerConfig, JwksSource};
        use crate::verify::issuers::for_test;
        use crate::verify::jwk::VerifyKey;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        crate::install_crypto();
        let pem =
            crate::identity::signing_keys::generate_pem(crate::config::Algorithm::ES256).unwrap();
        let enc = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap(),
        )
        .unwrap();
        let key = VerifyKey::from_jwk(&jwk, &[Algorithm::ES256]).unwrap();
        let cfg = IssuerConfig {
            name: "corp".into(),
            issuer: ISS.into(),
            jwks: JwksSource::Discovery,
            audiences: vec!["api".into()],
            algorithms: vec![Algorithm::ES256],
            identity_claim: "email".into(),
            ca: None,
            jwks_wait: std::time::Duration::from_millis(10),
            refetch_cooldown: std::time::Duration::from_secs(3600),
            login: None,
        };
        let issuer = for_test(cfg, [("k1".to_string(), std::sync::Arc::new(key))].into());
        let now = crate::clock::now_secs();
        let claims = json!({"iss": ISS, "aud": "authgate", "sub": "alice", "email": "a@example.com",
            "iat": now, "exp": now + 300, "nonce": "n1"});
        let sign = |kid: &str| {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(kid.into());
            jsonwebtoken::encode(&h, &claims, &enc).unwrap()
        };
        let good = sign("k1");
        let c = verify_id_token(&issuer, "authgate", &good, "n1", 30, now)
            .await
            .unwrap();
        assert_eq!(c["email"], "a@example.com");
        assert!(verify_id_token(&issuer, "authgate", &good, "n2", 30, now)
            .await
            .is_err());
        assert!(verify_id_token(&issuer, "other", &good, "n1", 30, now)
            .await
            .is_err());
        // A changed signature.
        let mut bad_sig = good.clone();
        let last = bad_sig.pop().unwrap();
        bad_sig.push(if last == 'A' { 'B' } else { 'A' });
        // alg none, and HS256 keyed with the public JWK's bytes.
        let payload = good.split('.').nth(1).unwrap();
        let none = format!(
            "{}.{payload}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#)
        );
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some("k1".into());
        let hs256 = jsonwebtoken::encode(
            &hs,
            &claims,
            &EncodingKey::from_secret(jwk.to_string().as_bytes()).unwrap(),
        )
        .unwrap();
        for (what, t) in [
            ("changed signature", bad_sig),
            ("alg none", none),
            ("HS256", hs256),
            ("unknown kid", sign("k2")),
            ("not a JWT", "abc".to_string()),
        ] {
            let e = verify_id_token(&issuer, "authgate", &t, "n1", 30, now)
                .await
                .err()
                .unwrap_or_else(|| panic!("{what} passed"));
            assert_eq!(e.class(), "provider_error", "{what}: {e}");
        }
    }
}
