//! Property tests of token parsing and of header values built from claims:
//! arbitrary segments never panic and are never accepted; a one-character change
//! to a good token is refused; claim headers are clean or the token is refused
//! (SPEC §4, §8). `PROPTEST_CASES=N` runs more cases (bench/README.md).

use std::sync::OnceLock;

use base64::Engine;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::identity::signer::TokenSigner;
use crate::identity::signing_keys::KeySet;

struct Fixture {
    verifier: Verifier,
    signer: TokenSigner,
    kid: String,
    _dir: std::path::PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        crate::install_crypto();
        let dir = std::env::temp_dir().join(format!("authgate-jwt-props-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let text = "[server]\nlisten = [\"127.0.0.1:0\"]\n[identity]\nstore = \"sqlite:users.db\"\n\
            [tokens]\nalgorithm = \"EdDSA\"\nsigning_key = \"file:key.pem\"\n\
            [forward]\nidentity_header = \"X-User\"\nclaim_headers = { \"X-User-Roles\" = \"roles\" }\n";
        let config = Config::load_str(text, "gateway.toml", &dir).expect("config");
        let keys = KeySet::load(&config.tokens, true).expect("keys");
        Fixture {
            verifier: Verifier::new(&config, Some(&keys), Default::default()).expect("verifier"),
            signer: TokenSigner::new(&config.tokens, &keys),
            kid: keys.signing_kid.clone(),
            _dir: dir,
        }
    })
}

/// Verifies now: without issuers the verifier never waits, so the future is ready.
fn verify(token: &str) -> Result<std::sync::Arc<Verified>, VerifyError> {
    use futures_util::FutureExt;
    fixture()
        .verifier
        .verify(token)
        .now_or_never()
        .expect("no issuer, no wait")
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// One segment: base64url noise, or the encoding of a JSON object that looks
/// like a header or claims (algorithms and kids an attacker would try).
fn segment() -> impl Strategy<Value = String> {
    let kid = fixture().kid.clone();
    prop_oneof![
        "[A-Za-z0-9_=+/.-]{0,80}",
        Just(String::new()),
        prop::sample::select(vec![
            "none", "HS256", "EdDSA", "RS256", "ES256", "eddsa", ""
        ])
        .prop_flat_map(move |alg| {
            let kid = kid.clone();
            prop_oneof![Just(kid), "[a-z0-9]{0,8}"]
                .prop_map(move |k| b64(&json!({"alg": alg, "typ": "JWT", "kid": k}).to_string()))
        }),
        (any::<u32>(), "[a-z]{0,6}").prop_map(|(t, s)| b64(&json!({
            "sub": s, "iss": "authgate", "aud": "api", "exp": t, "nbf": 0, "roles": [s]
        })
        .to_string())),
    ]
}

proptest! {
    #![proptest_config(crate::test_cases())]

    #[test]
    fn arbitrary_segments_never_panic_and_are_never_accepted(
        segs in prop::collection::vec(segment(), 0..5),
        dots in prop::sample::select(vec![".", "..", ". ", "%2E"]),
    ) {
        let token = segs.join(dots);
        prop_assert!(verify(&token).is_err(), "{} was accepted", token);
    }

    #[test]
    fn any_text_is_refused_without_a_panic(token in "(?s).{0,400}") {
        prop_assert!(verify(&token).is_err());
    }

    #[test]
    fn a_good_token_changed_in_one_place_is_refused(at in any::<prop::sample::Index>(), c in "[A-Za-z0-9_.=-]") {
        let f = fixture();
        let good = f.signer.issue("alice", &["user".to_string()]).expect("sign");
        prop_assert!(verify(&good).is_ok());
        let i = at.index(good.len());
        let mut bad = good.clone();
        bad.replace_range(i..i + 1, &c);
        if bad != good {
            prop_assert!(verify(&bad).is_err(), "changed at {}: {}", i, bad);
        }
    }

    #[test]
    fn claim_headers_are_clean_or_refused(v in claim_value()) {
        match claim_header_value("x", &v) {
            Ok(Some(h)) => {
                let bytes = h.as_bytes();
                prop_assert!(bytes.iter().all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)), "{:?}", h);
                // Arrays are joined with commas, so no element may carry one.
                if let Value::Array(items) = &v {
                    prop_assert_eq!(bytes.iter().filter(|b| **b == b',').count(), items.len().saturating_sub(1));
                }
            }
            Ok(None) => prop_assert!(v.is_null()),
            Err(_) => {
                let text = |s: &str| s.chars().any(char::is_control) || HeaderValue::from_str(s).is_err();
                let refused = match &v {
                    Value::String(s) => text(s),
                    Value::Array(items) => items.iter().any(|i| match i {
                        Value::String(s) => s.contains(',') || text(s),
                        Value::Number(_) | Value::Bool(_) => false,
                        _ => true,
                    }),
                    Value::Object(_) => true,
                    _ => false,
                };
                prop_assert!(refused, "{:?} refused without cause", v);
            }
        }
    }
}

fn claim_value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        any::<String>().prop_map(Value::from),
        "[ -~]{0,10}".prop_map(Value::from),
        "[a-z,\r\n\t\u{0}\u{7f}\u{85}é ]{0,8}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!({"a": 1})),
    ];
    prop_oneof![
        scalar.clone(),
        prop::collection::vec(scalar, 0..4).prop_map(Value::from),
    ]
}
