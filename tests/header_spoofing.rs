//! Identity header spoofing (SPEC §4, §2 [forward], §8 "Tokens"): whatever a
//! client sends, the upstream's `X-User`/`X-User-Roles` are absent for anonymous
//! callers and on public routes, and exactly the verified token's values for
//! authenticated ones.
mod common;
use common::*;

/// Every spelling a client might use, one header line each.
const SPOOFS: &[&str] = &[
    "X-User: admin",
    "x-user: admin",
    "X-USER: admin",
    "X_User: admin",
    "x_user: admin",
    "X-User-Roles: admin",
    "x-user-roles: admin",
    "X_USER_ROLES: admin",
    "X-User_Roles: admin",
];

/// Headers the upstream got under any spelling of the identity headers, as
/// (folded name, value), sorted.
fn identity_headers(r: &Recorded) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase().replace('_', "-"),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .filter(|(k, _)| k == "x-user" || k == "x-user-roles")
        .collect();
    v.sort();
    v
}

fn alice_identity() -> Vec<(String, String)> {
    vec![
        ("x-user".into(), "alice".into()),
        ("x-user-roles".into(), "user,editor".into()),
    ]
}

/// alice, with roles `user,editor`, logged in: her access token.
async fn alice(gw: &Gateway) -> String {
    let r = register(gw, "alice", "correct horse battery").await;
    assert_eq!(r.status(), 201);
    let out = gw.cli(&["users", "set-roles", "alice", "user,editor"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = login(gw, "alice", "correct horse battery").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

/// GET `path` with `extra` header lines; expects 200 and returns what the upstream got.
fn forwarded(gw: &Gateway, up: &Upstream, path: &str, extra: &[&str]) -> Recorded {
    let before = up.count();
    let r = get(gw.addr, path, extra);
    assert_eq!(
        r.status,
        200,
        "{path} {extra:?}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(up.count(), before + 1, "{path}: not forwarded once");
    up.last()
}

fn with<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(more).copied().collect()
}

#[tokio::test]
async fn spoofed_identity_never_reaches_a_public_route() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let auth = format!("Authorization: Bearer {}", alice(&gw).await);
    for spoof in SPOOFS {
        let seen = forwarded(&gw, &up, "/public/x", &[spoof]);
        assert_eq!(identity_headers(&seen), vec![], "{spoof}");
        let seen = forwarded(&gw, &up, "/public/x", &[spoof, &auth]);
        assert_eq!(identity_headers(&seen), vec![], "{spoof} with a token");
    }
    let seen = forwarded(&gw, &up, "/public/x", SPOOFS);
    assert_eq!(identity_headers(&seen), vec![]);
}

#[tokio::test]
async fn a_valid_token_sets_no_identity_on_a_public_route() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let auth = format!("Authorization: Bearer {}", alice(&gw).await);
    let seen = forwarded(&gw, &up, "/public", &[&auth]);
    assert_eq!(identity_headers(&seen), vec![]);
    // The same token on a required route does set it: the public route chose not to.
    let seen = forwarded(&gw, &up, "/protected", &[&auth]);
    assert_eq!(identity_headers(&seen), alice_identity());
}

#[tokio::test]
async fn spoofed_identity_is_dropped_for_anonymous_callers_on_an_optional_route() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    for spoof in SPOOFS {
        let seen = forwarded(&gw, &up, "/optional/x", &[spoof]);
        assert_eq!(identity_headers(&seen), vec![], "{spoof}");
    }
    let seen = forwarded(&gw, &up, "/optional/x", SPOOFS);
    assert_eq!(identity_headers(&seen), vec![]);
    // A non-Bearer scheme is anonymous too, and gets no identity either.
    let seen = forwarded(
        &gw,
        &up,
        "/optional/x",
        &with(SPOOFS, &["Authorization: Basic YWRtaW46YWRtaW4="]),
    );
    assert_eq!(identity_headers(&seen), vec![]);
}

