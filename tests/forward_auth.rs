//! Forward-auth endpoints attacked directly, no proxy in front (SPEC §15): only a
//! trusted peer's description is believed, the description must be single and
//! unambiguous, the query never chooses the route, and the answer is the proxy's
//! own decision — 200 with the verified identity, else 401/403, never a 200 by
//! default.
mod common;
use common::*;

/// The harness's routes plus a POST-only route, a route without upstream, forward-auth
/// on its defaults (loopback trusted) and the sign-in page.
fn config(up: &Upstream, forward_auth: &str) -> Cfg {
    let mut cfg = Cfg::new(up.addr);
    cfg.rest.push_str(
        "\n[[route]]\npath = \"/writes\"\nupstream = \"app\"\nmethods = [\"POST\"]\n\n\
         [[route]]\npath = \"/checks-only\"\n\n\
         [session]\ncookie = true\nlogin_page = true\n\n",
    );
    cfg.rest.push_str(forward_auth);
    cfg.admin = Some("listen = \"127.0.0.1:0\"\n".into());
    cfg
}

const FA: &str = "[forward_auth]\n";

/// alice (roles user) and root (roles admin): their access tokens.
async fn tokens(gw: &Gateway) -> (String, String) {
    for (name, roles) in [("alice", "user"), ("root", "admin")] {
        token_for(gw, name).await;
        let out = gw.cli(&["users", "set-roles", name, roles], None);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let (alice, _) = token_for(gw, "alice").await;
    let (root, _) = token_for(gw, "root").await;
    (alice, root)
}

/// An nginx-style check of `method uri` with extra header lines.
fn nginx(gw: &Gateway, method: &str, uri: &str, extra: &[&str]) -> Raw {
    let om = format!("X-Original-Method: {method}");
    let ou = format!("X-Original-URI: {uri}");
    let mut h = vec![om.as_str(), ou.as_str()];
    h.extend_from_slice(extra);
    get(gw.addr, "/authz/nginx", &h)
}

/// A Traefik/Caddy-style check.
fn forward(gw: &Gateway, method: &str, uri: &str, extra: &[&str]) -> Raw {
    let om = format!("X-Forwarded-Method: {method}");
    let ou = format!("X-Forwarded-Uri: {uri}");
    let mut h = vec![
        om.as_str(),
        ou.as_str(),
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: app.test",
    ];
    h.extend_from_slice(extra);
    get(gw.addr, "/authz/forward", &h)
}

fn bearer_line(t: &str) -> String {
    format!("Authorization: Bearer {t}")
}

#[tokio::test]
async fn a_peer_outside_trusted_is_refused_whatever_it_describes() {
    let up = Upstream::start();
    // Never sent traffic: it only excludes 127.0.0.1, the peer of every request here.
    let gw = Gateway::start(&config(
        &up,
        "[forward_auth]\ntrusted = [\"10.9.9.9/32\"]\n",
    ));
    let (_, root) = tokens(&gw).await;
    let auth = bearer_line(&root);
    for r in [
        nginx(&gw, "GET", "/admin", &[&auth]),
        nginx(&gw, "GET", "/public", &[]),
        forward(&gw, "GET", "/public", &[]),
    ] {
        assert_eq!(r.status, 403, "{r:?}");
        assert!(r.header("x-user").is_none(), "{r:?}");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_missing_repeated_or_unparsable_description_is_refused_with_403() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, FA));
    let (_, root) = tokens(&gw).await;
    let auth = bearer_line(&root);
    let a = auth.as_str();
    for (path, headers) in [
        ("/authz/nginx", vec![a]),
        ("/authz/nginx", vec![a, "X-Original-URI: /public"]),
        ("/authz/nginx", vec![a, "X-Original-Method: GET"]),
        (
            "/authz/nginx",
            vec![
                a,
                "X-Original-Method: GET",
                "X-Original-Method: POST",
                "X-Original-URI: /public",
            ],
        ),
        (
            "/authz/nginx",
            vec![
                a,
                "X-Original-Method: GET",
                "X-Original-URI: /public",
                "X-Original-URI: /admin",
            ],
        ),
        (
            "/authz/nginx",
            vec![a, "X-Original-Method: GET", "X-Original-URI: public"],
        ),
        (
            "/authz/nginx",
            vec![a, "X-Original-Method: G(T", "X-Original-URI: /public"],
        ),
        // The other dialect's headers are not a description for this endpoint.
        (
            "/authz/forward",
            vec![a, "X-Original-Method: GET", "X-Original-URI: /public"],
        ),
        (
            "/authz/forward",
            vec![
                a,
                "X-Forwarded-Method: GET",
                "X-Forwarded-Uri: /public",
                "X-Forwarded-Host: a.test",
                "X-Forwarded-Host: b.test",
            ],
        ),
    ] {
        let r = get(gw.addr, path, &headers);
        assert_eq!(r.status, 403, "{path} {headers:?}: {r:?}");
        assert!(r.header("x-user").is_none());
    }
}

