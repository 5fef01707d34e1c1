//! The per-route auth policy (SPEC §4): `required`, `optional`, `public`, and
//! `require` claims, seen from the client and from the upstream.
mod common;
use common::*;

use jsonwebtoken::Algorithm;
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

/// The test config plus `/scoped` (scope ∋ write) and `/gold` (roles ∋ admin and
/// tier ∈ {gold, platinum}).
fn gateway() -> (Upstream, Gateway, Signer) {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.rest.push_str(
        "\n[[route]]\npath = \"/scoped\"\nupstream = \"app\"\nrequire = { scope = [\"write\"] }\n\n\
         [[route]]\npath = \"/gold\"\nupstream = \"app\"\n\
         require = { roles = [\"admin\"], tier = [\"gold\", \"platinum\"] }\n",
    );
    let gw = Gateway::start(&cfg);
    let s = Signer::of_gateway(&gw, Algorithm::EdDSA);
    (up, gw, s)
}

/// Registers `user`, gives it `roles` (comma-separated, may be empty), logs in.
async fn user_token(gw: &Gateway, user: &str, roles: &str) -> String {
    let r = register(gw, user, PASSWORD).await;
    assert_eq!(r.status(), 201);
    if !roles.is_empty() {
        set_roles(gw, user, roles);
    }
    login_token(gw, user).await
}

fn set_roles(gw: &Gateway, user: &str, roles: &str) {
    let out = gw.cli(&["users", "set-roles", user, roles], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

async fn login_token(gw: &Gateway, user: &str) -> String {
    let r = login(gw, user, PASSWORD).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

fn assert_json_error(r: &Raw, status: u16, code: &str) {
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["error"], code);
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn expired(s: &Signer, user: &str, roles: &[&str]) -> String {
    let mut c = good_claims(user, roles);
    let t = now();
    c["iat"] = json!(t - 7200);
    c["nbf"] = json!(t - 7200);
    c["exp"] = json!(t - 3600);
    s.token(&c)
}

// ---------------------------------------------------------------- required

#[tokio::test]
async fn a_required_route_without_a_token_is_401_missing_token() {
    let (up, gw, _) = gateway();
    for extra in [&[][..], &["Authorization: Basic YWxpY2U6c2VjcmV0"][..]] {
        let r = get(gw.addr, "/protected/x", extra);
        assert_json_error(&r, 401, "missing_token");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"authgate\"")
        );
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_required_route_forwards_a_valid_token_with_user_and_roles() {
    let (up, gw, _) = gateway();
    let token = user_token(&gw, "alice", "user,editor").await;
    let r = get(gw.addr, "/protected/x?page=2", &[&bearer(&token)]);
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.uri, "/protected/x?page=2");
    assert_eq!(seen.header_all("x-user"), vec!["alice"]);
    assert_eq!(seen.header_all("x-user-roles"), vec!["user,editor"]);
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {token}"))
    );
}

#[tokio::test]
async fn a_user_without_roles_gets_an_empty_roles_header() {
    // The token's roles are `[]`: the upstream learns "no roles", not "unknown".
    let (up, gw, _) = gateway();
    let token = user_token(&gw, "carol", "").await;
    let r = get(gw.addr, "/protected", &[&bearer(&token)]);
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.header_all("x-user"), vec!["carol"]);
    assert_eq!(seen.header_all("x-user-roles"), vec![""]);
}

#[tokio::test]
async fn a_required_route_rejects_a_bad_token_with_401_invalid_token() {
    let (up, gw, s) = gateway();
    for token in [
        "garbage".to_string(),
        expired(&s, "alice", &[]),
        format!("{}x", s.token(&good_claims("alice", &[]))),
    ] {
        let r = get(gw.addr, "/protected", &[&bearer(&token)]);
        assert_json_error(&r, 401, "invalid_token");
        let c = r.header("www-authenticate").unwrap();
        assert!(
            c.starts_with(
                "Bearer realm=\"authgate\", error=\"invalid_token\", error_description=\""
            ),
            "{c}"
        );
    }
    assert_eq!(up.count(), 0);
}

// ---------------------------------------------------------------- require

#[tokio::test]
async fn a_user_without_the_required_role_gets_403_insufficient_scope() {
    let (up, gw, _) = gateway();
    let token = user_token(&gw, "alice", "user").await;
    let r = get(gw.addr, "/admin/panel", &[&bearer(&token)]);
    assert_json_error(&r, 403, "insufficient_scope");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"authgate\", error=\"insufficient_scope\"")
    );
    // No token at all is still 401, and the route's requirements are not revealed.
    let r = get(gw.addr, "/admin/panel", &[]);
    assert_json_error(&r, 401, "missing_token");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_user_with_the_required_role_reaches_the_route() {
    let (up, gw, _) = gateway();
    let token = user_token(&gw, "bob", "admin").await;
    let r = get(gw.addr, "/admin/panel", &[&bearer(&token)]);
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.uri, "/admin/panel");
    assert_eq!(seen.header_all("x-user"), vec!["bob"]);
    assert_eq!(seen.header_all("x-user-roles"), vec!["admin"]);
}

