//! Route rate limits (SPEC §17): counted after authentication, per user, per
//! address or per route; over the limit a 429 with `Retry-After` that never
//! reaches the upstream; `RateLimit-Policy` / `RateLimit` on the route's
//! responses; shared through Redis by several gateways (each test under a key
//! prefix of its own), each gateway alone while Redis is cut; counts kept
//! across a reload; bad values refused by `check` at their line.
mod common;
use common::services::{RedisPrefix, Relay, REDIS_ADDR};
use common::*;

use std::time::{Duration, Instant};

/// The harness's routes plus `/api` (required) and `/open` (optional) under `limit`.
fn cfg_with(up: &Upstream, limit: &str) -> Cfg {
    let mut cfg = Cfg::new(up.addr);
    cfg.rest.push_str(&format!(
        "\n[[route]]\npath = \"/api\"\nupstream = \"app\"\nrate_limit = {limit}\n\n\
         [[route]]\npath = \"/open\"\nupstream = \"app\"\nauth = \"optional\"\nrate_limit = {limit}\n"
    ));
    cfg
}

struct Got {
    status: u16,
    retry_after: Option<u64>,
    policy: Option<String>,
    state: Option<String>,
}

async fn get(gw: &Gateway, path: &str, token: Option<&str>, xff: Option<&str>) -> Got {
    let mut rb = client().get(gw.url(path));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(x) = xff {
        rb = rb.header("X-Forwarded-For", x);
    }
    let r = rb.send().await.unwrap();
    let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    Got {
        status: r.status().as_u16(),
        retry_after: h("retry-after").map(|v| v.parse().expect("Retry-After in seconds")),
        policy: h("ratelimit-policy"),
        state: h("ratelimit"),
    }
}

#[tokio::test]
async fn a_user_over_the_route_limit_gets_429_with_retry_after_and_the_upstream_sees_nothing() {
    let up = Upstream::start();
    let gw = Gateway::start(&cfg_with(
        &up,
        "{ rate = \"2/hour\", burst = 3, per = \"user\" }",
    ));
    let (alice, _) = token_for(&gw, "alice").await;
    let (bob, _) = token_for(&gw, "bob").await;
    // burst 3 at 2/hour: q = 3, w = 3 × 1800 s.
    for want_r in [2, 1, 0] {
        let g = get(&gw, "/api/x", Some(&alice), None).await;
        assert_eq!(g.status, 200);
        assert_eq!(g.policy.as_deref(), Some("\"default\";q=3;w=5400"));
        let state = g.state.expect("RateLimit on a 200 of a limited route");
        assert!(
            state.starts_with(&format!("\"default\";r={want_r};t=")),
            "{state}"
        );
    }
    assert_eq!(up.count(), 3);
    let g = get(&gw, "/api/x", Some(&alice), None).await;
    assert_eq!(g.status, 429);
    let retry = g.retry_after.expect("429 carries Retry-After");
    assert!((1..=1800).contains(&retry), "{retry}");
    assert_eq!(g.policy.as_deref(), Some("\"default\";q=3;w=5400"));
    assert_eq!(g.state, Some(format!("\"default\";r=0;t={retry}")));
    assert_eq!(up.count(), 3, "a limited request was forwarded");
    // Another user, and an unlimited route, are untouched.
    assert_eq!(get(&gw, "/api/x", Some(&bob), None).await.status, 200);
    let g = get(&gw, "/protected/x", Some(&alice), None).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.policy, None, "an unlimited route advertises no policy");
    // A request refused before the limit (no token) is not counted against anyone.
    assert_eq!(get(&gw, "/api/x", None, None).await.status, 401);
    let body = client()
        .get(gw.url("/api/x"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("\"rate_limited\""), "{body}");
}

