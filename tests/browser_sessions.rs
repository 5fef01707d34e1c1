//! Browser sessions (SPEC §12): cookie login (JSON and form), the cookie in place
//! of a bearer token, the sign-in page and its redirect, refresh and logout by
//! cookie, and sessions turned off. The attacks are in `session_attacks.rs`.
mod common;
use common::*;

use common::browser::*;

#[tokio::test]
async fn json_login_with_session_sets_both_cookies_with_exact_attributes_and_no_token_in_the_body()
{
    let (_up, gw) = gateway(ON, None);
    register(&gw, "alice", PW).await;
    let r = browser()
        .post(gw.url("/login"))
        .header("origin", origin(&gw))
        .json(&serde_json::json!({"username": "alice", "password": PW, "session": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let cookies = set_cookies(r.headers());
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    let (access, attrs) = cookie_parts(r.headers(), "__Host-authgate");
    assert_eq!(
        attrs,
        " Max-Age=900; Path=/; Secure; HttpOnly; SameSite=Lax"
    );
    assert_eq!(access.split('.').count(), 3, "a JWS: {access}");
    let (refresh, attrs) = cookie_parts(r.headers(), "__Host-authgate-refresh");
    assert_eq!(
        attrs,
        " Max-Age=1209600; Path=/; Secure; HttpOnly; SameSite=Strict"
    );
    assert!(!refresh.is_empty());
    let body = r.text().await.unwrap();
    assert!(
        !body.contains(&access) && !body.contains(&refresh),
        "{body}"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["session"], true);
    assert_eq!(v["username"], "alice");
    assert_eq!(v["expires_in"], 900);
    // Without "session": the SPEC §3 body, and no cookie.
    let r = login(&gw, "alice", PW).await;
    assert!(r.headers().get("set-cookie").is_none());
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["access_token"].is_string());
}

#[tokio::test]
async fn json_login_session_must_be_a_boolean() {
    let (_up, gw) = gateway(ON, None);
    register(&gw, "alice", PW).await;
    let r = browser()
        .post(gw.url("/login"))
        .header("origin", origin(&gw))
        .json(&serde_json::json!({"username": "alice", "password": PW, "session": "yes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn form_login_sets_cookies_and_answers_303_to_return_to() {
    let (up, gw) = gateway(ON, None);
    register(&gw, "alice", PW).await;
    let r = browser()
        .post(gw.url("/login"))
        .header("origin", origin(&gw))
        .form_body(&[
            ("username", "ALICE"),
            ("password", PW),
            ("return_to", "/protected/page?x=1&y=2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/protected/page?x=1&y=2");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let (access, attrs) = cookie_parts(r.headers(), "__Host-authgate");
    assert_eq!(
        attrs,
        " Max-Age=900; Path=/; Secure; HttpOnly; SameSite=Lax"
    );
    let (_, attrs) = cookie_parts(r.headers(), "__Host-authgate-refresh");
    assert_eq!(
        attrs,
        " Max-Age=1209600; Path=/; Secure; HttpOnly; SameSite=Strict"
    );
    // The cookie now opens the protected route, as a bearer token would.
    let r = browser()
        .get(gw.url("/protected/page?x=1&y=2"))
        .header("cookie", format!("__Host-authgate={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-user").as_deref(), Some("alice"));
}

#[tokio::test]
async fn form_login_without_return_to_lands_on_root() {
    let (_up, gw) = gateway(ON, None);
    register(&gw, "alice", PW).await;
    let r = browser()
        .post(gw.url("/login"))
        .header("origin", origin(&gw))
        .form_body(&[("username", "alice"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
}

#[tokio::test]
async fn failed_form_login_shows_the_form_again_with_the_error() {
    let (_up, gw) = gateway(ON, None);
    register(&gw, "alice", PW).await;
    let r = browser()
        .post(gw.url("/login"))
        .header("origin", origin(&gw))
        .form_body(&[
            ("username", "alice"),
            ("password", "wrong password"),
            ("return_to", "/protected"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        r.headers()["content-security-policy"],
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    );
    let html = r.text().await.unwrap();
    assert!(
        html.contains("role=\"alert\">Invalid username or password</p>"),
        "{html}"
    );
    assert!(html.contains("name=\"return_to\" value=\"/protected\""));
    assert!(html.contains("value=\"alice\""), "the username is kept");
    assert!(
        !html.contains("wrong password"),
        "the password is never echoed"
    );
}

#[tokio::test]
async fn throttled_form_login_shows_the_form_with_429_as_the_json_login_does() {
    let (_up, gw) = gateway(
        ON,
        Some("login_per_ip = \"off\"\nlogin_per_user = \"2/hour\"\nregister_per_ip = \"off\"\n"),
    );
    register(&gw, "alice", PW).await;
    let post = |pw: &'static str| {
        browser()
            .post(gw.url("/login"))
            .header("origin", origin(&gw))
            .form_body(&[("username", "alice"), ("password", pw)])
            .send()
    };
    // One failure by form, one by JSON: the limit is shared.
    assert_eq!(post("wrong one").await.unwrap().status(), 401);
    assert_eq!(login(&gw, "alice", "wrong two").await.status(), 401);
    let r = post(PW).await.unwrap();
    assert_eq!(r.status(), 429, "the right password too, past the limit");
    assert!(r.headers().get("retry-after").is_some());
    assert!(r.headers().get("set-cookie").is_none());
    let html = r.text().await.unwrap();
    assert!(html.contains("Too many attempts"), "{html}");
    assert_eq!(login(&gw, "alice", PW).await.status(), 429);
}

#[tokio::test]
async fn login_per_ip_throttles_form_logins_too_malformed_ones_included() {
    let (_up, gw) = gateway(
        ON,
        Some("login_per_ip = \"2/hour\"\nlogin_per_user = \"off\"\nregister_per_ip = \"off\"\n"),
    );
    register(&gw, "alice", PW).await;
    let post = |pairs: Vec<(&'static str, &'static str)>| {
        browser()
            .post(gw.url("/login"))
            .header("origin", origin(&gw))
            .form_body(&pairs)
            .send()
    };
    // A form without a password is refused on the page, and still counts.
    let r = post(vec![("username", "alice")]).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("username and password are required"));
    let r = post(vec![("username", "alice"), ("password", PW)])
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = post(vec![
        ("username", "alice"),
        ("password", PW),
        ("return_to", "/protected"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let html = r.text().await.unwrap();
    assert!(
        html.contains("name=\"return_to\" value=\"/protected\""),
        "{html}"
    );
    assert!(html.contains("value=\"alice\""));
    // JSON logins share the budget.
    assert_eq!(login(&gw, "alice", PW).await.status(), 429);
}

#[tokio::test]
async fn the_session_cookie_is_accepted_wherever_a_bearer_token_is() {
    let (up, gw) = gateway("cookie = true", None);
    let (access, _) = form_sign_in(&gw, "alice").await;
    for path in ["/protected", "/optional"] {
        let r = browser()
            .get(gw.url(path))
            .header("cookie", format!("__Host-authgate={access}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(up.last().header("x-user").as_deref(), Some("alice"));
    }
    // Route requirements apply as for a bearer token.
    let r = browser()
        .get(gw.url("/admin"))
        .header("cookie", format!("__Host-authgate={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A bad cookie is a bad token.
    let r = browser()
        .get(gw.url("/protected"))
        .header("cookie", "__Host-authgate=not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_token");
}

#[tokio::test]
async fn an_authorization_header_wins_over_the_cookie() {
    let (up, gw) = gateway("cookie = true", None);
    let (alice, _) = form_sign_in(&gw, "alice").await;
    let (bob, _) = token_for(&gw, "bob").await;
    let get = |auth: Option<String>| {
        let mut b = browser()
            .get(gw.url("/protected"))
            .header("cookie", format!("__Host-authgate={alice}"));
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.send()
    };
    let r = get(Some(format!("Bearer {bob}"))).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-user").as_deref(), Some("bob"));
    // A bad bearer token does not fall back to the good cookie.
    let r = get(Some("Bearer not.a.token".into())).await.unwrap();
    assert_eq!(r.status(), 401);
    // Nor does another scheme: the cookie is ignored whenever the header is there.
    let r = get(Some("Basic YWxpY2U6eA==".into())).await.unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "missing_token");
}

#[tokio::test]
async fn session_cookies_never_reach_the_upstream_and_other_cookies_do_in_order() {
    let (up, gw) = gateway("cookie = true", None);
    let (access, refresh) = form_sign_in(&gw, "alice").await;
    let cookie = format!(
        "theme=dark; __Host-authgate={access}; lang=en; __Host-authgate-refresh={refresh}; z=1"
    );
    for path in ["/protected", "/public", "/optional"] {
        let r = browser()
            .get(gw.url(path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let seen = up.last();
        assert_eq!(
            seen.header_all("cookie"),
            vec!["theme=dark; lang=en; z=1"],
            "{path}"
        );
        for (_, v) in seen.headers.iter() {
            let v = String::from_utf8_lossy(v.as_bytes());
            assert!(!v.contains(&access) && !v.contains(&refresh), "{path}: {v}");
        }
    }
    // Only session cookies: no Cookie header at all upstream.
    let r = browser()
        .get(gw.url("/protected"))
        .header("cookie", format!("__Host-authgate={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(up.last().header("cookie").is_none());
}

#[tokio::test]
async fn a_non_ascii_byte_in_another_cookie_neither_hides_the_session_nor_is_lost() {
    // obs-text is allowed in a field value (RFC 9110 §5.5), so another site's cookie
    // may carry it; the session cookie beside it still counts and is still stripped.
    let (up, gw) = gateway("cookie = true", None);
    let (access, _) = form_sign_in(&gw, "alice").await;
    let mut raw = b"n=caf\xe9; __Host-authgate=".to_vec();
    raw.extend_from_slice(access.as_bytes());
    let r = browser()
        .get(gw.url("/protected"))
        .header(
            "cookie",
            reqwest::header::HeaderValue::from_bytes(&raw).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.last();
    assert_eq!(seen.header("x-user").as_deref(), Some("alice"));
    let forwarded: Vec<&[u8]> = seen
        .headers
        .get_all("cookie")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    assert_eq!(forwarded, vec![&b"n=caf\xe9"[..]]);
}

#[tokio::test]
async fn a_browser_navigation_without_a_session_is_sent_to_the_sign_in_page() {
    let (up, gw) = gateway(ON, None);
    let html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let r = browser()
        .get(gw.url("/protected/a b?x=1&next=/y"))
        .header("accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "/login?return_to=/protected/a%2520b%3Fx%3D1%26next%3D/y"
    );
    // An expired or bad session is the same as none.
    let r = browser()
        .get(gw.url("/protected"))
        .header("accept", html)
        .header("cookie", "__Host-authgate=not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/login?return_to=/protected");
    // API clients keep the 401 JSON; so do non-GET requests and optional routes.
    for (method, path, accept) in [
        ("GET", "/protected", "application/json"),
        ("GET", "/protected", "*/*"),
        ("POST", "/protected", html),
    ] {
        let r = browser()
            .request(method.parse().unwrap(), gw.url(path))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {accept}");
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
    }
    let r = browser()
        .get(gw.url("/optional"))
        .header("accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A signed-in browser goes through.
    let (access, _) = form_sign_in(&gw, "alice").await;
    let r = browser()
        .get(gw.url("/protected"))
        .header("accept", html)
        .header("cookie", format!("__Host-authgate={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("x-user").as_deref(), Some("alice"));
}

#[tokio::test]
async fn without_login_page_navigations_get_the_401() {
    let (_up, gw) = gateway("cookie = true", None);
    let r = browser()
        .get(gw.url("/protected"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = browser().get(gw.url("/login")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
}

#[tokio::test]
async fn the_sign_in_page_is_one_form_with_the_exact_csp_and_return_to_carried() {
    let (_up, gw) = gateway(ON, None);
    let r = browser()
        .get(gw.url("/login?return_to=%2Fprotected%3Fx%3D1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        h["content-security-policy"],
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["referrer-policy"], "same-origin");
    assert_eq!(h["x-frame-options"], "DENY");
    let html = r.text().await.unwrap();
    assert!(
        html.contains("<form method=\"post\" action=\"/login\">"),
        "{html}"
    );
    assert!(html.contains("name=\"return_to\" value=\"/protected?x=1\""));
    assert!(html.contains("<label for=\"username\">") && html.contains("<label for=\"password\">"));
    assert!(
        html.contains("autocomplete=\"username\"")
            && html.contains("autocomplete=\"current-password\"")
    );
    assert!(!html.to_lowercase().contains("<script"));
    assert_eq!(html.matches("<form").count(), 1);
    // HEAD has the headers; other methods are told what is allowed.
    let r = browser().head(gw.url("/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-security-policy"],
        h["content-security-policy"]
    );
    let r = browser().put(gw.url("/login")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, POST");
}

#[tokio::test]
async fn refresh_by_cookie_rotates_and_sets_new_cookies() {
    let (_up, gw) = gateway(ON, None);
    let (access, refresh) = form_sign_in(&gw, "alice").await;
    let r = browser()
        .post(gw.url("/token/refresh"))
        .header("origin", origin(&gw))
        .header(
            "cookie",
            format!("__Host-authgate={access}; __Host-authgate-refresh={refresh}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (new_access, attrs) = cookie_parts(r.headers(), "__Host-authgate");
    assert_eq!(
        attrs,
        " Max-Age=900; Path=/; Secure; HttpOnly; SameSite=Lax"
    );
    let (new_refresh, attrs) = cookie_parts(r.headers(), "__Host-authgate-refresh");
    assert_eq!(
        attrs,
        " Max-Age=1209600; Path=/; Secure; HttpOnly; SameSite=Strict"
    );
    assert_ne!(new_refresh, refresh);
    assert_eq!(new_access.split('.').count(), 3);
    let body = r.text().await.unwrap();
    assert!(!body.contains(&new_refresh) && !body.contains(&new_access));
    // The old refresh cookie is spent: presenting it again is a reuse.
    let r = browser()
        .post(gw.url("/token/refresh"))
        .header("origin", origin(&gw))
        .header("cookie", format!("__Host-authgate-refresh={refresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_grant");
    // No refresh cookie at all: invalid_grant.
    let r = browser()
        .post(gw.url("/token/refresh"))
        .header("origin", origin(&gw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A JSON body still works as before (SPEC §3).
    let (_, json_refresh) = token_for(&gw, "bob").await;
    let r = client()
        .post(gw.url("/token/refresh"))
        .json(&serde_json::json!({ "refresh_token": json_refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn logout_by_cookie_revokes_the_family_and_clears_both_cookies() {
    let (_up, gw) = gateway(ON, None);
    let (access, refresh) = form_sign_in(&gw, "alice").await;
    let r = browser()
        .post(gw.url("/logout"))
        .header("origin", origin(&gw))
        .header(
            "cookie",
            format!("__Host-authgate={access}; __Host-authgate-refresh={refresh}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        set_cookies(r.headers()),
        vec![
            "__Host-authgate=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax",
            "__Host-authgate-refresh=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict",
        ]
    );
    // The family is revoked: the refresh cookie no longer refreshes.
    let r = browser()
        .post(gw.url("/token/refresh"))
        .header("origin", origin(&gw))
        .header("cookie", format!("__Host-authgate-refresh={refresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Logging out again: invalid_grant, and the cookies are cleared all the same.
    let r = browser()
        .post(gw.url("/logout"))
        .header("origin", origin(&gw))
        .header("cookie", format!("__Host-authgate-refresh={refresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(set_cookies(r.headers()).len(), 2);
}

#[tokio::test]
async fn a_sign_out_button_logs_out_and_goes_to_the_sign_in_page() {
    let (_up, gw) = gateway(ON, None);
    let (_, refresh) = form_sign_in(&gw, "alice").await;
    let r = browser()
        .post(gw.url("/logout"))
        .header("origin", origin(&gw))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("__Host-authgate-refresh={refresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    assert_eq!(set_cookies(r.headers()).len(), 2);
    let r = browser()
        .post(gw.url("/token/refresh"))
        .header("origin", origin(&gw))
        .header("cookie", format!("__Host-authgate-refresh={refresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn with_cookies_off_none_are_set_and_none_are_accepted() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let (access, refresh) = token_for(&gw, "alice").await;
    let r = browser()
        .post(gw.url("/login"))
        .header("origin", origin(&gw))
        .json(&serde_json::json!({"username": "alice", "password": PW, "session": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("set-cookie").is_none());
    let r = browser()
        .post(gw.url("/login"))
        .header("origin", origin(&gw))
        .form_body(&[("username", "alice"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(r.headers().get("set-cookie").is_none());
    let r = browser()
        .get(gw.url("/protected"))
        .header("accept", "text/html")
        .header("cookie", format!("__Host-authgate={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "a valid token in the cookie is not accepted"
    );
    let r = browser()
        .post(gw.url("/token/refresh"))
        .header("origin", origin(&gw))
        .header("cookie", format!("__Host-authgate-refresh={refresh}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        415,
        "a bodiless refresh is not a cookie refresh"
    );
    let r = browser().get(gw.url("/login")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    // Still stripped before forwarding: a leftover cookie never reaches a backend.
    let r = browser()
        .get(gw.url("/public"))
        .header("cookie", format!("a=1; __Host-authgate={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.last().header("cookie").as_deref(), Some("a=1"));
}

#[test]
fn check_reports_session_errors_with_their_lines() {
    let dir = TempDir::new("session-check");
    let mut cfg = Cfg::new(dead_addr());
    cfg.rest.push_str(
        "\n[session]\ncookie = false\nlogin_page = true\nallowed_origins = [\"https://app.example.com/\", \"https://ok.example.com\"]\ncolour = 1\n",
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, cfg.render()).unwrap();
    let out = run_cli(&path, &["check"], None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    let text = cfg.render();
    let line_of = |needle: &str| text.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    let has = |key: &str, line: usize| {
        lines
            .iter()
            .any(|l| l.contains(&format!("gateway.toml:{line}:")) && l.contains(key))
    };
    assert!(
        has(
            "session.login_page: needs session.cookie = true",
            line_of("login_page")
        ),
        "{}",
        out.stderr
    );
    assert!(
        has("session.allowed_origins[0]", line_of("allowed_origins")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("allowed_origins[1]"), "{}", out.stderr);
    assert!(
        has("session.colour: unknown key", line_of("colour")),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn explain_knows_the_session_cookie_and_its_rules() {
    let (_up, gw) = gateway(
        "cookie = true\nlogin_page = true\nallowed_origins = [\"https://app.example.com\"]",
        None,
    );
    let (access, _) = form_sign_in(&gw, "alice").await;
    let cookie = format!("Cookie: a=1; __Host-authgate={access}");
    let out = gw.cli(&["explain", "POST", "/protected", "-H", &cookie], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = |p: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no {p} line: {}", out.stdout))
            .to_string()
    };
    assert!(
        line("token").contains("valid for \"alice\""),
        "{}",
        out.stdout
    );
    let session = line("session");
    assert!(session.contains("csrf_rejected") && session.contains("https://app.example.com"));
    assert!(session.contains("302 /login?return_to="));
    assert!(line("removes").contains("__Host-authgate and __Host-authgate-refresh from Cookie"));
    // The header wins in explain too.
    let out = gw.cli(
        &[
            "explain",
            "GET",
            "/protected",
            "-H",
            &cookie,
            "-H",
            "Authorization: Bearer x.y.z",
        ],
        None,
    );
    assert!(
        out.stdout.contains("refused   401 invalid_token"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn demo_turns_sessions_on_and_keeps_them_on_across_a_reload() {
    let backend = dead_addr();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap();
    let config = shipped
        .replace(
            "listen = [\"127.0.0.1:8080\"]",
            "listen = [\"127.0.0.1:0\"]",
        )
        .replace("http://127.0.0.1:9000", &format!("http://{backend}"));
    let gw = Gateway::start_in(TempDir::new("demo-session"), &config, &[], "demo").unwrap();
    let navigate = || {
        browser()
            .get(gw.url("/protected"))
            .header("accept", "text/html")
            .send()
    };
    let r = navigate().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/login?return_to=/protected");
    assert!(gw.reload(&config));
    let r = navigate().await.unwrap();
    assert_eq!(r.status(), 302, "still on after SIGHUP");
    // The demo backend answers a browser with a page, an API client with JSON.
    let r = register(&gw, "alice", "correct horse").await;
    assert_eq!(r.status(), 201);
    let r = browser()
        .post(gw.url("/login"))
        .header("origin", origin(&gw))
        .form_body(&[("username", "alice"), ("password", "correct horse")])
        .send()
        .await
        .unwrap();
    let (access, _) = cookie_parts(r.headers(), "__Host-authgate");
    let r = browser()
        .get(gw.url("/protected"))
        .header("accept", "text/html")
        .header("cookie", format!("__Host-authgate={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let html = r.text().await.unwrap();
    assert!(html.contains("<h1>Hello, alice!</h1>"), "{html}");
    assert!(html.contains("action=\"/logout\""));
    // A plain `serve` of the same file keeps them off: it is the demo that turns them on.
    let plain = Gateway::start_in(TempDir::new("serve-session"), &config, &[], "serve").unwrap();
    let r = browser()
        .get(plain.url("/protected"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
