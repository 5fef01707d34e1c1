//! Revocation (SPEC §9), on SQLite and PostgreSQL alike: `users revoke`, and
//! implicitly `users remove`, `users set-password`, a refresh-token reuse and
//! `POST /logout {"everywhere": true}`. Revoked tokens get 401 invalid_token
//! with error_description="token revoked" — cached ones too — on every gateway
//! within `revocation_poll`; a login right after a revocation works; the
//! revocation survives a restart.
mod common;
use common::cluster::*;
use common::services::PgDb;
use common::*;

use std::time::{Duration, Instant};

use serde_json::json;

const PW: &str = "pw-Revocation-5521-secret";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sqlite,
    Postgres,
}

const KINDS: [Kind; 2] = [Kind::Sqlite, Kind::Postgres];

/// `n` gateways on one store (one SQLite file or one PostgreSQL database).
struct Env {
    gws: Vec<Gateway>,
    cfg: Cfg,
    _db: Option<PgDb>,
    _data: TempDir,
    _key: SharedKey,
    _upstream: Upstream,
}

fn env(kind: Kind, n: usize, poll: &str) -> Env {
    let upstream = Upstream::start();
    let key = SharedKey::new();
    let data = TempDir::new("revdata");
    let (db, store) = match kind {
        Kind::Sqlite => (
            None,
            format!("sqlite:{}", data.path().join("users.db").display()),
        ),
        Kind::Postgres => {
            let db = PgDb::new("rev");
            let url = db.url();
            (Some(db), url)
        }
    };
    let cfg = store_cfg(
        upstream.addr,
        &store,
        &key.path,
        &format!("revocation_poll = \"{poll}\"\n"),
    );
    let gws = (0..n).map(|_| Gateway::start(&cfg)).collect();
    Env {
        gws,
        cfg,
        _db: db,
        _data: data,
        _key: key,
        _upstream: upstream,
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

async fn is_revoked(gw: &Gateway, access: &str) -> bool {
    let (s, h) = bearer_challenge(gw, "/protected", access).await;
    s == 401
        && h.contains("error=\"invalid_token\"")
        && h.contains("error_description=\"token revoked\"")
}

/// Waits (generously) until every gateway refuses `access` as revoked.
async fn refused_everywhere(gws: &[Gateway], access: &str, what: &str) {
    for gw in gws {
        let ok = eventually(Duration::from_secs(10), || is_revoked(gw, access)).await;
        assert!(ok, "{what}: still accepted on {}", gw.addr);
    }
}

async fn registered_session(gw: &Gateway, user: &str) -> (String, String) {
    assert_eq!(register(gw, user, PW).await.status(), 201);
    let pair = login_pair(gw, user, PW).await;
    // Seen twice: the second verification comes from the token cache.
    assert_eq!(bearer_status(gw, "/protected", &pair.0).await, 200);
    assert_eq!(bearer_status(gw, "/protected", &pair.0).await, 200);
    pair
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_revoke_ends_cached_tokens_and_refresh_and_a_login_right_after_works() {
    for kind in KINDS {
        let e = env(kind, 1, "200ms");
        let gw = &e.gws[0];
        let (access, refresh) = registered_session(gw, "alice").await;
        // Revoke early in a second, so that the login right after it usually
        // lands in the same second as the revocation (iat alone cannot tell).
        while now_ms() % 1000 > 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (before, _) = login_pair(gw, "alice", PW).await;
        let out = gw.cli(&["users", "revoke", "ALICE"], None);
        assert_eq!(out.code, 0, "{kind:?}: {}", out.stderr);
        let (after, after_refresh) = login_pair(gw, "alice", PW).await;
        refused_everywhere(&e.gws, &access, "revoked token").await;
        refused_everywhere(&e.gws, &before, "token issued just before").await;
        assert_eq!(
            bearer_status(gw, "/protected", &after).await,
            200,
            "{kind:?}"
        );
        let (s, v) = post(gw, "/token/refresh", json!({"refresh_token": refresh})).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (401, Some("invalid_grant")),
            "{kind:?}"
        );
        let (s, _) = post(
            gw,
            "/token/refresh",
            json!({"refresh_token": after_refresh}),
        )
        .await;
        assert_eq!(s, 200, "{kind:?}: the new session refreshes");
        let out = gw.cli(&["users", "revoke", "nobody"], None);
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains("no user"), "{}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn set_password_and_remove_revoke_implicitly() {
    for kind in KINDS {
        let e = env(kind, 1, "200ms");
        let gw = &e.gws[0];
        let (access, refresh) = registered_session(gw, "bob").await;
        let out = gw.cli(
            &["users", "set-password", "bob"],
            Some("another-Password-1\n"),
        );
        assert_eq!(out.code, 0, "{kind:?}: {}", out.stderr);
        refused_everywhere(&e.gws, &access, "after set-password").await;
        let (s, _) = post(gw, "/token/refresh", json!({"refresh_token": refresh})).await;
        assert_eq!(s, 401, "{kind:?}");
        let (access, _) = login_pair(gw, "bob", "another-Password-1").await;
        assert_eq!(bearer_status(gw, "/protected", &access).await, 200);
        let out = gw.cli(&["users", "remove", "bob"], None);
        assert_eq!(out.code, 0, "{kind:?}: {}", out.stderr);
        refused_everywhere(&e.gws, &access, "after remove").await;
        // The name registered again is a new account with working tokens.
        assert_eq!(register(gw, "bob", PW).await.status(), 201);
        let (fresh, _) = login_pair(gw, "bob", PW).await;
        assert_eq!(
            bearer_status(gw, "/protected", &fresh).await,
            200,
            "{kind:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_token_reuse_revokes_the_users_access_tokens() {
    for kind in KINDS {
        let e = env(kind, 1, "200ms");
        let gw = &e.gws[0];
        let (access1, r1) = registered_session(gw, "carol").await;
        let (s, v) = post(gw, "/token/refresh", json!({"refresh_token": r1})).await;
        assert_eq!(s, 200);
        let access2 = v["access_token"].as_str().unwrap().to_string();
        assert_eq!(bearer_status(gw, "/protected", &access2).await, 200);
        // The stolen r1 comes back: the family dies and so do both access tokens.
        let (s, _) = post(gw, "/token/refresh", json!({"refresh_token": r1})).await;
        assert_eq!(s, 401, "{kind:?}");
        refused_everywhere(&e.gws, &access1, "first access token").await;
        refused_everywhere(&e.gws, &access2, "rotated access token").await;
        let (s, _) = post(
            gw,
            "/token/refresh",
            json!({"refresh_token": v["refresh_token"]}),
        )
        .await;
        assert_eq!(s, 401, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_everywhere_ends_every_session_of_the_user_at_once() {
    for kind in KINDS {
        // A long poll: the gateway that served the logout must not wait for it.
        let e = env(kind, 1, "1h");
        let gw = &e.gws[0];
        let (a1, r1) = registered_session(gw, "dave").await;
        let (a2, r2) = login_pair(gw, "dave", PW).await;
        let (other, _) = registered_session(gw, "erin").await;
        let (s, v) = post(
            gw,
            "/logout",
            json!({"refresh_token": r1, "everywhere": "yes"}),
        )
        .await;
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
        let r = client()
            .post(gw.url("/logout"))
            .json(&json!({"refresh_token": r1, "everywhere": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{kind:?}");
        assert!(is_revoked(gw, &a1).await, "{kind:?}");
        assert!(is_revoked(gw, &a2).await, "{kind:?}");
        assert_eq!(bearer_status(gw, "/protected", &other).await, 200);
        let (s, _) = post(gw, "/token/refresh", json!({"refresh_token": r2})).await;
        assert_eq!(s, 401, "{kind:?}");
        let (fresh, _) = login_pair(gw, "dave", PW).await;
        assert_eq!(
            bearer_status(gw, "/protected", &fresh).await,
            200,
            "{kind:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_reaches_three_gateways_within_the_poll_interval() {
    for kind in KINDS {
        let e = env(kind, 3, "1s");
        let (access, _) = registered_session(&e.gws[0], "frank").await;
        for gw in &e.gws {
            assert_eq!(bearer_status(gw, "/protected", &access).await, 200);
        }
        let t = Instant::now();
        // Each path once, on a different gateway: logout everywhere on gateway 1.
        let (_, r) = login_pair(&e.gws[1], "frank", PW).await;
        let (s, _) = post(
            &e.gws[1],
            "/logout",
            json!({"refresh_token": r, "everywhere": true}),
        )
        .await;
        assert_eq!(s, 204);
        refused_everywhere(&e.gws, &access, "logout everywhere").await;
        let took = t.elapsed();
        eprintln!("{kind:?}: revoked on 3 gateways after {took:?} (poll 1s)");
        // Generous for a loaded CI machine; the poll is 1s.
        assert!(took < Duration::from_secs(8), "{kind:?}: {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocations_survive_a_restart() {
    for kind in KINDS {
        let mut e = env(kind, 1, "1h");
        let (access, _) = registered_session(&e.gws[0], "gina").await;
        let out = e.gws[0].cli(&["users", "revoke", "gina"], None);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let cfg = e.cfg.render();
        e.gws[0].restart(&cfg);
        // Poll interval 1h: only the load at start can know.
        assert!(is_revoked(&e.gws[0], &access).await, "{kind:?}");
        let (fresh, _) = login_pair(&e.gws[0], "gina", PW).await;
        assert_eq!(bearer_status(&e.gws[0], "/protected", &fresh).await, 200);
    }
}
