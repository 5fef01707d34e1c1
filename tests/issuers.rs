//! Tokens from external identity providers (SPEC §10), against a real OIDC provider
//! (oauth2-mock-server over HTTPS with a test CA) and a hostile JWKS server.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::idp::{HostileJwks, Idp, Reply, TestCa};
use common::*;
use serde_json::{json, Value};

/// One `[[issuer]]` table for `idp`, trusting `ca_file`; `extra` adds or overrides keys.
fn issuer_toml(name: &str, idp: &Idp, ca_file: &str, extra: &str) -> String {
    format!(
        "[[issuer]]\nname = \"{name}\"\nissuer = \"{}\"\ndiscovery = true\naudiences = [\"api\"]\n\
         algorithms = [\"RS256\"]\nca = \"file:{ca_file}\"\n{extra}\n",
        idp.issuer
    )
}

/// The test config (self tokens on, the usual routes) plus `more` tables.
fn config(up: SocketAddr, more: &str) -> String {
    let mut c = Cfg::new(up);
    c.admin = Some("listen = \"127.0.0.1:0\"\n".into());
    c.rest.push_str(
        "\n[[route]]\npath = \"/corp-only\"\nupstream = \"app\"\nissuers = [\"corp\"]\n\n\
         [[route]]\npath = \"/self-only\"\nupstream = \"app\"\nissuers = [\"self\"]\n\n",
    );
    c.rest.push_str(more);
    c.render()
}

struct World {
    up: Upstream,
    idp: Idp,
    _ca_dir: TempDir,
    ca_file: String,
}

fn world() -> World {
    let ca = TestCa::new("idp");
    let ca_dir = TempDir::new("ca");
    let ca_file = ca_dir.path().join("idp-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    World {
        up: Upstream::start(),
        idp: Idp::start(&ca, 0),
        ca_file: ca_file.display().to_string(),
        _ca_dir: ca_dir,
    }
}

