//! Sign-in through an identity provider (SPEC §14): providers, config, and a browser
//! without a browser.
//! - [`Op`]: panva's certified oidc-provider (tests/idp/op.mjs) over HTTPS with a test
//!   CA: its own login and consent pages, RP-initiated and back-channel logout. For the
//!   Chromium tests.
//! - [`HostileOp`]: a small provider written here (hyper + tokio-rustls over HTTPS with
//!   the test CA, ES256 signatures by jsonwebtoken): its authorization endpoint answers
//!   at once with a code, and it can be told to misbehave once ([`Fault`]).
//! - [`Agent`]: reqwest with no redirects and no cookie store; the gateway's cookies are
//!   kept by hand, so a test can drop, swap or replay them.
//! - [`login_issuer_toml`], [`LoginWorld`]: the gateway config of §14.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::idp::TestCa;
use super::*;

pub const CLIENT_ID: &str = "authgate";
pub const CLIENT_SECRET: &str = "test-client-secret-0123456789abcdef";

/// The names of the session cookies (§12) and of the flow-binding cookie (agreed with
/// the implementer: `__Host-authgate-oidc`).
pub const ACCESS_COOKIE: &str = "__Host-authgate";
pub const REFRESH_COOKIE: &str = "__Host-authgate-refresh";
pub const FLOW_COOKIE: &str = "__Host-authgate-oidc";

/// A port for the gateway, chosen before it starts. Why: the redirect URI registered at
/// the provider and written in the gateway's config (`http://127.0.0.1:PORT/oauth2/callback`)
/// must be exact (§14), and the harness's gateway binds `127.0.0.1:0` and learns its port
/// only after it started. So: bind port 0, read the port, close it, and give the gateway
/// `listen = ["127.0.0.1:PORT"]`. Another process could take it in between; the kernel
/// hands out ephemeral ports round-robin, so that is rare, and the start then fails loudly.
pub fn free_port() -> u16 {
    dead_addr().port()
}

pub fn redirect_uri(port: u16) -> String {
    format!("http://127.0.0.1:{port}/oauth2/callback")
}

fn idp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

