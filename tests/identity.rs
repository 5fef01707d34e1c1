//! The identity capability, black box (SPEC §3, §8 "Identity", "Tokens"): every row
//! of the endpoint table, failures included; the access token's shape and its
//! verification through the published JWKS; durability across restarts and
//! `kill -9`; the stored Argon2id hash and its upgrade; no secret in the logs.
mod common;
use common::*;

use std::time::Duration;

use base64::Engine;
use futures_util::future::join_all;
use serde_json::{json, Value};

// ---------------------------------------------------------------- helpers

const PW: &str = "pw-Identity-7731-secret";

/// What a client sees of one response.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn answer(r: reqwest::Response) -> Answer {
    Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: r.text().await.unwrap(),
    }
}

/// POST `body` as is, with `content_type` (none when `None`).
async fn post_raw(gw: &Gateway, path: &str, content_type: Option<&str>, body: &str) -> Answer {
    let mut rb = client().post(gw.url(path)).body(body.to_string());
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    answer(rb.send().await.unwrap()).await
}

async fn post(gw: &Gateway, path: &str, body: Value) -> Answer {
    post_raw(gw, path, Some("application/json"), &body.to_string()).await
}

async fn reg(gw: &Gateway, user: &str, pw: &str) -> Answer {
    post(gw, "/register", json!({ "username": user, "password": pw })).await
}

async fn log_in(gw: &Gateway, user: &str, pw: &str) -> Answer {
    post(gw, "/login", json!({ "username": user, "password": pw })).await
}

async fn refresh(gw: &Gateway, token: &str) -> Answer {
    post(gw, "/token/refresh", json!({ "refresh_token": token })).await
}

async fn logout(gw: &Gateway, token: &str) -> Answer {
    post(gw, "/logout", json!({ "refresh_token": token })).await
}

/// Asserts an error answer: status, JSON content type, `{"error": code, "message": ...}`.
fn assert_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "body: {}", a.text);
    assert_eq!(a.header("content-type"), Some("application/json"));
    let v = a.json();
    assert_eq!(v["error"], code, "body: {}", a.text);
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {}",
        a.text
    );
    assert_eq!(v.as_object().unwrap().len(), 2, "extra members: {}", a.text);
}

/// A successful login or refresh: exactly the four members; returns (access, refresh).
fn assert_token_pair(a: &Answer) -> (String, String) {
    assert_eq!(a.status, 200, "body: {}", a.text);
    assert_eq!(a.header("content-type"), Some("application/json"));
    let v = a.json();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["access_token", "expires_in", "refresh_token", "token_type"]
    );
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 900, "access_ttl defaults to 15m");
    let access = v["access_token"].as_str().unwrap().to_string();
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(access.split('.').count(), 3, "a JWS compact token");
    // 256 random bits, base64url without padding.
    assert_eq!(refresh.len(), 43, "{refresh}");
    assert!(refresh
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    (access, refresh)
}

