//! Operations (SPEC §6): reload, admin listener and metrics, access log, TLS.
mod common;
use common::*;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn with_extra_route(cfg: &Cfg, path: &str) -> String {
    let mut c = cfg.clone();
    c.rest.push_str(&format!(
        "\n[[route]]\npath = \"{path}\"\nupstream = \"app\"\nauth = \"public\"\n"
    ));
    c.render()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_steady_load_fail_no_request() {
    let up = Upstream::start();
    let cfg = Cfg::new(up.addr);
    let gw = Gateway::start(&cfg);
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (ok, failed, stop, url) = (
            ok.clone(),
            failed.clone(),
            stop.clone(),
            gw.url("/public/load"),
        );
        workers.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for i in 0..20 {
        let text = with_extra_route(&cfg, &format!("/extra{i}"));
        let reloaded = tokio::task::block_in_place(|| gw.reload(&text));
        assert!(reloaded, "reload {i} refused:\n{}", gw.logs());
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 20);
    // The last config is the one in force.
    let r = client().get(gw.url("/extra19/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(gw.url("/extra3/x")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// Issue 13 soak: each reload left the old snapshot's idle upstream connections open
/// for their whole idle timeout (90 s), so open descriptors grew with the reload rate.
/// A reload that leaves an upstream alone now keeps its connections; one that changes
/// it closes the old ones within a sweep (a second) once the old snapshot is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_unchanged_upstream_connections_and_close_replaced_ones() {
    let up = Upstream::start();
    let cfg = Cfg::new(up.addr);
    let gw = Gateway::start(&cfg);
    let c = client();
    let burst = || async {
        // Concurrent requests, so the pool holds several idle connections.
        let reqs = (0..4).map(|_| c.get(gw.url("/public/x")).send());
        for r in futures_util::future::join_all(reqs).await {
            assert_eq!(r.unwrap().status(), 200);
        }
    };
    burst().await;
    let first = up.connections();
    for i in 0..5 {
        let text = with_extra_route(&cfg, &format!("/extra{i}"));
        assert!(
            tokio::task::block_in_place(|| gw.reload(&text)),
            "{}",
            gw.logs()
        );
        burst().await;
    }
    // Only routes changed: the upstream's connections were reused, not reopened
    // (a few more may open when a burst finds every idle one busy).
    assert!(
        up.connections() <= first + 4,
        "{} connections opened over 5 reloads, {first} before them",
        up.connections()
    );
    // A changed upstream (its timeout) starts afresh; the old connections close.
    let mut changed = cfg.clone();
    changed.rest = changed.rest.replace("timeout = \"2s\"", "timeout = \"3s\"");
    assert_ne!(changed.rest, cfg.rest);
    assert!(
        tokio::task::block_in_place(|| gw.reload(&changed.render())),
        "{}",
        gw.logs()
    );
    burst().await;
    let opened = up.connections();
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.open_connections() > 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        up.open_connections() <= 4,
        "{} of {opened} upstream connections still open after the upstream changed",
        up.open_connections()
    );
    let r = c.get(gw.url("/public/y")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// The Argon2 hashing threads (by thread id) of a running gateway.
fn hash_threads(pid: u32) -> Vec<String> {
    let mut tids: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| {
            let tid = e.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            comm.starts_with("authgate-hash").then_some(tid)
        })
        .collect();
    tids.sort();
    tids
}

/// A reload that leaves the hashing settings alone keeps the hashing pool: a new
/// one would start new threads and hash a new dummy password (19 MiB of Argon2
/// memory at the defaults, left in a glibc arena — the soak's RSS steps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_hashing_threads_unless_their_settings_change() {
    let up = Upstream::start();
    let cfg = Cfg::new(up.addr);
    let gw = Gateway::start(&cfg);
    let before = hash_threads(gw.pid());
    assert!(!before.is_empty(), "no hashing threads found");
    let text = with_extra_route(&cfg, "/extra");
    assert!(
        tokio::task::block_in_place(|| gw.reload(&text)),
        "{}",
        gw.logs()
    );
    assert_eq!(
        hash_threads(gw.pid()),
        before,
        "same settings: same threads"
    );
    let changed = text.replace("[identity]", "[identity]\nhash_queue = 7");
    assert_ne!(changed, text, "the test config has an [identity] table");
    assert!(
        tokio::task::block_in_place(|| gw.reload(&changed)),
        "{}",
        gw.logs()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while hash_threads(gw.pid()) == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(hash_threads(gw.pid()), before, "new settings: a new pool");
    let r = register(&gw, "alice", "correct horse battery").await;
    assert_eq!(r.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_finishes_on_the_old_config() {
    let up = Upstream::start();
    let cfg = Cfg::new(up.addr);
    let gw = Gateway::start(&cfg);
    let url = gw.url("/public/slow?ms=1500");
    let slow =
        tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    // Wait until the upstream holds the request, then drop /public from the config.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut without_public = cfg.clone();
    without_public.rest = without_public
        .rest
        .replace("path = \"/public\"", "path = \"/gone\"");
    assert!(tokio::task::block_in_place(
        || gw.reload(&without_public.render())
    ));
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    let r = client().get(gw.url("/public/x")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_refused_and_the_old_one_keeps_serving() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.admin = Some("listen = \"127.0.0.1:0\"\n".into());
    let gw = Gateway::start(&cfg);
    let mut bad = cfg.clone();
    bad.rest
        .push_str("\n[[route]]\npath = \"/x\"\nupstream = \"nope\"\n");
    assert!(!tokio::task::block_in_place(|| gw.reload(&bad.render())));
    let logs = gw.logs();
    assert!(
        logs.contains("route[4].upstream: no upstream named \\\"nope\\\"")
            || logs.contains("route[4].upstream: no upstream named \"nope\""),
        "{logs}"
    );
    let r = client().get(gw.url("/public/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m = metrics_text(&gw).await;
    assert!(
        m.contains("authgate_config_reloads_total{outcome=\"failure\"} 1"),
        "{m}"
    );
    // A listen change is accepted for the rest, and logged as needing a restart.
    let mut moved = cfg.clone();
    moved.server = "listen = [\"127.0.0.1:1\"]\n".into();
    moved.admin = cfg.admin.clone();
    assert!(tokio::task::block_in_place(|| gw.reload(&moved.render())));
    assert!(gw.logs().contains("needs a restart"), "{}", gw.logs());
    let r = client().get(gw.url("/public/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
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

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn admin_listener_answers_health_readiness_and_moving_metrics() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.admin = Some("listen = \"127.0.0.1:0\"\n".into());
    let gw = Gateway::start(&cfg);
    let c = client();
    for p in ["/healthz", "/readyz"] {
        let r = c.get(gw.admin_url(p)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap(),
            serde_json::json!({"status": "ok"})
        );
    }
    let before = metrics_text(&gw).await;
    let (token, _) = token_for(&gw, "metrics-user").await;
    for _ in 0..3 {
        assert_eq!(
            c.get(gw.url("/public/a")).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(
        c.get(gw.url("/protected")).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        c.get(gw.url("/protected"))
            .bearer_auth("x.y.z")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(gw.url("/protected"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let after = metrics_text(&gw).await;
    let s = "authgate_requests_total{route=\"/public\",status=\"200\"}";
    assert_eq!(metric(&after, s) - metric(&before, s), 3.0, "{after}");
    assert_eq!(
        metric(
            &after,
            "authgate_auth_failures_total{reason=\"missing_token\"}"
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "authgate_auth_failures_total{reason=\"invalid_token\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&after, "authgate_logins_total{outcome=\"success\"}"),
        1.0
    );
    assert_eq!(
        metric(&after, "authgate_registrations_total{outcome=\"created\"}"),
        1.0
    );
    assert!(
        after.contains(
            "authgate_request_duration_seconds_bucket{route=\"/protected\",le=\"0.005\"}"
        ),
        "{after}"
    );
    assert!(c.get(gw.admin_url("/nope")).send().await.unwrap().status() == 404);
}

#[tokio::test]
async fn upstream_errors_are_counted_by_kind() {
    let mut cfg = Cfg::new(dead_addr());
    cfg.admin = Some("listen = \"127.0.0.1:0\"\n".into());
    let gw = Gateway::start(&cfg);
    let r = client().get(gw.url("/public/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(
            &m,
            "authgate_upstream_errors_total{upstream=\"app\",kind=\"connect\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn access_log_has_one_json_line_per_request_and_no_secrets() {
    let up = Upstream::start();
    let gw = Gateway::start_env(&Cfg::new(up.addr), &[("AUTHGATE_LOG_FORMAT", "json")]);
    let password = "correct horse battery";
    let (access, refresh) = token_for(&gw, "logger").await;
    let r = client()
        .get(gw.url("/protected/p?api_key=sekrit123&page=2"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let r = client()
        .post(gw.url("/token/refresh"))
        .json(&serde_json::json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(gw.wait_log(&rid, 1, Duration::from_secs(5)));
    let logs = gw.logs();
    for secret in [password, access.as_str(), refresh.as_str(), "sekrit123"] {
        assert!(!logs.contains(secret), "a secret reached the log:\n{logs}");
    }
    let line = logs.lines().find(|l| l.contains(&rid)).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/protected/p");
    assert_eq!(v["route"], "/protected");
    assert_eq!(v["status"], 200);
    assert_eq!(v["user"], "logger");
    assert_eq!(v["query"], "api_key=***&page=***");
    assert_eq!(v["upstream"], up.addr.to_string());
    assert!(v["latency_ms"].as_f64().is_some());
    assert!(v["timestamp"].as_str().is_some());
    assert_eq!(v["peer"], "127.0.0.1");
}

struct TestCa {
    cert_pem: String,
    key_pem: String,
}

fn self_signed() -> TestCa {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    TestCa {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
    }
}

/// A gateway serving HTTPS with a fresh self-signed certificate for "localhost".
fn tls_gateway(up: &Upstream) -> (Gateway, TestCa, Cfg) {
    authgate::install_crypto();
    let ca = self_signed();
    let dir = TempDir::new("tls");
    std::fs::write(dir.path().join("cert.pem"), &ca.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &ca.key_pem).unwrap();
    let mut cfg = Cfg::new(up.addr);
    cfg.server
        .push_str("tls = { cert = \"file:cert.pem\", key = \"file:key.pem\" }\n");
    let gw = Gateway::start_in(dir, &cfg.render(), &[], "serve").unwrap();
    (gw, ca, cfg)
}

fn tls_client(ca: &TestCa, addr: std::net::SocketAddr, h2: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap()])
        .resolve("localhost", addr);
    let b = if h2 { b } else { b.http1_only() };
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http1_and_http2_and_rereads_the_certificate_on_reload() {
    let up = Upstream::start();
    let (gw, ca, cfg) = tls_gateway(&up);
    let url = format!("https://localhost:{}/public/tls", gw.addr.port());

    let r = tls_client(&ca, gw.addr, false)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let r = tls_client(&ca, gw.addr, true)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN should pick h2");
    assert_eq!(
        up.last().header("x-forwarded-proto").as_deref(),
        Some("https")
    );

    // A renewed certificate is served after SIGHUP; the old one no longer is.
    let renewed = self_signed();
    std::fs::write(gw.dir.path().join("cert.pem"), &renewed.cert_pem).unwrap();
    std::fs::write(gw.dir.path().join("key.pem"), &renewed.key_pem).unwrap();
    assert!(tokio::task::block_in_place(|| gw.reload(&cfg.render())));
    let r = tls_client(&renewed, gw.addr, true)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(tls_client(&ca, gw.addr, true)
        .get(&url)
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn active_health_checks_take_a_dead_target_out_before_any_request_fails() {
    let up = Upstream::start();
    let dead = dead_addr();
    let mut cfg = Cfg::new(up.addr);
    cfg.rest = cfg.rest.replace(
        &format!("targets = [\"http://{}\"]", up.addr),
        &format!("targets = [\"http://{}\", \"http://{dead}\"]\nhealth_check = {{ path = \"/health\", interval = \"100ms\" }}", up.addr),
    );
    let gw = Gateway::start(&cfg);
    assert!(
        gw.wait_log("health check failed", 1, Duration::from_secs(10)),
        "{}",
        gw.logs()
    );
    // Bodies cannot be retried on another target: only the health check keeps these green.
    for i in 0..10 {
        let r = client()
            .post(gw.url("/public/upload"))
            .body(format!("body {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    assert!(up.requests().iter().any(|r| r.uri == "/health"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_can_switch_the_user_store_and_the_header_limit() {
    let up = Upstream::start();
    let cfg = Cfg::new(up.addr);
    let gw = Gateway::start(&cfg);
    let (_, _) = token_for(&gw, "before").await;
    let mut next = cfg.clone();
    next.identity = next
        .identity
        .replace("sqlite:data/users.db", "sqlite:data/other.db");
    next.server.push_str("max_header_bytes = \"2KiB\"\n");
    assert!(tokio::task::block_in_place(|| gw.reload(&next.render())));
    // The user lives in the old store only.
    let r = login(&gw, "before", "correct horse battery").await;
    assert_eq!(r.status(), 401);
    assert!(gw.dir.path().join("data/other.db").exists());
    let big = format!("X-Big: {}", "a".repeat(3000));
    let r = get(gw.addr, "/public/x", &[&big]);
    assert_eq!(r.status, 431, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_sent_over_http2_never_reach_the_upstream() {
    let up = Upstream::start();
    let (gw, ca, _) = tls_gateway(&up);
    let base = format!("https://localhost:{}", gw.addr.port());
    let c = tls_client(&ca, gw.addr, true);
    let body = serde_json::json!({"username": "h2user", "password": "correct horse battery"});
    assert_eq!(
        c.post(format!("{base}/register"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let login: serde_json::Value = c
        .post(format!("{base}/login"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap();
    for path in ["/public/h2", "/optional/h2"] {
        let r = c
            .get(format!("{base}{path}"))
            .header("x-user", "admin")
            .header("x_user", "admin")
            .header("x-user-roles", "admin")
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let seen = up.last();
        assert!(
            seen.header("x-user").is_none()
                && seen.header("x_user").is_none()
                && seen.header("x-user-roles").is_none(),
            "{path}: {:?}",
            seen.headers
        );
        assert_eq!(
            seen.header("host").as_deref(),
            Some(&format!("localhost:{}", gw.addr.port())[..])
        );
    }
    let r = c
        .get(format!("{base}/protected/h2"))
        .bearer_auth(token)
        .header("x-user", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header_all("x-user"), vec!["h2user".to_string()]);
}

#[test]
fn at_max_connections_a_new_connection_waits_until_one_closes() {
    use std::io::{Read, Write};
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.server.push_str("max_connections = 1\n");
    let gw = Gateway::start(&cfg);
    let request = b"GET /public/a HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    // A: served, then held open (keep-alive): it owns the only slot.
    let mut a = std::net::TcpStream::connect(gw.addr).unwrap();
    a.write_all(request).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let n = a.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // B: the kernel accepts the TCP handshake, the gateway does not take it yet.
    let mut b = std::net::TcpStream::connect(gw.addr).unwrap();
    b.write_all(request).unwrap();
    b.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let waited = b.read(&mut buf);
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "B was answered while A held the only slot: {waited:?}"
    );
    drop(a);
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let n = b.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "B after A closed"
    );
    assert_eq!(up.count(), 2);
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.server.push_str("header_read_timeout = \"1s\"\n");
    let gw = Gateway::start(&cfg);
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    // Slowloris: the head never ends.
    s.write_all(b"GET /public/x HTTP/1.1\r\nHost: gw.test\r\nX-Slow: 1\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let closed = s.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(closed.is_ok(), "the connection was not closed: {closed:?}");
    assert!(
        waited < Duration::from_secs(5),
        "closed only after {waited:?}"
    );
    // Nothing but (at most) an error status was written, and nothing was forwarded.
    assert!(
        buf.is_empty() || buf.starts_with(b"HTTP/1.1 4"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(up.count(), 0);
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    // What systemd's Type=notify listens for, on a datagram socket of our own.
    let dir = TempDir::new("notify");
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let up = Upstream::start();
    let cfg = Cfg::new(up.addr);
    let mut gw = Gateway::start_env(&cfg, &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let next = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("no notification from authgate");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(next().contains("READY=1"));
    assert!(gw.reload(&cfg.render()));
    assert!(next().contains("RELOADING=1"));
    assert!(next().contains("READY=1"));
    assert!(gw.stop().success());
    assert!(next().contains("STOPPING=1"));
}
