//! Shared rate limits (SPEC §9): several gateways on one Redis count every limit
//! together, with the in-process semantics; Redis down → each falls back to its
//! own limiter and recovers by itself. Every test has a Redis key prefix of its
//! own; each gateway has its own SQLite store (limits need no shared users), but
//! for the last test, where PostgreSQL and Redis go away together.
mod common;
use common::cluster::{login_pair, post, store_cfg, SharedKey};
use common::services::{redis_cli, PgDb, RedisPrefix, Relay, PG_ADDR, REDIS_ADDR};
use common::*;

use std::time::{Duration, Instant};

const PW: &str = "correct horse battery";

/// A gateway config with an admin listener (for the gauge) and these limits.
fn config(up: &Upstream, backend: &str, prefix: &str, limits: &str) -> String {
    let mut cfg = Cfg::new(up.addr);
    cfg.admin = Some("listen = \"127.0.0.1:0\"\n".into());
    cfg.rate_limit = format!("{limits}\nbackend = \"{backend}\"\nkey_prefix = \"{prefix}\"\n");
    cfg.render()
}

async fn metrics_text(gw: &Gateway) -> String {
    client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn backend_up(gw: &Gateway) -> Option<f64> {
    metrics_text(gw)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("authgate_rate_limit_backend_up "))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls the gauge until it reads `want` (deadline: generous, CI runs loaded).
async fn wait_backend(gw: &Gateway, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if backend_up(gw).await == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "authgate_rate_limit_backend_up never became {want}:\n{}",
        gw.logs()
    );
}

/// Starts `n` gateways on one config, each with its own store, Redis connected.
async fn gateways(n: usize, config: &str) -> Vec<Gateway> {
    let gws: Vec<Gateway> = (0..n).map(|_| Gateway::start_text(config, &[])).collect();
    for gw in &gws {
        wait_backend(gw, 1.0).await;
    }
    gws
}

/// The status and, for a 429, the Retry-After seconds.
async fn attempt(gw: &Gateway, user: &str, pw: &str) -> (u16, Option<u64>) {
    let r = login(gw, user, pw).await;
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().expect("Retry-After in seconds"));
    (r.status().as_u16(), retry)
}