fn b64(part: &str) -> Value {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn jwt_header(token: &str) -> Value {
    b64(token.split('.').next().unwrap())
}

fn jwt_claims(token: &str) -> Value {
    b64(token.split('.').nth(1).unwrap())
}

async fn jwks(gw: &Gateway) -> Value {
    let a = answer(
        client()
            .get(gw.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.header("content-type"), Some("application/json"));
    a.json()
}

/// Makes one more request and waits for its access-log line: every earlier line is in.
fn sync_logs(gw: &Gateway) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let marker = format!(
        "/log-sync-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(get(gw.addr, &marker, &[]).status, 404);
    assert!(
        gw.wait_log(&marker, 1, Duration::from_secs(10)),
        "no access-log line for {marker}:\n{}",
        gw.logs()
    );
}

/// SPEC §3/§6: passwords and tokens never reach a log line.
fn assert_logs_free_of(gw: &Gateway, secrets: &[&str]) {
    sync_logs(gw);
    let logs = gw.logs();
    assert!(
        logs.contains("/login") || logs.contains("/register"),
        "the identity requests were not logged at all:\n{logs}"
    );
    for s in secrets {
        assert!(!s.is_empty());
        assert!(!logs.contains(s), "{s:?} appears in the logs:\n{logs}");
        // The signature alone identifies a token too.
        if let Some(sig) = s.split('.').nth(2) {
            assert!(!logs.contains(sig), "a token signature is in the logs");
        }
    }
}

fn store_path(gw: &Gateway) -> std::path::PathBuf {
    gw.dir.path().join("data/users.db")
}

/// The stored PHC string of `user`, read from the SQLite file.
fn stored_hash(gw: &Gateway, user: &str) -> String {
    let c = rusqlite::Connection::open_with_flags(
        store_path(gw),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.query_row(
        "SELECT password_hash FROM users WHERE username = ?1",
        [user],
        |r| r.get(0),
    )
    .unwrap()
}

fn usernames_in_store(gw: &Gateway) -> Vec<String> {
    let c = rusqlite::Connection::open_with_flags(
        store_path(gw),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut s = c
        .prepare("SELECT username FROM users ORDER BY username")
        .unwrap();
    let rows = s.query_map([], |r| r.get(0)).unwrap();
    rows.collect::<Result<Vec<String>, _>>().unwrap()
}

fn cfg_with_identity(up: &Upstream, extra: &str) -> Cfg {
    let mut cfg = Cfg::new(up.addr);
    cfg.identity.push_str(extra);
    cfg
}

// ---------------------------------------------------------------- register

#[tokio::test]
async fn register_lowercases_the_name_and_answers_the_exact_201_body() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let a = reg(&gw, "ALICE", PW).await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(
        a.json(),
        json!({"message":"User registered successfully","username":"alice"})
    );
    assert_eq!(usernames_in_store(&gw), ["alice"]);
    // Stored and compared lowercase: any case logs in.
    assert_token_pair(&log_in(&gw, "alice", PW).await);
    assert_token_pair(&log_in(&gw, "aLiCe", PW).await);
}

#[tokio::test]
async fn usernames_of_3_to_64_allowed_characters_are_accepted() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let long = "x".repeat(64);
    for name in ["abc", "a.b_c@d-e", "user@example.com", "007", long.as_str()] {
        let a = reg(&gw, name, PW).await;
        assert_eq!(a.status, 201, "{name}: {}", a.text);
        assert_eq!(a.json()["username"], name);
    }
}

#[tokio::test]
async fn invalid_usernames_are_400_invalid_request() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let too_long = "x".repeat(65);
    for name in [
        "",
        "ab",
        too_long.as_str(),
        "alice smith",
        "al!ce",
        "alice/bob",
        "ålice",
        "alice\n",
        "al\u{0}ce",
        "al+ce",
        // KELVIN SIGN lowercases to an ASCII 'k', but it is not one of the allowed characters.
        "\u{212A}elvin",
    ] {
        let a = reg(&gw, name, PW).await;
        assert_error(&a, 400, "invalid_request");
    }
    assert!(usernames_in_store(&gw).is_empty());
}

#[tokio::test]
async fn password_length_is_counted_in_unicode_characters() {
    let up = Upstream::start();
    let gw = Gateway::start(&cfg_with_identity(
        &up,
        "min_password_length = 8\nmax_password_length = 16\n",
    ));
    // 'é' is two bytes: byte counting would accept 7 and refuse 9.
    assert_error(
        &reg(&gw, "short", &"é".repeat(7)).await,
        400,
        "invalid_request",
    );
    assert_error(&reg(&gw, "short2", "1234567").await, 400, "invalid_request");
    assert_eq!(reg(&gw, "eight", &"é".repeat(8)).await.status, 201);
    assert_eq!(reg(&gw, "sixteen", &"é".repeat(16)).await.status, 201);
    assert_error(
        &reg(&gw, "long", &"é".repeat(17)).await,
        400,
        "invalid_request",
    );
    assert_error(
        &reg(&gw, "long2", &"x".repeat(17)).await,
        400,
        "invalid_request",
    );
    assert_eq!(usernames_in_store(&gw), ["eight", "sixteen"]);
    assert_token_pair(&log_in(&gw, "sixteen", &"é".repeat(16)).await);
}

#[tokio::test]
async fn default_password_limits_are_8_to_1024_characters() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_error(&reg(&gw, "pw7", "1234567").await, 400, "invalid_request");
    assert_eq!(reg(&gw, "pw8", "12345678").await.status, 201);
    assert_eq!(reg(&gw, "a1024", &"p".repeat(1024)).await.status, 201);
    assert_error(
        &reg(&gw, "a1025", &"p".repeat(1025)).await,
        400,
        "invalid_request",
    );
    // A login with an over-long password is refused without hashing it.
    assert_error(
        &log_in(&gw, "a1024", &"p".repeat(1025)).await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn register_bodies_that_are_not_a_json_object_with_two_strings_are_400() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    for body in [
        r#"{"password":"long enough pw"}"#,
        r#"{"username":"alice"}"#,
        r#"{}"#,
        r#"{"username":5,"password":"long enough pw"}"#,
        r#"{"username":"alice","password":12345678}"#,
        r#"{"username":"alice","password":null}"#,
        r#"[{"username":"alice","password":"long enough pw"}]"#,
        r#""alice""#,
        "null",
        "42",
        r#"{"username":"alice","password":"long enough pw""#,
        "{",
        "not json",
        "",
    ] {
        let a = post_raw(&gw, "/register", Some("application/json"), body).await;
        assert_error(&a, 400, "invalid_request");
    }
    assert!(usernames_in_store(&gw).is_empty());
}

#[tokio::test]
async fn login_with_a_malformed_body_is_400() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    for body in ["{", "[]", r#"{"username":"alice"}"#, r#"{"password":"x"}"#] {
        let a = post_raw(&gw, "/login", Some("application/json"), body).await;
        assert_error(&a, 400, "invalid_request");
    }
}

#[tokio::test]
async fn a_taken_name_is_409_user_exists_in_any_case() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    assert_error(
        &reg(&gw, "alice", "another password").await,
        409,
        "user_exists",
    );
    assert_error(
        &reg(&gw, "ALICE", "another password").await,
        409,
        "user_exists",
    );
    assert_error(&reg(&gw, "Alice", PW).await, 409, "user_exists");
    // The first registration's password is the one that stands.
    assert_token_pair(&log_in(&gw, "alice", PW).await);
    assert_error(
        &log_in(&gw, "alice", "another password").await,
        401,
        "invalid_credentials",
    );
}

#[tokio::test]
async fn closed_registration_is_403_registration_closed() {
    let up = Upstream::start();
    let gw = Gateway::start(&cfg_with_identity(&up, "registration = \"closed\"\n"));
    assert_error(&reg(&gw, "alice", PW).await, 403, "registration_closed");
    assert!(usernames_in_store(&gw).is_empty());
    // Ops can still add users, and those log in.
    let out = gw.cli(&["users", "add", "alice"], Some(&format!("{PW}\n")));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_token_pair(&log_in(&gw, "alice", PW).await);
}

/// A register body of exactly `len` bytes (padded with JSON whitespace).
fn body_of_len(user: &str, len: usize) -> String {
    let mut b = json!({ "username": user, "password": PW }).to_string();
    assert!(b.len() <= len);
    while b.len() < len {
        b.push(' ');
    }
    b
}

