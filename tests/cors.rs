//! CORS at the edge (SPEC §17): preflights answered by the gateway, before
//! authentication and never forwarded; the allowance (exact origin, `Vary:
//! Origin`) on every response of the route, the gateway's own 401/403/429
//! included, the upstream's `Access-Control-*` replaced; bad policies refused
//! by `check` at their line; and a real browser (headless Chromium) reading a
//! protected route from an allowed origin and blocked from another.
mod common;
use common::webdriver::{tools, Browser, Driver};
use common::*;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APP: &str = "https://app.example.com";

/// An upstream that answers every request 200 with its own, wide-open CORS
/// headers (which the gateway must replace) and a `Vary` of its own.
fn permissive_upstream() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let addr = serve_loopback(move |mut s| {
        let h = h.clone();
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\n\
                      Access-Control-Allow-Credentials: true\r\n\
                      Access-Control-Expose-Headers: X-Secret\r\nVary: Accept-Encoding\r\n\
                      Content-Type: application/json\r\nContent-Length: 11\r\n\
                      Connection: close\r\n\r\n{\"ok\":true}",
                )
                .await;
        }
    });
    (addr, hits)
}

/// The harness routes, plus `/api` (cors), `/post-only` (cors, POST only),
/// `/adm` (cors, needs the admin role), `/lim` (cors, burst 1) and `/cred`
/// (cors with credentials), all on `up`.
fn cors_cfg(up: SocketAddr) -> Cfg {
    let cors = format!(
        "{{ origins = [\"{APP}\", \"http://127.0.0.1:3000\"], methods = [\"GET\", \"POST\"], \
         headers = [\"Authorization\", \"Content-Type\"], max_age = \"10m\", expose = [\"X-Request-Id\"] }}"
    );
    let mut cfg = Cfg::new(up);
    cfg.rest.push_str(&format!(
        "\n[[route]]\npath = \"/api\"\nupstream = \"app\"\ncors = {cors}\n\n\
         [[route]]\npath = \"/post-only\"\nupstream = \"app\"\nmethods = [\"POST\"]\ncors = {cors}\n\n\
         [[route]]\npath = \"/adm\"\nupstream = \"app\"\nrequire = {{ roles = [\"admin\"] }}\ncors = {cors}\n\n\
         [[route]]\npath = \"/lim\"\nupstream = \"app\"\nrate_limit = {{ rate = \"1/hour\", burst = 1, per = \"user\" }}\ncors = {cors}\n\n\
         [[route]]\npath = \"/cred\"\nupstream = \"app\"\ncors = {{ origins = [\"{APP}\"], credentials = true }}\n"
    ));
    cfg
}

