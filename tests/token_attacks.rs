//! Attacks on bearer tokens (SPEC §4, §8 "Tokens"). Every forged, tampered or
//! malformed token gets 401 with an RFC 6750 challenge that says why, and the
//! upstream never sees the request. Tokens are forged with the gateway's real
//! key wherever that makes the attack sharper: the only thing wrong with each
//! token is the thing under test.
mod common;
use common::*;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

const CHALLENGE: &str = "Bearer realm=\"authgate\", error=\"invalid_token\", error_description=\"";

/// A gateway with the test config and a signer holding its real key.
fn gateway(alg: &str) -> (Upstream, Gateway, Signer) {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.tokens = format!("algorithm = \"{alg}\"\nsigning_key = \"file:data/signing-key.pem\"\n");
    let gw = Gateway::start(&cfg);
    let jwt_alg = match alg {
        "EdDSA" => Algorithm::EdDSA,
        "ES256" => Algorithm::ES256,
        "RS256" => Algorithm::RS256,
        other => panic!("{other}"),
    };
    let signer = Signer::of_gateway(&gw, jwt_alg);
    (up, gw, signer)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// `token` on /protected: 401 `invalid_token`, an `error_description` containing
/// `why`, and nothing forwarded.
fn assert_rejected(gw: &Gateway, up: &Upstream, token: &str, why: &str) {
    let before = up.count();
    let r = get(gw.addr, "/protected/x", &[&bearer(token)]);
    let shown = if token.len() > 200 {
        &token[..200]
    } else {
        token
    };
    assert_eq!(
        r.status,
        401,
        "{shown}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    let c = r
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{shown}: no WWW-Authenticate"));
    assert!(
        c.starts_with(CHALLENGE) && c.ends_with('"'),
        "{shown}: challenge {c:?}"
    );
    let desc = &c[CHALLENGE.len()..c.len() - 1];
    assert!(
        desc.contains(why),
        "{shown}: description {desc:?} should say {why:?}"
    );
    let body = r.json();
    assert_eq!(body["error"], "invalid_token", "{shown}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains(why)));
    assert_eq!(
        up.count(),
        before,
        "{shown}: the upstream received the request"
    );
}

fn assert_accepted(gw: &Gateway, up: &Upstream, token: &str, user: &str) {
    let r = get(gw.addr, "/protected/x", &[&bearer(token)]);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(up.last().header("x-user").as_deref(), Some(user));
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn public_pem(spki_der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(spki_der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

fn signing_key(gw: &Gateway) -> Vec<u8> {
    std::fs::read(gw.dir.path().join("data/signing-key.pem")).unwrap()
}

/// A fresh Ed25519 key the gateway has never heard of.
fn attacker_ed25519() -> (Signer, Value) {
    authgate::install_crypto();
    let kp = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
    let der = kp.to_pkcs8v1().unwrap();
    let signer = Signer::from_key(EncodingKey::from_ed_der(der.as_ref()), Algorithm::EdDSA);
    let jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
        "kid": signer.kid, "x": b64(kp.public_key().as_ref()),
    });
    (signer, jwk)
}

fn hs256_with(secret: &[u8], header: &Value, claims: &Value) -> String {
    let s = Signer {
        alg: Algorithm::HS256,
        key: EncodingKey::from_secret(secret).unwrap(),
        kid: String::new(),
    };
    s.sign(header, claims)
}

// ---------------------------------------------------------------- control

#[test]
fn a_token_forged_with_the_real_key_is_accepted() {
    // The control for everything below: the forging works, so each rejection is
    // the attack's doing.
    let (up, gw, s) = gateway("EdDSA");
    assert_accepted(
        &gw,
        &up,
        &s.token(&good_claims("alice", &["user"])),
        "alice",
    );
    assert_eq!(up.last().header("x-user-roles").as_deref(), Some("user"));
}

// ---------------------------------------------------------------- absent and garbage

#[test]
fn no_token_gets_a_bare_bearer_challenge() {
    let (up, gw, _) = gateway("EdDSA");
    for extra in [&[][..], &["Authorization: Basic YWxpY2U6cGFzc3dvcmQ="][..]] {
        let r = get(gw.addr, "/protected/x", extra);
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"authgate\"")
        );
        assert_eq!(r.json()["error"], "missing_token");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn garbage_tokens_are_rejected() {
    let (up, gw, _) = gateway("EdDSA");
    for t in ["garbage", "a.b", "a.b.c.d", "...", "eyJhbGciOiJFZERTQSJ9"] {
        assert_rejected(&gw, &up, t, "malformed");
    }
}

// ---------------------------------------------------------------- algorithm confusion

#[test]
fn alg_none_in_any_case_is_rejected_signed_or_not() {
    let (up, gw, s) = gateway("EdDSA");
    let payload = good_claims("alice", &["admin"]).to_string();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({ "alg": alg, "typ": "JWT", "kid": s.kid }).to_string();
        let unsigned = format!("{}.{}.", b64(&header), b64(&payload));
        assert_rejected(&gw, &up, &unsigned, "algorithm");
        // The same header and payload with a real signature over them.
        let signed = s.sign_raw(&header, &payload);
        assert_rejected(&gw, &up, &signed, "algorithm");
    }
}

#[test]
fn hs256_signed_with_the_eddsa_public_key_is_rejected() {
    let (up, gw, s) = gateway("EdDSA");
    let kp = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pem_der(
        &signing_key(&gw),
    ))
    .unwrap();
    let raw = kp.public_key().as_ref().to_vec();
    let pem = public_pem(kp.public_key().as_der().unwrap().as_ref());
    // The JWKS is where an attacker gets the public key: make sure it is this one.
    let jwks = get(gw.addr, "/.well-known/jwks.json", &[]).json();
    assert_eq!(jwks["keys"][0]["x"], b64(&raw));
    let header = json!({ "alg": "HS256", "typ": "JWT", "kid": s.kid });
    let claims = good_claims("alice", &["admin"]);
    for secret in [raw.clone(), pem.clone().into_bytes(), pem.trim_end().into()] {
        assert_rejected(
            &gw,
            &up,
            &hs256_with(&secret, &header, &claims),
            "algorithm",
        );
    }
}

#[test]
fn hs256_signed_with_the_rs256_public_key_pem_is_rejected() {
    let (up, gw, s) = gateway("RS256");
    let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(&pem_der(&signing_key(&gw))).unwrap();
    let spki = kp.public_key().as_der().unwrap();
    let pem = public_pem(spki.as_ref());
    let header = json!({ "alg": "HS256", "typ": "JWT", "kid": s.kid });
    let claims = good_claims("alice", &["admin"]);
    for secret in [
        pem.clone().into_bytes(),
        pem.trim_end().into(),
        spki.as_ref().to_vec(),
    ] {
        assert_rejected(
            &gw,
            &up,
            &hs256_with(&secret, &header, &claims),
            "algorithm",
        );
    }
    // The control: the same gateway takes a genuine RS256 token.
    assert_accepted(&gw, &up, &s.token(&claims), "alice");
}

#[test]
fn es256_signature_with_r_and_s_zero_is_rejected() {
    let (up, gw, s) = gateway("ES256");
    let claims = good_claims("alice", &["admin"]);
    let genuine = s.token(&claims);
    let unsigned = &genuine[..genuine.rfind('.').unwrap()];
    // JWS fixed-width r || s, and the DER SEQUENCE { INTEGER 0, INTEGER 0 } some
    // verifiers accept too.
    for sig in [
        vec![0u8; 64],
        vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00],
    ] {
        let forged = format!("{unsigned}.{}", b64(&sig));
        assert_rejected(&gw, &up, &forged, "signature does not verify");
    }
    assert_accepted(&gw, &up, &genuine, "alice");
}

// ---------------------------------------------------------------- signatures and keys

#[test]
fn a_stripped_signature_is_rejected() {
    let (up, gw, s) = gateway("EdDSA");
    let genuine = s.token(&good_claims("alice", &[]));
    let stripped = &genuine[..=genuine.rfind('.').unwrap()];
    assert!(stripped.ends_with('.'));
    assert_rejected(&gw, &up, stripped, "signature does not verify");
    let no_dot = &genuine[..genuine.rfind('.').unwrap()];
    assert_rejected(&gw, &up, no_dot, "malformed");
}

#[test]
fn a_signature_from_another_key_under_the_real_kid_is_rejected() {
    let (up, gw, s) = gateway("EdDSA");
    let (attacker, _) = attacker_ed25519();
    let forged = attacker.sign(&s.header(), &good_claims("alice", &["admin"]));
    assert_rejected(&gw, &up, &forged, "signature does not verify");
    // Under its own kid, the other key is simply unknown.
    let forged = attacker.token(&good_claims("alice", &["admin"]));
    assert_rejected(&gw, &up, &forged, "unknown kid");
}

#[test]
fn a_tampered_payload_is_rejected() {
    let (up, gw, s) = gateway("EdDSA");
    let genuine = s.token(&good_claims("alice", &[]));
    let parts: Vec<&str> = genuine.split('.').collect();
    let evil = b64(good_claims("admin", &["admin"]).to_string());
    let forged = format!("{}.{evil}.{}", parts[0], parts[2]);
    assert_rejected(&gw, &up, &forged, "signature does not verify");
}

#[test]
fn kid_path_traversal_and_sql_are_unknown_kids() {
    let (up, gw, s) = gateway("EdDSA");
    let claims = good_claims("alice", &["admin"]);
    for kid in [
        "../../../../dev/null",
        "/dev/null",
        "' OR 1=1 --",
        "\" OR \"\"=\"",
        "",
        "data/signing-key.pem",
    ] {
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": kid });
        assert_rejected(&gw, &up, &s.sign(&header, &claims), "unknown kid");
    }
}

#[test]
fn a_token_without_kid_is_rejected_even_when_signed_by_the_real_key() {
    let (up, gw, s) = gateway("EdDSA");
    let header = json!({ "alg": "EdDSA", "typ": "JWT" });
    let t = s.sign(&header, &good_claims("alice", &[]));
    assert_rejected(&gw, &up, &t, "no kid");
}

#[test]
fn jku_x5u_and_jwk_headers_are_never_fetched_or_trusted() {
    let (up, gw, s) = gateway("EdDSA");
    let attacker_server = Upstream::start();
    let url = format!("http://{}/jwks.json", attacker_server.addr);
    let (attacker, jwk) = attacker_ed25519();
    let claims = good_claims("alice", &["admin"]);
    let headers = [
        json!({ "alg": "EdDSA", "kid": attacker.kid, "jku": url }),
        json!({ "alg": "EdDSA", "kid": s.kid, "jku": url }),
        json!({ "alg": "EdDSA", "kid": attacker.kid, "x5u": url }),
        json!({ "alg": "EdDSA", "kid": s.kid, "x5u": url }),
        json!({ "alg": "EdDSA", "kid": attacker.kid, "jwk": jwk }),
        json!({ "alg": "EdDSA", "kid": s.kid, "jwk": jwk }),
        json!({ "alg": "EdDSA", "jwk": jwk }),
        json!({ "alg": "EdDSA", "jku": url }),
    ];
    for h in &headers {
        let t = attacker.sign(h, &claims);
        let why = if h["kid"] == s.kid.as_str() {
            "signature does not verify"
        } else if h.get("kid").is_none() {
            "no kid"
        } else {
            "unknown kid"
        };
        assert_rejected(&gw, &up, &t, why);
        // `token inspect` must not fetch anything either.
        let out = gw.cli(&["token", "inspect", &t], None);
        assert_eq!(out.code, 1, "{}", out.stdout);
    }
    assert_eq!(
        attacker_server.count(),
        0,
        "the gateway fetched the attacker's URL"
    );
}

// ---------------------------------------------------------------- time claims

#[test]
fn expiry_beyond_the_leeway_is_rejected_and_within_it_accepted() {
    // Default leeway: 30 s.
    let (up, gw, s) = gateway("EdDSA");
    let t = now();
    let mut c = good_claims("alice", &[]);
    c["iat"] = json!(t - 1000);
    c["nbf"] = json!(t - 1000);
    c["exp"] = json!(t - 120);
    assert_rejected(&gw, &up, &s.token(&c), "token expired");
    c["exp"] = json!(t - 10);
    assert_accepted(&gw, &up, &s.token(&c), "alice");
}

#[test]
fn nbf_in_the_future_beyond_the_leeway_is_rejected() {
    let (up, gw, s) = gateway("EdDSA");
    let t = now();
    let mut c = good_claims("alice", &[]);
    c["nbf"] = json!(t + 300);
    c["exp"] = json!(t + 900);
    assert_rejected(&gw, &up, &s.token(&c), "not yet valid");
    c["nbf"] = json!(t + 10);
    assert_accepted(&gw, &up, &s.token(&c), "alice");
}

#[test]
fn a_token_without_exp_is_rejected() {
    let (up, gw, s) = gateway("EdDSA");
    let mut c = good_claims("alice", &[]);
    c.as_object_mut().unwrap().remove("exp");
    assert_rejected(&gw, &up, &s.token(&c), "missing required claim exp");
}

#[test]
fn time_claims_of_the_wrong_type_are_invalid_not_absent() {
    let (up, gw, s) = gateway("EdDSA");
    let t = now();
    for (claim, v) in [
        ("exp", json!((t + 600).to_string())),
        ("exp", json!(null)),
        ("exp", json!([t + 600])),
        ("exp", json!((t + 600) as f64 + 0.5)),
        ("nbf", json!(t.to_string())),
        ("nbf", json!(null)),
        ("iat", json!("yesterday")),
    ] {
        let mut c = good_claims("alice", &[]);
        c[claim] = v;
        let why = format!("claim {claim}");
        assert_rejected(&gw, &up, &s.token(&c), &why);
    }
}

// ---------------------------------------------------------------- iss and aud

#[test]
fn wrong_issuer_and_audience_are_rejected() {
    let (up, gw, s) = gateway("EdDSA");
    let mut c = good_claims("alice", &[]);
    c["iss"] = json!("someone-else");
    assert_rejected(&gw, &up, &s.token(&c), "wrong issuer");
    let mut c = good_claims("alice", &[]);
    c.as_object_mut().unwrap().remove("iss");
    assert_rejected(&gw, &up, &s.token(&c), "missing required claim iss");
    let mut c = good_claims("alice", &[]);
    c["aud"] = json!("other-api");
    assert_rejected(&gw, &up, &s.token(&c), "wrong audience");
    let mut c = good_claims("alice", &[]);
    c.as_object_mut().unwrap().remove("aud");
    assert_rejected(&gw, &up, &s.token(&c), "missing required claim aud");
}

// ---------------------------------------------------------------- encoding and size

#[test]
fn malformed_base64_is_rejected() {
    let (up, gw, s) = gateway("EdDSA");
    let genuine = s.token(&good_claims("alice", &[]));
    let parts: Vec<&str> = genuine.split('.').collect();
    let (h, p, sig) = (parts[0], parts[1], parts[2]);
    // A message signed with the real key, however malformed its parts.
    let signed = |msg: String| {
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &s.key, s.alg).unwrap();
        format!("{msg}.{sig}")
    };
    let std_header = base64::engine::general_purpose::STANDARD.encode(s.header().to_string());
    let cases = [
        (format!("{h}!.{p}.{sig}"), "malformed base64"),
        (signed(format!("{h}!.{p}")), "malformed base64"),
        // The signature is checked over the bytes as sent, before the payload is read.
        (format!("{h}.{p}*.{sig}"), "signature does not verify"),
        (signed(format!("{h}.{p}*")), "malformed base64"),
        (signed(format!("{h}.{p}===")), "malformed base64"),
        (format!("{h}.{p}.{sig}%"), "malformed base64"),
        (format!("{h}.{p}.{sig}=="), "malformed base64"),
        // Standard (not URL-safe) alphabet, with padding.
        (signed(format!("{std_header}.{p}")), "malformed base64"),
        // Valid base64 of something that is not JSON.
        (signed(format!("{}.{p}", b64("not json"))), "malformed JSON"),
        (signed(format!("{h}.{}", b64("not json"))), "malformed JSON"),
    ];
    for (t, why) in &cases {
        assert_rejected(&gw, &up, t, why);
    }
}