#[tokio::test]
async fn anonymous_callers_of_an_optional_route_count_by_address_apart_from_users() {
    let up = Upstream::start();
    let gw = Gateway::start(&cfg_with(
        &up,
        "{ rate = \"1/hour\", burst = 2, per = \"user\" }",
    ));
    let (alice, _) = token_for(&gw, "alice").await;
    assert_eq!(get(&gw, "/open/x", None, None).await.status, 200);
    assert_eq!(get(&gw, "/open/x", None, None).await.status, 200);
    let g = get(&gw, "/open/x", None, None).await;
    assert_eq!(g.status, 429);
    assert!(g.retry_after.is_some());
    // A signed-in caller from the same address has a bucket of their own.
    assert_eq!(get(&gw, "/open/x", Some(&alice), None).await.status, 200);
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn per_ip_counts_the_client_behind_a_trusted_proxy_and_ignores_xff_from_others() {
    let up = Upstream::start();
    let limit = "{ rate = \"1/hour\", burst = 1, per = \"ip\" }";
    let mut cfg = Cfg::new(up.addr);
    cfg.rest.push_str(&format!(
        "\n[[route]]\npath = \"/api\"\nupstream = \"app\"\nauth = \"public\"\nrate_limit = {limit}\n"
    ));
    // Untrusted: a client cannot get a fresh bucket by writing X-Forwarded-For.
    let gw = Gateway::start(&cfg);
    assert_eq!(
        get(&gw, "/api", None, Some("203.0.113.1")).await.status,
        200
    );
    assert_eq!(
        get(&gw, "/api", None, Some("203.0.113.2")).await.status,
        429
    );
    drop(gw);
    cfg.server
        .push_str("trusted_proxies = [\"127.0.0.1/32\"]\n");
    let gw = Gateway::start(&cfg);
    assert_eq!(
        get(&gw, "/api", None, Some("203.0.113.1")).await.status,
        200
    );
    assert_eq!(
        get(&gw, "/api", None, Some("198.51.100.9, 203.0.113.1"))
            .await
            .status,
        429,
        "the entry the trusted proxy appended is the client"
    );
    assert_eq!(
        get(&gw, "/api", None, Some("203.0.113.2")).await.status,
        200
    );
}

#[tokio::test]
async fn per_route_is_one_bucket_for_every_caller() {
    let up = Upstream::start();
    let gw = Gateway::start(&cfg_with(
        &up,
        "{ rate = \"1/hour\", burst = 2, per = \"route\" }",
    ));
    let (alice, _) = token_for(&gw, "alice").await;
    let (bob, _) = token_for(&gw, "bob").await;
    assert_eq!(get(&gw, "/api", Some(&alice), None).await.status, 200);
    assert_eq!(get(&gw, "/api", Some(&bob), None).await.status, 200);
    assert_eq!(get(&gw, "/api", Some(&alice), None).await.status, 429);
    assert_eq!(get(&gw, "/api", Some(&bob), None).await.status, 429);
    // The other limited route has a bucket of its own.
    assert_eq!(get(&gw, "/open", None, None).await.status, 200);
}

#[tokio::test]
async fn a_reload_keeps_the_counts_of_an_unchanged_route_limit() {
    let up = Upstream::start();
    let cfg = cfg_with(&up, "{ rate = \"1/hour\", burst = 2, per = \"user\" }");
    let gw = Gateway::start(&cfg);
    let (alice, _) = token_for(&gw, "alice").await;
    assert_eq!(get(&gw, "/api", Some(&alice), None).await.status, 200);
    assert_eq!(get(&gw, "/api", Some(&alice), None).await.status, 200);
    assert_eq!(get(&gw, "/api", Some(&alice), None).await.status, 429);
    // Another change in the file (a new route in front) must not reset the budget.
    let mut changed = cfg.clone();
    changed.rest = format!(
        "[[route]]\npath = \"/new\"\nupstream = \"app\"\nauth = \"public\"\n\n{}",
        changed.rest
    );
    assert!(gw.reload(&changed.render()), "{}", gw.logs());
    assert_eq!(get(&gw, "/new", None, None).await.status, 200, "reloaded");
    assert_eq!(get(&gw, "/api", Some(&alice), None).await.status, 429);
    // A changed limit is a new limit.
    let raised = cfg_with(&up, "{ rate = \"1/hour\", burst = 5, per = \"user\" }");
    assert!(gw.reload(&raised.render()), "{}", gw.logs());
    assert_eq!(get(&gw, "/api", Some(&alice), None).await.status, 200);
}

/// A public route limited per route, on Redis at `redis`, with an admin listener.
fn shared_cfg(up: &Upstream, redis: &str, prefix: &str, limit: &str) -> String {
    let mut cfg = Cfg::new(up.addr);
    cfg.admin = Some("listen = \"127.0.0.1:0\"\n".into());
    cfg.rate_limit.push_str(&format!(
        "backend = \"{redis}\"\nkey_prefix = \"{prefix}\"\n"
    ));
    cfg.rest.push_str(&format!(
        "\n[[route]]\npath = \"/api\"\nupstream = \"app\"\nauth = \"public\"\nrate_limit = {limit}\n"
    ));
    cfg.render()
}

async fn wait_backend(gw: &Gateway, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let m = client()
            .get(gw.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.lines()
            .any(|l| l == format!("authgate_rate_limit_backend_up {want}"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("backend_up never {want}:\n{}", gw.logs());
}

#[tokio::test]
async fn three_gateways_on_one_redis_admit_no_more_than_one_would() {
    let up = Upstream::start();
    let prefix = RedisPrefix::new("route-limits");
    // 5 at once, then 5/s: over t seconds GCRA admits at most 5 + 5·t.
    let cfg = shared_cfg(
        &up,
        &format!("redis://{REDIS_ADDR}"),
        &prefix.prefix,
        "{ rate = \"5/sec\", burst = 5, per = \"route\" }",
    );
    let gws: Vec<Gateway> = (0..3).map(|_| Gateway::start_text(&cfg, &[])).collect();
    for gw in &gws {
        wait_backend(gw, "1").await;
    }
    let started = Instant::now();
    let run_for = Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for c in 0..12 {
        let url = gws[c % 3].url("/api");
        tasks.push(tokio::spawn(async move {
            let client = client();
            let (mut ok, mut limited, mut other) = (0u32, 0u32, 0u32);
            while started.elapsed() < run_for {
                match client.get(&url).send().await.unwrap().status().as_u16() {
                    200 => ok += 1,
                    429 => limited += 1,
                    _ => other += 1,
                }
            }
            (ok, limited, other)
        }));
    }
    let (mut ok, mut limited, mut other) = (0, 0, 0);
    for t in tasks {
        let (a, b, c) = t.await.unwrap();
        ok += a;
        limited += b;
        other += c;
    }
    let t = started.elapsed().as_secs_f64();
    let bound = 5 + (5.0 * t).floor() as u32;
    assert_eq!(other, 0);
    assert!(limited > 0, "the clients never reached the limit");
    assert!(ok >= 5, "admitted {ok}");
    assert!(
        ok <= bound,
        "three gateways admitted {ok} in {t:.2} s; one would admit at most {bound}"
    );
    assert_eq!(
        up.count() as u32,
        ok,
        "only admitted requests were forwarded"
    );
    let m = client()
        .get(gws[0].admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.lines()
            .any(|l| l.starts_with("authgate_rate_limited_total{route=\"/api\"}")),
        "no authgate_rate_limited_total for /api:\n{m}"
    );
    // Keys live under the test's prefix, with a TTL.
    let keys = prefix.keys_with_ttl();
    assert!(!keys.is_empty(), "nothing under {}", prefix.prefix);
    for (k, ttl) in keys {
        assert!(
            k.starts_with(&format!("{}route:/api:", prefix.prefix)),
            "{k}"
        );
        assert!(ttl >= 0, "{k} has no TTL");
    }
}

#[tokio::test]
async fn with_redis_cut_each_gateway_limits_alone_and_nothing_fails() {
    let up = Upstream::start();
    let prefix = RedisPrefix::new("route-limits-cut");
    let relay = Relay::start(REDIS_ADDR);
    let cfg = shared_cfg(
        &up,
        &format!("redis://{}", relay.addr),
        &prefix.prefix,
        "{ rate = \"1/hour\", burst = 3, per = \"route\" }",
    );
    let gws: Vec<Gateway> = (0..2).map(|_| Gateway::start_text(&cfg, &[])).collect();
    for gw in &gws {
        wait_backend(gw, "1").await;
    }
    // Shared: one admission on the first gateway counts on the second.
    assert_eq!(get(&gws[0], "/api", None, None).await.status, 200);
    relay.cut();
    for (i, gw) in gws.iter().enumerate() {
        let statuses: Vec<u16> = futures_statuses(gw, 5).await;
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 429),
            "gateway {i}: {statuses:?}"
        );
        // Gateway 0 mirrored its own admission; gateway 1 starts from its own history.
        let admitted = statuses.iter().filter(|s| **s == 200).count();
        let want = if i == 0 { 2 } else { 3 };
        assert_eq!(admitted, want, "gateway {i}: {statuses:?}");
        wait_backend(gw, "0").await;
    }
    relay.restore();
    for gw in &gws {
        wait_backend(gw, "1").await;
    }
    // Shared again: the bucket in Redis still holds the one admission before the cut.
    let statuses = futures_statuses(&gws[1], 3).await;
    assert_eq!(statuses, vec![200, 200, 429]);
}

async fn futures_statuses(gw: &Gateway, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(gw, "/api", None, None).await.status);
    }
    out
}

