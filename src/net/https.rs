//! One rustls client configuration for everything authgate dials over TLS: HTTPS
//! upstreams (SPEC §11) and identity providers' JWKS endpoints (SPEC §10).
//!
//! Trust is always the system roots (rustls-native-certs, read once per process) plus an
//! optional extra CA from the config; there is deliberately no way to turn verification
//! off (SPEC §11: "no switch that turns verification off"). An optional client
//! certificate and key give mTLS. The caller reads the PEM bytes (from `file:`/`env:`)
//! and names the config key in its own error; this module only says what is wrong with
//! the bytes.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// What can be wrong with the TLS material a config names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpsError {
    #[error("ca: not a PEM certificate: {0}")]
    CaPem(String),
    #[error("ca: no certificate found in the PEM")]
    CaEmpty,
    #[error("ca: certificate not usable as a trust anchor: {0}")]
    CaAnchor(String),
    #[error("client_cert: not a PEM certificate: {0}")]
    ClientCertPem(String),
    #[error("client_cert: no certificate found in the PEM")]
    ClientCertEmpty,
    #[error("client_key: not a PEM private key: {0}")]
    ClientKeyPem(String),
    #[error("client_cert/client_key: {0}")]
    ClientAuth(String),
    #[error("no trust anchors: the system has no root certificates and no ca is configured")]
    NoRoots,
    #[error("tls: {0}")]
    Rustls(String),
}

/// PEM bytes of a client certificate chain and its private key (mTLS).
pub struct ClientIdentity<'a> {
    pub cert_chain_pem: &'a [u8],
    pub key_pem: &'a [u8],
}

/// Everything that varies between the gateway's TLS clients.
#[derive(Default)]
pub struct ClientTlsOptions<'a> {
    /// Extra trust anchors (one or more PEM certificates), added to the system roots.
    pub extra_ca_pem: Option<&'a [u8]>,
    /// Client certificate and key for mTLS; `None`: no client authentication.
    pub client_identity: Option<ClientIdentity<'a>>,
    /// ALPN protocols offered, most preferred first (e.g. `[b"h2", b"http/1.1"]`);
    /// empty: no ALPN extension.
    pub alpn: &'a [&'a [u8]],
}

/// The system's root certificates, parsed into trust anchors once per process:
/// reading and parsing /etc/ssl/certs costs milliseconds, and a reload or every
/// issuer must not pay it again. Unreadable entries are logged and skipped, as
/// rustls-native-certs advises; an empty store is not an error here (a config may
/// name its own `ca`).
pub fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "a system root certificate could not be read; skipped");
        }
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(found.certs);
        if ignored > 0 {
            tracing::warn!(
                added,
                ignored,
                "some system root certificates were not usable"
            );
        }
        store
    })
}

fn parse_certs(
    pem: &[u8],
    bad: fn(String) -> HttpsError,
    empty: HttpsError,
) -> Result<Vec<CertificateDer<'static>>, HttpsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(empty);
    }
    Ok(certs)
}

/// Builds the trust store: system roots plus `extra_ca_pem`.
pub fn root_store(extra_ca_pem: Option<&[u8]>) -> Result<RootCertStore, HttpsError> {
    let mut roots = system_roots().clone();
    if let Some(pem) = extra_ca_pem {
        for cert in parse_certs(pem, HttpsError::CaPem, HttpsError::CaEmpty)? {
            roots
                .add(cert)
                .map_err(|e| HttpsError::CaAnchor(e.to_string()))?;
        }
    }
    if roots.is_empty() {
        return Err(HttpsError::NoRoots);
    }
    Ok(roots)
}

