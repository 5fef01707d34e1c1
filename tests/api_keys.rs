//! API keys and service accounts (SPEC §16), black-box: the real gateway, a
//! recording upstream, the real CLI. A key opens only routes that opt in, as its
//! user with the key's roles; it never reaches a backend, a log, the store's
//! files or a listing; revocation, `users revoke` and expiry stop it on every
//! gateway within `revocation_poll`; forged keys are 401 `invalid_token`.
mod common;
use common::cluster::*;
use common::services::PgDb;
use common::*;

use std::time::Duration;

use serde_json::json;

/// Keys on, `/keys` taking tokens and keys, `/keys-admin` also requiring the
/// admin role, `/only-keys` taking keys alone; `/protected` stays token-only.
fn keys_cfg(upstream: &Upstream, header: &str) -> Cfg {
    let mut c = Cfg::new(upstream.addr);
    c.identity.push_str("revocation_poll = \"200ms\"\n");
    c.forward.push_str("issuer_header = \"X-Issuer\"\n");
    c.rest = format!(
        "[api_keys]\nenabled = true\nheader = \"{header}\"\n\n{}\n\
         [[route]]\npath = \"/keys\"\nupstream = \"app\"\ncredentials = [\"token\", \"api_key\"]\n\n\
         [[route]]\npath = \"/keys-admin\"\nupstream = \"app\"\ncredentials = [\"token\", \"api_key\"]\nrequire = {{ roles = [\"admin\"] }}\n\n\
         [[route]]\npath = \"/only-keys\"\nupstream = \"app\"\ncredentials = [\"api_key\"]\n",
        c.rest
    );
    c
}

/// `apikeys create` through the CLI; returns the key it printed.
fn create_key(gw: &Gateway, args: &[&str]) -> String {
    let mut all = vec!["apikeys", "create"];
    all.extend_from_slice(args);
    let out = gw.cli(&all, None);
    assert_eq!(out.code, 0, "apikeys create: {}", out.stderr);
    let key = out.stdout.trim().to_string();
    assert!(key.starts_with("agk_"), "{key}");
    key
}

fn add_service(gw: &Gateway, name: &str, roles: &str) {
    let out = gw.cli(&["users", "add", name, "--service", "--roles", roles], None);
    assert_eq!(out.code, 0, "users add --service: {}", out.stderr);
}

fn key_id(key: &str) -> &str {
    key["agk_".len()..].split('_').next().unwrap()
}

async fn get_with(gw: &Gateway, path: &str, header: &str, value: &str) -> (u16, String) {
    let r = client()
        .get(gw.url(path))
        .header(header, value)
        .send()
        .await
        .unwrap();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), challenge)
}

async fn with_key(gw: &Gateway, path: &str, key: &str) -> (u16, String) {
    get_with(gw, path, "authorization", &format!("Bearer {key}")).await
}