#[tokio::test]
async fn bodies_over_max_body_are_413_with_content_length_and_chunked() {
    let up = Upstream::start();
    let gw = Gateway::start(&cfg_with_identity(&up, "max_body = 100\n"));
    // At the limit: accepted.
    let a = post_raw(
        &gw,
        "/register",
        Some("application/json"),
        &body_of_len("atlimit", 100),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);

    for path in ["/register", "/login"] {
        // One byte over, with Content-Length.
        let a = post_raw(
            &gw,
            path,
            Some("application/json"),
            &body_of_len("over", 101),
        )
        .await;
        assert_error(&a, 413, "payload_too_large");

        // Over, chunked (no Content-Length to trust).
        let body = body_of_len("chunky", 300);
        let (first, second) = body.split_at(150);
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             {:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
            first.len(),
            second.len()
        );
        let r = raw(gw.addr, &req);
        assert_eq!(r.status, 413, "{path} chunked: {:?}", r);
        assert_eq!(r.json()["error"], "payload_too_large");
    }
    // Chunked within the limit is fine.
    let body = body_of_len("chunkok", 90);
    let req = format!(
        "POST /register HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    assert_eq!(raw(gw.addr, &req).status, 201);
    assert_eq!(usernames_in_store(&gw), ["atlimit", "chunkok"]);
}

#[tokio::test]
async fn bodies_that_are_not_json_are_415_and_json_with_parameters_is_accepted() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let body = json!({ "username": "alice", "password": PW }).to_string();
    for path in ["/register", "/login", "/token/refresh", "/logout"] {
        for ct in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("application/jsonx"),
            None,
        ] {
            let a = post_raw(&gw, path, ct, &body).await;
            assert_error(&a, 415, "unsupported_media_type");
        }
    }
    assert!(usernames_in_store(&gw).is_empty());
    let a = post_raw(
        &gw,
        "/register",
        Some("application/json; charset=utf-8"),
        &body,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let a = post_raw(&gw, "/login", Some("Application/JSON;charset=UTF-8"), &body).await;
    assert_token_pair(&a);
}

// ---------------------------------------------------------------- rate limits

fn retry_after(a: &Answer, max: u64) -> u64 {
    let s: u64 = a
        .header("retry-after")
        .unwrap_or_else(|| panic!("429/503 without Retry-After: {}", a.text))
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=max).contains(&s), "Retry-After {s}");
    s
}

#[tokio::test]
async fn register_per_ip_limit_is_429_with_retry_after() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.rate_limit =
        "login_per_ip = \"off\"\nlogin_per_user = \"off\"\nregister_per_ip = \"2/hour\"\n".into();
    let gw = Gateway::start(&cfg);
    assert_eq!(reg(&gw, "one", PW).await.status, 201);
    assert_eq!(reg(&gw, "two", PW).await.status, 201);
    let a = reg(&gw, "three", PW).await;
    assert_error(&a, 429, "rate_limited");
    retry_after(&a, 3600);
    assert_eq!(usernames_in_store(&gw), ["one", "two"]);
    // Logins are another budget.
    assert_token_pair(&log_in(&gw, "one", PW).await);
}

#[tokio::test]
async fn login_per_ip_limit_counts_every_attempt_and_is_429_with_retry_after() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.rate_limit =
        "login_per_ip = \"3/min\"\nlogin_per_user = \"off\"\nregister_per_ip = \"off\"\n".into();
    let gw = Gateway::start(&cfg);
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    assert_eq!(reg(&gw, "bob", PW).await.status, 201);
    // Successful and failed attempts alike.
    assert_token_pair(&log_in(&gw, "alice", PW).await);
    assert_error(
        &log_in(&gw, "bob", "wrong password").await,
        401,
        "invalid_credentials",
    );
    assert_token_pair(&log_in(&gw, "bob", PW).await);
    let a = log_in(&gw, "alice", PW).await;
    assert_error(&a, 429, "rate_limited");
    retry_after(&a, 60);
    // Registration is not throttled by the login budget.
    assert_eq!(reg(&gw, "carol", PW).await.status, 201);
}

#[tokio::test]
async fn login_per_user_blocks_even_the_right_password_after_the_failures() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.rate_limit =
        "login_per_ip = \"off\"\nlogin_per_user = \"3/min\"\nregister_per_ip = \"off\"\n".into();
    let gw = Gateway::start(&cfg);
    for u in ["alice", "bob"] {
        assert_eq!(reg(&gw, u, PW).await.status, 201);
    }
    // Successes do not count.
    for _ in 0..4 {
        assert_token_pair(&log_in(&gw, "alice", PW).await);
    }
    // Three failures, in any case of the name.
    for name in ["alice", "ALICE", "Alice"] {
        assert_error(
            &log_in(&gw, name, "wrong password").await,
            401,
            "invalid_credentials",
        );
    }
    let a = log_in(&gw, "alice", PW).await;
    assert_error(&a, 429, "rate_limited");
    retry_after(&a, 60);
    // Another user is unaffected, and their success resets nothing for alice.
    assert_error(
        &log_in(&gw, "bob", "wrong password").await,
        401,
        "invalid_credentials",
    );
    assert_token_pair(&log_in(&gw, "bob", PW).await);
    let a = log_in(&gw, "alice", PW).await;
    assert_error(&a, 429, "rate_limited");
    retry_after(&a, 60);
    let a = log_in(&gw, "alice", "wrong password").await;
    assert_error(&a, 429, "rate_limited");
}

#[tokio::test]
async fn a_full_hash_pool_answers_503_overloaded_with_retry_after() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.identity = "store = \"sqlite:data/users.db\"\n\
        password_hash = { memory_kib = 65536, iterations = 4, parallelism = 1 }\n\
        hash_concurrency = 1\nhash_queue = 0\n"
        .into();
    let gw = Gateway::start(&cfg);
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let answers = join_all((0..8).map(|_| log_in(&gw, "alice", PW))).await;
    let mut overloaded = 0;
    let mut ok = 0;
    for a in &answers {
        match a.status {
            503 => {
                assert_error(a, 503, "overloaded");
                retry_after(a, 60);
                overloaded += 1;
            }
            200 => {
                assert_token_pair(a);
                ok += 1;
            }
            other => panic!("unexpected {other}: {}", a.text),
        }
    }
    assert!(overloaded >= 1, "no 503 among 8 concurrent logins");
    assert!(ok >= 1, "not a single login got through");
    // Once the pool is free, logins work again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = log_in(&gw, "alice", PW).await;
        if a.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {}", a.status);
    }
}

// ---------------------------------------------------------------- methods