fn alice(extra: Value) -> Value {
    let mut c = json!({ "sub": "alice", "aud": "api", "email": "alice@corp.example" });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

async fn get(gw: &Gateway, path: &str, token: &str) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Status, then the `error_description` or error code, for messages.
async fn status_why(gw: &Gateway, path: &str, token: &str) -> (u16, String) {
    let r = get(gw, path, token).await;
    let s = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (s, body.to_string())
}

async fn wait_status(gw: &Gateway, path: &str, token: &str, want: u16, within: Duration) -> u16 {
    let deadline = Instant::now() + within;
    loop {
        let (s, _) = status_why(gw, path, token).await;
        if s == want || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn metrics_line(gw: &Gateway, needle: &str) -> Option<f64> {
    let r = common::get(gw.admin.unwrap(), "/metrics", &[]);
    let text = String::from_utf8_lossy(&r.body).to_string();
    text.lines()
        .find(|l| l.starts_with("authgate_jwks_fetches_total") && l.contains(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn idp_tokens_are_accepted_with_the_identity_from_sub_or_from_email() {
    let w = world();
    let gw = Gateway::start_text(
        &config(w.up.addr, &issuer_toml("corp", &w.idp, &w.ca_file, "")),
        &[],
    );
    let t = w.idp.token("RS256", alice(json!({})), json!({})).await;
    assert_eq!(
        wait_status(&gw, "/protected/x", &t, 200, Duration::from_secs(20)).await,
        200
    );
    assert_eq!(w.up.last().header("x-user").as_deref(), Some("alice"));
    // The fetch is counted, and the IdP's key set made the gateway ready for it.
    assert!(metrics_line(&gw, "outcome=\"ok\"").is_some_and(|n| n >= 1.0));
    drop(gw);

    let by_email = issuer_toml("corp", &w.idp, &w.ca_file, "identity_claim = \"email\"");
    let gw = Gateway::start_text(&config(w.up.addr, &by_email), &[]);
    let t = w.idp.token("RS256", alice(json!({})), json!({})).await;
    assert_eq!(
        wait_status(&gw, "/protected/x", &t, 200, Duration::from_secs(20)).await,
        200
    );
    assert_eq!(
        w.up.last().header("x-user").as_deref(),
        Some("alice@corp.example")
    );
    // Without the identity claim the token names nobody: refused.
    let no_email = w
        .idp
        .token("RS256", json!({ "sub": "bob", "aud": "api" }), json!({}))
        .await;
    let (s, why) = status_why(&gw, "/protected/x", &no_email).await;
    assert_eq!(s, 401, "{why}");
    assert!(why.contains("email"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn aud_may_be_a_string_or_an_array_containing_an_audience() {
    let w = world();
    let gw = Gateway::start_text(
        &config(w.up.addr, &issuer_toml("corp", &w.idp, &w.ca_file, "")),
        &[],
    );
    let string = w.idp.token("RS256", alice(json!({})), json!({})).await;
    assert_eq!(
        wait_status(&gw, "/protected", &string, 200, Duration::from_secs(20)).await,
        200
    );
    let array = w
        .idp
        .token(
            "RS256",
            alice(json!({ "aud": ["other", "api"] })),
            json!({}),
        )
        .await;
    assert_eq!(status_why(&gw, "/protected", &array).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_audience_wrong_issuer_and_a_disallowed_algorithm_are_rejected() {
    let w = world();
    let gw = Gateway::start_text(
        &config(w.up.addr, &issuer_toml("corp", &w.idp, &w.ca_file, "")),
        &[],
    );
    let good = w.idp.token("RS256", alice(json!({})), json!({})).await;
    assert_eq!(
        wait_status(&gw, "/protected", &good, 200, Duration::from_secs(20)).await,
        200
    );
    let before = w.up.count();
    let cases = [
        (
            alice(json!({ "aud": "other-api" })),
            "RS256",
            "wrong audience",
        ),
        (
            alice(json!({ "aud": ["x", "y"] })),
            "RS256",
            "wrong audience",
        ),
        (alice(json!({ "aud": 5 })), "RS256", "aud"),
        (
            alice(json!({ "iss": "https://evil.example" })),
            "RS256",
            "wrong issuer",
        ),
        // Same IdP, a key it really publishes, but the issuer allows RS256 only.
        (alice(json!({})), "ES256", "algorithm"),
        (alice(json!({})), "PS256", "algorithm"),
        (alice(json!({ "exp": now() - 3600 })), "RS256", "expired"),
    ];
    for (claims, alg, why) in cases {
        let t = w.idp.token(alg, claims.clone(), json!({})).await;
        let (s, body) = status_why(&gw, "/protected", &t).await;
        assert_eq!(s, 401, "{alg} {claims}: {body}");
        assert!(
            body.contains(why),
            "{alg} {claims}: {body} should say {why}"
        );
    }
    assert_eq!(
        w.up.count(),
        before,
        "a rejected token reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_accept_only_the_issuers_they_list() {
    let w = world();
    let gw = Gateway::start_text(
        &config(w.up.addr, &issuer_toml("corp", &w.idp, &w.ca_file, "")),
        &[],
    );
    let corp = w.idp.token("RS256", alice(json!({})), json!({})).await;
    let (own, _) = token_for(&gw, "carol").await;
    assert_eq!(
        wait_status(&gw, "/corp-only", &corp, 200, Duration::from_secs(20)).await,
        200
    );
    assert_eq!(status_why(&gw, "/self-only", &own).await.0, 200);
    assert_eq!(status_why(&gw, "/protected", &corp).await.0, 200);
    assert_eq!(status_why(&gw, "/protected", &own).await.0, 200);
    let (s, why) = status_why(&gw, "/self-only", &corp).await;
    assert_eq!(s, 401, "{why}");
    assert!(why.contains("issuer"), "{why}");
    assert_eq!(status_why(&gw, "/corp-only", &own).await.0, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_idp_key_is_accepted_after_one_refetch() {
    let w = world();
    let gw = Gateway::start_text(
        &config(w.up.addr, &issuer_toml("corp", &w.idp, &w.ca_file, "")),
        &[],
    );
    let t = w.idp.token("RS256", alice(json!({})), json!({})).await;
    assert_eq!(
        wait_status(&gw, "/protected", &t, 200, Duration::from_secs(20)).await,
        200
    );
    let fetched = w.idp.jwks_fetches().await;
    let new_kid = w.idp.rotate("RS256").await;
    let t2 = w.idp.token("RS256", alice(json!({})), json!({})).await;
    assert!(t2.len() > 10 && new_kid.len() > 4);
    let (s, why) = status_why(&gw, "/protected", &t2).await;
    assert_eq!(s, 200, "{why}");
    assert_eq!(
        w.idp.jwks_fetches().await,
        fetched + 1,
        "exactly one refetch"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_made_up_kids_cost_the_idp_at_most_one_fetch() {
    let w = world();
    let gw = Gateway::start_text(
        &config(w.up.addr, &issuer_toml("corp", &w.idp, &w.ca_file, "")),
        &[],
    );
    let t = w.idp.token("RS256", alice(json!({})), json!({})).await;
    assert_eq!(
        wait_status(&gw, "/protected", &t, 200, Duration::from_secs(20)).await,
        200
    );
    let fetched = w.idp.jwks_fetches().await;
    let mut tokens = Vec::new();
    for i in 0..200 {
        // Signed by the IdP's real key, under a kid it never published.
        let kid = format!("made-up-{i}-{}", now());
        tokens.push(
            w.idp
                .token("RS256", alice(json!({})), json!({ "kid": kid }))
                .await,
        );
    }
    // 16 at a time: a flood, without counting on the test client's own connection limits.
    use futures_util::StreamExt;
    let gw = &gw;
    let results: Vec<(u16, String)> = futures_util::stream::iter(tokens.iter())
        .map(|t| async move { status_why(gw, "/protected", t).await })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(results.len(), 200);
    for (s, why) in &results {
        assert_eq!(*s, 401, "{why}");
        assert!(why.contains("unknown kid"), "{why}");
    }
    let after = w.idp.jwks_fetches().await;
    assert!(
        after <= fetched + 1,
        "{} JWKS fetches for 200 made-up kids",
        after - fetched
    );
    assert!(gw.logs().lines().count() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_idp_down_at_start_the_gateway_is_ready_at_once_then_503_then_200_when_it_is_back()
{
    let ca = TestCa::new("late");
    let ca_dir = TempDir::new("ca");
    let ca_file = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let up = Upstream::start();
    let mut idp = Idp::start(&ca, 0);
    idp.stop();
    let extra = "jwks_wait = \"1s\"\nrefetch_cooldown = \"1s\"";
    let cfg = config(
        up.addr,
        &issuer_toml("corp", &idp, &ca_file.display().to_string(), extra),
    );
    let started = Instant::now();
    let gw = Gateway::start_text(&cfg, &[]);
    assert!(started.elapsed() < Duration::from_secs(20));
    // Ready: the gateway serves, and /readyz names the issuer without keys.
    let ready = common::get(gw.admin.unwrap(), "/readyz", &[]);
    assert_eq!(ready.status, 200);
    assert!(
        ready.json()["issuers_without_keys"] == json!(["corp"]),
        "{:?}",
        ready
    );
    let (own, _) = token_for(&gw, "dave").await;
    assert_eq!(status_why(&gw, "/protected", &own).await.0, 200);

    // A token for the issuer (its signature cannot be checked: no keys) → 503.
    let claims = json!({ "sub": "alice", "iss": idp.issuer, "aud": "api", "exp": now() + 600 });
    let header = json!({ "alg": "RS256", "kid": "whatever", "typ": "JWT" });
    let token = format!(
        "{}.{}.{}",
        b64(header.to_string()),
        b64(claims.to_string()),
        b64("sig")
    );
    let r = get(&gw, "/protected", &token).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "issuer_unavailable");
    assert_eq!(up.count(), 1, "only dave's request reached the upstream");

    idp.restart();
    let t = idp.token("RS256", alice(json!({})), json!({})).await;
    assert_eq!(
        wait_status(&gw, "/protected", &t, 200, Duration::from_secs(30)).await,
        200
    );
    let ready = common::get(gw.admin.unwrap(), "/readyz", &[]);
    assert!(
        ready.json().get("issuers_without_keys").is_none(),
        "{:?}",
        ready
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_keys_keep_working_while_the_idp_is_down() {
    let mut w = world();
    let extra = "refetch_cooldown = \"1s\"";
    let gw = Gateway::start_text(
        &config(w.up.addr, &issuer_toml("corp", &w.idp, &w.ca_file, extra)),
        &[],
    );
    let first = w.idp.token("RS256", alice(json!({})), json!({})).await;
    let second = w
        .idp
        .token("RS256", alice(json!({ "jti": "2" })), json!({}))
        .await;
    assert_eq!(
        wait_status(&gw, "/protected", &first, 200, Duration::from_secs(20)).await,
        200
    );
    w.idp.stop();
    // A token not seen before: verified with the keys fetched while the IdP was up.
    assert_eq!(status_why(&gw, "/protected", &second).await.0, 200);
    // An unknown kid now triggers a refetch that fails: still a plain 401, no crash.
    let stray = format!(
        "{}.{}.{}",
        b64(json!({"alg":"RS256","kid":"nope"}).to_string()),
        b64(alice(json!({ "iss": w.idp.issuer, "exp": now() + 60 })).to_string()),
        b64("x")
    );
    assert_eq!(status_why(&gw, "/protected", &stray).await.0, 401);
    assert_eq!(status_why(&gw, "/protected", &first).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idp_whose_certificate_is_not_trusted_is_never_used() {
    let w = world();
    // No `ca`: only the system roots, which do not know the test CA.
    let untrusted = format!(
        "[[issuer]]\nname = \"corp\"\nissuer = \"{}\"\ndiscovery = true\naudiences = [\"api\"]\njwks_wait = \"1s\"\n",
        w.idp.issuer
    );
    let gw = Gateway::start_text(&config(w.up.addr, &untrusted), &[]);
    let t = w.idp.token("RS256", alice(json!({})), json!({})).await;
    assert_eq!(status_why(&gw, "/protected", &t).await.0, 503);
    // Another CA than the IdP's: no better.
    let other = TestCa::new("other");
    let other_file = w._ca_dir.path().join("other-ca.pem");
    std::fs::write(&other_file, &other.pem).unwrap();
    let gw2 = Gateway::start_text(
        &config(
            w.up.addr,
            &issuer_toml(
                "corp",
                &w.idp,
                &other_file.display().to_string(),
                "jwks_wait = \"1s\"",
            ),
        ),
        &[],
    );
    assert_eq!(status_why(&gw2, "/protected", &t).await.0, 503);
    assert_eq!(
        w.idp.jwks_fetches().await,
        0,
        "keys were fetched over an untrusted TLS connection"
    );
    assert!(metrics_line(&gw, "outcome=\"discovery_failed\"").is_some());
    assert_eq!(w.up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_built_in_identity_off_there_are_no_endpoints_no_store_and_no_signing_key() {
    let w = world();
    let mut c = Cfg::new(w.up.addr);
    c.identity = "enabled = false\n".into();
    c.rest
        .push_str(&issuer_toml("corp", &w.idp, &w.ca_file, ""));
    let gw = Gateway::start_text(&c.render(), &[]);
    for path in [
        "/login",
        "/register",
        "/token/refresh",
        "/.well-known/jwks.json",
    ] {
        let r = client()
            .post(gw.url(path))
            .json(&json!({ "username": "alice", "password": "correct horse battery" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    assert!(
        !gw.dir.path().join("data").exists(),
        "a store or key was created"
    );
    // authgate's own kind of token, signed by any key, has no issuer to verify it.
    let kpath = gw.dir.path().join("k.pem");
    let out = gw.cli(
        &[
            "keys",
            "generate",
            "--alg",
            "EdDSA",
            "--out",
            &kpath.display().to_string(),
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let forger = Signer::from_pem(
        &std::fs::read(&kpath).unwrap(),
        jsonwebtoken::Algorithm::EdDSA,
    );
    let own_kind = forger.token(&good_claims("alice", &["admin"]));
    let (s, why) = status_why(&gw, "/protected", &own_kind).await;
    assert_eq!(s, 401, "{why}");
    let t = w.idp.token("RS256", alice(json!({})), json!({})).await;
    assert_eq!(
        wait_status(&gw, "/protected", &t, 200, Duration::from_secs(20)).await,
        200
    );
    assert_eq!(w.up.last().header("x-user").as_deref(), Some("alice"));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_inspect_and_explain_know_the_issuers() {
    let w = world();
    let gw = Gateway::start_text(
        &config(w.up.addr, &issuer_toml("corp", &w.idp, &w.ca_file, "")),
        &[],
    );
    let t = w.idp.token("RS256", alice(json!({})), json!({})).await;
    let out = gw.cli(&["token", "inspect", &t], None);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("issued by issuer \"corp\""),
        "{}",
        out.stdout
    );
    let bad = w
        .idp
        .token("RS256", alice(json!({ "aud": "nope" })), json!({}))
        .await;
    let out = gw.cli(&["token", "inspect", &bad], None);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("rejected: wrong audience"),
        "{}",
        out.stdout
    );
    let auth = format!("Authorization: Bearer {t}");
    let out = gw.cli(&["explain", "GET", "/self-only/x", "--header", &auth], None);
    assert!(out.stdout.contains("issuers   self"), "{}", out.stdout);
    assert!(out.stdout.contains("does not accept"), "{}", out.stdout);
    let out = gw.cli(&["explain", "GET", "/corp-only/x", "--header", &auth], None);
    assert!(
        out.stdout.contains("valid for \"alice\" (issuer corp)"),
        "{}",
        out.stdout
    );
}

// ---------------------------------------------------------------- hostile JWKS

/// An RSA key of the test's own: (signer, its public JWK under `kid`).
fn rsa_key(dir: &TempDir, kid: &str) -> (Signer, Value) {
    let pem_path = dir.path().join(format!("{kid}.pem"));
    let out = run_cli(
        &dir.path().join("none.toml"),
        &[
            "keys",
            "generate",
            "--alg",
            "RS256",
            "--out",
            &pem_path.display().to_string(),
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut s = Signer::from_pem(
        &std::fs::read(&pem_path).unwrap(),
        jsonwebtoken::Algorithm::RS256,
    );
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&s.key, s.alg).unwrap();
    let mut v = serde_json::to_value(jwk).unwrap();
    v["kid"] = json!(kid);
    s.kid = kid.to_string();
    (s, v)
}

fn hostile_config(up: SocketAddr, jwks: &HostileJwks) -> String {
    config(
        up,
        &format!(
            "[[issuer]]\nname = \"corp\"\nissuer = \"https://hostile.example\"\njwks_uri = \"{}\"\n\
             audiences = [\"api\"]\nalgorithms = [\"RS256\"]\njwks_wait = \"1s\"\nrefetch_cooldown = \"1s\"\n",
            jwks.url()
        ),
    )
}

fn hostile_claims() -> Value {
    json!({ "sub": "alice", "iss": "https://hostile.example", "aud": "api", "exp": now() + 600 })
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_jwks_documents_are_failed_fetches_never_a_crash() {
    let up = Upstream::start();
    let dir = TempDir::new("hostile");
    let (signer, jwk) = rsa_key(&dir, "rsa-kid");
    let token = signer.token(&hostile_claims());
    let many: Vec<Value> = (0..10_000)
        .map(|i| {
            let mut k = jwk.clone();
            k["kid"] = json!(format!("k{i}"));
            k
        })
        .chain([jwk.clone()])
        .collect();
    let mut huge = json!({ "keys": [jwk.clone()] }).to_string();
    huge.push_str(&" ".repeat(2 * 1024 * 1024));
    let cases: Vec<(&str, Reply)> = vec![
        (
            "not JSON",
            Reply::Body(Bytes::from_static(b"<html>sorry</html>")),
        ),
        ("2 MiB", Reply::Body(Bytes::from(huge))),
        (
            "10,000 keys",
            Reply::Body(Bytes::from(json!({ "keys": many }).to_string())),
        ),
        (
            "a 10 s stall",
            Reply::Stall(
                Duration::from_secs(10),
                Bytes::from(json!({ "keys": [jwk.clone()] }).to_string()),
            ),
        ),
    ];
    for (what, reply) in cases {
        let jwks = HostileJwks::start(reply);
        let gw = Gateway::start_text(&hostile_config(up.addr, &jwks), &[]);
        let (s, why) = status_why(&gw, "/protected", &token).await;
        assert_eq!(s, 503, "{what}: {why}");
        // Still alive and serving.
        let r = common::get(gw.admin.unwrap(), "/healthz", &[]);
        assert_eq!(r.status, 200, "{what}");
        assert!(jwks.hits() >= 1, "{what}: never fetched");
        assert!(!gw.logs().contains("panicked"), "{what}: {}", gw.logs());
        assert!(
            gw.wait_log("issuer key fetch failed", 1, Duration::from_secs(15)),
            "{what}: {}",
            gw.logs()
        );
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oct_key_offered_for_the_rs256_kid_never_verifies_an_hmac_token() {
    let up = Upstream::start();
    let dir = TempDir::new("oct");
    let (signer, jwk) = rsa_key(&dir, "rsa-kid");
    let secret = b"an-hmac-secret-that-is-long-enough-32";
    let oct = json!({ "kty": "oct", "kid": "rsa-kid", "alg": "HS256", "k": b64(secret) });
    // Alone, the oct key makes a JWKS without a usable key: a failed fetch.
    let jwks = HostileJwks::start(Reply::Body(Bytes::from(
        json!({ "keys": [oct] }).to_string(),
    )));
    let gw = Gateway::start_text(&hostile_config(up.addr, &jwks), &[]);
    let hs = Signer::from_key(
        jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
        jsonwebtoken::Algorithm::HS256,
    );
    let hs_header = json!({ "alg": "HS256", "kid": "rsa-kid", "typ": "JWT" });
    let forged = hs.sign(&hs_header, &hostile_claims());
    let (s, why) = status_why(&gw, "/protected", &forged).await;
    assert_eq!(s, 401, "{why}");
    assert!(why.contains("algorithm"), "{why}");
    let good = signer.token(&hostile_claims());
    assert_eq!(status_why(&gw, "/protected", &good).await.0, 503);
    assert!(
        gw.wait_log("no usable key", 1, Duration::from_secs(15)),
        "{}",
        gw.logs()
    );
    // Beside the real RSA key under the same kid: the RSA key verifies RS256, the
    // HMAC token is refused for its algorithm, whatever the JWKS offered.
    jwks.set(Reply::Body(Bytes::from(
        json!({ "keys": [oct, jwk] }).to_string(),
    )));
    let good = signer.token(&hostile_claims());
    assert_eq!(
        wait_status(&gw, "/protected", &good, 200, Duration::from_secs(30)).await,
        200
    );
    let (s, why) = status_why(&gw, "/protected", &forged).await;
    assert_eq!(s, 401, "{why}");
    assert!(why.contains("algorithm"), "{why}");
    // The classic confusion: HS256 keyed with the RSA public key's bytes.
    let public = serde_json::to_vec(&jwk).unwrap();
    let confused = Signer::from_key(
        jsonwebtoken::EncodingKey::from_secret(&public).unwrap(),
        jsonwebtoken::Algorithm::HS256,
    )
    .sign(&hs_header, &hostile_claims());
    assert_eq!(status_why(&gw, "/protected", &confused).await.0, 401);
    assert_eq!(up.count(), 1, "only the RS256 token reached the upstream");
}
