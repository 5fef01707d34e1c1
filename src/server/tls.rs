//! `[server.tls]`: rustls with the aws-lc-rs provider, HTTP/2 via ALPN. Built at
//! start and again on every reload, so renewed certificates are picked up.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, SecretRef};

fn pem(src: &SecretRef) -> Result<Vec<u8>, String> {
    src.read().map_err(|e| format!("server.tls: {e}"))
}

pub fn acceptor(config: &Config) -> Result<Option<TlsAcceptor>, String> {
    let Some(t) = &config.server.tls else {
        return Ok(None);
    };
    let cert_pem = pem(&t.cert)?;
    let key_pem = pem(&t.key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("server.tls.cert: {}: {e}", t.cert))?;
    if certs.is_empty() {
        return Err(format!("server.tls.cert: {}: no certificate found", t.cert));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("server.tls.key: {}: {e}", t.key))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("server.tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(cfg))))
}