#[tokio::test]
async fn wrong_methods_on_identity_endpoints_are_405_with_allow() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    for path in ["/login", "/register", "/token/refresh", "/logout"] {
        let r = get(gw.addr, path, &[]);
        assert_eq!(r.status, 405, "GET {path}");
        assert_eq!(r.header("allow"), Some("POST"), "GET {path}");
        assert_eq!(r.json()["error"], "method_not_allowed");
    }
    let r = raw(
        gw.addr,
        "POST /.well-known/jwks.json HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert_eq!(r.status, 405);
    let allow = r.header("allow").expect("405 without Allow");
    assert!(
        allow.split(',').any(|m| m.trim() == "GET"),
        "Allow: {allow}"
    );
    assert!(!allow.contains("POST"));
    assert_eq!(r.json()["error"], "method_not_allowed");
    // Nothing reached the upstream.
    assert_eq!(up.count(), 0);
}

// ---------------------------------------------------------------- login, refresh, logout

#[tokio::test]
async fn login_answers_the_token_pair() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let a = log_in(&gw, "alice", PW).await;
    let (access, refresh_token) = assert_token_pair(&a);
    // RFC 6749 §5.1: token responses are not cached.
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert_eq!(bearer_status(&gw, "/protected/x", &access).await, 200);
    assert_eq!(up.last().header("x-user").as_deref(), Some("alice"));
    assert_logs_free_of(&gw, &[PW, &access, &refresh_token]);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let wrong = log_in(&gw, "alice", "not-the-password").await;
    let unknown = log_in(&gw, "nobody", PW).await;
    let malformed = log_in(&gw, "x", PW).await;
    for a in [&wrong, &unknown, &malformed] {
        assert_eq!(a.status, 401);
        assert_eq!(
            a.json(),
            json!({"error":"invalid_credentials","message":"Invalid username or password"})
        );
    }
    assert_logs_free_of(&gw, &[PW, "not-the-password"]);
}

#[tokio::test]
async fn refresh_rotates_and_the_old_refresh_token_is_spent() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let (a1, r1) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let ans = refresh(&gw, &r1).await;
    let (a2, r2) = assert_token_pair(&ans);
    assert_eq!(ans.header("cache-control"), Some("no-store"));
    assert_ne!(r1, r2);
    assert_ne!(a1, a2);
    assert_eq!(jwt_claims(&a2)["sub"], "alice");
    assert_eq!(bearer_status(&gw, "/protected", &a2).await, 200);
    // r1 is spent.
    assert_error(&refresh(&gw, &r1).await, 401, "invalid_grant");
    // Unknown tokens too.
    assert_error(
        &refresh(&gw, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await,
        401,
        "invalid_grant",
    );
    assert_error(&refresh(&gw, "").await, 401, "invalid_grant");
    assert_logs_free_of(&gw, &[PW, &a1, &a2, &r1, &r2]);
}

#[tokio::test]
async fn presenting_a_spent_refresh_token_revokes_its_newer_sibling_and_every_session() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let (_, r1) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    // Another session of the same user: a family of its own.
    let (_, other) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let (_, r2) = assert_token_pair(&refresh(&gw, &r1).await);
    // A thief replays r1: refused, and the family dies.
    assert_error(&refresh(&gw, &r1).await, 401, "invalid_grant");
    assert_error(&refresh(&gw, &r2).await, 401, "invalid_grant");
    // SPEC §9: a detected reuse revokes every token of the user, so the
    // other session (likely the thief's target too) ends as well.
    assert_error(&refresh(&gw, &other).await, 401, "invalid_grant");
}

#[tokio::test]
async fn refresh_tokens_are_stored_only_as_sha256_hashes() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let (_, r1) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let (_, r2) = assert_token_pair(&refresh(&gw, &r1).await);
    let dump = std::process::Command::new("sqlite3")
        .arg(store_path(&gw))
        .arg(".dump")
        .output();
    let c = rusqlite::Connection::open_with_flags(
        store_path(&gw),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut s = c.prepare("SELECT token_hash FROM refresh_tokens").unwrap();
    let stored: Vec<String> = s
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in [&r1, &r2] {
        let h = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes());
        let hex: String = h.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert!(stored.contains(&hex), "no SHA-256 of the token stored");
        assert!(!stored.contains(t));
    }
    if let Ok(d) = dump {
        let text = String::from_utf8_lossy(&d.stdout);
        assert!(!text.contains(&r1) && !text.contains(&r2));
    }
}

#[tokio::test]
async fn logout_is_204_and_revokes_the_family() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let (_, r1) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let (_, r2) = assert_token_pair(&refresh(&gw, &r1).await);
    let (_, other) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    // No access token needed.
    let a = logout(&gw, &r2).await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(a.text, "");
    assert_error(&refresh(&gw, &r2).await, 401, "invalid_grant");
    assert_error(&refresh(&gw, &r1).await, 401, "invalid_grant");
    assert_error(&logout(&gw, &r2).await, 401, "invalid_grant");
    // Only that family.
    assert_token_pair(&refresh(&gw, &other).await);
    assert_logs_free_of(&gw, &[PW, &r1, &r2, &other]);
}

#[tokio::test]
async fn logout_with_an_unknown_or_spent_token_is_401_invalid_grant() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_error(&logout(&gw, "no-such-token").await, 401, "invalid_grant");
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let (_, r1) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let (_, r2) = assert_token_pair(&refresh(&gw, &r1).await);
    // Logging out with the spent one is refused — and kills the family anyway.
    assert_error(&logout(&gw, &r1).await, 401, "invalid_grant");
    assert_error(&refresh(&gw, &r2).await, 401, "invalid_grant");
}

// ---------------------------------------------------------------- tokens and JWKS

