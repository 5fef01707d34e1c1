//! Signing and verification keys: load from PEM (or an HS256 secret), create
//! the signing key on first start, `kid` = RFC 7638 thumbprint, JWKS document.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{DecodingKey, EncodingKey};

use crate::config::{Algorithm, SecretRef, Tokens};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: signing key file does not exist (it is created on first start)")]
    Missing(String),
    #[error("{what}: {why}")]
    Invalid { what: String, why: String },
    #[error("{0}: exists (use --force to overwrite)")]
    Exists(String),
    #[error("{0}")]
    Io(String),
}

fn invalid(what: &SecretRef, why: impl std::fmt::Display) -> KeyError {
    KeyError::Invalid {
        what: what.to_string(),
        why: why.to_string(),
    }
}

pub fn jwt_alg(a: Algorithm) -> jsonwebtoken::Algorithm {
    match a {
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
    }
}

/// Every key of one config: the one that signs, and all that verify.
pub struct KeySet {
    pub algorithm: Algorithm,
    pub signing_kid: String,
    pub signing: EncodingKey,
    pub verifying: HashMap<String, DecodingKey>,
    /// Public keys for `/.well-known/jwks.json` (empty for HS256).
    pub jwks: serde_json::Value,
}

/// A key ready to use, with its public JWK (asymmetric) and thumbprint.
struct Loaded {
    kid: String,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    public: Option<Jwk>,
}

fn thumbprint(jwk: &Jwk) -> Result<String, String> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| e.to_string())
}

fn load_secret(src: &SecretRef) -> Result<Loaded, KeyError> {
    let bytes = src.read().map_err(|e| invalid(src, e))?;
    if bytes.len() < 32 {
        return Err(invalid(
            src,
            format!(
                "an HS256 secret needs at least 32 bytes, this one has {}",
                bytes.len()
            ),
        ));
    }
    let enc = EncodingKey::from_secret(&bytes).map_err(|e| invalid(src, e))?;
    let dec = DecodingKey::from_secret(&bytes).map_err(|e| invalid(src, e))?;
    let jwk = Jwk::from_encoding_key(&enc, jsonwebtoken::Algorithm::HS256)
        .map_err(|e| invalid(src, e))?;
    let kid = thumbprint(&jwk).map_err(|e| invalid(src, e))?;
    Ok(Loaded {
        kid,
        encoding: Some(enc),
        decoding: dec,
        public: None,
    })
}

fn load_pem(src: &SecretRef, alg: Algorithm, pem: &[u8]) -> Result<Loaded, KeyError> {
    let ja = jwt_alg(alg);
    let private = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
        Algorithm::HS256 => unreachable_hs(),
    };
    let (encoding, jwk) = match private {
        Ok(enc) => {
            let jwk = Jwk::from_encoding_key(&enc, ja)
                .map_err(|e| invalid(src, format!("not a {} private key: {e}", alg.name())))?;
            (Some(enc), jwk)
        }
        Err(priv_err) => {
            // previous_keys may also be public keys only.
            let dec = match alg {
                Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
                Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
                Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
                Algorithm::HS256 => unreachable_hs(),
            }
            .map_err(|_| {
                invalid(
                    src,
                    format!("not a PKCS#8 PEM {} key: {priv_err}", alg.name()),
                )
            })?;
            let jwk = Jwk::from_decoding_key(&dec, Some(ja)).map_err(|e| invalid(src, e))?;
            (None, jwk)
        }
    };
    let kid = thumbprint(&jwk).map_err(|e| invalid(src, e))?;
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| invalid(src, e))?;
    let mut public = jwk;
    public.common.key_id = Some(kid.clone());
    public.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(Loaded {
        kid,
        encoding,
        decoding,
        public: Some(public),
    })
}

fn unreachable_hs<T>() -> Result<T, jsonwebtoken::errors::Error> {
    Err(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into())
}