#[tokio::test]
async fn the_query_string_never_chooses_the_route() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, FA));
    let (alice, _) = tokens(&gw).await;
    let auth = bearer_line(&alice);
    // Decided as /public: anonymous passes.
    assert_eq!(nginx(&gw, "GET", "/public?x=/admin", &[]).status, 200);
    assert_eq!(forward(&gw, "GET", "/public?x=/../admin", &[]).status, 200);
    // Decided as /admin: anonymous is 401, alice (no admin role) 403.
    assert_eq!(nginx(&gw, "GET", "/admin?/public", &[]).status, 401);
    assert_eq!(nginx(&gw, "GET", "/admin?x=/public", &[&auth]).status, 403);
    assert_eq!(forward(&gw, "GET", "/admin#/public", &[&auth]).status, 403);
}

#[tokio::test]
async fn ambiguous_paths_are_refused_and_dot_segments_are_decided_on_the_canonical_path() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, FA));
    let (alice, _) = tokens(&gw).await;
    let auth = bearer_line(&alice);
    for uri in [
        "/public%2F..%2Fadmin",
        "/public%2f..%2fadmin",
        "/public%00",
        "/public%5C..%5Cadmin",
        "/../public",
        "/public/../../admin",
    ] {
        assert_eq!(nginx(&gw, "GET", uri, &[]).status, 403, "{uri}");
        assert_eq!(forward(&gw, "GET", uri, &[]).status, 403, "{uri}");
    }
    // /public/../admin is /admin: not public.
    assert_eq!(nginx(&gw, "GET", "/public/../admin", &[]).status, 401);
    assert_eq!(
        nginx(&gw, "GET", "/public/%2e%2e/admin", &[&auth]).status,
        403
    );
    assert_eq!(forward(&gw, "GET", "//public/./x", &[]).status, 200);
}

#[tokio::test]
async fn a_method_outside_the_routes_methods_is_no_route_and_403() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, FA));
    let (alice, _) = tokens(&gw).await;
    let auth = bearer_line(&alice);
    assert_eq!(nginx(&gw, "GET", "/writes", &[&auth]).status, 403);
    assert_eq!(nginx(&gw, "POST", "/writes", &[&auth]).status, 200);
    assert_eq!(forward(&gw, "DELETE", "/writes/1", &[&auth]).status, 403);
    // And no route at all.
    let r = nginx(&gw, "GET", "/nowhere", &[&auth]);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.header("x-user").is_none());
}