fn h(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

fn varies_on_origin(r: &reqwest::Response) -> bool {
    r.headers()
        .get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin"))
}

async fn preflight(
    gw: &Gateway,
    path: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> reqwest::Response {
    let mut rb = client()
        .request(reqwest::Method::OPTIONS, gw.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method);
    if let Some(hs) = headers {
        rb = rb.header("Access-Control-Request-Headers", hs);
    }
    rb.send().await.unwrap()
}

#[tokio::test]
async fn an_allowed_preflight_is_answered_by_the_gateway_without_credentials_and_never_forwarded() {
    let up = Upstream::start();
    let gw = Gateway::start(&cors_cfg(up.addr));
    let r = preflight(
        &gw,
        "/api/x",
        APP,
        "POST",
        Some("authorization, content-type"),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some(APP));
    assert_eq!(
        h(&r, "access-control-allow-methods").as_deref(),
        Some("GET, POST")
    );
    assert_eq!(
        h(&r, "access-control-allow-headers").as_deref(),
        Some("authorization, content-type")
    );
    assert_eq!(h(&r, "access-control-max-age").as_deref(), Some("600"));
    assert_eq!(h(&r, "access-control-allow-credentials"), None);
    assert!(varies_on_origin(&r));
    // Another spelling of an allowed origin (default port) is the same origin.
    let r = preflight(&gw, "/api/x", "https://app.example.com:443", "GET", None).await;
    assert_eq!(
        h(&r, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com:443")
    );
    // A route limited to POST has its preflight answered (it is the POST's route).
    let r = preflight(&gw, "/post-only", APP, "POST", None).await;
    assert_eq!(r.status(), 204);
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some(APP));
    // The credentialed route says so.
    let r = preflight(&gw, "/cred", APP, "GET", None).await;
    assert_eq!(
        h(&r, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(up.count(), 0, "a preflight reached the upstream");
}

#[tokio::test]
async fn preflights_from_other_origins_or_for_other_methods_and_headers_get_no_allowance() {
    let up = Upstream::start();
    let gw = Gateway::start(&cors_cfg(up.addr));
    for (origin, method, headers) in [
        ("https://evil.example", "GET", None),
        ("https://app.example.com.evil", "GET", None),
        ("https://app.example.evil", "GET", None),
        ("http://app.example.com", "GET", None),
        ("https://app.example.com:8443", "GET", None),
        ("null", "GET", None),
        ("https://sub.app.example.com", "GET", None),
        (APP, "DELETE", None),
        (APP, "GET", Some("authorization, x-custom")),
    ] {
        let r = preflight(&gw, "/api/x", origin, method, headers).await;
        let what = format!("{origin} {method} {headers:?}");
        assert_eq!(r.status(), 204, "{what}");
        for name in [
            "access-control-allow-origin",
            "access-control-allow-methods",
            "access-control-allow-headers",
            "access-control-max-age",
            "access-control-allow-credentials",
        ] {
            assert_eq!(h(&r, name), None, "{what}: {name}");
        }
        assert!(varies_on_origin(&r), "{what}");
    }
    assert_eq!(up.count(), 0, "a preflight reached the upstream");
}

#[tokio::test]
async fn every_response_of_the_route_carries_the_allowance_the_gateways_own_errors_included() {
    let up = Upstream::start();
    let gw = Gateway::start(&cors_cfg(up.addr));
    let (alice, _) = token_for(&gw, "alice").await;
    let get = |path: &str, token: Option<&str>, origin: &str| {
        let mut rb = client().get(gw.url(path)).header("Origin", origin);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send()
    };
    let check = |what: &str, r: &reqwest::Response, status: u16| {
        assert_eq!(r.status(), status, "{what}");
        assert_eq!(
            h(r, "access-control-allow-origin").as_deref(),
            Some(APP),
            "{what}"
        );
        assert_eq!(
            h(r, "access-control-expose-headers").as_deref(),
            Some("x-request-id"),
            "{what}"
        );
        assert_eq!(h(r, "access-control-allow-credentials"), None, "{what}");
        assert!(varies_on_origin(r), "{what}");
    };
    check("200", &get("/api/x", Some(&alice), APP).await.unwrap(), 200);
    check("401", &get("/api/x", None, APP).await.unwrap(), 401);
    check("403", &get("/adm", Some(&alice), APP).await.unwrap(), 403);
    check(
        "200 /lim",
        &get("/lim", Some(&alice), APP).await.unwrap(),
        200,
    );
    check("429", &get("/lim", Some(&alice), APP).await.unwrap(), 429);
    // Another origin: no allowance, but the answer still varies on Origin.
    let r = get("/api/x", Some(&alice), "https://evil.example")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "access-control-allow-origin"), None);
    assert!(varies_on_origin(&r));
    // A plain OPTIONS (no Access-Control-Request-Method) is not a preflight: auth applies.
    let r = client()
        .request(reqwest::Method::OPTIONS, gw.url("/api/x"))
        .header("Origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A route without cors sets none.
    let r = get("/protected/x", Some(&alice), APP).await.unwrap();
    assert_eq!(h(&r, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn the_upstreams_own_cors_headers_are_replaced_by_the_routes_policy() {
    let (up, hits) = permissive_upstream();
    let gw = Gateway::start(&cors_cfg(up));
    let (alice, _) = token_for(&gw, "alice").await;
    let r = client()
        .get(gw.url("/api/x"))
        .header("Origin", "https://evil.example")
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The upstream's `*` and credentials would have let any site read this.
    assert_eq!(h(&r, "access-control-allow-origin"), None);
    assert_eq!(h(&r, "access-control-allow-credentials"), None);
    assert_eq!(h(&r, "access-control-expose-headers"), None);
    assert!(varies_on_origin(&r));
    assert!(
        r.headers()
            .get_all("vary")
            .iter()
            .any(|v| v == "Accept-Encoding"),
        "the upstream's own Vary is kept"
    );
    let r = client()
        .get(gw.url("/api/x"))
        .header("Origin", APP)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some(APP));
    assert_eq!(h(&r, "access-control-allow-credentials"), None);
    assert_eq!(
        h(&r, "access-control-expose-headers").as_deref(),
        Some("x-request-id")
    );
}

#[test]
fn check_refuses_unsafe_or_malformed_cors_policies_at_their_line() {
    let up = dead_addr();
    for (cors, key, why) in [
        (
            "{ origins = [\"*\"], credentials = true }",
            "origins[0]",
            "every site",
        ),
        (
            "{ origins = [\"https://a.example/app\"] }",
            "origins[0]",
            "not an origin",
        ),
        (
            "{ origins = [\"https://a.example/\"] }",
            "origins[0]",
            "not an origin",
        ),
        ("{ origins = [\"null\"] }", "origins[0]", "not an origin"),
        (
            "{ origins = [\"https://u@a.example\"] }",
            "origins[0]",
            "not an origin",
        ),
        (
            "{ origins = [\"https://*.a.example\"] }",
            "origins[0]",
            "not an origin",
        ),
        ("{ origins = [] }", "origins", "allows no origin"),
        ("{ methods = [\"GET\"] }", "origins", "missing"),
        (
            "{ origins = [\"https://a.example\"], methods = [\"GE T\"] }",
            "methods[0]",
            "not an HTTP method",
        ),
        (
            "{ origins = [\"https://a.example\"], headers = [\"X Bad\"] }",
            "headers[0]",
            "not a header name",
        ),
        (
            "{ origins = [\"https://a.example\"], max_age = \"soon\" }",
            "max_age",
            "not a duration",
        ),
        (
            "{ origins = [\"https://a.example\"], wildcard = true }",
            "wildcard",
            "",
        ),
    ] {
        let text = format!(
            "[[upstream]]\nname = \"app\"\ntargets = [\"http://{up}\"]\n\n\
             [[route]]\npath = \"/a\"\nupstream = \"app\"\n\n\
             [[route]]\npath = \"/b\"\nupstream = \"app\"\ncors = {cors}\n"
        );
        let dir = TempDir::new("cors-check");
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &text).unwrap();
        let out = run_cli(&path, &["check"], None);
        assert_eq!(out.code, 1, "{cors}: {}", out.stderr);
        let line = out.stderr.lines().next().unwrap_or("");
        assert!(
            line.contains("gateway.toml:12:") && line.contains(&format!("route[1].cors.{key}")),
            "{cors}: {line}"
        );
        assert!(line.contains(why), "{cors}: {line}");
    }
}

// ---------------------------------------------------------------- headless Chromium

/// Waits (with a deadline) for the page's `#out` to be written by its script.
async fn result(b: &Browser<'_>) -> String {
    let js = "const e = document.getElementById('out'); return e ? e.textContent : '';";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = b.script(js).await.as_str().unwrap_or("").to_string();
        if s != "pending" && !s.is_empty() {
            return s;
        }
        assert!(Instant::now() < deadline, "the page script never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Page = std::sync::Arc<std::sync::Mutex<String>>;

/// A page server on its own loopback port (so an origin of its own), serving
/// whatever `page` holds when asked.
fn page_server(page: Page) -> SocketAddr {
    serve_loopback(move |mut s| {
        let page = page.lock().unwrap().clone();
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                page.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(page.as_bytes()).await;
        }
    })
}

/// A page whose script fetches `url` with the bearer token and writes the
/// outcome (status and JSON, or the exception's name) into `#out`.
fn fetch_page(url: &str, token: &str) -> String {
    format!(
        "<!doctype html><html><body><p id=\"out\">pending</p><script>\n\
         fetch({url:?}, {{ headers: {{ Authorization: 'Bearer ' + {token:?} }} }})\n\
           .then(r => r.json().then(j => 'OK ' + r.status + ' ' + JSON.stringify(j)))\n\
           .catch(e => 'ERR ' + e.name)\n\
           .then(s => {{ document.getElementById('out').textContent = s; }});\n\
         </script></body></html>"
    )
}

#[tokio::test]
async fn in_chromium_a_page_on_an_allowed_origin_reads_the_route_and_another_origin_is_blocked() {
    let Some((chromium, chromedriver)) = tools() else {
        return;
    };
    let up = Upstream::start();
    // Two page servers on two ports: two origins. Only the first is allowed.
    let (good_page, evil_page) = (Page::default(), Page::default());
    let good = page_server(good_page.clone());
    let evil = page_server(evil_page.clone());
    let mut cfg = Cfg::new(up.addr);
    cfg.rest.push_str(&format!(
        "\n[[route]]\npath = \"/api\"\nupstream = \"app\"\n\
         cors = {{ origins = [\"http://{good}\"], methods = [\"GET\"], headers = [\"Authorization\"] }}\n"
    ));
    let gw = Gateway::start(&cfg);
    let (token, _) = token_for(&gw, "alice").await;
    let api = gw.url("/api/x");
    *good_page.lock().unwrap() = fetch_page(&api, &token);
    *evil_page.lock().unwrap() = fetch_page(&api, &token);

    let profile = TempDir::new("cors-chromium-profile");
    let driver = Driver::start(&chromedriver).await;
    let chrome = Browser::open(&driver, &chromium, profile.path()).await;
    chrome.goto(&format!("http://{good}/")).await;
    let got = result(&chrome).await;
    assert!(
        got.starts_with("OK 200 ") && got.contains("/api/x"),
        "the allowed origin could not read the route: {got}\n{}",
        gw.logs()
    );
    assert_eq!(
        up.count(),
        1,
        "only the real request is forwarded, not its preflight"
    );
    chrome.goto(&format!("http://{evil}/")).await;
    let got = result(&chrome).await;
    assert_eq!(got, "ERR TypeError", "another origin read the route");
    // Its preflight was refused by the gateway: nothing more reached the upstream.
    assert_eq!(up.count(), 1);
    chrome.close().await;
}

#[test]
fn explain_shows_a_routes_cors_policy() {
    let up = Upstream::start();
    let gw = Gateway::start(&cors_cfg(up.addr));
    let out = gw.cli(&["explain", "GET", "/api/x"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("cors"))
        .unwrap_or_else(|| panic!("no cors line:\n{}", out.stdout));
    assert!(
        line.contains("https://app.example.com") && line.contains("credentials false"),
        "{line}"
    );
}

#[tokio::test]
async fn the_gateways_own_502_carries_the_allowance_too() {
    let gw = Gateway::start(&cors_cfg(dead_addr()));
    let (alice, _) = token_for(&gw, "alice").await;
    let r = client()
        .get(gw.url("/api/x"))
        .header("Origin", APP)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some(APP));
    assert!(varies_on_origin(&r));
}

#[tokio::test]
async fn cors_credentials_do_not_exempt_an_origin_from_the_csrf_rule() {
    use common::browser::form_sign_in;
    for (allowed_origins, want) in [("[]", 403), (&*format!("[\"{APP}\"]"), 200)] {
        let up = Upstream::start();
        let mut cfg = cors_cfg(up.addr);
        cfg.rest.push_str(&format!(
            "\n[session]\ncookie = true\nallowed_origins = {allowed_origins}\n"
        ));
        let gw = Gateway::start(&cfg);
        let (access, _) = form_sign_in(&gw, "alice").await;
        let r = client()
            .post(gw.url("/cred"))
            .header("Origin", APP)
            .header("Cookie", format!("__Host-authgate={access}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "allowed_origins = {allowed_origins}");
        // Either way the answer is readable by the allowed origin (it may learn of the refusal).
        assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some(APP));
        assert_eq!(
            h(&r, "access-control-allow-credentials").as_deref(),
            Some("true")
        );
        if want == 403 {
            assert!(r.text().await.unwrap().contains("csrf_rejected"));
            assert_eq!(up.count(), 0, "a CSRF-refused request was forwarded");
        }
    }
}