/// The one ClientConfig builder: aws-lc-rs provider, TLS 1.2 and 1.3 (rustls' safe
/// defaults), the roots above, optional client certificate, the given ALPN list.
pub fn client_config(opts: &ClientTlsOptions<'_>) -> Result<Arc<ClientConfig>, HttpsError> {
    let roots = root_store(opts.extra_ca_pem)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpsError::Rustls(e.to_string()))?
        .with_root_certificates(roots);
    let mut cfg = match &opts.client_identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = parse_certs(
                id.cert_chain_pem,
                HttpsError::ClientCertPem,
                HttpsError::ClientCertEmpty,
            )?;
            let key = PrivateKeyDer::from_pem_slice(id.key_pem)
                .map_err(|e| HttpsError::ClientKeyPem(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| HttpsError::ClientAuth(e.to_string()))?
        }
    };
    cfg.alpn_protocols = opts.alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (rcgen::CertifiedIssuer<'static, rcgen::KeyPair>, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("self-signed");
        let pem = ca.pem();
        (ca, pem)
    }

    #[test]
    fn system_roots_are_loaded_once_and_shared() {
        let a = system_roots() as *const RootCertStore;
        let b = system_roots() as *const RootCertStore;
        assert_eq!(a, b);
    }

    #[test]
    fn extra_ca_is_added_to_the_system_roots() {
        let (_, pem) = ca();
        let base = system_roots().len();
        let store = root_store(Some(pem.as_bytes())).expect("store");
        assert_eq!(store.len(), base + 1);
    }

    #[test]
    fn ca_that_is_not_pem_is_refused() {
        let err = root_store(Some(
            b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        ))
        .expect_err("bad pem");
        assert!(matches!(err, HttpsError::CaPem(_)), "{err:?}");
    }

    #[test]
    fn ca_file_without_a_certificate_is_refused() {
        assert_eq!(
            root_store(Some(b"just text\n")).expect_err("empty"),
            HttpsError::CaEmpty
        );
    }

    #[test]
    fn alpn_list_is_offered_in_order() {
        let cfg = client_config(&ClientTlsOptions {
            alpn: &[b"h2", b"http/1.1"],
            ..Default::default()
        });
        // A machine without system roots (minimal container) has nothing to trust.
        let Ok(cfg) = cfg else {
            assert_eq!(cfg.err(), Some(HttpsError::NoRoots));
            return;
        };
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(!cfg.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn client_certificate_and_key_enable_mtls() {
        let (ca, ca_pem) = ca();
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["gateway".to_string()]).expect("p");
        let leaf = params.signed_by(&leaf_key, &ca).expect("leaf");
        let cfg = client_config(&ClientTlsOptions {
            extra_ca_pem: Some(ca_pem.as_bytes()),
            client_identity: Some(ClientIdentity {
                cert_chain_pem: leaf.pem().as_bytes(),
                key_pem: leaf_key.serialize_pem().as_bytes(),
            }),
            alpn: &[],
        })
        .expect("config");
        assert!(cfg.client_auth_cert_resolver.has_certs());
        assert!(cfg.alpn_protocols.is_empty());
    }

    #[test]
    fn client_key_that_does_not_parse_is_refused() {
        let (ca, _) = ca();
        let err = client_config(&ClientTlsOptions {
            client_identity: Some(ClientIdentity {
                cert_chain_pem: ca.pem().as_bytes(),
                key_pem: b"not a key",
            }),
            ..Default::default()
        })
        .expect_err("bad key");
        assert!(
            matches!(err, HttpsError::ClientKeyPem(_) | HttpsError::NoRoots),
            "{err:?}"
        );
    }

    #[test]
    fn client_key_that_does_not_match_the_certificate_is_refused() {
        let (ca, ca_pem) = ca();
        let other = rcgen::KeyPair::generate().expect("key");
        let err = client_config(&ClientTlsOptions {
            extra_ca_pem: Some(ca_pem.as_bytes()),
            client_identity: Some(ClientIdentity {
                cert_chain_pem: ca.pem().as_bytes(),
                key_pem: other.serialize_pem().as_bytes(),
            }),
            alpn: &[],
        })
        .expect_err("mismatch");
        assert!(matches!(err, HttpsError::ClientAuth(_)), "{err:?}");
    }

    /// A real handshake over loopback: the extra CA is trusted, ALPN is negotiated, and
    /// without that CA the same server is refused (no fallback, nothing to switch off).
    #[tokio::test]
    async fn server_signed_by_the_extra_ca_is_trusted_and_an_unknown_one_is_not() {
        crate::install_crypto();
        let (ca, ca_pem) = ca();
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["idp.test".to_string()]).expect("p");
        let leaf = params.signed_by(&leaf_key, &ca).expect("leaf");
        let key_der =
            PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).expect("k");
        let mut server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key_der)
            .expect("server config");
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        let name = rustls::pki_types::ServerName::try_from("idp.test").expect("name");

        let trusted = client_config(&ClientTlsOptions {
            extra_ca_pem: Some(ca_pem.as_bytes()),
            alpn: &[b"h2", b"http/1.1"],
            ..Default::default()
        })
        .expect("config");
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let tls = tokio_rustls::TlsConnector::from(trusted)
            .connect(name.clone(), tcp)
            .await
            .expect("handshake with the trusted CA");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

        let Ok(untrusted) = client_config(&ClientTlsOptions::default()) else {
            return; // no system roots on this machine: nothing else could be trusted
        };
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let err = tokio_rustls::TlsConnector::from(untrusted)
            .connect(name, tcp)
            .await
            .expect_err("unknown CA must fail");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }
}