#[tokio::test]
async fn access_token_carries_kid_alg_and_every_claim() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let (t1, _) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let (t2, _) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let h = jwt_header(&t1);
    assert_eq!(h["alg"], "EdDSA");
    let kid = h["kid"].as_str().expect("kid in the header");
    let keys = jwks(&gw).await;
    assert_eq!(keys["keys"][0]["kid"], kid);
    let c = jwt_claims(&t1);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["iss"], "authgate");
    assert_eq!(c["aud"], "api", "aud is a string");
    assert_eq!(c["roles"], json!([]));
    let (iat, nbf, exp) = (
        c["iat"].as_u64().unwrap(),
        c["nbf"].as_u64().unwrap(),
        c["exp"].as_u64().unwrap(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(iat.abs_diff(now) <= 5, "iat {iat} now {now}");
    assert!(nbf <= iat);
    assert_eq!(exp - iat, 900);
    // SPEC §9 (see README): the issuing instant in ms, within iat's second.
    assert_eq!(c["iat_ms"].as_u64().unwrap() / 1000, iat);
    let jti = c["jti"].as_str().unwrap();
    assert!(!jti.is_empty());
    assert_ne!(
        jti,
        jwt_claims(&t2)["jti"].as_str().unwrap(),
        "jti is unique"
    );
    let mut names: Vec<&str> = c.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["aud", "exp", "iat", "iat_ms", "iss", "jti", "nbf", "roles", "sub"]
    );
}

/// Verifies `token` the way a backend would: only through the JWKS document.
fn verify_with_jwks(jwks: &Value, token: &str, alg: jsonwebtoken::Algorithm) -> Value {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = set.find(&kid).expect("the token's kid is in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_audience(&["api"]);
    v.set_issuer(&["authgate"]);
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "nbf", "iat", "sub", "iss", "aud"]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap_or_else(|e| panic!("{alg:?} token does not verify with its JWKS: {e}"))
        .claims
}

async fn jwks_verification_for(alg: &str, expect: &[(&str, &str)], params: &[&str]) {
    authgate::install_crypto();
    let up = Upstream::start();
    let dir = TempDir::new("jwks");
    let key = dir.path().join("keys/signing.pem");
    let out = run_cli(
        &dir.path().join("gateway.toml"),
        &[
            "keys",
            "generate",
            "--alg",
            alg,
            "--out",
            key.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.code, 0, "keys generate: {}", out.stderr);
    let mut cfg = Cfg::new(up.addr);
    cfg.tokens = format!("algorithm = \"{alg}\"\nsigning_key = \"file:keys/signing.pem\"\n");
    let gw = Gateway::start_in(dir, &cfg.render(), &[], "serve").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let (token, _) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    assert_eq!(jwt_header(&token)["alg"], alg);
    let doc = jwks(&gw).await;
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{doc}");
    let k = &keys[0];
    assert_eq!(k["kid"], jwt_header(&token)["kid"]);
    assert_eq!(k["alg"], alg);
    assert_eq!(k["use"], "sig");
    for (name, value) in expect {
        assert_eq!(k[*name], *value, "{name} in {k}");
    }
    for p in params {
        assert!(
            k[*p].as_str().is_some_and(|s| !s.is_empty()),
            "{p} missing: {k}"
        );
    }
    // Private parameters never leave the gateway.
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(
            k.get(private).is_none(),
            "private {private} in the JWKS: {k}"
        );
    }
    let ja: jsonwebtoken::Algorithm = alg.parse().unwrap();
    let claims = verify_with_jwks(&doc, &token, ja);
    assert_eq!(claims["sub"], "alice");
    // And a forged signature does not verify through the same document.
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    parts[1] =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"sub":"admin"}).to_string());
    let forged = parts.join(".");
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(doc.clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).unwrap();
    assert!(
        jsonwebtoken::decode::<Value>(&forged, &key, &jsonwebtoken::Validation::new(ja)).is_err()
    );
}

#[tokio::test]
async fn eddsa_access_tokens_verify_through_the_jwks() {
    jwks_verification_for("EdDSA", &[("kty", "OKP"), ("crv", "Ed25519")], &["x"]).await;
}

#[tokio::test]
async fn es256_access_tokens_verify_through_the_jwks() {
    jwks_verification_for("ES256", &[("kty", "EC"), ("crv", "P-256")], &["x", "y"]).await;
}

#[tokio::test]
async fn rs256_access_tokens_verify_through_the_jwks() {
    jwks_verification_for("RS256", &[("kty", "RSA")], &["n", "e"]).await;
}

#[tokio::test]
async fn hs256_publishes_an_empty_jwks() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.tokens = "algorithm = \"HS256\"\nsecret = \"env:IDENTITY_TEST_SECRET\"\n".into();
    let gw = Gateway::start_env(
        &cfg,
        &[(
            "IDENTITY_TEST_SECRET",
            "0123456789abcdef0123456789abcdef-hs256",
        )],
    );
    assert_eq!(jwks(&gw).await, json!({"keys": []}));
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let (token, _) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let h = jwt_header(&token);
    assert_eq!(h["alg"], "HS256");
    assert!(h["kid"].as_str().is_some_and(|k| !k.is_empty()));
    assert_eq!(bearer_status(&gw, "/protected", &token).await, 200);
    assert_logs_free_of(&gw, &[PW, &token, "0123456789abcdef0123456789abcdef-hs256"]);
}

// ---------------------------------------------------------------- durability