/// Waits until a key created while the gateway runs is known to it (the next
/// poll, within `revocation_poll`), without using it on a route.
async fn known(gw: &Gateway, header: &str, key: &str) {
    let value = if header == "authorization" {
        format!("Bearer {key}")
    } else {
        key.to_string()
    };
    let ok = eventually(Duration::from_secs(5), || async {
        // A token-only route refuses every key alike; /only-keys tells.
        !get_with(gw, "/only-keys", header, &value)
            .await
            .1
            .contains("unknown API key")
    })
    .await;
    assert!(ok, "the key became known within revocation_poll");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_opens_an_opted_in_route_as_its_user_with_the_keys_roles_and_no_token_only_route() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&keys_cfg(&upstream, "Authorization"));
    add_service(&gw, "ci-bot", "deploy,admin");
    let narrow = create_key(&gw, &["ci-bot", "--roles", "deploy", "--name", "ci"]);
    let wide = create_key(&gw, &["ci-bot"]);
    known(&gw, "authorization", &narrow).await;
    known(&gw, "authorization", &wide).await;

    let (s, _) = with_key(&gw, "/keys/x", &narrow).await;
    assert_eq!(s, 200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-user").as_deref(), Some("ci-bot"));
    assert_eq!(seen.header("x-user-roles").as_deref(), Some("deploy"));
    assert_eq!(seen.header("x-issuer").as_deref(), Some("apikey"));
    assert_eq!(
        seen.header("authorization"),
        None,
        "the key is not forwarded"
    );

    // The key's roles, not the user's, meet `require`.
    assert_eq!(with_key(&gw, "/keys-admin", &narrow).await.0, 403);
    assert_eq!(with_key(&gw, "/keys-admin", &wide).await.0, 200);
    assert_eq!(
        upstream.last().header("x-user-roles").as_deref(),
        Some("deploy,admin")
    );

    // A token-only route refuses a key like a bad token.
    let before = upstream.count();
    let (s, challenge) = with_key(&gw, "/protected", &wide).await;
    assert_eq!(s, 401);
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_eq!(with_key(&gw, "/admin", &wide).await.0, 401);
    assert_eq!(upstream.count(), before);

    // A keys-only route refuses a token, and asks for a credential without one.
    let (access, _) = token_for(&gw, "alice").await;
    assert_eq!(bearer_status(&gw, "/only-keys", &access).await, 401);
    assert_eq!(bearer_status(&gw, "/keys", &access).await, 200);
    assert_eq!(
        upstream.last().header("authorization"),
        Some(format!("Bearer {access}")),
        "a token is still forwarded (SPEC §4)"
    );
    assert_eq!(upstream.last().header("x-issuer").as_deref(), Some("self"));
    assert_eq!(with_key(&gw, "/only-keys", &narrow).await.0, 200);
    let r = client().get(gw.url("/only-keys")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_never_logs_in_whatever_the_password() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&keys_cfg(&upstream, "Authorization"));
    add_service(&gw, "svc", "");
    let long = "x".repeat(1000);
    for pw in [
        "",
        "correct horse battery",
        "!service-account",
        long.as_str(),
    ] {
        let (s, v) = post(&gw, "/login", json!({"username": "svc", "password": pw})).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (401, Some("invalid_credentials")),
            "password of {} chars",
            pw.len()
        );
    }
    let out = gw.cli(&["users", "set-password", "svc"], Some("a-new-password\n"));
    assert_ne!(out.code, 0, "a service account gets no password");
    assert!(out.stderr.contains("service account"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_its_own_header_is_removed_before_forwarding_and_spoofed_identity_too() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&keys_cfg(&upstream, "X-API-Key"));
    add_service(&gw, "svc", "reader");
    let key = create_key(&gw, &["svc"]);
    known(&gw, "x-api-key", &key).await;
    let r = client()
        .get(gw.url("/keys/a"))
        .header("X-API-Key", &key)
        .header("X-Issuer", "self")
        .header("X-User", "root")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-api-key"), None);
    assert_eq!(seen.header_all("x-user"), vec!["svc".to_string()]);
    assert_eq!(seen.header_all("x-issuer"), vec!["apikey".to_string()]);
    // Removed on a public route too, and a bad key there is never looked at.
    let (s, _) = get_with(&gw, "/public", "X-API-Key", "agk_whatever").await;
    assert_eq!(s, 200);
    assert_eq!(upstream.last().header("x-api-key"), None);
    // In this mode a Bearer key is just a bad token.
    assert_eq!(with_key(&gw, "/keys", &key).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_is_never_in_the_store_files_the_logs_or_the_listing() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&keys_cfg(&upstream, "Authorization"));
    add_service(&gw, "svc", "reader");
    let key = create_key(&gw, &["svc", "--name", "nightly"]);
    known(&gw, "authorization", &key).await;
    let secret = &key[key.len() - 43..];
    assert!(key.ends_with(secret));
    assert_eq!(with_key(&gw, "/keys", &key).await.0, 200);
    // A refused key is not logged either.
    let mut flipped = key.clone();
    let c = if &key[key.len() - 5..key.len() - 4] == "Q" {
        "R"
    } else {
        "Q"
    };
    flipped.replace_range(key.len() - 5..key.len() - 4, c);
    assert_eq!(with_key(&gw, "/keys", &flipped).await.0, 401);

    // Last use reaches the store off the request path, on a poller tick.
    let used = eventually(Duration::from_secs(5), || async {
        let list = gw.cli(&["apikeys", "list", "svc"], None).stdout;
        list.lines()
            .filter(|l| l.starts_with(key_id(&key)))
            .any(|l| l.split('\t').nth(6).is_some_and(|t| t != "-"))
    })
    .await;
    assert!(used, "apikeys list shows the last use");
    let out = gw.cli(&["apikeys", "list"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(key_id(&key)), "{}", out.stdout);
    assert!(out.stdout.contains("nightly") && out.stdout.contains("reader"));
    let out_user = gw.cli(&["apikeys", "list", "svc"], None);
    let out_other = gw.cli(&["apikeys", "list", "nobody"], None);
    assert!(out_user.stdout.contains(key_id(&key)));
    assert!(!out_other.stdout.contains(key_id(&key)));
    let data = gw.dir.path().join("data");
    let mut files = 0;
    for f in std::fs::read_dir(&data).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        files += 1;
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is in a store file"
        );
    }
    assert!(files >= 1);
    for (what, text) in [
        ("gateway log", gw.logs()),
        ("listing", out.stdout + &out.stderr),
    ] {
        assert!(!text.contains(secret), "the secret is in the {what}");
        assert!(!text.contains(&flipped[flipped.len() - 43..]), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_expired_and_user_revoked_keys_stop_within_revocation_poll() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&keys_cfg(&upstream, "Authorization"));
    add_service(&gw, "svc", "reader");
    add_service(&gw, "other", "reader");
    let revoked = create_key(&gw, &["svc"]);
    let short = create_key(&gw, &["svc", "--expires", "2s"]);
    let of_other = create_key(&gw, &["other"]);
    // Created while the gateway runs: works within the poll.
    for k in [&revoked, &short, &of_other] {
        let ok = eventually(Duration::from_secs(5), || async {
            with_key(&gw, "/keys", k).await.0 == 200
        })
        .await;
        assert!(ok, "a new key works within revocation_poll");
    }
    // Used last on every worker before the revoke, so each remembers it (the
    // remembered key skips the hash): the revoke must end that too.
    for _ in 0..8 {
        assert_eq!(with_key(&gw, "/keys", &revoked).await.0, 200);
    }
    let out = gw.cli(&["apikeys", "revoke", key_id(&revoked)], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let said = |what: &'static str| {
        move |(s, c): (u16, String)| {
            s == 401
                && c.contains("error=\"invalid_token\"")
                && c.contains(&format!("error_description=\"API key {what}\""))
        }
    };
    let stopped = eventually(Duration::from_secs(5), || async {
        said("revoked")(with_key(&gw, "/keys", &revoked).await)
    })
    .await;
    assert!(stopped, "a revoked key stops within revocation_poll");
    assert!(gw.cli(&["apikeys", "revoke", key_id(&revoked)], None).code != 0);

    let expired = eventually(Duration::from_secs(6), || async {
        said("expired")(with_key(&gw, "/keys", &short).await)
    })
    .await;
    assert!(expired, "a key created with --expires 2s stops");

    let out = gw.cli(&["users", "revoke", "other"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ended = eventually(Duration::from_secs(5), || async {
        said("revoked")(with_key(&gw, "/keys", &of_other).await)
    })
    .await;
    assert!(ended, "users revoke ends the user's keys");
    // A key created after the revocation works.
    let fresh = create_key(&gw, &["other"]);
    let ok = eventually(Duration::from_secs(5), || async {
        with_key(&gw, "/keys", &fresh).await.0 == 200
    })
    .await;
    assert!(ok, "a key created after users revoke works");
    let list = gw.cli(&["apikeys", "list", "svc"], None).stdout;
    assert!(
        list.contains("revoked") && list.contains("expired"),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_keys_never_reach_the_upstream_and_are_invalid_token() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&keys_cfg(&upstream, "Authorization"));
    add_service(&gw, "svc", "reader");
    let key = create_key(&gw, &["svc"]);
    known(&gw, "authorization", &key).await;
    let id = key_id(&key).to_string();
    let secret = &key[key.len() - 43..];
    let last = key.chars().last().unwrap();
    let flipped_last = format!(
        "{}{}",
        &key[..key.len() - 1],
        if last == 'A' { 'E' } else { 'A' }
    );
    let mut flipped_mid = key.clone();
    let c = if &key[key.len() - 10..key.len() - 9] == "B" {
        "C"
    } else {
        "B"
    };
    flipped_mid.replace_range(key.len() - 10..key.len() - 9, c);
    let forged = [
        ("flipped last character", flipped_last, None),
        ("flipped inner character", flipped_mid, Some("unknown")),
        (
            "unknown id",
            format!("agk_zzzzzzzzzzzzzzzz_{secret}"),
            Some("unknown"),
        ),
        (
            "truncated",
            key[..key.len() - 3].to_string(),
            Some("malformed"),
        ),
        ("prefix only", "agk_".to_string(), Some("malformed")),
        ("no secret", format!("agk_{id}"), Some("malformed")),
        (
            "upper-case id",
            format!("agk_{}_{secret}", id.to_uppercase()),
            Some("malformed"),
        ),
        ("extra tail", format!("{key}xx"), Some("malformed")),
    ];
    let before = upstream.count();
    for (what, k, why) in &forged {
        let (s, challenge) = with_key(&gw, "/keys", k).await;
        assert_eq!(s, 401, "{what}");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        if let Some(why) = why {
            assert!(
                challenge.contains(&format!("error_description=\"{why} API key\"")),
                "{what}: {challenge}"
            );
        }
        assert!(
            !challenge.contains(&k[4.min(k.len())..]) || k.len() <= 4,
            "{what}: echoed"
        );
    }
    assert_eq!(
        upstream.count(),
        before,
        "no forged key reached the upstream"
    );
    assert_eq!(with_key(&gw, "/keys", &key).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_cannot_carry_a_role_its_user_does_not_hold() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&keys_cfg(&upstream, "Authorization"));
    add_service(&gw, "svc", "reader");
    let out = gw.cli(
        &["apikeys", "create", "svc", "--roles", "reader,admin"],
        None,
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("\"admin\""), "{}", out.stderr);
    assert!(!out.stdout.contains("agk_"));
    let out = gw.cli(&["apikeys", "create", "nobody"], None);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("no user"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_created_or_revoked_on_one_gateway_works_or_stops_on_another_sharing_postgresql() {
    let db = PgDb::new("apikeys");
    let upstream = Upstream::start();
    let key = SharedKey::new();
    let mut cfg = keys_cfg(&upstream, "Authorization");
    let base = store_cfg(
        upstream.addr,
        &db.url(),
        &key.path,
        "revocation_poll = \"200ms\"\n",
    );
    cfg.identity = base.identity;
    cfg.tokens = base.tokens;
    let a = Gateway::start(&cfg);
    let b = Gateway::start(&cfg);
    add_service(&a, "svc", "reader");
    let k = create_key(&a, &["svc"]);
    for gw in [&a, &b] {
        let ok = eventually(Duration::from_secs(5), || async {
            with_key(gw, "/keys", &k).await.0 == 200
        })
        .await;
        assert!(ok, "works on {}", gw.addr);
    }
    assert_eq!(upstream.last().header("x-user").as_deref(), Some("svc"));
    let out = b.cli(&["apikeys", "revoke", key_id(&k)], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for gw in [&a, &b] {
        let stopped = eventually(Duration::from_secs(5), || async {
            with_key(gw, "/keys", &k).await.0 == 401
        })
        .await;
        assert!(stopped, "stops on {}", gw.addr);
    }
    let k2 = create_key(&b, &["svc"]);
    assert!(
        eventually(Duration::from_secs(5), || async {
            with_key(&a, "/keys", &k2).await.0 == 200
        })
        .await
    );
    let out = a.cli(&["users", "remove", "svc"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        eventually(Duration::from_secs(5), || async {
            with_key(&b, "/keys", &k2).await.0 == 401
        })
        .await,
        "users remove ends the keys everywhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_copy_copies_keys_once_and_they_work_there() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&keys_cfg(&upstream, "Authorization"));
    add_service(&gw, "svc", "reader");
    let live = create_key(&gw, &["svc"]);
    let dead = create_key(&gw, &["svc"]);
    assert_eq!(gw.cli(&["apikeys", "revoke", key_id(&dead)], None).code, 0);
    let db = PgDb::new("keycopy");
    let from = format!("sqlite:{}", gw.dir.path().join("data/users.db").display());
    let dir = TempDir::new("keycopycli");
    let copy = || {
        run_cli(
            &dir.path().join("unused.toml"),
            &["store", "copy", &from, &db.url()],
            None,
        )
    };
    let out = copy();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("api keys        2 copied"),
        "{}",
        out.stdout
    );
    let out = copy();
    assert!(
        out.stdout
            .contains("api keys        0 copied, 2 already present"),
        "{}",
        out.stdout
    );
    let key = SharedKey::new();
    let mut cfg = keys_cfg(&upstream, "Authorization");
    let base = store_cfg(upstream.addr, &db.url(), &key.path, "");
    cfg.identity = base.identity;
    cfg.tokens = base.tokens;
    let pg = Gateway::start(&cfg);
    assert_eq!(with_key(&pg, "/keys", &live).await.0, 200);
    assert_eq!(upstream.last().header("x-user").as_deref(), Some("svc"));
    assert_eq!(
        with_key(&pg, "/keys", &dead).await.0,
        401,
        "revoked stays revoked"
    );
}
