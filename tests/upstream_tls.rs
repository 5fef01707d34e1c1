//! SPEC §11: upstreams over TLS. A real HTTPS upstream (rustls, certificates made
//! by a test CA with rcgen), the real gateway: verified against the system roots
//! plus `tls.ca` for the target's host or `tls.server_name`; a certificate that
//! does not verify is 502 and the upstream never sees the request; mTLS; the CA
//! file re-read on reload; `check` validates the files.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::{Request, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "authgate test CA");
        Ca {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names` (DNS names or IP addresses): (certificate PEM, key PEM).
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// What the HTTPS upstream saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    handshakes: AtomicUsize,
    /// Whether each request's connection presented a client certificate.
    with_client_cert: Mutex<Vec<bool>>,
}

/// An HTTPS upstream on 127.0.0.1 answering 200 `secure` to everything; with
/// `client_ca`, it requires a client certificate issued by that CA.
fn https_upstream(
    cert_pem: &str,
    key_pem: &str,
    client_ca: Option<&Ca>,
) -> (SocketAddr, Arc<Seen>) {
    authgate::install_crypto();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key).unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let addr = common::serve_loopback(move |tcp| {
        let (acceptor, s) = (acceptor.clone(), s.clone());
        async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            s.handshakes.fetch_add(1, Ordering::SeqCst);
            let client_cert = tls.get_ref().1.peer_certificates().is_some();
            let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                let s = s.clone();
                async move {
                    s.requests.fetch_add(1, Ordering::SeqCst);
                    s.with_client_cert.lock().unwrap().push(client_cert);
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"secure",
                    ))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        }
    });
    (addr, seen)
}

/// A gateway whose `/public` route goes to `target` with `tls` (a TOML inline
/// table or ""), after writing `files` into its folder.
fn gateway(target: &str, tls: &str, files: &[(&str, &str)]) -> Gateway {
    let dir = TempDir::new("upstream-tls");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    Gateway::start_in(dir, &config(target, tls), &[], "serve").unwrap_or_else(|e| panic!("{e}"))
}

fn config(target: &str, tls: &str) -> String {
    let mut c = Cfg::new("127.0.0.1:1".parse().unwrap());
    let tls = if tls.is_empty() {
        String::new()
    } else {
        format!("tls = {tls}\n")
    };
    c.rest = format!(
        "[[upstream]]\nname = \"billing\"\ntargets = [\"{target}\"]\ntimeout = \"5s\"\n{tls}\n\
         [[route]]\npath = \"/public\"\nupstream = \"billing\"\nauth = \"public\"\n"
    );
    c.render()
}

async fn get_public(gw: &Gateway) -> (u16, String) {
    let r = client().get(gw.url("/public/x")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn an_upstream_certified_by_the_configured_ca_is_reached_over_pooled_connections() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["127.0.0.1"]);
    let (addr, seen) = https_upstream(&cert, &key, None);
    let gw = gateway(
        &format!("https://{addr}"),
        r#"{ ca = "file:ca.pem" }"#,
        &[("ca.pem", &ca.pem())],
    );
    let c = client();
    for _ in 0..4 {
        let r = c.get(gw.url("/public/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "secure");
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 4);
    let handshakes = seen.handshakes.load(Ordering::SeqCst);
    assert!(
        handshakes <= 2,
        "{handshakes} TLS handshakes for 4 requests: not pooled"
    );
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_502_and_the_upstream_sees_no_request() {
    let (ca, other) = (Ca::new(), Ca::new());
    let (cert, key) = ca.leaf(&["127.0.0.1"]);
    let (addr, seen) = https_upstream(&cert, &key, None);
    // Trusted: the system roots and another CA, not the one that signed the upstream.
    let gw = gateway(
        &format!("https://{addr}"),
        r#"{ ca = "file:ca.pem" }"#,
        &[("ca.pem", &other.pem())],
    );
    let (status, body) = get_public(&gw).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_unavailable"), "{body}");
    // Without any ca the system roots alone don't know the test CA either.
    let gw2 = gateway(&format!("https://{addr}"), "", &[]);
    assert_eq!(get_public(&gw2).await.0, 502);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);
    assert_eq!(seen.handshakes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_502_and_the_upstream_sees_no_request() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["other.test"]);
    let (addr, seen) = https_upstream(&cert, &key, None);
    let gw = gateway(
        &format!("https://{addr}"),
        r#"{ ca = "file:ca.pem" }"#,
        &[("ca.pem", &ca.pem())],
    );
    let (status, body) = get_public(&gw).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);
    // A plaintext request to the TLS port is never tried instead.
    assert!(
        !gw.logs().contains("http://127.0.0.1"),
        "no plaintext fallback:\n{}",
        gw.logs()
    );
}

#[tokio::test]
async fn server_name_names_the_certificate_expected_from_an_address_target() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["billing.internal"]);
    let (addr, seen) = https_upstream(&cert, &key, None);
    let gw = gateway(
        &format!("https://{addr}"),
        r#"{ ca = "file:ca.pem", server_name = "billing.internal" }"#,
        &[("ca.pem", &ca.pem())],
    );
    assert_eq!(get_public(&gw).await, (200, "secure".to_string()));
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_upstream_requiring_mtls_gets_the_configured_client_certificate_and_refuses_none() {
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["127.0.0.1"]);
    let (addr, seen) = https_upstream(&cert, &key, Some(&ca));
    let (gw_cert, gw_key) = ca.leaf(&["gateway.test"]);
    let with = gateway(
        &format!("https://{addr}"),
        r#"{ ca = "file:ca.pem", client_cert = "file:gw.pem", client_key = "file:gw-key.pem" }"#,
        &[
            ("ca.pem", &ca.pem()),
            ("gw.pem", &gw_cert),
            ("gw-key.pem", &gw_key),
        ],
    );
    assert_eq!(get_public(&with).await, (200, "secure".to_string()));
    assert_eq!(*seen.with_client_cert.lock().unwrap(), vec![true]);
    let without = gateway(
        &format!("https://{addr}"),
        r#"{ ca = "file:ca.pem" }"#,
        &[("ca.pem", &ca.pem())],
    );
    let (status, body) = get_public(&without).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        seen.requests.load(Ordering::SeqCst),
        1,
        "only the mTLS request"
    );
}

#[tokio::test]
async fn a_reload_rereads_the_ca_file() {
    let (old, new) = (Ca::new(), Ca::new());
    let (cert, key) = new.leaf(&["127.0.0.1"]);
    let (addr, seen) = https_upstream(&cert, &key, None);
    let target = format!("https://{addr}");
    let tls = r#"{ ca = "file:ca.pem" }"#;
    let gw = gateway(&target, tls, &[("ca.pem", &old.pem())]);
    assert_eq!(get_public(&gw).await.0, 502);
    std::fs::write(gw.dir.path().join("ca.pem"), new.pem()).unwrap();
    assert!(gw.reload(&config(&target, tls)), "{}", gw.logs());
    assert_eq!(get_public(&gw).await, (200, "secure".to_string()));
    assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
    // A CA file that no longer parses is refused; the loaded one stays in force.
    std::fs::write(gw.dir.path().join("ca.pem"), "not a certificate\n").unwrap();
    assert!(!gw.reload(&config(&target, tls)));
    assert!(gw.logs().contains("upstream[0].tls.ca"), "{}", gw.logs());
    assert_eq!(get_public(&gw).await.0, 200);
}

#[test]
fn check_validates_the_tls_files_an_upstream_names() {
    let dir = TempDir::new("upstream-tls-check");
    let ca = Ca::new();
    let (cert, key) = ca.leaf(&["gateway.test"]);
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("gw.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("gw-key.pem"), &key).unwrap();
    std::fs::write(dir.path().join("junk.pem"), "junk\n").unwrap();
    let path = dir.path().join("gateway.toml");
    let check = |tls: &str| {
        std::fs::write(&path, config("https://127.0.0.1:8443", tls)).unwrap();
        run_cli(&path, &["check"], None)
    };
    let ok = check(
        r#"{ ca = "file:ca.pem", client_cert = "file:gw.pem", client_key = "file:gw-key.pem" }"#,
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(
        ok.stdout.contains("https://127.0.0.1:8443"),
        "{}",
        ok.stdout
    );
    for (tls, key) in [
        (r#"{ ca = "file:junk.pem" }"#, "upstream[0].tls.ca"),
        (r#"{ ca = "file:missing.pem" }"#, "upstream[0].tls.ca"),
        (
            r#"{ ca = "file:ca.pem", client_cert = "file:gw.pem", client_key = "file:junk.pem" }"#,
            "upstream[0].tls.client_key",
        ),
        (r#"{ insecure = true }"#, "upstream[0].tls.insecure"),
    ] {
        let out = check(tls);
        assert_eq!(out.code, 1, "{tls}: {}", out.stdout);
        let line = out.stderr.lines().next().unwrap_or("");
        assert!(
            line.contains("gateway.toml:") && line.contains(key),
            "{tls}: {}",
            out.stderr
        );
    }
}