#[tokio::test]
async fn authenticated_callers_carry_exactly_their_tokens_identity() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let auth = format!("Authorization: Bearer {}", alice(&gw).await);
    for path in ["/optional/x", "/protected/x"] {
        for spoof in SPOOFS {
            let seen = forwarded(&gw, &up, path, &[spoof, &auth]);
            assert_eq!(identity_headers(&seen), alice_identity(), "{path} {spoof}");
        }
        // Spoofs after the Authorization header, and all at once.
        let seen = forwarded(&gw, &up, path, &with(&[&auth], SPOOFS));
        assert_eq!(identity_headers(&seen), alice_identity(), "{path}");
    }
}

#[tokio::test]
async fn two_x_user_headers_are_both_removed() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let auth = format!("Authorization: Bearer {}", alice(&gw).await);
    let two = ["X-User: admin", "X-User: root"];
    for path in ["/public/x", "/optional/x"] {
        let seen = forwarded(&gw, &up, path, &two);
        assert_eq!(identity_headers(&seen), vec![], "{path}");
    }
    for path in ["/optional/x", "/protected/x"] {
        let seen = forwarded(&gw, &up, path, &with(&two, &[&auth]));
        assert_eq!(seen.header_all("x-user"), vec!["alice"], "{path}");
    }
}

#[tokio::test]
async fn connection_header_cannot_remove_the_injected_identity() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let auth = format!("Authorization: Bearer {}", alice(&gw).await);
    let hop = [
        "Connection: X-User, X-User-Roles",
        "X-User: admin",
        "X-User-Roles: admin",
    ];
    for path in ["/optional/x", "/protected/x"] {
        let seen = forwarded(&gw, &up, path, &with(&hop, &[&auth]));
        assert_eq!(identity_headers(&seen), alice_identity(), "{path}");
        assert!(seen
            .header("connection")
            .is_none_or(|c| !c.to_ascii_lowercase().contains("x-user")));
    }
    for path in ["/public/x", "/optional/x"] {
        let seen = forwarded(&gw, &up, path, &hop);
        assert_eq!(identity_headers(&seen), vec![], "{path}");
    }
}

fn chunked_with_trailer(path: &str, extra: &[&str]) -> String {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\nTrailer: X-User, X-User-Roles\r\n"
    );
    for h in extra {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n5\r\nhello\r\n0\r\nX-User: admin\r\nX-User-Roles: admin\r\n\r\n");
    r
}

#[tokio::test]
async fn identity_in_request_trailers_never_reaches_the_upstream() {
    let up = Upstream::start();
    // The control: the recording upstream does see trailers sent to it directly,
    // so an empty record below means the gateway dropped them.
    let direct = raw(up.addr, &chunked_with_trailer("/direct", &[]));
    assert_eq!(direct.status, 200);
    let t = up.last().trailers.expect("the upstream records trailers");
    assert_eq!(t.get("x-user").unwrap(), "admin");
    up.clear();

    let gw = Gateway::start(&Cfg::new(up.addr));
    let auth = format!("Authorization: Bearer {}", alice(&gw).await);
    let auth = auth.as_str();
    let cases = [
        ("/public/x", None, Vec::new()),
        ("/optional/x", None, Vec::new()),
        ("/optional/x", Some(auth), alice_identity()),
        ("/protected/x", Some(auth), alice_identity()),
    ];
    for (path, extra, want) in cases {
        let before = up.count();
        let extra: Vec<&str> = extra.into_iter().collect();
        let r = raw(gw.addr, &chunked_with_trailer(path, &extra));
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(up.count(), before + 1);
        let seen = up.last();
        assert_eq!(seen.body, b"hello", "{path}");
        assert_eq!(identity_headers(&seen), want, "{path}");
        assert!(
            seen.trailers.as_ref().is_none_or(|t| t.is_empty()),
            "{path}: trailers reached the upstream: {:?}",
            seen.trailers
        );
    }
}