#[tokio::test]
async fn a_bad_token_on_a_route_with_requirements_is_401_not_403() {
    let (up, gw, s) = gateway();
    let r = get(
        gw.addr,
        "/admin",
        &[&bearer(&expired(&s, "bob", &["admin"]))],
    );
    assert_json_error(&r, 401, "invalid_token");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn new_roles_apply_to_tokens_issued_afterwards() {
    let (up, gw, _) = gateway();
    let before = user_token(&gw, "bob", "").await;
    assert_eq!(get(gw.addr, "/admin", &[&bearer(&before)]).status, 403);
    set_roles(&gw, "bob", "admin");
    // The old token still carries the old roles.
    assert_eq!(get(gw.addr, "/admin", &[&bearer(&before)]).status, 403);
    let after = login_token(&gw, "bob").await;
    assert_eq!(get(gw.addr, "/admin", &[&bearer(&after)]).status, 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn scope_claim_strings_are_split_on_spaces() {
    let (up, gw, s) = gateway();
    let with_scope = |scope: serde_json::Value| {
        let mut c = good_claims("alice", &[]);
        c["scope"] = scope;
        s.token(&c)
    };
    for (scope, status) in [
        (json!("read write"), 200),
        (json!("write"), 200),
        (json!("write read"), 200),
        (json!(["read", "write"]), 200),
        (json!("read"), 403),
        (json!("readwrite"), 403),
        (json!("read,write"), 403),
        (json!("writer"), 403),
        (json!(""), 403),
    ] {
        let before = up.count();
        let r = get(gw.addr, "/scoped/x", &[&bearer(&with_scope(scope.clone()))]);
        assert_eq!(r.status, status, "scope {scope}");
        if status == 200 {
            assert_eq!(up.last().header("x-user").as_deref(), Some("alice"));
        } else {
            assert_json_error(&r, 403, "insufficient_scope");
            assert_eq!(up.count(), before, "scope {scope} was forwarded");
        }
    }
    // No scope claim at all; and `write` as a role is not a scope.
    let r = get(
        gw.addr,
        "/scoped",
        &[&bearer(&s.token(&good_claims("alice", &["write"])))],
    );
    assert_json_error(&r, 403, "insufficient_scope");
}

#[tokio::test]
async fn every_required_claim_must_hold() {
    let (up, gw, s) = gateway();
    let token = |roles: &[&str], tier: Option<&str>| {
        let mut c = good_claims("alice", roles);
        if let Some(t) = tier {
            c["tier"] = json!(t);
        }
        s.token(&c)
    };
    for (roles, tier, status) in [
        (&["admin"][..], Some("gold"), 200),
        (&["user", "admin"][..], Some("platinum"), 200),
        (&["admin"][..], None, 403),
        (&["admin"][..], Some("silver"), 403),
        (&["user"][..], Some("gold"), 403),
        (&[][..], Some("gold"), 403),
    ] {
        let r = get(gw.addr, "/gold", &[&bearer(&token(roles, tier))]);
        assert_eq!(r.status, status, "{roles:?} {tier:?}");
    }
    assert_eq!(up.count(), 2);
}

// ---------------------------------------------------------------- optional

#[tokio::test]
async fn an_optional_route_forwards_anonymous_callers_without_identity() {
    let (up, gw, _) = gateway();
    for extra in [&[][..], &["Authorization: Basic YWxpY2U6c2VjcmV0"][..]] {
        let r = get(gw.addr, "/optional/x", extra);
        assert_eq!(r.status, 200);
        let seen = up.last();
        assert_eq!(seen.uri, "/optional/x");
        assert_eq!(seen.header("x-user"), None);
        assert_eq!(seen.header("x-user-roles"), None);
    }
}

#[tokio::test]
async fn an_optional_route_forwards_a_valid_token_with_identity() {
    let (up, gw, _) = gateway();
    let token = user_token(&gw, "alice", "user").await;
    let r = get(gw.addr, "/optional/x", &[&bearer(&token)]);
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.header_all("x-user"), vec!["alice"]);
    assert_eq!(seen.header_all("x-user-roles"), vec!["user"]);
}

#[tokio::test]
async fn an_optional_route_rejects_a_present_but_bad_token() {
    let (up, gw, s) = gateway();
    let mut wrong_aud = good_claims("alice", &[]);
    wrong_aud["aud"] = json!("other");
    for token in [
        "garbage".to_string(),
        expired(&s, "alice", &[]),
        s.token(&wrong_aud),
    ] {
        let r = get(gw.addr, "/optional/x", &[&bearer(&token)]);
        assert_json_error(&r, 401, "invalid_token");
        assert!(r
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\""));
    }
    assert_eq!(up.count(), 0);
}

// ---------------------------------------------------------------- public

#[tokio::test]
async fn a_public_route_forwards_without_looking_at_tokens() {
    let (up, gw, s) = gateway();
    for token in [
        "garbage".to_string(),
        expired(&s, "alice", &[]),
        s.token(&good_claims("alice", &["admin"])),
    ] {
        let r = get(gw.addr, "/public/x", &[&bearer(&token)]);
        assert_eq!(r.status, 200);
        let seen = up.last();
        assert_eq!(seen.header("x-user"), None);
        assert_eq!(seen.header("x-user-roles"), None);
    }
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn a_cached_token_stops_working_when_it_expires() {
    authgate::install_crypto();
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.tokens.push_str("leeway = \"0s\"\n");
    let gw = Gateway::start(&cfg);
    let signer = Signer::of_gateway(&gw, jsonwebtoken::Algorithm::EdDSA);
    let mut claims = good_claims("shortlived", &[]);
    claims["exp"] = serde_json::json!(now() + 2);
    let token = signer.token(&claims);
    // First use verifies and caches it; the second is a cache hit.
    for _ in 0..2 {
        assert_eq!(bearer_status(&gw, "/protected", &token).await, 200);
    }
    // Wait on the wall clock past exp (not a synchronisation sleep).
    let deadline = now() + 4;
    while now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let r = client()
        .get(gw.url("/protected"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("expired"));
}
