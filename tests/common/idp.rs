//! Identity providers for the `[[issuer]]` tests (SPEC §10):
//! - [`Idp`]: a real OIDC provider (oauth2-mock-server from npm, tests/idp/) on
//!   127.0.0.1 over HTTPS with a certificate from a test CA made here with rcgen;
//! - [`HostileJwks`]: a small hyper server that serves whatever JWKS body a test wants
//!   (garbage, huge, stalling), over plain http on loopback, counting requests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};

use super::TempDir;

/// A test certificate authority and the PEM files of one server certificate it signed.
pub struct TestCa {
    pub pem: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("authgate test CA {name}"),
        );
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
        TestCa {
            pem: issuer.pem(),
            issuer,
        }
    }

    /// (certificate PEM, private key PEM) for `localhost` and 127.0.0.1.
    pub fn server_cert(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn idp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

/// oauth2-mock-server, driven by tests/idp/idp.mjs.
pub struct Idp {
    child: Option<Child>,
    pub port: u16,
    control: u16,
    /// `https://localhost:PORT`: the `iss` of its tokens.
    pub issuer: String,
    /// Key id per algorithm (RS256, PS256, ES256, EdDSA).
    pub kids: Value,
    dir: TempDir,
}

/// `cargo test` alone must work for a new checkout (README): install the pinned
/// IdP from its lockfile the first time a test needs it (.ci/run does it up front).
fn install_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if idp_dir().join("node_modules/oauth2-mock-server").is_dir() {
            return;
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(idp_dir())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("npm ci in tests/idp failed: {status:?}");
        }
    });
}

impl Idp {
    /// Starts the IdP with a certificate from `ca`, on `port` (0: any free port).
    pub fn start(ca: &TestCa, port: u16) -> Idp {
        let dir = TempDir::new("idp");
        let (cert, key) = ca.server_cert();
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        Self::spawn(dir, port)
    }

    fn spawn(dir: TempDir, port: u16) -> Idp {
        install_once();
        assert!(
            idp_dir().join("node_modules/oauth2-mock-server").is_dir(),
            "the test IdP is not installed: run `npm ci --prefix tests/idp` (.ci/run does)"
        );
        let mut child = Command::new("node")
            .arg(idp_dir().join("idp.mjs"))
            .arg(dir.path().join("key.pem"))
            .arg(dir.path().join("cert.pem"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the IdP did not start within 60 s");
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("IdP ready line {line:?}: {e}"));
        Idp {
            child: Some(child),
            port: v["port"].as_u64().unwrap() as u16,
            control: v["control"].as_u64().unwrap() as u16,
            issuer: v["issuer"].as_str().unwrap().to_string(),
            kids: v["kids"].clone(),
            dir,
        }
    }

    /// Stops the process (the IdP is down until [`Idp::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same certificate (new keys).
    pub fn restart(&mut self) {
        self.stop();
        let dir = std::mem::replace(&mut self.dir, TempDir::new("idp-moved"));
        let fresh = Self::spawn(dir, self.port);
        *self = fresh;
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = super::client()
            .request(method, format!("http://127.0.0.1:{}{path}", self.control))
            .json(&body)
            .send()
            .await
            .expect("IdP control API");
        assert_eq!(r.status(), 200, "IdP control {path}");
        r.json().await.unwrap()
    }

    /// A token signed by the IdP: `claims` are merged into its payload (it sets iss,
    /// iat, nbf, exp), `header` into its header; `alg` picks the key.
    pub async fn token(&self, alg: &str, claims: Value, header: Value) -> String {
        let v = self
            .control(
                reqwest::Method::POST,
                "/token",
                json!({ "alg": alg, "claims": claims, "header": header }),
            )
            .await;
        v["token"].as_str().unwrap().to_string()
    }

    /// A new signing key for `alg`, published in the JWKS; its kid.
    pub async fn rotate(&self, alg: &str) -> String {
        let v = self
            .control(reqwest::Method::POST, "/rotate", json!({ "alg": alg }))
            .await;
        v["kid"].as_str().unwrap().to_string()
    }

    /// JWKS requests the IdP has answered so far.
    pub async fn jwks_fetches(&self) -> u64 {
        let v = self
            .control(reqwest::Method::GET, "/count", json!({}))
            .await;
        v["jwks"].as_u64().unwrap()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What [`HostileJwks`] answers.
#[derive(Clone)]
pub enum Reply {
    Body(Bytes),
    /// Sends headers, then nothing for this long, then the body.
    Stall(Duration, Bytes),
}

pub struct HostileJwks {
    pub addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    hits: Arc<AtomicUsize>,
}

impl HostileJwks {
    pub fn start(reply: Reply) -> HostileJwks {
        let reply = Arc::new(Mutex::new(reply));
        let hits = Arc::new(AtomicUsize::new(0));
        let (r, h) = (reply.clone(), hits.clone());
        let addr = super::serve_loopback(move |stream| {
            let (r, h) = (r.clone(), h.clone());
            async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let (r, h) = (r.clone(), h.clone());
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        let reply = r.lock().unwrap().clone();
                        let body = match reply {
                            Reply::Body(b) => b,
                            Reply::Stall(d, b) => {
                                tokio::time::sleep(d).await;
                                b
                            }
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            }
        });
        HostileJwks { addr, reply, hits }
    }

    pub fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }
}