#[tokio::test]
async fn the_authorization_header_is_forwarded_unchanged() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let token = alice(&gw).await;
    for value in [format!("Bearer {token}"), format!("bearer {token}")] {
        let line = format!("Authorization: {value}");
        for path in ["/public/x", "/optional/x", "/protected/x"] {
            let seen = forwarded(&gw, &up, path, &[&line]);
            assert_eq!(
                seen.header_all("authorization"),
                vec![value.clone()],
                "{path}"
            );
        }
    }
    let basic = "Basic YWxpY2U6c2VjcmV0";
    for path in ["/public/x", "/optional/x"] {
        let seen = forwarded(&gw, &up, path, &[&format!("Authorization: {basic}")]);
        assert_eq!(seen.header_all("authorization"), vec![basic], "{path}");
    }
}

#[tokio::test]
async fn two_authorization_headers_are_refused_with_400() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let token = alice(&gw).await;
    let bearer = format!("Authorization: Bearer {token}");
    let pairs: [[&str; 2]; 3] = [
        [&bearer, &bearer],
        [&bearer, "Authorization: Bearer garbage"],
        ["Authorization: Basic YWxpY2U6c2VjcmV0", &bearer],
    ];
    for path in ["/public/x", "/optional/x", "/protected/x"] {
        for pair in &pairs {
            let r = get(gw.addr, path, pair);
            assert_eq!(r.status, 400, "{path} {pair:?}");
            assert_eq!(r.json()["error"], "invalid_request");
        }
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let token = alice(&gw).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let seen = forwarded(
            &gw,
            &up,
            "/protected/x",
            &[&format!("Authorization: {scheme} {token}"), "X-User: admin"],
        );
        assert_eq!(identity_headers(&seen), alice_identity(), "{scheme}");
    }
}

#[tokio::test]
async fn configured_header_names_are_the_ones_protected() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.forward =
        "identity_header = \"X-Auth-Subject\"\nclaim_headers = { \"X-Auth-Groups\" = \"roles\" }\n"
            .into();
    let gw = Gateway::start(&cfg);
    let auth = format!("Authorization: Bearer {}", alice(&gw).await);
    let spoofs = [
        "X-Auth-Subject: admin",
        "x_auth_subject: admin",
        "X-AUTH-GROUPS: admin",
        "X_Auth_Groups: admin",
    ];
    let subject = |r: &Recorded| {
        let mut v: Vec<String> = r
            .headers
            .iter()
            .filter(|(k, _)| {
                let k = k.as_str().replace('_', "-");
                k == "x-auth-subject" || k == "x-auth-groups"
            })
            .map(|(k, v)| format!("{}={}", k, v.to_str().unwrap()))
            .collect();
        v.sort();
        v
    };
    let seen = forwarded(&gw, &up, "/public/x", &spoofs);
    assert_eq!(subject(&seen), Vec::<String>::new());
    let seen = forwarded(&gw, &up, "/protected/x", &with(&spoofs, &[&auth]));
    assert_eq!(
        subject(&seen),
        vec!["x-auth-groups=user,editor", "x-auth-subject=alice"]
    );
}

#[tokio::test]
async fn folded_or_malformed_header_lines_cannot_smuggle_an_identity() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    for lines in [
        // obs-fold (RFC 9112 §5.2): a continuation line that looks like a header.
        &["X-Note: hello", " X-User: admin"][..],
        &["X-Note: hello", "\tX-User: admin"][..],
        // Whitespace between the name and the colon (RFC 9112 §5.1).
        &["X-User : admin"][..],
        &["X-User\t: admin"][..],
    ] {
        for path in ["/public/x", "/optional/x"] {
            let r = get(gw.addr, path, lines);
            assert_eq!(r.status, 400, "{path} {lines:?}");
        }
    }
    assert_eq!(up.count(), 0);
}
