//! Verification keys parsed once, used straight through aws-lc-rs.
//!
//! jsonwebtoken's `decode` builds a fresh verifier (and re-parses an RSA key) per call;
//! here every key is parsed when it is loaded or fetched, and a request pays only the
//! signature check itself: an uncached HS256 token costs about an HMAC.
//! A key is bound to the algorithms it may verify: the token's `alg` must be one of
//! them (SPEC §4, §10: the token's alg never chooses the key type).

use aws_lc_rs::{hmac, signature};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::Value;

/// One cryptographic key with the algorithm it verifies under.
pub enum KeyMaterial {
    /// Boxed: an HMAC key holds its precomputed pads (~1.2 KiB).
    Hmac(Box<hmac::Key>),
    Public(signature::ParsedPublicKey),
}

/// What a signature check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Valid,
    BadSignature,
    /// The key does not serve this algorithm (SPEC §10: alg must fit the key).
    AlgorithmDoesNotFit,
}

pub struct VerifyKey {
    /// (algorithm, parsed key): one RSA JWK may serve RS256 and PS256.
    pub by_alg: Vec<(Algorithm, KeyMaterial)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    #[error("kty {0:?} is not usable")]
    Kty(String),
    #[error("an oct (shared secret) key is never usable from a JWKS")]
    Oct,
    #[error("{0}")]
    Params(String),
    #[error("no allowed algorithm fits this key")]
    NoAlg,
}

impl VerifyKey {
    pub fn hmac(secret: &[u8]) -> VerifyKey {
        VerifyKey {
            by_alg: vec![(
                Algorithm::HS256,
                KeyMaterial::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret))),
            )],
        }
    }

    pub fn allows(&self, alg: Algorithm) -> bool {
        self.by_alg.iter().any(|(a, _)| *a == alg)
    }

    pub fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> Check {
        let Some((_, key)) = self.by_alg.iter().find(|(a, _)| *a == alg) else {
            return Check::AlgorithmDoesNotFit;
        };
        let ok = match key {
            KeyMaterial::Hmac(k) => hmac::verify(k, message, sig).is_ok(),
            KeyMaterial::Public(k) => k.verify_sig(message, sig).is_ok(),
        };
        if ok {
            Check::Valid
        } else {
            Check::BadSignature
        }
    }

    /// A public JWK as a key for the algorithms in `allowed` that fit its type (and its
    /// own `alg`, when it names one). `oct` keys are refused: a JWKS is public, so an
    /// HMAC key from one would let anyone sign (SPEC §10).
    pub fn from_jwk(jwk: &Value, allowed: &[Algorithm]) -> Result<VerifyKey, JwkError> {
        let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or("");
        let own_alg = match jwk.get("alg") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(JwkError::Params("alg must be a string".into())),
        };
        let fits = |a: Algorithm| allowed.contains(&a) && own_alg.is_none_or(|o| o == alg_name(a));
        let b64 = |name: &str| -> Result<Vec<u8>, JwkError> {
            let s = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| JwkError::Params(format!("missing {name}")))?;
            URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|_| JwkError::Params(format!("{name} is not base64url")))
        };
        let parse = |alg: &'static dyn signature::VerificationAlgorithm, bytes: &[u8]| {
            signature::ParsedPublicKey::new(alg, bytes)
                .map(KeyMaterial::Public)
                .map_err(|e| JwkError::Params(format!("key rejected: {e}")))
        };
        let mut by_alg = Vec::new();
        match kty {
            "oct" => return Err(JwkError::Oct),
            "RSA" => {
                let n = b64("n")?;
                let e = b64("e")?;
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                if bits < 2048 {
                    return Err(JwkError::Params(format!(
                        "RSA modulus of {bits} bits (at least 2048)"
                    )));
                }
                let der = rsa_public_key_der(&n, &e);
                if fits(Algorithm::RS256) {
                    by_alg.push((
                        Algorithm::RS256,
                        parse(&signature::RSA_PKCS1_2048_8192_SHA256, &der)?,
                    ));
                }
                if fits(Algorithm::PS256) {
                    by_alg.push((
                        Algorithm::PS256,
                        parse(&signature::RSA_PSS_2048_8192_SHA256, &der)?,
                    ));
                }
            }
            "EC" => {
                if jwk.get("crv").and_then(Value::as_str) != Some("P-256") {
                    return Err(JwkError::Params("only crv P-256 is supported".into()));
                }
                let (x, y) = (b64("x")?, b64("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(JwkError::Params("P-256 x and y must be 32 bytes".into()));
                }
                if fits(Algorithm::ES256) {
                    let mut point = Vec::with_capacity(65);
                    point.push(4);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    by_alg.push((
                        Algorithm::ES256,
                        parse(&signature::ECDSA_P256_SHA256_FIXED, &point)?,
                    ));
                }
            }
            "OKP" => {
                if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
                    return Err(JwkError::Params("only crv Ed25519 is supported".into()));
                }
                let x = b64("x")?;
                if fits(Algorithm::EdDSA) {
                    by_alg.push((Algorithm::EdDSA, parse(&signature::ED25519, &x)?));
                }
            }
            other => return Err(JwkError::Kty(other.chars().take(16).collect())),
        }
        if by_alg.is_empty() {
            return Err(JwkError::NoAlg);
        }
        Ok(VerifyKey { by_alg })
    }
}