#[test]
fn check_refuses_bad_route_limits_at_their_line() {
    let up = dead_addr();
    for (limit, key, why) in [
        ("{ rate = \"fast\" }", "rate", "is not a rate"),
        ("{ rate = \"0/min\" }", "rate", "at least 1"),
        ("{ rate = \"off\" }", "rate", "remove rate_limit"),
        ("{ rate = \"10/min\", burst = 0 }", "burst", "between 1 and"),
        (
            "{ rate = \"10/min\", burst = -3 }",
            "burst",
            "between 1 and",
        ),
        (
            "{ rate = \"10/min\", burst = 2.5 }",
            "burst",
            "expected an integer",
        ),
        (
            "{ rate = \"10/min\", per = \"tenant\" }",
            "per",
            "expected \"user\"",
        ),
        ("{ burst = 3 }", "rate", "missing"),
        ("{ rate = \"10/min\", window = \"1m\" }", "window", ""),
    ] {
        let text = format!(
            "[[upstream]]\nname = \"app\"\ntargets = [\"http://{up}\"]\n\n\
             [[route]]\npath = \"/a\"\nupstream = \"app\"\n\n\
             [[route]]\npath = \"/b\"\nupstream = \"app\"\nrate_limit = {limit}\n"
        );
        let dir = TempDir::new("route-limit-check");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &text).unwrap();
        let out = run_cli(&path, &["check"], None);
        assert_eq!(out.code, 1, "{limit}: {}", out.stderr);
        let line = out.stderr.lines().next().unwrap_or("");
        let want = "gateway.toml:12:";
        assert!(
            line.contains(want) && line.contains(&format!("route[1].rate_limit.{key}")),
            "{limit}: {line}"
        );
        assert!(line.contains(why), "{limit}: {line}");
    }
}

#[test]
fn explain_shows_a_routes_limit() {
    let up = Upstream::start();
    let gw = Gateway::start(&cfg_with(
        &up,
        "{ rate = \"100/min\", burst = 20, per = \"user\" }",
    ));
    let out = gw.cli(&["explain", "GET", "/api/x"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("limit"))
        .unwrap_or_else(|| panic!("no limit line:\n{}", out.stdout));
    assert!(
        line.contains("100/min, burst 20, per user") && line.contains("429"),
        "{line}"
    );
    let out = gw.cli(&["explain", "GET", "/protected/x"], None);
    assert!(
        !out.stdout.lines().any(|l| l.starts_with("limit")),
        "{}",
        out.stdout
    );
}
