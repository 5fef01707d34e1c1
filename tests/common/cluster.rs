//! Several gateways sharing one store and one signing key, as in production
//! (SPEC §7): each test gets its own PostgreSQL database (or SQLite file) and
//! key; the gateways are real processes on ephemeral ports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::services::PgDb;
use super::*;

/// An EdDSA signing key that every gateway of a test shares.
pub struct SharedKey {
    pub dir: TempDir,
    pub path: PathBuf,
}

impl SharedKey {
    pub fn new() -> SharedKey {
        let dir = TempDir::new("key");
        let path = dir.path().join("signing-key.pem");
        let out = run_cli(
            &dir.path().join("none.toml"),
            &[
                "keys",
                "generate",
                "--alg",
                "EdDSA",
                "--out",
                path.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(out.code, 0, "keys generate: {}", out.stderr);
        SharedKey { dir, path }
    }
}

/// A test config on `store` with the shared key; `identity_extra` adds
/// `[identity]` lines (store_timeout, revocation_poll, ...).
pub fn store_cfg(upstream: SocketAddr, store: &str, key: &Path, identity_extra: &str) -> Cfg {
    let mut c = Cfg::new(upstream);
    c.identity = format!(
        "store = \"{store}\"\n{identity_extra}password_hash = {{ memory_kib = 1024, iterations = 1, parallelism = 1 }}\n"
    );
    c.tokens = format!(
        "algorithm = \"EdDSA\"\nsigning_key = \"file:{}\"\n",
        key.display()
    );
    c.admin = Some("listen = \"127.0.0.1:0\"\n".into());
    c
}

/// `n` gateways on one PostgreSQL database, started one after the other.
pub struct Cluster {
    pub gws: Vec<Gateway>,
    pub upstream: Upstream,
    pub key: SharedKey,
    pub db: PgDb,
    pub cfg: Cfg,
}

impl Cluster {
    pub fn start(tag: &str, n: usize, identity_extra: &str) -> Cluster {
        let db = PgDb::new(tag);
        let upstream = Upstream::start();
        let key = SharedKey::new();
        let cfg = store_cfg(upstream.addr, &db.url(), &key.path, identity_extra);
        let gws = (0..n).map(|_| Gateway::start(&cfg)).collect();
        Cluster {
            gws,
            upstream,
            key,
            db,
            cfg,
        }
    }
}

/// POSTs JSON to a gateway; returns status and body (null when not JSON).
pub async fn post(gw: &Gateway, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = client()
        .post(gw.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, v)
}

/// Logs in; returns (access, refresh).
pub async fn login_pair(gw: &Gateway, user: &str, pw: &str) -> (String, String) {
    let (s, v) = post(
        gw,
        "/login",
        serde_json::json!({ "username": user, "password": pw }),
    )
    .await;
    assert_eq!(s, 200, "login {user}: {v}");
    (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    )
}

/// Polls `f` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The WWW-Authenticate of a bearer GET, with its status.
pub async fn bearer_challenge(gw: &Gateway, path: &str, token: &str) -> (u16, String) {
    let r = client()
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let h = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), h)
}