fn assert_limited(what: &str, got: (u16, Option<u64>), max_wait: u64) {
    assert_eq!(got.0, 429, "{what}: {got:?}");
    let s = got
        .1
        .unwrap_or_else(|| panic!("{what}: 429 without Retry-After"));
    assert!((1..=max_wait).contains(&s), "{what}: Retry-After {s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_passwords_over_three_gateways_lock_the_name_on_every_gateway() {
    let up = Upstream::start();
    let rp = RedisPrefix::new("five");
    let redis = format!("redis://{REDIS_ADDR}");
    let text = config(
        &up,
        &redis,
        &rp.prefix,
        "login_per_ip = \"off\"\nlogin_per_user = \"5/min\"\nregister_per_ip = \"off\"",
    );
    let gws = gateways(3, &text).await;
    for gw in &gws {
        assert_eq!(register(gw, "alice", PW).await.status(), 201);
        assert_eq!(register(gw, "bob", PW).await.status(), 201);
    }
    // Successes are refunded, wherever they happen: ten in a row all pass.
    for i in 0..10 {
        assert_eq!(
            attempt(&gws[i % 3], "alice", PW).await.0,
            200,
            "success {i}"
        );
    }
    // Five failures for one name, spread over the three gateways.
    for i in 0..5 {
        assert_eq!(
            attempt(&gws[i % 3], "ALICE", "wrong password").await.0,
            401,
            "failure {i}"
        );
    }
    // The next attempt on any gateway is refused, right password included;
    // gateway C saw only one failure itself, so only the shared count refuses it.
    for (i, gw) in gws.iter().enumerate() {
        assert_limited(
            &format!("gateway {i}, right password"),
            attempt(gw, "alice", PW).await,
            12,
        );
        assert_limited(
            &format!("gateway {i}, wrong password"),
            attempt(gw, "alice", "nope nope").await,
            12,
        );
    }
    // Another name is untouched.
    assert_eq!(attempt(&gws[2], "bob", PW).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_registration_limits_per_ip_count_across_three_gateways() {
    let up = Upstream::start();
    let rp = RedisPrefix::new("perip");
    let redis = format!("redis://{REDIS_ADDR}");
    let text = config(
        &up,
        &redis,
        &rp.prefix,
        "login_per_ip = \"4/min\"\nlogin_per_user = \"off\"\nregister_per_ip = \"3/hour\"",
    );
    let gws = gateways(3, &text).await;
    // Failed and successful attempts alike count per IP.
    for i in 0..4 {
        assert_eq!(
            attempt(&gws[i % 3], &format!("user{i}"), PW).await.0,
            401,
            "login {i}"
        );
    }
    for (i, gw) in gws.iter().enumerate() {
        assert_limited(
            &format!("login on gateway {i}"),
            attempt(gw, "someone", PW).await,
            15,
        );
    }
    for (i, gw) in gws.iter().enumerate() {
        assert_eq!(
            register(gw, &format!("new{i}"), PW).await.status(),
            201,
            "register {i}"
        );
    }
    for (i, gw) in gws.iter().enumerate() {
        let r = register(gw, &format!("late{i}"), PW).await;
        assert_eq!(r.status(), 429, "register on gateway {i}");
        let s: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // 3/hour: the next one fits 20 minutes after the first.
        assert!((1..=1200).contains(&s), "Retry-After {s}");
    }
}

/// Keys under the test's prefix with their PTTL in ms (-1: no TTL, -2: gone).
fn keys_with_pttl(rp: &RedisPrefix) -> Vec<(String, i64)> {
    rp.keys_with_ttl()
        .into_iter()
        .map(|(k, _)| {
            let pttl = redis_cli(&["PTTL", &k]).trim().parse().unwrap_or(-2);
            (k, pttl)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_carries_a_ttl_and_expires_when_its_bucket_is_full_again() {
    let up = Upstream::start();
    let rp = RedisPrefix::new("ttl");
    let redis = format!("redis://{REDIS_ADDR}");
    // 10/min: one event is 6 s of bucket, so each key lives about 6 s (12 s for two).
    let text = config(
        &up,
        &redis,
        &rp.prefix,
        "login_per_ip = \"10/min\"\nlogin_per_user = \"10/min\"\nregister_per_ip = \"10/min\"",
    );
    let gws = gateways(1, &text).await;
    assert_eq!(register(&gws[0], "alice", PW).await.status(), 201);
    assert_eq!(attempt(&gws[0], "alice", "wrong password").await.0, 401);
    // A malformed name (perhaps a password typed into the name field) is stored hashed.
    assert_eq!(
        attempt(&gws[0], "Not A Name!", "wrong password").await.0,
        401
    );
    let keys = keys_with_pttl(&rp);
    let names: Vec<&str> = keys.iter().map(|(k, _)| &k[rp.prefix.len()..]).collect();
    assert!(names.contains(&"login_ip:127.0.0.1"), "{names:?}");
    assert!(names.contains(&"login_user:alice"), "{names:?}");
    assert!(names.contains(&"register_ip:127.0.0.1"), "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("login_user:#") && n.len() == "login_user:#".len() + 64),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.to_lowercase().contains("not a name")),
        "{names:?}"
    );
    for (k, pttl) in &keys {
        // Two login events on this IP: 12 s at most.
        assert!((1..=12_000).contains(pttl), "{k} has PTTL {pttl}");
    }
    // Once every bucket is full again, nothing is left in Redis.
    let deadline = Instant::now() + Duration::from_secs(40);
    while !rp.keys_with_ttl().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rp.keys_with_ttl(), vec![], "keys outlived their buckets");
}

/// Logins while Redis is out: each answers within `bound`.
async fn timed(gw: &Gateway, user: &str, pw: &str, bound: Duration) -> u16 {
    let t = Instant::now();
    let (status, _) = attempt(gw, user, pw).await;
    assert!(
        t.elapsed() < bound,
        "login took {:?} while Redis was out",
        t.elapsed()
    );
    status
}

async fn outage_then_recovery(blackhole: bool) {
    let up = Upstream::start();
    let rp = RedisPrefix::new(if blackhole { "blackhole" } else { "cut" });
    let relay = Relay::start(REDIS_ADDR);
    let redis = format!("redis://{}", relay.addr);
    let text = config(
        &up,
        &redis,
        &rp.prefix,
        "login_per_ip = \"off\"\nlogin_per_user = \"3/min\"\nregister_per_ip = \"off\"",
    );
    let gws = gateways(2, &text).await;
    let (a, b) = (&gws[0], &gws[1]);
    for gw in &gws {
        assert_eq!(register(gw, "alice", PW).await.status(), 201);
    }
    if blackhole {
        relay.blackhole();
    } else {
        relay.cut();
    }
    // Logins still work, and fast: at most one Redis call timeout (250 ms) per
    // outage; the bound here is generous for a loaded CI machine.
    let bound = Duration::from_secs(3);
    assert_eq!(timed(a, "alice", PW, bound).await, 200);
    assert_eq!(timed(b, "alice", PW, bound).await, 200);
    wait_backend(a, 0.0).await;
    wait_backend(b, 0.0).await;
    // Local limits still bite: three failures on A lock the name on A...
    for _ in 0..3 {
        assert_eq!(timed(a, "mallory", "guess guess", bound).await, 401);
    }
    assert_limited(
        "local limit on A",
        attempt(a, "mallory", "guess guess").await,
        20,
    );
    // ...but B counts alone while Redis is out.
    assert_eq!(timed(b, "mallory", "guess guess", bound).await, 401);
    for gw in &gws {
        for _ in 0..3 {
            timed(gw, "alice", PW, bound).await;
        }
        // Logged once for the whole outage, not per request.
        assert_eq!(
            gw.logs().matches("rate_limit backend unreachable").count(),
            1,
            "{}",
            gw.logs()
        );
    }

    relay.restore();
    // Back without a restart: shared again.
    wait_backend(a, 1.0).await;
    wait_backend(b, 1.0).await;
    for gw in &gws {
        assert_eq!(
            gw.logs().matches("rate_limit backend connected").count(),
            2,
            "{}",
            gw.logs()
        );
    }
    for i in 0..3 {
        assert_eq!(attempt(&gws[i % 2], "carol", "guess guess").await.0, 401);
    }
    assert_limited(
        "shared again, on B",
        attempt(b, "carol", "guess guess").await,
        20,
    );
    assert_limited(
        "shared again, on A",
        attempt(a, "carol", "guess guess").await,
        20,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cut_falls_back_to_local_limits_and_recovers_without_restart() {
    outage_then_recovery(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_blackhole_never_makes_a_login_wait_and_recovers_without_restart() {
    outage_then_recovery(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_the_gateway_serves_and_connects_later() {
    let up = Upstream::start();
    let rp = RedisPrefix::new("latestart");
    let relay = Relay::start(REDIS_ADDR);
    relay.cut();
    let redis = format!("redis://{}", relay.addr);
    let text = config(
        &up,
        &redis,
        &rp.prefix,
        "login_per_ip = \"off\"\nlogin_per_user = \"2/min\"\nregister_per_ip = \"off\"",
    );
    let gw = Gateway::start_text(&text, &[]);
    wait_backend(&gw, 0.0).await;
    assert_eq!(register(&gw, "alice", PW).await.status(), 201);
    assert_eq!(attempt(&gw, "alice", PW).await.0, 200);
    relay.restore();
    wait_backend(&gw, 1.0).await;
    assert_eq!(attempt(&gw, "dave", "guess guess").await.0, 401);
    assert!(
        rp.keys_with_ttl()
            .iter()
            .any(|(k, _)| k.ends_with("login_user:dave")),
        "the failure was not counted in Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_shared_counts_and_the_connection() {
    let up = Upstream::start();
    let rp = RedisPrefix::new("reload");
    let redis = format!("redis://{REDIS_ADDR}");
    let text = config(
        &up,
        &redis,
        &rp.prefix,
        "login_per_ip = \"off\"\nlogin_per_user = \"2/min\"\nregister_per_ip = \"off\"",
    );
    let gws = gateways(1, &text).await;
    let gw = &gws[0];
    for _ in 0..2 {
        assert_eq!(attempt(gw, "erin", "guess guess").await.0, 401);
    }
    let changed = text.replace(
        "[[route]]\npath = \"/public\"",
        "[[route]]\npath = \"/public2\"",
    );
    assert!(gw.reload(&changed), "{}", gw.logs());
    assert_limited("after reload", attempt(gw, "erin", "guess guess").await, 60);
    assert_eq!(gw.logs().matches("rate_limit backend connected").count(), 1);
}

/// 1-based line number of the first line starting with `start`.
fn line_of(text: &str, start: &str) -> usize {
    text.lines().position(|l| l.starts_with(start)).unwrap() + 1
}

#[test]
fn bad_backend_urls_and_prefixes_are_check_errors_with_their_line() {
    let dir = TempDir::new("redis-check");
    let path = dir.path().join("gateway.toml");
    std::fs::write(dir.path().join("url"), "redis://:s3cret@127.0.0.1:6379/x\n").unwrap();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (value, reason) in [
        (
            "redis://:s3cret@127.0.0.1:6379",
            "a password never stands in the config",
        ),
        ("rediss://127.0.0.1:6379", "TLS to Redis"),
        ("memcached://127.0.0.1:11211", "not a redis:// URL"),
        (
            "redis://127.0.0.1:6379/zero",
            "the database must be a number",
        ),
        ("redis", "expected \"local\""),
        (
            "env:AUTHGATE_TEST_NO_SUCH_VAR",
            "environment variable AUTHGATE_TEST_NO_SUCH_VAR is not set",
        ),
        ("file:url", "the database must be a number"),
    ] {
        let mut cfg = Cfg::new(up);
        cfg.rate_limit = format!("login_per_ip = \"20/min\"\nbackend = \"{value}\"\n");
        let text = cfg.render();
        std::fs::write(&path, &text).unwrap();
        let out = run_cli(&path, &["check"], None);
        assert_eq!(out.code, 1, "{value}: {}", out.stderr);
        let line = out.stderr.lines().next().unwrap_or_default().to_string();
        let want = format!(
            "{}:{}:1: rate_limit.backend: ",
            path.display(),
            line_of(&text, "backend =")
        );
        assert!(
            line.starts_with(&want) && line.contains(reason),
            "{value}: {line}"
        );
        assert!(
            !out.stderr.contains("s3cret"),
            "{value}: password printed: {}",
            out.stderr
        );
    }
    let mut cfg = Cfg::new(up);
    cfg.rate_limit = "key_prefix = \"\"\n".into();
    let text = cfg.render();
    std::fs::write(&path, &text).unwrap();
    let out = run_cli(&path, &["check"], None);
    assert_eq!(out.code, 1);
    let want = format!(
        ":{}:1: rate_limit.key_prefix: must be 1 to 64 characters",
        line_of(&text, "key_prefix =")
    );
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    // A good one is summarised, without a password.
    std::fs::write(dir.path().join("url"), "redis://:s3cret@127.0.0.1:6379/2\n").unwrap();
    cfg.rate_limit = "backend = \"file:url\"\nkey_prefix = \"eu:\"\n".into();
    std::fs::write(&path, cfg.render()).unwrap();
    let out = run_cli(&path, &["check"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("limits    login 20/min per IP, 5/min per user, register 10/hour per IP; shared in redis://:***@127.0.0.1:6379/2 (keys eu:…)"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("s3cret"));
}

/// GET /protected with a bearer token: the status and how long it took.
async fn protected(gw: &Gateway, token: &str) -> (u16, Duration) {
    let t = Instant::now();
    let s = bearer_status(gw, "/protected/x", token).await;
    (s, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_blackholed_fresh_and_cached_tokens_still_pass_on_protected_routes() {
    let up = Upstream::start();
    let rp = RedisPrefix::new("proxied");
    let relay = Relay::start(REDIS_ADDR);
    let redis = format!("redis://{}", relay.addr);
    let text = config(
        &up,
        &redis,
        &rp.prefix,
        "login_per_ip = \"20/min\"\nlogin_per_user = \"5/min\"\nregister_per_ip = \"10/hour\"",
    );
    let gws = gateways(1, &text).await;
    let gw = &gws[0];
    let (cached, _) = token_for(gw, "alice").await;
    assert_eq!(protected(gw, &cached).await.0, 200);
    relay.blackhole();
    // Tokens are verified locally (SPEC §7): the proxied path never waits on Redis.
    let signer = Signer::of_gateway(gw, jsonwebtoken::Algorithm::EdDSA);
    for i in 0..5 {
        let mut claims = good_claims("alice", &[]);
        claims["jti"] = format!("fresh-{i}").into();
        let fresh = signer.token(&claims);
        for token in [&cached, &fresh] {
            let (status, took) = protected(gw, token).await;
            assert_eq!(status, 200);
            // Far below any Redis timeout would matter, generous for a loaded CI.
            assert!(took < Duration::from_secs(2), "{took:?}");
        }
    }
    assert_eq!(
        up.requests()
            .iter()
            .filter(|r| r.header("x-user").as_deref() == Some("alice"))
            .count(),
        11
    );
    // Nothing on that path even noticed: the backend is still believed up.
    assert_eq!(backend_up(gw).await, Some(1.0));
    assert_eq!(
        gw.logs().matches("rate_limit backend unreachable").count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_and_redis_cut_fresh_and_cached_tokens_still_pass_on_protected_routes() {
    let up = Upstream::start();
    let db = PgDb::new("bothcut");
    let (pg, redis) = (Relay::start(PG_ADDR), Relay::start(REDIS_ADDR));
    let rp = RedisPrefix::new("bothcut");
    let key = SharedKey::new();
    let mut cfg = store_cfg(
        up.addr,
        &db.url_via(pg.addr),
        &key.path,
        "store_timeout = \"1s\"\n",
    );
    cfg.rate_limit = format!(
        "login_per_ip = \"20/min\"\nlogin_per_user = \"5/min\"\nregister_per_ip = \"10/hour\"\n\
         backend = \"redis://{}\"\nkey_prefix = \"{}\"\n",
        redis.addr, rp.prefix
    );
    let gws = gateways(2, &cfg.render()).await;
    assert_eq!(register(&gws[0], "alice", PW).await.status(), 201);
    // One gateway's token, used on both (so cached by both).
    let (cached, _) = login_pair(&gws[1], "alice", PW).await;
    for gw in &gws {
        assert_eq!(protected(gw, &cached).await.0, 200);
    }
    let signer = Signer::from_pem(
        &std::fs::read(&key.path).unwrap(),
        jsonwebtoken::Algorithm::EdDSA,
    );
    for (round, outage) in ["cut", "blackhole"].into_iter().enumerate() {
        for r in [&pg, &redis] {
            if outage == "cut" {
                r.cut()
            } else {
                r.blackhole()
            }
        }
        for (g, gw) in gws.iter().enumerate() {
            let mut claims = good_claims("alice", &[]);
            claims["jti"] = format!("fresh-{round}-{g}").into();
            let fresh = signer.token(&claims);
            for token in [&cached, &fresh] {
                let (status, took) = protected(gw, token).await;
                assert_eq!(status, 200, "{outage}, gateway {g}");
                assert!(
                    took < Duration::from_secs(2),
                    "{outage}, gateway {g}: {took:?}"
                );
            }
            // The identity endpoints say the store is down, promptly, never a 500.
            let t = Instant::now();
            let (status, v) = post(
                gw,
                "/login",
                serde_json::json!({"username": "alice", "password": PW}),
            )
            .await;
            assert_eq!(
                (status, v["error"].as_str()),
                (503, Some("store_unavailable")),
                "{outage}: {v}"
            );
            assert!(
                t.elapsed() < Duration::from_secs(6),
                "{outage}: login took {:?}",
                t.elapsed()
            );
        }
        pg.restore();
        redis.restore();
    }
    for gw in &gws {
        wait_backend(gw, 1.0).await;
    }
}
