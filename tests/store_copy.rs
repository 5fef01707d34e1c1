//! `authgate store copy FROM TO` (SPEC §9): from one gateway's SQLite to a
//! shared PostgreSQL — users with their hashes and roles, live refresh tokens,
//! revocations — idempotently, with counts; then log in and refresh there.
mod common;
use common::cluster::*;
use common::services::PgDb;
use common::*;

use serde_json::json;

const PW: &str = "pw-StoreCopy-3307-secret";

fn copy(from: &str, to: &str) -> CliOutput {
    let dir = TempDir::new("copycli");
    run_cli(
        &dir.path().join("unused.toml"),
        &["store", "copy", from, to],
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_copy_moves_sqlite_to_postgres_once_and_sessions_continue_there() {
    let upstream = Upstream::start();
    let key = SharedKey::new();
    let data = TempDir::new("copydata");
    let sqlite = format!("sqlite:{}", data.path().join("users.db").display());
    let mut gw = Gateway::start(&store_cfg(upstream.addr, &sqlite, &key.path, ""));
    let out = gw.cli(
        &["users", "add", "alice", "--roles", "admin,ops"],
        Some(&format!("{PW}\n")),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(register(&gw, "bob", PW).await.status(), 201);
    assert_eq!(register(&gw, "carol", PW).await.status(), 201);
    let (_, alice_refresh) = login_pair(&gw, "alice", PW).await;
    let (carol_access, _) = login_pair(&gw, "carol", PW).await;
    let (_, spent) = login_pair(&gw, "bob", PW).await;
    let (s, v) = post(&gw, "/token/refresh", json!({"refresh_token": spent})).await;
    assert_eq!(s, 200);
    let bob_refresh = v["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(gw.cli(&["users", "revoke", "carol"], None).code, 0);
    let listed = gw.cli(&["users", "list"], None).stdout;
    gw.stop();

    let db = PgDb::new("copy");
    let out = copy(&sqlite, &db.url());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("users           3 copied, 0 already present"),
        "{}",
        out.stdout
    );
    // alice's and bob's live tokens; bob's spent one and carol's revoked one stay behind.
    assert!(
        out.stdout.contains("refresh tokens  2 copied"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("revocations     1 copied"),
        "{}",
        out.stdout
    );
    let again = copy(&sqlite, &db.url());
    assert_eq!(again.code, 0, "{}", again.stderr);
    for want in [
        "users           0 copied, 3 already present",
        "refresh tokens  0 copied, 2 already present",
        "revocations     0 copied, 1 already present",
    ] {
        assert!(again.stdout.contains(want), "{want}\n{}", again.stdout);
    }

    let pg = Gateway::start(&store_cfg(upstream.addr, &db.url(), &key.path, ""));
    assert_eq!(
        pg.cli(&["users", "list"], None).stdout,
        listed,
        "same users, roles, created"
    );
    let (access, _) = login_pair(&pg, "alice", PW).await;
    assert_eq!(
        bearer_status(&pg, "/admin", &access).await,
        200,
        "roles came along"
    );
    for r in [&alice_refresh, &bob_refresh] {
        let (s, v) = post(&pg, "/token/refresh", json!({"refresh_token": r})).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, _) = post(&pg, "/token/refresh", json!({"refresh_token": spent})).await;
    assert_eq!(s, 401);
    let (st, h) = bearer_challenge(&pg, "/protected", &carol_access).await;
    assert_eq!(st, 401);
    assert!(h.contains("token revoked"), "{h}");
    login_pair(&pg, "carol", PW).await;
}

#[test]
fn store_copy_refuses_inline_passwords_missing_sources_and_a_store_onto_itself() {
    let out = copy("sqlite:/nonexistent/authgate/users.db", "sqlite:/tmp/x.db");
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("FROM: /nonexistent/authgate/users.db does not exist"),
        "{}",
        out.stderr
    );
    let out = copy("sqlite:a.db", "postgres://u:hunter2secret@127.0.0.1/x");
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("TO: a password must not stand inline"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("hunter2secret"));
    let out = copy("sqlite:a.db", "sqlite:a.db");
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("the same store"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}