impl KeySet {
    /// Loads every key the config names. With `create`, a missing asymmetric
    /// signing key file is generated (mode 0600) and kept for later starts.
    pub fn load(t: &Tokens, create: bool) -> Result<KeySet, KeyError> {
        let current = match t.algorithm {
            Algorithm::HS256 => {
                let src = t
                    .secret
                    .as_ref()
                    .ok_or_else(|| KeyError::Io("tokens.secret is required for HS256".into()))?;
                load_secret(src)?
            }
            alg => {
                let src = t
                    .signing_key
                    .as_ref()
                    .ok_or_else(|| KeyError::Io("tokens.signing_key is required".into()))?;
                let pem = match src {
                    SecretRef::File(p) if !p.exists() => {
                        if !create {
                            return Err(KeyError::Missing(p.display().to_string()));
                        }
                        let pem = generate_pem(alg)?;
                        write_private(p, &pem, false)?;
                        tracing::info!(path = %p.display(), alg = alg.name(), "created signing key");
                        pem.into_bytes()
                    }
                    other => other.read().map_err(|e| invalid(other, e))?,
                };
                let k = load_pem(src, alg, &pem)?;
                if k.encoding.is_none() {
                    return Err(invalid(src, "the signing key must be a private key"));
                }
                k
            }
        };
        let mut previous = Vec::new();
        for src in &t.previous_keys {
            previous.push(match t.algorithm {
                Algorithm::HS256 => load_secret(src)?,
                alg => {
                    let pem = src.read().map_err(|e| invalid(src, e))?;
                    load_pem(src, alg, &pem)?
                }
            });
        }
        let mut verifying = HashMap::new();
        let mut jwks = Vec::new();
        let signing_kid = current.kid.clone();
        let signing = current
            .encoding
            .clone()
            .ok_or_else(|| KeyError::Io("no signing key".into()))?;
        for k in std::iter::once(current).chain(previous) {
            if let Some(p) = &k.public {
                if !verifying.contains_key(&k.kid) {
                    jwks.push(serde_json::to_value(p).map_err(|e| KeyError::Io(e.to_string()))?);
                }
            }
            verifying.entry(k.kid).or_insert(k.decoding);
        }
        Ok(KeySet {
            algorithm: t.algorithm,
            signing_kid,
            signing,
            verifying,
            jwks: serde_json::json!({ "keys": jwks }),
        })
    }
}

/// A fresh private key as PKCS#8 PEM.
pub fn generate_pem(alg: Algorithm) -> Result<String, KeyError> {
    let fail =
        |e: aws_lc_rs::error::Unspecified| KeyError::Io(format!("key generation failed: {e}"));
    let der: Vec<u8> = match alg {
        Algorithm::EdDSA => Ed25519KeyPair::generate().map_err(fail)?.to_pkcs8v1().map_err(fail)?.as_ref().to_vec(),
        Algorithm::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(fail)?
            .to_pkcs8v1()
            .map_err(fail)?
            .as_ref()
            .to_vec(),
        Algorithm::RS256 => {
            use aws_lc_rs::encoding::AsDer;
            let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(fail)?;
            let der = kp.as_der().map_err(fail)?;
            der.as_ref().to_vec()
        }
        Algorithm::HS256 => {
            return Err(KeyError::Io("HS256 uses a shared secret, not a key file: put 32+ random bytes in a file or variable".into()))
        }
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

/// Writes a private key with mode 0600, creating parent folders.
pub fn write_private(path: &Path, pem: &str, force: bool) -> Result<(), KeyError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| KeyError::Io(format!("{}: {e}", dir.display())))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists(path.display().to_string())
        } else {
            KeyError::Io(format!("{}: {e}", path.display()))
        }
    })?;
    // `mode` applies only when the file is created: an existing file overwritten
    // with --force keeps its old (maybe world-readable) mode unless set here,
    // before any key byte is written.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|_| f.write_all(pem.as_bytes()))
        .and_then(|_| f.sync_all())
        .map_err(|e| KeyError::Io(format!("{}: {e}", path.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_have_stable_kids() {
        crate::install_crypto();
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
            let pem = generate_pem(alg).unwrap();
            let src = SecretRef::Env("UNUSED".into());
            let a = load_pem(&src, alg, pem.as_bytes()).unwrap();
            let b = load_pem(&src, alg, pem.as_bytes()).unwrap();
            assert_eq!(a.kid, b.kid);
            assert_eq!(a.kid.len(), 43, "base64url SHA-256");
            let jwk = serde_json::to_value(a.public.unwrap()).unwrap();
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], a.kid.as_str());
            assert_eq!(jwk["alg"], alg.name());
        }
    }

    #[test]
    fn forced_overwrite_makes_the_key_file_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("authgate-keys-{}", crate::ids::uuid_v4()));
        let p = dir.join("k.pem");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            write_private(&p, "new", false),
            Err(KeyError::Exists(_))
        ));
        write_private(&p, "new", true).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        std::fs::remove_dir_all(dir).ok();
    }
}
