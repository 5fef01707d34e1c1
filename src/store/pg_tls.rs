//! `postgres://` URLs: the `sslmode` and `sslrootcert` parameters, and the
//! rustls connector they call for (SPEC §9; no OpenSSL).
//!
//! `sslmode` follows libpq: `disable` (plain), `prefer` (the default: TLS when the
//! server offers it, unverified), `require` (TLS, unverified — encryption only),
//! `verify-full` (TLS, chain verified against the system roots plus
//! `sslrootcert`, and the host name checked). Only `verify-full` resists an
//! active attacker; README says so.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

/// A parsed store URL: the driver's config and our TLS choice.
pub struct Target {
    pub config: tokio_postgres::Config,
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a `postgres://` URL. Errors never repeat the URL (it may hold a password).
pub fn parse(url: &str) -> Result<Target, String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut rest = Vec::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "sslmode" => {
                mode = match v {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode={other:?}: expected disable, prefer, require or verify-full"
                        ))
                    }
                }
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(v))),
            _ => rest.push(kv),
        }
    }
    let cleaned = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config = tokio_postgres::Config::from_str(&cleaned)
        .map_err(|e| format!("not a valid postgres:// URL: {e}"))?;
    config.ssl_mode(match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
    });
    if config.get_dbname().is_none() {
        return Err("the postgres:// URL names no database".into());
    }
    Ok(Target {
        config,
        mode,
        root_cert,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The TLS connector for `mode` (unused by the driver under `disable`).
pub fn connector(t: &Target) -> Result<MakeRustlsConnect, String> {
    let p = provider();
    let builder = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = match t.mode {
        SslMode::VerifyFull => {
            let mut roots = RootCertStore::empty();
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            if let Some(path) = &t.root_cert {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|i| i.collect::<Result<_, _>>())
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(p)))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// libpq's `prefer`/`require`: the handshake's signatures are checked, the
/// certificate chain and name are not (encryption against passive listeners only).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_ours_the_rest_the_drivers() {
        let t = parse("postgres://u@db.internal:5433/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=gw").unwrap();
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(t.config.get_dbname(), Some("app"));
        assert_eq!(t.config.get_application_name(), Some("gw"));
        assert_eq!(parse("postgres://u@h/d").unwrap().mode, SslMode::Prefer);
        assert_eq!(
            parse("postgres://u@h/d?sslmode=disable").unwrap().mode,
            SslMode::Disable
        );
        assert_eq!(
            parse("postgres://u@h/d?sslmode=require").unwrap().mode,
            SslMode::Require
        );
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_them() {
        for url in [
            "postgres://u:hunter2@h/d?sslmode=verify-ca",
            "postgres://u:hunter2@h/d?sslmode=",
            "postgres://u:hunter2@h:notaport/d",
            "postgres://u:hunter2@h",
        ] {
            let e = parse(url).err().unwrap_or_else(|| panic!("{url} parsed"));
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