#[tokio::test]
async fn users_roles_and_keys_survive_a_restart_and_old_tokens_still_verify() {
    let up = Upstream::start();
    let cfg = Cfg::new(up.addr);
    let mut gw = Gateway::start(&cfg);
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let out = gw.cli(&["users", "set-roles", "alice", "admin,ops"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (access, refresh_token) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let before = jwks(&gw).await;
    let key_file = std::fs::read(gw.dir.path().join("data/signing-key.pem")).unwrap();

    gw.restart(&cfg.render());

    assert_eq!(jwks(&gw).await, before, "same keys, same kids");
    assert_eq!(
        std::fs::read(gw.dir.path().join("data/signing-key.pem")).unwrap(),
        key_file
    );
    // A token from before the restart still opens the door.
    assert_eq!(bearer_status(&gw, "/admin/x", &access).await, 200);
    assert_eq!(up.last().header("x-user").as_deref(), Some("alice"));
    assert_eq!(
        up.last().header("x-user-roles").as_deref(),
        Some("admin,ops")
    );
    // The user, password and roles are still there.
    assert_error(&reg(&gw, "alice", PW).await, 409, "user_exists");
    let (fresh, _) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    assert_eq!(jwt_claims(&fresh)["roles"], json!(["admin", "ops"]));
    assert_eq!(jwt_header(&fresh)["kid"], jwt_header(&access)["kid"]);
    // So is the refresh token.
    let (after, _) = assert_token_pair(&refresh(&gw, &refresh_token).await);
    assert_eq!(jwt_claims(&after)["roles"], json!(["admin", "ops"]));
    assert_logs_free_of(&gw, &[PW, &access, &refresh_token, &fresh, &after]);
}

#[tokio::test]
async fn a_201_means_the_user_survives_kill_9_right_after_the_response() {
    let up = Upstream::start();
    let cfg = Cfg::new(up.addr);
    let mut gw = Gateway::start(&cfg);
    let names = ["kill1", "kill2", "kill3", "kill4", "kill5"];
    for n in names {
        assert_eq!(reg(&gw, n, PW).await.status, 201);
    }
    gw.kill9();
    gw.restart(&cfg.render());
    for n in names {
        assert_token_pair(&log_in(&gw, n, PW).await);
    }
}

#[tokio::test]
async fn twenty_concurrent_registrations_of_one_name_create_exactly_one_user() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let names: Vec<String> = (0..20)
        .map(|i| {
            "racer"
                .chars()
                .enumerate()
                .map(|(j, c)| {
                    if (i >> j) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
        .collect();
    let answers = join_all(names.iter().enumerate().map(|(i, n)| {
        reg(
            &gw,
            n,
            if i % 2 == 0 {
                "password-even"
            } else {
                "password-odd!"
            },
        )
    }))
    .await;
    let created: Vec<usize> = (0..20).filter(|&i| answers[i].status == 201).collect();
    assert_eq!(created.len(), 1, "201s: {created:?}");
    for (i, a) in answers.iter().enumerate() {
        if i != created[0] {
            assert_error(a, 409, "user_exists");
        }
    }
    assert_eq!(answers[created[0]].json()["username"], "racer");
    assert_eq!(usernames_in_store(&gw), ["racer"]);
    // The winner's password is the one stored.
    let pw = if created[0] % 2 == 0 {
        "password-even"
    } else {
        "password-odd!"
    };
    assert_token_pair(&log_in(&gw, "racer", pw).await);
}

// ---------------------------------------------------------------- stored hashes

fn assert_phc(hash: &str, m: u32, t: u32, p: u32) {
    let prefix = format!("$argon2id$v=19$m={m},t={t},p={p}$");
    assert!(
        hash.starts_with(&prefix),
        "{hash} does not start with {prefix}"
    );
    let rest: Vec<&str> = hash[prefix.len()..].split('$').collect();
    assert_eq!(rest.len(), 2, "salt and hash: {hash}");
    assert!(rest.iter().all(|s| s.len() >= 16), "{hash}");
}

#[tokio::test]
async fn the_stored_hash_is_an_argon2id_phc_string_with_the_configured_parameters() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.identity = "store = \"sqlite:data/users.db\"\n\
        password_hash = { memory_kib = 2048, iterations = 3, parallelism = 2 }\n"
        .into();
    let gw = Gateway::start(&cfg);
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    assert_eq!(reg(&gw, "bob", PW).await.status, 201);
    let a = stored_hash(&gw, "alice");
    assert_phc(&a, 2048, 3, 2);
    assert!(!a.contains(PW));
    // A fresh salt per user.
    assert_ne!(a, stored_hash(&gw, "bob"));
    // Users added by ops get the same treatment.
    let out = gw.cli(&["users", "add", "carol"], Some(&format!("{PW}\n")));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_phc(&stored_hash(&gw, "carol"), 2048, 3, 2);
}

#[tokio::test]
async fn changed_hash_parameters_upgrade_the_stored_hash_at_the_next_successful_login() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    let mut gw = Gateway::start(&cfg);
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let old = stored_hash(&gw, "alice");
    assert_phc(&old, 1024, 1, 1);

    cfg.identity = "store = \"sqlite:data/users.db\"\n\
        password_hash = { memory_kib = 2048, iterations = 2, parallelism = 1 }\n"
        .into();
    gw.restart(&cfg.render());
    // A failed login changes nothing.
    assert_error(
        &log_in(&gw, "alice", "wrong password").await,
        401,
        "invalid_credentials",
    );
    assert_eq!(stored_hash(&gw, "alice"), old);
    // The old hash still verifies; the success rewrites it with the new parameters.
    assert_token_pair(&log_in(&gw, "alice", PW).await);
    let new = stored_hash(&gw, "alice");
    assert_phc(&new, 2048, 2, 1);
    // And the upgraded hash works.
    assert_token_pair(&log_in(&gw, "alice", PW).await);
    assert_eq!(
        stored_hash(&gw, "alice"),
        new,
        "no rehash when nothing changed"
    );
    assert_logs_free_of(&gw, &[PW]);
}

// ---------------------------------------------------------------- more of the contract

#[tokio::test]
async fn extra_members_in_the_register_body_grant_nothing() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let a = post(
        &gw,
        "/register",
        json!({"username":"mallory","password":PW,"roles":["admin"],"role":"admin","admin":true,"sub":"root"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(
        a.json(),
        json!({"message":"User registered successfully","username":"mallory"})
    );
    let (token, _) = assert_token_pair(&log_in(&gw, "mallory", PW).await);
    let c = jwt_claims(&token);
    assert_eq!(c["roles"], json!([]));
    assert_eq!(c["sub"], "mallory");
    assert_eq!(bearer_status(&gw, "/admin", &token).await, 403);
}

#[tokio::test]
async fn identity_paths_are_configurable() {
    let up = Upstream::start();
    let gw = Gateway::start(&cfg_with_identity(
        &up,
        "paths = { register = \"/auth/register\", login = \"/auth/login\", refresh = \"/auth/refresh\", logout = \"/auth/logout\", jwks = \"/auth/keys\" }\n",
    ));
    let a = post(
        &gw,
        "/auth/register",
        json!({"username":"alice","password":PW}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let (_, r) = assert_token_pair(
        &post(
            &gw,
            "/auth/login",
            json!({"username":"alice","password":PW}),
        )
        .await,
    );
    let (_, r2) = assert_token_pair(&post(&gw, "/auth/refresh", json!({"refresh_token": r})).await);
    assert_eq!(
        post(&gw, "/auth/logout", json!({"refresh_token": r2}))
            .await
            .status,
        204
    );
    let keys = client().get(gw.url("/auth/keys")).send().await.unwrap();
    assert_eq!(keys.status(), 200);
    // The default paths are nobody's now: no route matches them.
    for path in ["/register", "/login", "/token/refresh", "/logout"] {
        assert_error(&post(&gw, path, json!({})).await, 404, "not_found");
    }
    assert_eq!(get(gw.addr, "/.well-known/jwks.json", &[]).status, 404);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn password_hashing_does_not_stall_other_requests() {
    use std::io::{Read, Write};
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.identity = "store = \"sqlite:data/users.db\"\n\
        password_hash = { memory_kib = 65536, iterations = 5, parallelism = 1 }\n\
        hash_concurrency = 1\n"
        .into();
    let gw = Gateway::start(&cfg);
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let body = json!({"username":"alice","password":PW}).to_string();
    let mut login = std::net::TcpStream::connect(gw.addr).unwrap();
    login
        .write_all(
            format!(
                "POST /login HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let sent = std::time::Instant::now();
    login.set_nonblocking(true).unwrap();
    let answered = |s: &std::net::TcpStream| {
        let mut b = [0u8; 1];
        !matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    };
    // Requests answered while the login is still hashing (well after it was sent).
    let mut during = 0;
    while !answered(&login) {
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "login never answered"
        );
        assert_eq!(get(gw.addr, "/public/x", &[]).status, 200);
        if sent.elapsed() > Duration::from_millis(100) && !answered(&login) {
            during += 1;
        }
    }
    assert!(
        sent.elapsed() > Duration::from_millis(200),
        "the hash was too fast for this test to mean anything"
    );
    assert!(
        during >= 1,
        "no request was answered while a password was being hashed"
    );
    login.set_nonblocking(false).unwrap();
    let mut buf = Vec::new();
    let _ = login.read_to_end(&mut buf);
    assert_eq!(parse_response(&buf).status, 200);
}

#[tokio::test]
async fn refresh_tokens_expire_refresh_ttl_after_they_were_issued() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.tokens.push_str("refresh_ttl = \"6s\"\n");
    let gw = Gateway::start(&cfg);
    let secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let wait_until = |t: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while secs() < t {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let (_, idle) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let (_, r1) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let t0 = secs();
    // Halfway, rotate one family: its new token gets a whole refresh_ttl of its own.
    wait_until(t0 + 3);
    let (_, r2) = assert_token_pair(&refresh(&gw, &r1).await);
    // Past the first tokens' lifetime, before the rotated one's.
    wait_until(t0 + 7);
    assert_error(&refresh(&gw, &idle).await, 401, "invalid_grant");
    assert_token_pair(&refresh(&gw, &r2).await);
}

#[tokio::test]
async fn previous_keys_stay_in_the_jwks_and_keep_verifying_after_rotation() {
    authgate::install_crypto();
    let up = Upstream::start();
    let dir = TempDir::new("rotate");
    for name in ["old", "new"] {
        let out = run_cli(
            &dir.path().join("gateway.toml"),
            &[
                "keys",
                "generate",
                "--alg",
                "EdDSA",
                "--out",
                dir.path()
                    .join(format!("keys/{name}.pem"))
                    .to_str()
                    .unwrap(),
            ],
            None,
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let mut cfg = Cfg::new(up.addr);
    cfg.tokens = "algorithm = \"EdDSA\"\nsigning_key = \"file:keys/old.pem\"\n".into();
    let mut gw =
        Gateway::start_in(dir, &cfg.render(), &[], "serve").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let (old_token, _) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let old_kid = jwt_header(&old_token)["kid"].as_str().unwrap().to_string();

    cfg.tokens = "algorithm = \"EdDSA\"\nsigning_key = \"file:keys/new.pem\"\nprevious_keys = [\"file:keys/old.pem\"]\n".into();
    gw.restart(&cfg.render());
    let doc = jwks(&gw).await;
    let mut kids: Vec<String> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    let (new_token, _) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let new_kid = jwt_header(&new_token)["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid, "new tokens are signed by the new key");
    let mut want = vec![old_kid.clone(), new_kid.clone()];
    kids.sort();
    want.sort();
    assert_eq!(kids, want, "{doc}");
    for k in doc["keys"].as_array().unwrap() {
        assert_eq!(k["use"], "sig");
        assert!(k.get("d").is_none());
    }
    verify_with_jwks(&doc, &old_token, jsonwebtoken::Algorithm::EdDSA);
    verify_with_jwks(&doc, &new_token, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(bearer_status(&gw, "/protected", &old_token).await, 200);
    assert_eq!(bearer_status(&gw, "/protected", &new_token).await, 200);

    // Once the old key is dropped, its tokens stop working and it leaves the JWKS.
    cfg.tokens = "algorithm = \"EdDSA\"\nsigning_key = \"file:keys/new.pem\"\n".into();
    gw.restart(&cfg.render());
    assert_eq!(jwks(&gw).await["keys"].as_array().unwrap().len(), 1);
    assert_eq!(bearer_status(&gw, "/protected", &old_token).await, 401);
    assert_eq!(bearer_status(&gw, "/protected", &new_token).await, 200);
}

#[tokio::test]
async fn concurrent_guesses_cannot_outrun_login_per_user() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.rate_limit =
        "login_per_ip = \"off\"\nlogin_per_user = \"3/min\"\nregister_per_ip = \"off\"\n".into();
    let gw = Gateway::start(&cfg);
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    // 20 wrong guesses at once: the limit is 3 failures, not 3 per hash time.
    let answers = join_all((0..20).map(|_| log_in(&gw, "alice", "guess"))).await;
    let mut guessed = 0;
    for a in &answers {
        match a.status {
            401 => guessed += 1,
            429 => {
                assert_error(a, 429, "rate_limited");
                retry_after(a, 60);
            }
            other => panic!("unexpected {other}: {}", a.text),
        }
    }
    assert_eq!(guessed, 3, "guesses checked against the password");
    assert_error(&log_in(&gw, "alice", PW).await, 429, "rate_limited");
}

#[tokio::test]
async fn a_login_name_cannot_forge_log_lines_or_leak_a_mistyped_password() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let forged = "evil\n2026-01-01T00:00:00Z  INFO authgate::access: FORGED user=admin";
    assert_error(&log_in(&gw, forged, PW).await, 401, "invalid_credentials");
    // A password typed into the name field is not a valid name: it is not logged either.
    assert_error(
        &log_in(&gw, "My Secret Pass!", PW).await,
        401,
        "invalid_credentials",
    );
    sync_logs(&gw);
    let logs = gw.logs();
    assert!(
        !logs
            .lines()
            .any(|l| l.starts_with("2026-01-01") || l.contains("FORGED")),
        "a client wrote a log line:\n{logs}"
    );
    assert!(!logs.to_lowercase().contains("my secret pass"), "{logs}");
    // A well-formed unknown name is still there for ops to see.
    assert_error(
        &log_in(&gw, "mallory", PW).await,
        401,
        "invalid_credentials",
    );
    sync_logs(&gw);
    assert!(gw.logs().contains("mallory"), "{}", gw.logs());
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_leave_no_live_successor() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let (_, r1) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let answers = join_all((0..10).map(|_| refresh(&gw, &r1))).await;
    let winners: Vec<&Answer> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(winners.len(), 1, "one token, one rotation");
    for a in answers.iter().filter(|a| a.status != 200) {
        assert_error(a, 401, "invalid_grant");
    }
    // The replays revoked the family: the winner's successor is dead too.
    let (_, r2) = assert_token_pair(winners[0]);
    assert_error(&refresh(&gw, &r2).await, 401, "invalid_grant");
}

#[tokio::test]
async fn access_and_refresh_tokens_are_not_interchangeable() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    let (access, refresh_token) = assert_token_pair(&log_in(&gw, "alice", PW).await);
    let r = client()
        .get(gw.url("/protected"))
        .bearer_auth(&refresh_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(answer(r).await.json()["error"], "invalid_token");
    assert_error(&refresh(&gw, &access).await, 401, "invalid_grant");
    assert_error(&logout(&gw, &access).await, 401, "invalid_grant");
    // Both still work for what they are.
    assert_eq!(bearer_status(&gw, "/protected", &access).await, 200);
    assert_token_pair(&refresh(&gw, &refresh_token).await);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn an_unknown_user_costs_a_login_the_same_hash_time() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.identity = "store = \"sqlite:data/users.db\"\n\
        password_hash = { memory_kib = 32768, iterations = 3, parallelism = 1 }\n"
        .into();
    let gw = Gateway::start(&cfg);
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    // Interleaved, median of 5: known user with a wrong password, unknown user, malformed name.
    let mut times = [vec![], vec![], vec![]];
    for _ in 0..5 {
        for (i, name) in ["alice", "nobody", "x"].iter().enumerate() {
            let t = std::time::Instant::now();
            assert_eq!(log_in(&gw, name, "wrong password").await.status, 401);
            times[i].push(t.elapsed());
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let known = median(&mut times[0]);
    let unknown = median(&mut times[1]);
    let malformed = median(&mut times[2]);
    assert!(
        known > Duration::from_millis(20),
        "hash too cheap to compare: {known:?}"
    );
    // Generous bounds: skipping the hash would be ~100x faster, not 2x.
    assert!(
        unknown * 2 > known,
        "unknown {unknown:?} vs known {known:?}"
    );
    assert!(
        malformed * 2 > known,
        "malformed {malformed:?} vs known {known:?}"
    );
}

#[tokio::test]
async fn a_reload_does_not_reset_the_login_throttles() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.rate_limit =
        "login_per_ip = \"off\"\nlogin_per_user = \"3/min\"\nregister_per_ip = \"2/hour\"\n".into();
    let gw = Gateway::start(&cfg);
    assert_eq!(reg(&gw, "alice", PW).await.status, 201);
    assert_eq!(reg(&gw, "bob", PW).await.status, 201);
    for _ in 0..3 {
        assert_error(
            &log_in(&gw, "alice", "guess").await,
            401,
            "invalid_credentials",
        );
    }
    assert_error(&log_in(&gw, "alice", PW).await, 429, "rate_limited");
    // `systemctl reload` (a certificate renewal, say) must not hand out a fresh budget.
    cfg.tokens.push_str("issuer = \"authgate\"\n");
    assert!(gw.reload(&cfg.render()), "{}", gw.logs());
    assert_error(&log_in(&gw, "alice", PW).await, 429, "rate_limited");
    assert_error(&reg(&gw, "carol", PW).await, 429, "rate_limited");
    assert_token_pair(&log_in(&gw, "bob", PW).await);
    // A changed rate is a new rule: it starts afresh.
    cfg.rate_limit =
        "login_per_ip = \"off\"\nlogin_per_user = \"5/min\"\nregister_per_ip = \"2/hour\"\n".into();
    assert!(gw.reload(&cfg.render()), "{}", gw.logs());
    assert_token_pair(&log_in(&gw, "alice", PW).await);
    assert_error(&reg(&gw, "carol", PW).await, 429, "rate_limited");
}
