//! Path attacks (SPEC §5): one canonical path decides the route, the auth policy
//! and what is forwarded, so no spelling of a path reaches a route it was not
//! matched to. Requests are sent as raw bytes: HTTP clients would normalise them.
mod common;
use common::*;

/// `GET <target>` without a token, on a fresh connection.
fn attack(gw: &Gateway, target: &str) -> Raw {
    raw(
        gw.addr,
        &format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"),
    )
}

fn assert_json_error(target: &str, r: &Raw, status: u16, code: &str) {
    assert_eq!(r.status, status, "{target}: {r:?}");
    assert_eq!(r.json()["error"], code, "{target}: {r:?}");
}

/// No request under /protected (in any case) reached the upstream.
fn assert_nothing_protected_forwarded(up: &Upstream) {
    let leaked: Vec<String> = up
        .requests()
        .into_iter()
        .map(|r| r.uri)
        .filter(|u| u.to_ascii_lowercase().contains("protected"))
        .collect();
    assert!(leaked.is_empty(), "forwarded without a token: {leaked:?}");
}

#[test]
fn paths_that_resolve_to_protected_need_a_token_and_are_not_forwarded() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    for target in [
        "/public/../protected",
        "/public/%2e%2e/protected",
        "/public/%2E%2E/protected",
        "/public/.%2e/protected",
        "/public/./../protected/x",
        "//protected",
        "///protected//x",
        "/%70rotected",
        "/prot%65cted/x",
        "/protected/.",
        "http://gw.test/public/../protected",
    ] {
        let r = attack(&gw, target);
        assert_json_error(target, &r, 401, "missing_token");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"authgate\""),
            "{target}"
        );
        assert_eq!(up.count(), 0, "{target} was forwarded");
    }
}

#[test]
fn ambiguous_paths_are_refused_with_400_invalid_request() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    for target in [
        // Path parameters: Java containers read /protected;x as /protected.
        "/protected;x",
        "/public/..;/protected",
        "/public;/../protected",
        // Encoded separators: a backend that decodes them sees another path.
        "/protected%2fx",
        "/protected%2Fx",
        "/public%2f..%2fprotected",
        "/public/..%2fprotected",
        "/protected%5cx",
        "/public/..%5cprotected",
        // NUL, truncating in C backends.
        "/protected%00",
        "/public/%00/../../protected",
        // Dot segments escaping the root.
        "/..",
        "/../protected",
        "/%2e%2e/protected",
        "/public/../../etc/passwd",
        "/public/../../protected",
        // Malformed escapes.
        "/protected%",
        "/protected%zz",
    ] {
        let r = attack(&gw, target);
        assert_json_error(target, &r, 400, "invalid_request");
        assert_eq!(up.count(), 0, "{target} was forwarded");
    }
}

#[test]
fn a_raw_backslash_in_the_path_is_refused_and_not_forwarded() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    for target in [
        "/protected\\x",
        "/public\\..\\protected",
        "/public/..\\protected",
    ] {
        let r = attack(&gw, target);
        assert_json_error(target, &r, 400, "invalid_request");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn a_raw_nul_or_control_byte_in_the_request_line_is_refused() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    for target in [
        &b"/protected\0x"[..],
        b"/public/\0/../../protected",
        b"/protected\x01",
    ] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        let r = raw_bytes(gw.addr, &req);
        // The connection guard refuses these bytes before hyper parses them, with
        // the gateway's JSON error.
        assert_json_error(&String::from_utf8_lossy(target), &r, 400, "invalid_request");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn connect_and_asterisk_request_targets_are_refused() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    for req in [
        "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nConnection: close\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw(gw.addr, req);
        assert_json_error(req, &r, 400, "invalid_request");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn matching_is_case_sensitive_so_other_cases_are_not_found() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    for target in [
        "/PROTECTED",
        "/Protected/x",
        "/%50ROTECTED",
        "/protected%3Bx",
    ] {
        let r = attack(&gw, target);
        assert_json_error(target, &r, 404, "not_found");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn no_spelling_of_protected_reaches_the_upstream_without_a_token() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let spellings = [
        "/protected",
        "/protected/",
        "/protected/x",
        "/public/../protected",
        "/public/%2e%2e/protected",
        "/public/%2E%2E/protected",
        "//protected",
        "/protected;x",
        "/PROTECTED",
        "/protected%2fx",
        "/protected%5cx",
        "/protected\\x",
        "/protected%00",
        "/..",
        "/public/../../etc/passwd",
        "/public/..;/protected",
        "/public%2f..%2fprotected",
        "/%70rotected",
        "/protected?x=/public",
        "/protected#/public",
        "/public/../protected?/public",
    ];
    for target in spellings {
        let r = attack(&gw, target);
        assert!(
            matches!(r.status, 400 | 401 | 404),
            "{target}: {} {r:?}",
            r.status
        );
    }
    assert_nothing_protected_forwarded(&up);
}

#[test]
fn public_paths_are_forwarded_in_canonical_form() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    for (target, forwarded) in [
        ("/public/./x", "/public/x"),
        ("/public//x", "/public/x"),
        ("//public///x", "/public/x"),
        ("/%70ublic/x", "/public/x"),
        ("/public/%78", "/public/x"),
        ("/public/a/../x", "/public/x"),
        ("/public/%2e/x", "/public/x"),
        ("/public/x/", "/public/x/"),
        ("/public/%7e%41", "/public/~A"),
        ("/public/a%20b", "/public/a%20b"),
        ("/public/a%3fb", "/public/a%3Fb"),
        // Decoded once only: a double-encoded dot-dot stays data.
        (
            "/public/%252e%252e/protected",
            "/public/%252e%252e/protected",
        ),
        ("/public/./x?p=%2e%2e/../y", "/public/x?p=%2e%2e/../y"),
    ] {
        let r = attack(&gw, target);
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert_eq!(up.last().uri, forwarded, "{target}");
    }
}

#[tokio::test]
async fn with_a_token_a_dot_dot_path_is_forwarded_as_the_canonical_protected_path() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let (token, _) = token_for(&gw, "alice").await;
    let auth = format!("Authorization: Bearer {token}");
    let r = get(gw.addr, "/public/%2e%2e/protected/./x", &[&auth]);
    assert_eq!(r.status, 200, "{r:?}");
    let seen = up.last();
    assert_eq!(seen.uri, "/protected/x");
    assert_eq!(seen.header("x-user").as_deref(), Some("alice"));
    // And the reverse: a protected spelling that resolves to /public is public,
    // so the token is not looked at and no identity header is set.
    let r = get(gw.addr, "/protected/../public/y", &[&auth]);
    assert_eq!(r.status, 200, "{r:?}");
    let seen = up.last();
    assert_eq!(seen.uri, "/public/y");
    assert_eq!(seen.header("x-user"), None);
}