#[test]
fn a_16_kib_token_is_rejected_before_parsing() {
    let (up, gw, s) = gateway("EdDSA");
    let mut c = good_claims("alice", &[]);
    c["pad"] = json!("x".repeat(12 * 1024));
    let t = s.token(&c);
    assert!(t.len() >= 16 * 1024, "{}", t.len());
    assert_rejected(&gw, &up, &t, "too large");
}

// ---------------------------------------------------------------- claim contents

#[test]
fn duplicate_json_keys_in_the_payload_are_rejected() {
    let (up, gw, s) = gateway("EdDSA");
    let t0 = now();
    let payload = format!(
        r#"{{"sub":"alice","sub":"admin","iss":"authgate","aud":"api","iat":{t0},"nbf":{t0},"exp":{},"roles":[]}}"#,
        t0 + 600
    );
    assert_rejected(
        &gw,
        &up,
        &s.sign_raw(&s.header().to_string(), &payload),
        "duplicate",
    );
    let payload = format!(
        r#"{{"sub":"alice","iss":"authgate","aud":"api","iat":{t0},"nbf":{t0},"exp":{},"roles":[],"roles":["admin"]}}"#,
        t0 + 600
    );
    assert_rejected(
        &gw,
        &up,
        &s.sign_raw(&s.header().to_string(), &payload),
        "duplicate",
    );
    // Duplicate header members are no better.
    let header = format!(r#"{{"alg":"EdDSA","kid":"{}","kid":"x"}}"#, s.kid);
    let payload = good_claims("alice", &[]).to_string();
    assert_rejected(&gw, &up, &s.sign_raw(&header, &payload), "malformed");
}

#[test]
fn a_sub_with_control_characters_is_rejected_not_forwarded() {
    let (up, gw, s) = gateway("EdDSA");
    for sub in [
        "alice\r\nX-User: admin",
        "alice\nadmin",
        "alice\rX",
        "alice\u{0}",
        "alice\u{7f}",
        "alice\t",
    ] {
        let t = s.token(&good_claims(sub, &[]));
        assert_rejected(&gw, &up, &t, "claim sub");
    }
}

#[test]
fn a_roles_element_containing_a_comma_is_rejected() {
    let (up, gw, s) = gateway("EdDSA");
    let t = s.token(&good_claims("alice", &["user,admin"]));
    assert_rejected(&gw, &up, &t, "comma");
    let t = s.token(&good_claims("alice", &["user", "x\r\nX-User: admin"]));
    assert_rejected(&gw, &up, &t, "claim roles");
}

// ---------------------------------------------------------------- token inspect

#[test]
fn token_inspect_explains_each_rejection_in_one_line() {
    let (_up, gw, s) = gateway("EdDSA");
    let (attacker, _) = attacker_ed25519();
    let t = now();
    let payload = good_claims("alice", &[]).to_string();
    let mut expired = good_claims("alice", &[]);
    expired["exp"] = json!(t - 3600);
    let mut wrong_aud = good_claims("alice", &[]);
    wrong_aud["aud"] = json!("other-api");
    let none_header = json!({ "alg": "none", "kid": s.kid }).to_string();
    let cases = [
        (
            format!("{}.{}.", b64(&none_header), b64(&payload)),
            "algorithm",
        ),
        (s.token(&expired), "token expired"),
        (s.token(&wrong_aud), "wrong audience"),
        (attacker.token(&good_claims("alice", &[])), "unknown kid"),
        (
            attacker.sign(&s.header(), &good_claims("alice", &[])),
            "signature does not verify",
        ),
        ("garbage".to_string(), "malformed"),
    ];
    for (token, why) in &cases {
        let out = gw.cli(&["token", "inspect", token], None);
        assert_eq!(out.code, 1, "{why}: {}{}", out.stdout, out.stderr);
        let verdicts: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.starts_with("rejected: "))
            .collect();
        assert_eq!(verdicts.len(), 1, "{}", out.stdout);
        assert!(verdicts[0].contains(why), "{why}: {:?}", verdicts[0]);
    }
    let good = gw.cli(
        &["token", "inspect", &s.token(&good_claims("alice", &[]))],
        None,
    );
    assert_eq!(good.code, 0, "{}{}", good.stdout, good.stderr);
    assert!(good.stdout.contains("valid"), "{}", good.stdout);
}