pub fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        _ => "?",
    }
}

/// DER of a PKCS#1 RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn len(out: &mut Vec<u8>, l: usize) {
        if l < 0x80 {
            out.push(l as u8);
        } else {
            let bytes: Vec<u8> = l
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
    }
    fn integer(out: &mut Vec<u8>, v: &[u8]) {
        let v: &[u8] = {
            let start = v
                .iter()
                .position(|b| *b != 0)
                .unwrap_or(v.len().saturating_sub(1));
            &v[start..]
        };
        let pad = v.first().is_some_and(|b| b & 0x80 != 0);
        out.push(0x02);
        len(out, v.len() + pad as usize);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut out = Vec::with_capacity(body.len() + 8);
    out.push(0x30);
    len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    };
    use serde_json::json;

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn an_oct_key_is_never_usable() {
        let jwk = json!({"kty": "oct", "k": b64(&[7; 32]), "alg": "HS256", "kid": "x"});
        let all = [Algorithm::HS256, Algorithm::RS256];
        assert_eq!(VerifyKey::from_jwk(&jwk, &all).err(), Some(JwkError::Oct));
    }

    #[test]
    fn eddsa_jwk_verifies_and_only_under_its_algorithm() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(kp.public_key().as_ref())});
        let k = VerifyKey::from_jwk(&jwk, &[Algorithm::EdDSA, Algorithm::RS256]).unwrap();
        let sig = kp.sign(b"msg");
        assert_eq!(
            k.verify(Algorithm::EdDSA, b"msg", sig.as_ref()),
            Check::Valid
        );
        assert_eq!(
            k.verify(Algorithm::EdDSA, b"msh", sig.as_ref()),
            Check::BadSignature
        );
        assert_eq!(
            k.verify(Algorithm::RS256, b"msg", sig.as_ref()),
            Check::AlgorithmDoesNotFit
        );
        assert_eq!(
            VerifyKey::from_jwk(&jwk, &[Algorithm::RS256]).err(),
            Some(JwkError::NoAlg)
        );
    }

    #[test]
    fn es256_jwk_verifies() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let kp =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let p = kp.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..])});
        let k = VerifyKey::from_jwk(&jwk, &[Algorithm::ES256]).unwrap();
        let sig = kp.sign(&rng, b"msg").unwrap();
        assert_eq!(
            k.verify(Algorithm::ES256, b"msg", sig.as_ref()),
            Check::Valid
        );
        let bad_curve = json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"});
        assert!(VerifyKey::from_jwk(&bad_curve, &[Algorithm::ES256]).is_err());
    }

    #[test]
    fn rsa_jwk_serves_rs256_and_ps256_unless_its_alg_says_otherwise() {
        let kp = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pk = kp.public_key();
        let comps: aws_lc_rs::rsa::PublicKeyComponents<Vec<u8>> = pk.into();
        let jwk = json!({"kty": "RSA", "n": b64(&comps.n), "e": b64(&comps.e)});
        let both = [Algorithm::RS256, Algorithm::PS256];
        let k = VerifyKey::from_jwk(&jwk, &both).unwrap();
        let rng = SystemRandom::new();
        let mut sig = vec![0; kp.public_modulus_len()];
        kp.sign(&signature::RSA_PKCS1_SHA256, &rng, b"msg", &mut sig)
            .unwrap();
        assert_eq!(k.verify(Algorithm::RS256, b"msg", &sig), Check::Valid);
        assert_eq!(
            k.verify(Algorithm::PS256, b"msg", &sig),
            Check::BadSignature
        );
        kp.sign(&signature::RSA_PSS_SHA256, &rng, b"msg", &mut sig)
            .unwrap();
        assert_eq!(k.verify(Algorithm::PS256, b"msg", &sig), Check::Valid);
        let mut only_rs = jwk.clone();
        only_rs["alg"] = json!("RS256");
        let k = VerifyKey::from_jwk(&only_rs, &both).unwrap();
        assert!(k.allows(Algorithm::RS256) && !k.allows(Algorithm::PS256));
    }

    #[test]
    fn short_rsa_moduli_and_broken_parameters_are_refused() {
        let jwk = json!({"kty": "RSA", "n": b64(&[0xc1; 128]), "e": "AQAB"});
        assert!(VerifyKey::from_jwk(&jwk, &[Algorithm::RS256]).is_err());
        let jwk = json!({"kty": "RSA", "n": "!!", "e": "AQAB"});
        assert!(VerifyKey::from_jwk(&jwk, &[Algorithm::RS256]).is_err());
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 5])});
        assert!(VerifyKey::from_jwk(&jwk, &[Algorithm::EdDSA]).is_err());
        let jwk = json!({"kty": "XYZ"});
        assert!(matches!(
            VerifyKey::from_jwk(&jwk, &[Algorithm::EdDSA]),
            Err(JwkError::Kty(_))
        ));
    }
}