/// `cargo test` alone must work for a new checkout: install the pinned providers from
/// the lockfile the first time a test needs them (.ci/run does it up front).
fn install_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if idp_dir().join("node_modules/oidc-provider").is_dir() {
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

// ---------------------------------------------------------------- accounts

/// A person at the provider: login name (the provider's `sub`), email, verified, groups.
#[derive(Clone, Debug)]
pub struct Account {
    pub login: String,
    pub email: String,
    pub email_verified: bool,
    pub groups: Vec<String>,
}

impl Account {
    pub fn new(login: &str, email: &str, verified: bool, groups: &[&str]) -> Account {
        Account {
            login: login.into(),
            email: email.into(),
            email_verified: verified,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
    /// The ID-token claims this account carries (besides iss, aud, nonce, times).
    pub fn claims(&self) -> Value {
        json!({ "sub": self.login, "email": self.email,
                "email_verified": self.email_verified, "groups": self.groups })
    }
}

/// alice@example.com (verified, staff), bob@evil.example (verified), carol (unverified).
pub fn test_accounts() -> Vec<Account> {
    vec![
        Account::new("alice", "alice@example.com", true, &["staff"]),
        Account::new("bob", "bob@evil.example", true, &["guests"]),
        Account::new("carol", "carol@example.com", false, &["staff"]),
    ]
}

// ---------------------------------------------------------------- oidc-provider

/// One client registered at [`Op`].
#[derive(Clone, Debug)]
pub struct OpClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    /// "client_secret_basic" | "client_secret_post"
    pub auth_method: String,
}

impl OpClient {
    /// The gateway on `gw_port` as a client: callback, sign-in page after logout,
    /// back-channel logout endpoint.
    pub fn gateway(gw_port: u16) -> OpClient {
        OpClient {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            redirect_uris: vec![redirect_uri(gw_port)],
            post_logout_redirect_uris: vec![
                format!("http://127.0.0.1:{gw_port}/login"),
                format!("http://127.0.0.1:{gw_port}/"),
            ],
            backchannel_logout_uri: Some(format!(
                "http://127.0.0.1:{gw_port}/oauth2/backchannel-logout"
            )),
            auth_method: "client_secret_basic".into(),
        }
    }
}

/// panva's oidc-provider, driven by tests/idp/op.mjs.
pub struct Op {
    child: Option<Child>,
    pub port: u16,
    control: u16,
    /// `https://localhost:PORT`
    pub issuer: String,
    /// The test CA's certificate (PEM), to trust the provider's TLS.
    pub ca_pem: String,
    pub clients: Vec<OpClient>,
    _dir: TempDir,
}

impl Op {
    pub fn start(clients: &[OpClient], accounts: &[Account]) -> Op {
        install_once();
        assert!(
            idp_dir().join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed: run `npm ci --prefix tests/idp` (.ci/run does)"
        );
        let ca = TestCa::new("op");
        let dir = TempDir::new("op");
        let (cert, key) = ca.server_cert();
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let cfg = json!({
            "key": dir.path().join("key.pem"),
            "cert": dir.path().join("cert.pem"),
            "port": 0,
            "clients": clients.iter().map(|c| json!({
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "redirect_uris": c.redirect_uris,
                "post_logout_redirect_uris": c.post_logout_redirect_uris,
                "backchannel_logout_uri": c.backchannel_logout_uri,
                "token_endpoint_auth_method": c.auth_method,
            })).collect::<Vec<_>>(),
            "accounts": accounts.iter().map(|a| (a.login.clone(), json!({
                "email": a.email, "email_verified": a.email_verified, "groups": a.groups,
            }))).collect::<serde_json::Map<_, _>>(),
        });
        let cfg_path = dir.path().join("op.json");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let mut child = Command::new("node")
            .arg(idp_dir().join("op.mjs"))
            .arg(&cfg_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // The first line is the ready line; the rest is drained so the pipe never fills.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for l in lines.map_while(Result::ok) {
                eprintln!("op: {l}");
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("oidc-provider did not start within 60 s");
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("op ready line {line:?}: {e}"));
        Op {
            child: Some(child),
            port: v["port"].as_u64().unwrap() as u16,
            control: v["control"].as_u64().unwrap() as u16,
            issuer: v["issuer"].as_str().unwrap().to_string(),
            ca_pem: ca.pem.clone(),
            clients: clients.to_vec(),
            _dir: dir,
        }
    }

    /// Makes the provider send a back-channel `logout_token` for `sub` (and `sid`) to the
    /// client's `backchannel_logout_uri`, as its admin console would. Err with the
    /// provider's reason when the client did not answer 200/204.
    pub async fn backchannel_logout(
        &self,
        client_id: &str,
        sub: &str,
        sid: Option<&str>,
    ) -> Result<(), String> {
        let r = client()
            .post(format!("http://127.0.0.1:{}/backchannel", self.control))
            .json(&json!({ "client_id": client_id, "sub": sub, "sid": sid }))
            .send()
            .await
            .expect("op control API");
        if r.status() == 200 {
            Ok(())
        } else {
            Err(r.text().await.unwrap_or_default())
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- the hostile provider

/// What [`HostileOp`] does wrong, once (the next authorization or token response).
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// ID token `aud` is another client.
    WrongAud,
    /// ID token `aud` holds ours and another, `azp` names the other.
    ForeignAzp,
    /// ID token `iss` is another issuer.
    WrongIss,
    /// ID token `nonce` is not the one the gateway sent.
    WrongNonce,
    /// ID token without `nonce`.
    NoNonce,
    /// ID token expired an hour ago.
    Expired,
    /// ID token signature with one byte changed.
    BadSignature,
    /// ID token signed by a key the provider never published, under the published `kid`.
    ForeignKey,
    /// ID token `{"alg":"none"}`, empty signature.
    AlgNone,
    /// Token response without `id_token`.
    NoIdToken,
    /// Token endpoint: 400 `{"error":"invalid_grant"}`.
    TokenInvalidGrant,
    /// Token endpoint: 500.
    Token500,
    /// Token endpoint: waits this long before answering.
    TokenStall(Duration),
    /// Authorization endpoint: redirects back with `error=access_denied`.
    AuthorizeDenied,
    /// Authorization endpoint: redirects back with a code and `iss=https://evil.example`.
    AuthorizeWrongIss,
}

impl Fault {
    fn at_authorize(&self) -> bool {
        matches!(self, Fault::AuthorizeDenied | Fault::AuthorizeWrongIss)
    }
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    challenge: String,
    sid: String,
}

#[derive(Default)]
struct OpState {
    issuer: String,
    redirect_uris: Vec<String>,
    auth_method: String,
    codes: HashMap<String, Grant>,
    fault: Option<Fault>,
    claims: Value,
    authorize_log: Vec<BTreeMap<String, String>>,
    token_log: Vec<BTreeMap<String, String>>,
    end_session_log: Vec<BTreeMap<String, String>>,
    id_tokens: Vec<Value>,
    n: u64,
}

/// A provider that answers the authorization request at once (no login page) with a
/// code, checks the client, the code, the redirect URI and the PKCE verifier at the
/// token endpoint, and signs ES256 ID tokens — or does one thing wrong when told.
pub struct HostileOp {
    pub addr: SocketAddr,
    /// `https://localhost:PORT`
    pub issuer: String,
    pub ca_pem: String,
    state: Arc<Mutex<OpState>>,
    signer: Arc<Signer>,
    stop: Arc<tokio::sync::Notify>,
}

fn query_map(q: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn sha256_b64(s: &str) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes()).as_ref())
}

fn es256_signer() -> Signer {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    Signer::from_pem(
        key.serialize_pem().as_bytes(),
        jsonwebtoken::Algorithm::ES256,
    )
}

fn jwk_of(signer: &Signer) -> Value {
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&signer.key, signer.alg).unwrap();
    let mut v = serde_json::to_value(jwk).unwrap();
    v["kid"] = json!(signer.kid);
    v["alg"] = json!("ES256");
    v["use"] = json!("sig");
    v
}

type Resp = hyper::Response<Full<Bytes>>;

fn reply(status: u16, ctype: &str, body: String) -> Resp {
    hyper::Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn redirect(location: &str) -> Resp {
    hyper::Response::builder()
        .status(302)
        .header("location", location)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let q = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{q}")
}

fn oauth_error(status: u16, code: &str) -> Resp {
    reply(
        status,
        "application/json",
        json!({ "error": code, "error_description": format!("hostile provider: {code}") })
            .to_string(),
    )
}

async fn hostile_handle(
    state: Arc<Mutex<OpState>>,
    signer: Arc<Signer>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Resp, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let query = query_map(parts.uri.query().unwrap_or(""));
    let path = parts.uri.path().to_string();
    let issuer = state.lock().unwrap().issuer.clone();
    let r = match (parts.method.as_str(), path.as_str()) {
        ("GET", "/.well-known/openid-configuration") => reply(
            200,
            "application/json",
            json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "end_session_endpoint": format!("{issuer}/end_session"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "authorization_response_iss_parameter_supported": true,
                "backchannel_logout_supported": true,
                "backchannel_logout_session_supported": true,
                "scopes_supported": ["openid", "email", "profile"],
            })
            .to_string(),
        ),
        ("GET", "/jwks") => reply(
            200,
            "application/json",
            json!({ "keys": [jwk_of(&signer)] }).to_string(),
        ),
        ("GET", "/authorize") => {
            let mut st = state.lock().unwrap();
            st.authorize_log.push(query.clone());
            let q = |k: &str| query.get(k).cloned().unwrap_or_default();
            let redirect_uri = q("redirect_uri");
            let ok = q("response_type") == "code"
                && q("client_id") == CLIENT_ID
                && st.redirect_uris.contains(&redirect_uri)
                && q("code_challenge_method") == "S256"
                && !q("code_challenge").is_empty();
            if !ok {
                return Ok(oauth_error(400, "invalid_request"));
            }
            let fault = match &st.fault {
                Some(f) if f.at_authorize() => st.fault.take(),
                _ => None,
            };
            let state_param = q("state");
            let loc = match fault {
                Some(Fault::AuthorizeDenied) => with_query(
                    &redirect_uri,
                    &[
                        ("error", "access_denied"),
                        ("error_description", "the user said no"),
                        ("state", &state_param),
                        ("iss", &issuer),
                    ],
                ),
                other => {
                    st.n += 1;
                    let code = format!("code-{}-{}", st.n, now());
                    let sid = format!("sid-{}", st.n);
                    st.codes.insert(
                        code.clone(),
                        Grant {
                            client_id: q("client_id"),
                            redirect_uri: redirect_uri.clone(),
                            nonce: query.get("nonce").cloned(),
                            challenge: q("code_challenge"),
                            sid,
                        },
                    );
                    let iss = if other == Some(Fault::AuthorizeWrongIss) {
                        "https://evil.example".to_string()
                    } else {
                        issuer.clone()
                    };
                    with_query(
                        &redirect_uri,
                        &[("code", &code), ("state", &state_param), ("iss", &iss)],
                    )
                }
            };
            redirect(&loc)
        }
        ("POST", "/token") => return Ok(token(&state, &signer, &parts.headers, &body).await),
        ("GET", "/end_session") => {
            state.lock().unwrap().end_session_log.push(query.clone());
            match query.get("post_logout_redirect_uri") {
                Some(u) => redirect(u),
                None => reply(200, "text/plain", "signed out".into()),
            }
        }
        _ => reply(404, "text/plain", "not found".into()),
    };
    Ok(r)
}

async fn token(
    state: &Arc<Mutex<OpState>>,
    signer: &Signer,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Resp {
    let form: BTreeMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(v).ok()
        })
        .and_then(|v| String::from_utf8(v).ok());
    let mut logged = form.clone();
    logged.insert(
        "_auth".into(),
        if basic.is_some() {
            "client_secret_basic"
        } else {
            "client_secret_post"
        }
        .into(),
    );
    let (fault, grant, issuer, claims) = {
        let mut st = state.lock().unwrap();
        st.token_log.push(logged);
        let creds = match &basic {
            Some(b) => b
                .split_once(':')
                .map(|(i, s)| (i.to_string(), s.to_string())),
            None => form
                .get("client_id")
                .zip(form.get("client_secret"))
                .map(|(i, s)| (i.clone(), s.clone())),
        };
        let method_ok = (basic.is_some()) == (st.auth_method == "client_secret_basic");
        if creds != Some((CLIENT_ID.to_string(), CLIENT_SECRET.to_string())) || !method_ok {
            return oauth_error(401, "invalid_client");
        }
        if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
            return oauth_error(400, "unsupported_grant_type");
        }
        // Codes are single use, like at any real provider.
        let Some(grant) = form.get("code").and_then(|c| st.codes.remove(c)) else {
            return oauth_error(400, "invalid_grant");
        };
        let fault = match &st.fault {
            Some(f) if !f.at_authorize() => st.fault.take(),
            _ => None,
        };
        (fault, grant, st.issuer.clone(), st.claims.clone())
    };
    if form.get("redirect_uri") != Some(&grant.redirect_uri)
        || grant.client_id != CLIENT_ID
        || form.get("code_verifier").map(|v| sha256_b64(v)) != Some(grant.challenge.clone())
    {
        return oauth_error(400, "invalid_grant");
    }
    match &fault {
        Some(Fault::TokenInvalidGrant) => return oauth_error(400, "invalid_grant"),
        Some(Fault::Token500) => return reply(500, "text/plain", "internal error".into()),
        Some(Fault::TokenStall(d)) => tokio::time::sleep(*d).await,
        _ => {}
    }
    let t = now();
    let mut c = json!({
        "iss": issuer, "aud": CLIENT_ID, "iat": t, "exp": t + 300, "auth_time": t,
        "sid": grant.sid,
    });
    if let Some(n) = &grant.nonce {
        c["nonce"] = json!(n);
    }
    if let Some(o) = claims.as_object() {
        for (k, v) in o {
            c[k] = v.clone();
        }
    }
    match &fault {
        Some(Fault::WrongAud) => c["aud"] = json!("someone-else"),
        Some(Fault::ForeignAzp) => {
            c["aud"] = json!([CLIENT_ID, "someone-else"]);
            c["azp"] = json!("someone-else");
        }
        Some(Fault::WrongIss) => c["iss"] = json!("https://evil.example"),
        Some(Fault::WrongNonce) => c["nonce"] = json!("not-the-nonce-you-sent"),
        Some(Fault::NoNonce) => {
            c.as_object_mut().unwrap().remove("nonce");
        }
        Some(Fault::Expired) => {
            c["iat"] = json!(t - 3600);
            c["auth_time"] = json!(t - 3600);
            c["exp"] = json!(t - 600);
        }
        _ => {}
    }
    let id_token = match &fault {
        Some(Fault::AlgNone) => format!(
            "{}.{}.",
            b64(json!({ "alg": "none", "typ": "JWT" }).to_string()),
            b64(c.to_string())
        ),
        Some(Fault::ForeignKey) => {
            let other = es256_signer();
            let mut h = signer.header();
            h["kid"] = json!(signer.kid);
            other.sign(&h, &c)
        }
        Some(Fault::BadSignature) => {
            let tok = signer.token(&c);
            let (head, sig) = tok.rsplit_once('.').unwrap();
            let mut sig: Vec<char> = sig.chars().collect();
            let i = sig.len() / 2;
            sig[i] = if sig[i] == 'A' { 'B' } else { 'A' };
            format!("{head}.{}", sig.into_iter().collect::<String>())
        }
        _ => signer.token(&c),
    };
    state.lock().unwrap().id_tokens.push(c);
    let mut resp = json!({
        "access_token": format!("at-{t}-{}", grant.sid),
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "openid email profile",
        "id_token": id_token,
    });
    if fault == Some(Fault::NoIdToken) {
        resp.as_object_mut().unwrap().remove("id_token");
    }
    reply(200, "application/json", resp.to_string())
}