#[tokio::test]
async fn a_valid_token_gets_200_with_its_identity_and_never_the_clients_own_x_user() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, FA));
    let (alice, _) = tokens(&gw).await;
    let auth = bearer_line(&alice);
    let spoof = ["X-User: admin", "X-User-Roles: admin", "X_User: admin"];
    for r in [
        nginx(
            &gw,
            "GET",
            "/protected/x?y=1",
            &[&auth, spoof[0], spoof[1], spoof[2]],
        ),
        forward(
            &gw,
            "GET",
            "/protected/x",
            &[&auth, spoof[0], spoof[1], spoof[2]],
        ),
    ] {
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let users: Vec<&str> = r
            .headers
            .iter()
            .filter(|(k, _)| k.replace('_', "-") == "x-user")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(users, vec!["alice"], "{r:?}");
        assert_eq!(r.header("x-user-roles"), Some("user"));
    }
    // Anonymous on an optional route, and anyone on a public one: no identity at all.
    for r in [
        nginx(&gw, "GET", "/optional", &[spoof[0]]),
        nginx(&gw, "GET", "/public", &[&auth, spoof[0]]),
    ] {
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.header("x-user").is_none(), "{r:?}");
        assert!(r.header("x-user-roles").is_none(), "{r:?}");
    }
    // A bad token is a 401 with the RFC 6750 challenge, as on the proxy.
    let r = forward(&gw, "GET", "/protected", &["Authorization: Bearer nope"]);
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    assert_eq!(r.json()["error"], "invalid_token");
    // Nothing was forwarded by any of this.
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_claim_requirement_refuses_with_403_and_passes_with_the_claim() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, FA));
    let (alice, root) = tokens(&gw).await;
    let r = nginx(&gw, "GET", "/admin", &[&bearer_line(&alice)]);
    assert_eq!(r.status, 403, "{r:?}");
    let r = forward(&gw, "GET", "/admin", &[&bearer_line(&alice)]);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "insufficient_scope");
    let r = nginx(&gw, "GET", "/admin", &[&bearer_line(&root)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-user"), Some("root"));
}

#[tokio::test]
async fn a_browser_navigation_gets_401_with_location_from_nginx_and_302_from_forward() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, FA));
    let html = "Accept: text/html,application/xhtml+xml";
    let r = nginx(&gw, "GET", "/protected/page?a=1", &[html]);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("/login?return_to=/protected/page%3Fa%3D1")
    );
    let r = forward(&gw, "GET", "/protected/page?a=1", &[html]);
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("/login?return_to=/protected/page%3Fa%3D1")
    );
    // An API client keeps the 401 without a Location.
    let r = nginx(&gw, "GET", "/protected/page", &[]);
    assert_eq!(r.status, 401);
    assert!(r.header("location").is_none());
    // A session cookie is a credential here as on the proxy.
    let (alice, _) = tokens(&gw).await;
    let cookie = format!("Cookie: __Host-authgate={alice}");
    let r = nginx(&gw, "GET", "/protected/page", &[html, &cookie]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-user"), Some("alice"));
}

#[tokio::test]
async fn a_route_without_upstream_answers_checks_and_is_404_when_proxied() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, FA));
    let (alice, _) = tokens(&gw).await;
    let auth = bearer_line(&alice);
    assert_eq!(nginx(&gw, "GET", "/checks-only/x", &[&auth]).status, 200);
    assert_eq!(nginx(&gw, "GET", "/checks-only/x", &[]).status, 401);
    let r = get(gw.addr, "/checks-only/x", &[&auth]);
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["error"], "not_found");
    assert_eq!(up.count(), 0);
    // Outcomes are counted per route.
    let m = get(gw.admin.unwrap(), "/metrics", &[]);
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.lines()
            .any(|l| l.starts_with("authgate_forward_auth_total")
                && l.contains("route=\"/checks-only\"")
                && l.contains("outcome=\"allowed\"")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("authgate_forward_auth_total")
                && l.contains("outcome=\"unauthenticated\"")),
        "{text}"
    );
}

#[tokio::test]
async fn without_a_forward_auth_section_the_endpoints_do_not_exist() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, ""));
    let r = nginx(&gw, "GET", "/public", &[]);
    assert_eq!(r.status, 404, "{r:?}");
}

