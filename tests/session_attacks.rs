//! Attacks on browser sessions (SPEC §12): open redirects through `return_to`,
//! cross-site request forgery (unsafe methods, WebSockets, login, refresh,
//! logout), markup injection into the sign-in page, and cookie confusion.
mod common;
use common::browser::*;
use common::*;

use std::io::{Read, Write};
use std::time::Duration;

async fn post_form_return_to(gw: &Gateway, return_to: &str) -> reqwest::Response {
    browser()
        .post(gw.url("/login"))
        .header("origin", origin(gw))
        .form_body(&[
            ("username", "alice"),
            ("password", PW),
            ("return_to", return_to),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn return_to_never_redirects_off_the_gateway() {
    let (_up, gw) = gateway(ON, None);
    register(&gw, "alice", PW).await;
    // Each of these could leave the origin in some browser: they all land on `/`.
    for hostile in [
        "//evil.test",
        "///evil.test",
        "https://evil.test",
        "https:evil.test",
        "http:evil.test",
        "/\\evil.test",
        "\\\\evil.test",
        "\\/evil.test",
        "javascript:alert(document.cookie)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        " /protected",
        "  //evil.test",
        "\t//evil.test",
        "/\t/evil.test",
        "/\n/evil.test",
        "/\r\n/evil.test",
        "\u{0}//evil.test",
        "/\u{3000}/evil.test",
        "/\u{ff0f}evil.test",
        "%2F%2Fevil.test",
        "%5C%5Cevil.test",
        "%09//evil.test",
        "evil.test",
        "@evil.test",
        "/x#@evil.test",
        "",
    ] {
        let r = post_form_return_to(&gw, hostile).await;
        assert_eq!(r.status(), 303, "{hostile:?}");
        assert_eq!(r.headers()["location"], "/", "{hostile:?}");
    }
    // Encoded variants that are paths stay paths on this gateway: a browser does
    // not decode %2F or %5C in a Location before resolving it.
    for encoded in [
        "/%2F%2Fevil.test",
        "/%5Cevil.test",
        "/%09/evil.test",
        "/.//evil.test",
    ] {
        let r = post_form_return_to(&gw, encoded).await;
        assert_eq!(r.status(), 303);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(loc, encoded);
        let b = loc.as_bytes();
        assert!(b[0] == b'/' && b[1] != b'/' && b[1] != b'\\', "{loc}");
    }
}

#[tokio::test]
async fn hostile_return_to_in_the_page_query_is_dropped_or_escaped() {
    let (_up, gw) = gateway(ON, None);
    for hostile in [
        "%2F%2Fevil.test",
        "https%3A%2F%2Fevil.test",
        "%2F%5Cevil.test",
        "%09%2F%2Fevil.test",
    ] {
        let r = browser()
            .get(gw.url(&format!("/login?return_to={hostile}")))
            .send()
            .await
            .unwrap();
        let html = r.text().await.unwrap();
        assert!(
            html.contains("name=\"return_to\" value=\"\""),
            "{hostile}: {html}"
        );
        assert!(!html.contains("evil.test"), "{hostile}");
    }
    // Markup: refused outright (not a URI character) ...
    let r = browser()
        .get(gw.url("/login?return_to=%2F%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E"))
        .send()
        .await
        .unwrap();
    let html = r.text().await.unwrap();
    assert!(
        !html.contains("<script") && !html.contains("alert(1)"),
        "{html}"
    );
    // ... and what passes as a path is escaped for the attribute.
    let r = browser()
        .get(gw.url("/login?return_to=%2Fx%3Fa%3D1%26b%3D%27onmouseover%3D%27alert(1)"))
        .send()
        .await
        .unwrap();
    let html = r.text().await.unwrap();
    assert!(
        html.contains("value=\"/x?a=1&amp;b=&#39;onmouseover=&#39;alert(1)\""),
        "{html}"
    );
    assert!(!html.contains("'onmouseover"));
}

#[tokio::test]
async fn a_hostile_username_is_escaped_when_the_form_is_shown_again() {
    let (_up, gw) = gateway(ON, None);
    let r = browser()
        .post(gw.url("/login"))
        .header("origin", origin(&gw))
        .form_body(&[
            ("username", "\"><script>alert(1)</script>"),
            ("password", "whatever"),
            ("return_to", "/x?a=1&b='c'"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["content-security-policy"],
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    );
    let html = r.text().await.unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""));
    assert!(html.contains("value=\"/x?a=1&amp;b=&#39;c&#39;\""));
}

#[tokio::test]
async fn cross_origin_cookie_post_put_delete_are_rejected_with_csrf_rejected() {
    let (up, gw) = gateway(ON, None);
    let (access, _) = form_sign_in(&gw, "alice").await;
    let cookie = format!("__Host-authgate={access}");
    let before = up.count();
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for (origin_h, site) in [
            (Some("http://evil.test"), None),
            (Some("null"), None),
            (Some("http://evil.test"), Some("same-origin")),
            (None, None),
            (None, Some("cross-site")),
            (None, Some("same-site")),
            (None, Some("none")),
        ] {
            let mut b = browser()
                .request(method.parse().unwrap(), gw.url("/protected/x"))
                .header("cookie", &cookie)
                .body("{}");
            if let Some(o) = origin_h {
                b = b.header("origin", o);
            }
            if let Some(s) = site {
                b = b.header("sec-fetch-site", s);
            }
            let r = b.send().await.unwrap();
            assert_eq!(
                r.status(),
                403,
                "{method} origin={origin_h:?} site={site:?}"
            );
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["error"], "csrf_rejected");
        }
    }
    assert_eq!(up.count(), before, "nothing reached the upstream");
    // On an optional route too: the cookie would authenticate it.
    let r = browser()
        .post(gw.url("/optional"))
        .header("cookie", &cookie)
        .header("origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn same_origin_and_allowed_origins_pass() {
    let (up, gw) = gateway(
        "cookie = true\nallowed_origins = [\"https://app.example.com\"]",
        None,
    );
    let (access, _) = form_sign_in(&gw, "alice").await;
    let cookie = format!("__Host-authgate={access}");
    let own = origin(&gw);
    for (origin_h, site) in [
        (Some(own.as_str()), None),
        (Some(own.to_uppercase().as_str()), None),
        (Some("https://app.example.com"), None),
        (Some("https://app.example.com:443"), None),
        (None, Some("same-origin")),
    ] {
        for method in ["POST", "PUT", "DELETE"] {
            let mut b = browser()
                .request(method.parse().unwrap(), gw.url("/protected/x"))
                .header("cookie", &cookie);
            if let Some(o) = origin_h {
                b = b.header("origin", o);
            }
            if let Some(s) = site {
                b = b.header("sec-fetch-site", s);
            }
            let r = b.send().await.unwrap();
            assert_eq!(r.status(), 200, "{method} {origin_h:?} {site:?}");
            assert_eq!(up.last().header("x-user").as_deref(), Some("alice"));
        }
    }
    for near_miss in [
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com.evil.test",
        "https://evil-app.example.com",
    ] {
        let r = browser()
            .post(gw.url("/protected/x"))
            .header("cookie", &cookie)
            .header("origin", near_miss)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{near_miss}");
    }
    // Safe methods need no Origin: a link from another site still opens the app.
    for method in ["GET", "HEAD", "OPTIONS"] {
        let r = browser()
            .request(method.parse().unwrap(), gw.url("/protected"))
            .header("cookie", &cookie)
            .header("origin", "http://evil.test")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
    }
}

#[tokio::test]
async fn bearer_requests_need_no_origin() {
    let (up, gw) = gateway(ON, None);
    let (token, _) = token_for(&gw, "bob").await;
    for method in ["POST", "PUT", "DELETE"] {
        let r = browser()
            .request(method.parse().unwrap(), gw.url("/protected/x"))
            .bearer_auth(&token)
            .header("origin", "http://evil.test")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        assert_eq!(up.last().header("x-user").as_deref(), Some("bob"));
    }
    // Public routes never look at the cookie, so they never check its origin.
    let r = browser()
        .post(gw.url("/public/form"))
        .header("cookie", "__Host-authgate=whatever; a=1")
        .header("origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("cookie").as_deref(), Some("a=1"));
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_do_not_make_an_origin_our_own() {
    let (_up, gw) = gateway(ON, None);
    let (access, _) = form_sign_in(&gw, "alice").await;
    let r = browser()
        .post(gw.url("/protected/x"))
        .header("cookie", format!("__Host-authgate={access}"))
        .header("origin", "https://evil.test")
        .header("x-forwarded-host", "evil.test")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_host_and_proto_are_the_own_origin() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.server
        .push_str("trusted_proxies = [\"127.0.0.1/32\"]\n");
    cfg.rest.push_str("\n[session]\ncookie = true\n");
    let gw = Gateway::start(&cfg);
    let (access, _) = form_sign_in(&gw, "alice").await;
    let post = |origin_h: &'static str| {
        browser()
            .post(gw.url("/protected/x"))
            .header("cookie", format!("__Host-authgate={access}"))
            .header("origin", origin_h)
            .header("x-forwarded-host", "app.internal")
            .header("x-forwarded-proto", "https")
            .send()
    };
    assert_eq!(post("https://app.internal").await.unwrap().status(), 200);
    assert_eq!(post("http://app.internal").await.unwrap().status(), 403);
}

/// Sends a WebSocket handshake for `/protected/ws` and returns the answer's status.
fn websocket_status(addr: std::net::SocketAddr, extra: &[String]) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "GET /protected/ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // Read the head only: after a 101 the connection stays open.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head);
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

#[tokio::test]
async fn cross_site_websocket_with_the_cookie_is_rejected() {
    let (up, gw) = gateway(ON, None);
    let (access, _) = form_sign_in(&gw, "alice").await;
    let (token, _) = token_for(&gw, "bob").await;
    let cookie = format!("Cookie: __Host-authgate={access}");
    let own = format!("Origin: http://{}", gw.addr);
    let addr = gw.addr;
    let statuses = tokio::task::spawn_blocking(move || {
        let evil = "Origin: http://evil.test".to_string();
        [
            vec![cookie.clone(), evil.clone()],
            vec![cookie.clone()],
            vec![cookie.clone(), "Origin: null".into()],
            vec![cookie.clone(), "Sec-Fetch-Site: cross-site".into()],
            vec![cookie.clone(), own],
            vec![format!("Authorization: Bearer {token}"), evil],
        ]
        .iter()
        .map(|extra| websocket_status(addr, extra))
        .collect::<Vec<u16>>()
    })
    .await
    .unwrap();
    assert_eq!(statuses, vec![403, 403, 403, 403, 101, 101]);
    let ws: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|r| r.uri.contains("/ws"))
        .collect();
    assert_eq!(
        ws.len(),
        2,
        "only the accepted handshakes reached the upstream"
    );
    assert!(ws.iter().all(|r| r.header("cookie").is_none()));
}

#[tokio::test]
async fn a_cross_site_form_cannot_sign_a_browser_in() {
    let (_up, gw) = gateway(ON, None);
    register(&gw, "mallory", PW).await;
    for (origin_h, site) in [
        (Some("http://evil.test"), None),
        (Some("null"), None),
        (None, None),
        (None, Some("cross-site")),
    ] {
        let mut b = browser()
            .post(gw.url("/login"))
            .form_body(&[("username", "mallory"), ("password", PW)]);
        if let Some(o) = origin_h {
            b = b.header("origin", o);
        }
        if let Some(s) = site {
            b = b.header("sec-fetch-site", s);
        }
        let r = b.send().await.unwrap();
        assert_eq!(r.status(), 403, "{origin_h:?} {site:?}");
        assert!(r.headers().get("set-cookie").is_none());
    }
    // The JSON session login obeys the same rule.
    let r = browser()
        .post(gw.url("/login"))
        .header("origin", "http://evil.test")
        .json(&serde_json::json!({"username": "mallory", "password": PW, "session": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    // A same-origin form without Origin but with Sec-Fetch-Site passes.
    let r = browser()
        .post(gw.url("/login"))
        .header("sec-fetch-site", "same-origin")
        .form_body(&[("username", "mallory"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn cross_site_refresh_and_logout_by_cookie_are_rejected_and_change_nothing() {
    let (_up, gw) = gateway(ON, None);
    let (access, refresh) = form_sign_in(&gw, "alice").await;
    let cookies = format!("__Host-authgate={access}; __Host-authgate-refresh={refresh}");
    for path in ["/token/refresh", "/logout"] {
        let r = browser()
            .post(gw.url(path))
            .header("cookie", &cookies)
            .header("origin", "http://evil.test")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert!(r.headers().get("set-cookie").is_none(), "{path}");
        let r = browser()
            .post(gw.url(path))
            .header("cookie", &cookies)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path} without Origin");
    }
    // The session survived both attempts.
    let r = browser()
        .post(gw.url("/token/refresh"))
        .header("cookie", &cookies)
        .header("origin", origin(&gw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn cookie_confusion_is_not_a_session() {
    let (_up, gw) = gateway(ON, None);
    let (access, _) = form_sign_in(&gw, "alice").await;
    let (other, _) = form_sign_in(&gw, "bob").await;
    // Cookie names are case-sensitive: this is someone else's cookie.
    let r = browser()
        .get(gw.url("/protected"))
        .header("cookie", format!("__host-authgate={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The refresh cookie is not an access token.
    let r = browser()
        .get(gw.url("/protected"))
        .header("cookie", format!("__Host-authgate-refresh={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Two sessions in one request: which would be checked? Neither.
    let r = browser()
        .get(gw.url("/protected"))
        .header(
            "cookie",
            format!("__Host-authgate={access}; __Host-authgate={other}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn csrf_rejections_and_form_logins_are_counted_in_metrics() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.admin = Some("listen = \"127.0.0.1:0\"\n".into());
    cfg.rest.push_str(&format!("\n[session]\n{ON}\n"));
    let gw = Gateway::start(&cfg);
    let (access, _) = form_sign_in(&gw, "alice").await;
    let r = browser()
        .post(gw.url("/login"))
        .header("origin", origin(&gw))
        .form_body(&[("username", "alice"), ("password", "wrong password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = browser()
        .delete(gw.url("/protected/x"))
        .header("cookie", format!("__Host-authgate={access}"))
        .header("origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        value("authgate_auth_failures_total{reason=\"csrf_rejected\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(value("authgate_logins_total{outcome=\"success\"}"), 1.0);
    assert_eq!(
        value("authgate_logins_total{outcome=\"invalid_credentials\"}"),
        1.0
    );
}