fn tls_acceptor(cert_pem: &str, key_pem: &str) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    authgate::install_crypto();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

impl HostileOp {
    /// Starts it on 127.0.0.1 (any free port) with `redirect_uris` registered for the
    /// client [`CLIENT_ID`]/[`CLIENT_SECRET`] using `auth_method`
    /// ("client_secret_basic" | "client_secret_post"). It signs alice in by default.
    pub fn start(redirect_uris: &[String], auth_method: &str) -> HostileOp {
        let ca = TestCa::new("hostile-op");
        let (cert, key) = ca.server_cert();
        let acceptor = tls_acceptor(&cert, &key);
        let signer = Arc::new(es256_signer());
        let state = Arc::new(Mutex::new(OpState {
            redirect_uris: redirect_uris.to_vec(),
            auth_method: auth_method.into(),
            claims: test_accounts()[0].claims(),
            ..Default::default()
        }));
        let stop = Arc::new(tokio::sync::Notify::new());
        let (tx, rx) = mpsc::channel();
        let (st, sg, sp) = (state.clone(), signer.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let local = tokio::task::LocalSet::new();
            // When stopped, the listener and every open connection go (block_on returns,
            // the LocalSet and its connection tasks are dropped): connections are refused.
            local.block_on(&rt, async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                loop {
                    let stream = tokio::select! {
                        r = l.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                        _ = sp.notified() => break,
                    };
                    let (acceptor, st, sg) = (acceptor.clone(), st.clone(), sg.clone());
                    tokio::task::spawn_local(async move {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let svc = hyper::service::service_fn(move |req| {
                            hostile_handle(st.clone(), sg.clone(), req)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
        });
        let addr: SocketAddr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let issuer = format!("https://localhost:{}", addr.port());
        state.lock().unwrap().issuer = issuer.clone();
        HostileOp {
            addr,
            issuer,
            ca_pem: ca.pem.clone(),
            state,
            signer,
            stop,
        }
    }

    /// The next authorization or token response (whichever the fault is about) does it.
    pub fn fault(&self, f: Fault) {
        self.state.lock().unwrap().fault = Some(f);
    }

    /// Whether the fault set last has been used up.
    pub fn fault_pending(&self) -> bool {
        self.state.lock().unwrap().fault.is_some()
    }

    /// The claims of the next ID tokens (sub, email, email_verified, groups, ...).
    pub fn set_claims(&self, claims: Value) {
        self.state.lock().unwrap().claims = claims;
    }

    pub fn sign_in_as(&self, a: &Account) {
        self.set_claims(a.claims());
    }

    /// Authorization requests received, as query maps.
    pub fn authorize_requests(&self) -> Vec<BTreeMap<String, String>> {
        self.state.lock().unwrap().authorize_log.clone()
    }

    /// Token requests received, as form maps (plus `_auth`: how the client authenticated).
    pub fn token_requests(&self) -> Vec<BTreeMap<String, String>> {
        self.state.lock().unwrap().token_log.clone()
    }

    pub fn end_session_requests(&self) -> Vec<BTreeMap<String, String>> {
        self.state.lock().unwrap().end_session_log.clone()
    }

    /// Claims of the ID tokens issued so far (the last one: the last sign-in).
    pub fn id_tokens(&self) -> Vec<Value> {
        self.state.lock().unwrap().id_tokens.clone()
    }

    /// A back-channel `logout_token` (OpenID Back-Channel Logout 1.0 §2.4) signed by this
    /// provider for `sub` and `sid`; `extra` is merged in last (a `null` removes a claim).
    pub fn logout_token(&self, sub: Option<&str>, sid: Option<&str>, extra: Value) -> String {
        let t = now();
        let mut c = json!({
            "iss": self.issuer, "aud": CLIENT_ID, "iat": t, "exp": t + 120,
            "jti": format!("jti-{t}-{}", self.state.lock().unwrap().n),
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        });
        if let Some(s) = sub {
            c["sub"] = json!(s);
        }
        if let Some(s) = sid {
            c["sid"] = json!(s);
        }
        if let Some(o) = extra.as_object() {
            for (k, v) in o {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
        }
        let mut h = self.signer.header();
        h["typ"] = json!("logout+jwt");
        self.signer.sign(&h, &c)
    }

    /// An ID token or logout token signed by a key this provider never published.
    pub fn forged_token(&self, claims: &Value) -> String {
        let other = es256_signer();
        let mut h = self.signer.header();
        h["kid"] = json!(self.signer.kid);
        other.sign(&h, claims)
    }

    /// Closes the listener and every connection: from now on, connections are refused.
    pub fn stop(&self) {
        self.stop.notify_one();
        // Wait until connecting fails, so the caller's next step sees the outage.
        for _ in 0..200 {
            if std::net::TcpStream::connect(self.addr).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the hostile provider did not stop");
    }
}

impl Drop for HostileOp {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

// ---------------------------------------------------------------- gateway config

/// One login issuer (§14) as the tests write it.
#[derive(Clone)]
pub struct LoginIssuer {
    pub name: String,
    pub issuer: String,
    pub ca_file: String,
    pub algorithms: String,
    pub secret_file: String,
    pub redirect_uri: String,
    pub display_name: String,
    /// More `[[issuer]]` keys (before `[issuer.login]`), one per line.
    pub issuer_extra: String,
    /// More `[issuer.login]` keys, one per line.
    pub login_extra: String,
}

/// ```toml
/// [[issuer]]
/// name = "corp"
/// issuer = "https://localhost:PORT"
/// discovery = true
/// audiences = ["api"]
/// algorithms = ["ES256"]
/// identity_claim = "email"
/// ca = "file:/tmp/.../op-ca.pem"
/// <issuer_extra>
/// [issuer.login]
/// client_id = "authgate"
/// client_secret = "file:/tmp/.../client-secret"
/// redirect_uri = "http://127.0.0.1:GWPORT/oauth2/callback"
/// scopes = ["openid", "email", "profile"]
/// display_name = "Corp SSO"
/// <login_extra>
/// ```
pub fn login_issuer_toml(l: &LoginIssuer) -> String {
    format!(
        "[[issuer]]\nname = \"{}\"\nissuer = \"{}\"\ndiscovery = true\naudiences = [\"api\"]\n\
         algorithms = {}\nidentity_claim = \"email\"\nca = \"file:{}\"\n{}\n\
         [issuer.login]\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"file:{}\"\n\
         redirect_uri = \"{}\"\nscopes = [\"openid\", \"email\", \"profile\"]\n\
         display_name = \"{}\"\n{}\n",
        l.name,
        l.issuer,
        l.algorithms,
        l.ca_file,
        l.issuer_extra,
        l.secret_file,
        l.redirect_uri,
        l.display_name,
        l.login_extra
    )
}

/// Files a login issuer needs: the provider's CA and the client secret.
pub struct Secrets {
    pub dir: TempDir,
    pub ca_file: String,
    pub secret_file: String,
}

impl Secrets {
    pub fn new(ca_pem: &str) -> Secrets {
        let dir = TempDir::new("oidc-files");
        let ca = dir.path().join("op-ca.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        let secret = dir.path().join("client-secret");
        std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
        Secrets {
            ca_file: ca.display().to_string(),
            secret_file: secret.display().to_string(),
            dir,
        }
    }
}

/// The harness's test config (self tokens, /public /optional /protected /admin, an admin
/// listener) listening on `port`, with `[session] cookie = true, login_page = true`,
/// `forward.issuer_header = "X-User-Issuer"`, and `issuers` (TOML) appended.
pub fn login_cfg(up: SocketAddr, port: u16, issuers: &str) -> Cfg {
    let mut c = Cfg::new(up);
    c.server = format!("listen = [\"127.0.0.1:{port}\"]\n");
    c.admin = Some("listen = \"127.0.0.1:0\"\n".into());
    c.forward.push_str("issuer_header = \"X-User-Issuer\"\n");
    c.rest.push_str(&format!(
        "\n[session]\ncookie = true\nlogin_page = true\n\n{issuers}"
    ));
    c
}

/// A recording upstream, the hostile provider, and a gateway with one login issuer
/// `corp` ("Corp SSO") pointing at it.
pub struct LoginWorld {
    pub up: Upstream,
    pub op: HostileOp,
    pub gw: Gateway,
    pub port: u16,
    pub issuer: LoginIssuer,
    pub files: Secrets,
}

impl LoginWorld {
    pub fn start() -> LoginWorld {
        Self::with(|_| {})
    }

    /// `tweak` may change the issuer entry (extra keys) before the gateway starts.
    pub fn with(tweak: impl FnOnce(&mut LoginIssuer)) -> LoginWorld {
        Self::with_cfg(tweak, |_| {})
    }

    /// `tweak_cfg` may change the rest of the config (identity, routes, ...) too.
    pub fn with_cfg(
        tweak: impl FnOnce(&mut LoginIssuer),
        tweak_cfg: impl FnOnce(&mut Cfg),
    ) -> LoginWorld {
        let up = Upstream::start();
        let port = free_port();
        let op = HostileOp::start(&[redirect_uri(port)], "client_secret_basic");
        let files = Secrets::new(&op.ca_pem);
        let mut issuer = hostile_issuer(&op, &files, port);
        tweak(&mut issuer);
        if issuer.login_extra.contains("client_secret_post") {
            op.state.lock().unwrap().auth_method = "client_secret_post".into();
        }
        let mut cfg = login_cfg(up.addr, port, &login_issuer_toml(&issuer));
        tweak_cfg(&mut cfg);
        let gw = Gateway::start(&cfg);
        LoginWorld {
            up,
            op,
            gw,
            port,
            issuer,
            files,
        }
    }

    pub fn agent(&self) -> Agent {
        Agent::new(&self.gw, &self.op.ca_pem)
    }
}

/// The `corp` login issuer for `op`, gateway on `port`.
pub fn hostile_issuer(op: &HostileOp, files: &Secrets, port: u16) -> LoginIssuer {
    LoginIssuer {
        name: "corp".into(),
        issuer: op.issuer.clone(),
        ca_file: files.ca_file.clone(),
        algorithms: "[\"ES256\"]".into(),
        secret_file: files.secret_file.clone(),
        redirect_uri: redirect_uri(port),
        display_name: "Corp SSO".into(),
        issuer_extra: String::new(),
        login_extra: String::new(),
    }
}

// ---------------------------------------------------------------- the agent

/// One HTTP response, read whole.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<String> {
        self.headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("").to_string())
    }
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
    /// Whether a Set-Cookie gives `name` a value (not a removal with Max-Age=0).
    pub fn sets_cookie(&self, name: &str) -> bool {
        self.set_cookies().iter().any(|c| {
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            kv.strip_prefix(&format!("{name}="))
                .is_some_and(|v| !v.is_empty())
                && !attrs.to_ascii_lowercase().contains("max-age=0")
        })
    }
    /// A query parameter of the Location.
    pub fn location_param(&self, key: &str) -> Option<String> {
        let loc = self.location()?;
        let q = loc.split_once('?')?.1;
        query_map(q).remove(key)
    }
}

/// A browser without a browser: no redirects followed, cookies for the gateway kept by
/// hand (name → value, one origin), trusts the provider's test CA.
pub struct Agent {
    http: reqwest::Client,
    origin: String,
    pub jar: BTreeMap<String, String>,
}

impl Agent {
    pub fn new(gw: &Gateway, ca_pem: &str) -> Agent {
        authgate::install_crypto();
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        Agent {
            http,
            origin: format!("http://{}", gw.addr),
            jar: BTreeMap::new(),
        }
    }

    /// A second browser: same client, no cookies.
    pub fn fresh(&self) -> Agent {
        Agent {
            http: self.http.clone(),
            origin: self.origin.clone(),
            jar: BTreeMap::new(),
        }
    }

    /// The same browser (cookies and all) talking to another gateway, as a load
    /// balancer would send it there.
    pub fn to_gateway(&self, gw: &Gateway) -> Agent {
        Agent {
            http: self.http.clone(),
            origin: format!("http://{}", gw.addr),
            jar: self.jar.clone(),
        }
    }

    /// `url` with the gateway's origin replaced by this agent's (for a callback URL the
    /// provider addressed to another gateway).
    pub fn rebase(&self, url: &str) -> String {
        match url.strip_prefix("http://") {
            Some(rest) => {
                let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
                format!("{}{path}", self.origin)
            }
            None => url.to_string(),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.jar.get(name).map(String::as_str)
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with('/') {
            format!("{}{url}", self.origin)
        } else {
            url.to_string()
        }
    }

    /// Sends `req` (to the gateway: with its cookies and the given headers) and keeps the
    /// gateway's Set-Cookie.
    pub async fn send(
        &mut self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Page {
        let url = self.absolute(url);
        let to_gateway = url.starts_with(&self.origin);
        let mut b = self.http.request(method, &url);
        if to_gateway && !self.jar.is_empty() {
            let c: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            b = b.header("cookie", c.join("; "));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(f) = form {
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(f)
                .finish();
            b = b
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let r = b
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {url}: {e}"));
        let page = Page {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap_or_default(),
        };
        if to_gateway {
            for c in page.set_cookies() {
                let (kv, attrs) = c.split_once(';').unwrap_or((&c, ""));
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                if v.is_empty() || attrs.to_ascii_lowercase().contains("max-age=0") {
                    self.jar.remove(k.trim());
                } else {
                    self.jar.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        page
    }

    pub async fn get(&mut self, url: &str) -> Page {
        self.send(reqwest::Method::GET, url, &[], None).await
    }

    /// A top-level navigation, as a browser sends it.
    pub async fn navigate(&mut self, url: &str) -> Page {
        self.send(
            reqwest::Method::GET,
            url,
            &[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
            None,
        )
        .await
    }

    /// `GET /oauth2/start?issuer=..&return_to=..`: the 302 to the provider.
    pub async fn start(&mut self, issuer: &str, return_to: &str) -> Page {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("issuer", issuer)
            .append_pair("return_to", return_to)
            .finish();
        self.navigate(&format!("/oauth2/start?{q}")).await
    }

    /// Follows a start page's Location to the provider; returns the provider's answer
    /// (the hostile provider redirects at once to the callback with code and state).
    pub async fn authorize(&mut self, start: &Page) -> Page {
        assert_eq!(start.status, 302, "start: {start:?}");
        let loc = start.location().expect("start: Location");
        self.navigate(&loc).await
    }

    /// start → provider → the callback URL the provider sends the browser to.
    pub async fn callback_url(&mut self, issuer: &str, return_to: &str) -> String {
        let s = self.start(issuer, return_to).await;
        let a = self.authorize(&s).await;
        assert_eq!(a.status, 302, "provider: {a:?}");
        a.location().expect("provider: Location")
    }

    /// The whole sign-in: start → provider → callback; returns the callback's answer.
    pub async fn sign_in(&mut self, issuer: &str, return_to: &str) -> Page {
        let cb = self.callback_url(issuer, return_to).await;
        self.navigate(&cb).await
    }

    /// POST with the gateway's own Origin (the §12 CSRF rule).
    pub async fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.origin.clone();
        self.send(
            reqwest::Method::POST,
            path,
            &[("origin", &origin)],
            Some(form),
        )
        .await
    }
}

/// A failed sign-in as §14 says: no session cookie, the class's status (never 500), a
/// plain `text/html` page naming the class.
pub fn assert_refused(page: &Page, class: &str, status: u16, what: &str) {
    assert_ne!(page.status, 500, "{what}: never 500: {page:?}");
    assert_eq!(page.status, status, "{what}: {class} is {status}: {page:?}");
    assert!(
        !page.sets_cookie(ACCESS_COOKIE) && !page.sets_cookie(REFRESH_COOKIE),
        "{what}: no session cookie on a failure: {:?}",
        page.set_cookies()
    );
    let ctype = page.header("content-type").unwrap_or_default();
    assert!(
        ctype.starts_with("text/html"),
        "{what}: an HTML page, got {ctype:?}"
    );
    assert!(
        page.body.contains(class),
        "{what}: the page names {class}: {}",
        page.body
    );
}

/// The status a failure class has (agreed with the implementer, SPEC §14 names the set).
pub fn class_status(class: &str) -> u16 {
    match class {
        "invalid_state" => 400,
        "access_denied" => 403,
        "provider_error" => 502,
        "provider_unavailable" => 503,
        other => panic!("no class {other}"),
    }
}

/// The JSON claims of a JWT (no verification).
pub fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let p = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}