#[tokio::test]
async fn explain_forward_auth_agrees_with_what_the_endpoint_answers() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, FA));
    let (alice, root) = tokens(&gw).await;
    let auth_alice = format!("Authorization: Bearer {alice}");
    let auth_root = format!("Authorization: Bearer {root}");
    // (method, described URI, credentials header, the live answer's status)
    let cases: [(&str, &str, Option<&str>, u16); 6] = [
        ("GET", "/admin?x=/public", Some(&auth_root), 200),
        ("GET", "/admin", Some(&auth_alice), 403),
        ("GET", "/protected", None, 401),
        ("GET", "/public%2F..%2Fadmin", None, 403),
        ("GET", "/nowhere-at-all", Some(&auth_root), 403),
        ("GET", "/writes", Some(&auth_root), 403),
    ];
    for (method, uri, cred, status) in cases {
        let extra: Vec<&str> = cred.into_iter().collect();
        let live = nginx(&gw, method, uri, &extra);
        assert_eq!(live.status, status, "{method} {uri}: {live:?}");
        let mut args = vec!["explain", "--forward-auth", method, uri];
        if let Some(c) = cred {
            args.extend(["-H", c]);
        }
        let out = gw.cli(&args, None);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let said_refused = out
            .stdout
            .lines()
            .find(|l| l.starts_with("refused"))
            .map(|l| l.to_string());
        match status {
            200 => assert!(
                said_refused.is_none() && out.stdout.contains("answers   200"),
                "{uri}: {}",
                out.stdout
            ),
            s => assert!(
                said_refused
                    .as_deref()
                    .is_some_and(|l| l.starts_with(&format!("refused   {s}"))),
                "{uri}: expected refused {s}: {}",
                out.stdout
            ),
        }
        // The token is never echoed.
        assert!(!out.stdout.contains(&alice) && !out.stdout.contains(&root));
    }
    // Without a [forward_auth] section there is nothing to explain: one line, exit 1.
    let plain = Gateway::start(&config(&up, ""));
    let out = plain.cli(&["explain", "--forward-auth", "GET", "/public"], None);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("no [forward_auth] section"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_routes_rate_limit_is_part_of_the_forward_auth_decision() {
    let up = Upstream::start();
    let mut cfg = config(&up, FA);
    cfg.rest.push_str(
        "\n[[route]]\npath = \"/limited\"\nupstream = \"app\"\n\
         rate_limit = { rate = \"1/hour\", burst = 2, per = \"user\" }\n",
    );
    let gw = Gateway::start(&cfg);
    let (alice, root) = tokens(&gw).await;
    let auth = bearer_line(&alice);
    for _ in 0..2 {
        let r = nginx(&gw, "GET", "/limited/x", &[&auth]);
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.header("ratelimit-policy").is_some(), "{r:?}");
    }
    // nginx's auth_request understands only 401 and 403: over the limit is a 403.
    let r = nginx(&gw, "GET", "/limited/x", &[&auth]);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["error"], "rate_limited");
    assert!(r.header("x-user").is_none(), "{r:?}");
    // The forward dialect (Traefik, Caddy) passes the 429 with Retry-After on.
    let r = forward(&gw, "GET", "/limited/x", &[&auth]);
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    // Another user has a budget of their own.
    let r = nginx(&gw, "GET", "/limited/x", &[&bearer_line(&root)]);
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn an_api_key_passes_forward_auth_only_on_a_route_that_takes_keys() {
    let up = Upstream::start();
    let mut cfg = config(&up, FA);
    cfg.identity.push_str("revocation_poll = \"200ms\"\n");
    cfg.forward.push_str("issuer_header = \"X-User-Issuer\"\n");
    cfg.rest.push_str(
        "\n[api_keys]\nenabled = true\n\n\
         [[route]]\npath = \"/keys\"\nupstream = \"app\"\ncredentials = [\"token\", \"api_key\"]\n",
    );
    let gw = Gateway::start(&cfg);
    let out = gw.cli(&["users", "add", "ci-bot", "--service"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = gw.cli(&["apikeys", "create", "ci-bot"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let key = out.stdout.trim().to_string();
    assert!(key.starts_with("agk_"), "{key}");
    let auth = bearer_line(&key);
    // The gateway learns a new key within revocation_poll.
    let mut allowed = None;
    for _ in 0..50 {
        let r = nginx(&gw, "GET", "/keys/x", &[&auth]);
        if r.status == 200 {
            allowed = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = allowed.expect("the key is accepted within revocation_poll");
    assert_eq!(r.header("x-user"), Some("ci-bot"), "{r:?}");
    assert_eq!(r.header("x-user-issuer"), Some("apikey"), "{r:?}");
    // A token-only route refuses it, as the proxy would.
    let r = nginx(&gw, "GET", "/protected", &[&auth]);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("x-user").is_none(), "{r:?}");
    // A forged key never passes.
    let mut forged = key.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let r = nginx(&gw, "GET", "/keys/x", &[&bearer_line(&forged)]);
    assert_eq!(r.status, 401, "{r:?}");
}
