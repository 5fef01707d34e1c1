//! Several gateways on one PostgreSQL (SPEC §7, §9): one behaviour however many
//! gateways — exactly-once registration and refresh rotation decided by the
//! database, logout everywhere, the ops CLI while gateways run, start-up
//! migrations under an advisory lock, and durability through `kill -9`.
mod common;
use common::cluster::*;
use common::services::PgDb;
use common::*;

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

const PW: &str = "pw-ScaleOut-4471-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn register_on_a_login_on_b_refresh_on_c() {
    let c = Cluster::start("abc", 3, "");
    let (a, b, cc) = (&c.gws[0], &c.gws[1], &c.gws[2]);
    let (s, v) = post(a, "/register", json!({"username": "Alice", "password": PW})).await;
    assert_eq!((s, v["username"].as_str()), (201, Some("alice")), "{v}");
    let (access, refresh) = login_pair(b, "alice", PW).await;
    // The access token of B is good on A and C: one key, verified locally.
    for gw in &c.gws {
        assert_eq!(bearer_status(gw, "/protected", &access).await, 200);
    }
    assert_eq!(c.upstream.last().header("x-user").as_deref(), Some("alice"));
    let (s, v) = post(cc, "/token/refresh", json!({"refresh_token": refresh})).await;
    assert_eq!(s, 200, "{v}");
    // Spent on C means spent on A.
    let (s, _) = post(a, "/token/refresh", json!({"refresh_token": refresh})).await;
    assert_eq!(s, 401);
    assert_eq!(
        c.db.query("SELECT username, roles FROM users"),
        "alice|",
        "one row, lowercased"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_registrations_of_one_name_over_three_gateways_give_one_201() {
    let c = Cluster::start("race_reg", 3, "");
    let names = ["bob", "BOB", "Bob", "bOb", "boB"];
    let tries = (0..20).map(|i| {
        let gw = &c.gws[i % 3];
        let name = names[i % names.len()];
        async move { post(gw, "/register", json!({"username": name, "password": PW})).await }
    });
    let results = join_all(tries).await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let exists = results
        .iter()
        .filter(|(s, v)| *s == 409 && v["error"] == "user_exists")
        .count();
    assert_eq!(created, 1, "{results:?}");
    assert_eq!(
        exists, 19,
        "every other one is 409 user_exists: {results:?}"
    );
    assert_eq!(c.db.query("SELECT count(*) FROM users"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_token_raced_on_two_gateways_gives_one_200_and_revokes_the_family() {
    let c = Cluster::start("race_refresh", 2, "");
    let (a, b) = (&c.gws[0], &c.gws[1]);
    for round in 0..5 {
        let user = format!("carol{round}");
        post(a, "/register", json!({"username": user, "password": PW})).await;
        let (_, refresh) = login_pair(a, &user, PW).await;
        let body = json!({ "refresh_token": refresh });
        let (ra, rb) = tokio::join!(
            post(a, "/token/refresh", body.clone()),
            post(b, "/token/refresh", body.clone())
        );
        let mut statuses = [ra.0, rb.0];
        statuses.sort();
        assert_eq!(statuses, [200, 401], "round {round}: {ra:?} {rb:?}");
        let loser = if ra.0 == 401 { &ra.1 } else { &rb.1 };
        assert_eq!(loser["error"], "invalid_grant");
        // The winner's new refresh token died with the family.
        let winner = if ra.0 == 200 { &ra.1 } else { &rb.1 };
        let next = json!({ "refresh_token": winner["refresh_token"] });
        assert_eq!(post(a, "/token/refresh", next.clone()).await.0, 401);
        assert_eq!(post(b, "/token/refresh", next).await.0, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_on_one_gateway_holds_on_all() {
    let c = Cluster::start("logout", 3, "");
    post(
        &c.gws[0],
        "/register",
        json!({"username": "dave", "password": PW}),
    )
    .await;
    let (_, refresh) = login_pair(&c.gws[1], "dave", PW).await;
    let (_, other) = login_pair(&c.gws[1], "dave", PW).await;
    let r = client()
        .post(c.gws[2].url("/logout"))
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for gw in &c.gws {
        let (s, v) = post(gw, "/token/refresh", json!({"refresh_token": refresh})).await;
        assert_eq!((s, v["error"].as_str()), (401, Some("invalid_grant")));
    }
    // A plain logout ends that session only.
    let (s, _) = post(&c.gws[0], "/token/refresh", json!({"refresh_token": other})).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_gateways_starting_together_on_an_empty_database_all_come_up() {
    let db = PgDb::new("start3");
    let upstream = Upstream::start();
    let key = SharedKey::new();
    let cfg = store_cfg(upstream.addr, &db.url(), &key.path, "").render();
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let cfg = cfg.clone();
            std::thread::spawn(move || Gateway::start_in(TempDir::new("gw"), &cfg, &[], "serve"))
        })
        .collect();
    let gws: Vec<Gateway> = starts
        .into_iter()
        .map(|h| h.join().unwrap().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    // Schema v3: SPEC §14 sign-in (v2 is empty on PostgreSQL, to count as SQLite does).
    assert_eq!(db.query("SELECT version FROM authgate_schema"), "4");
    for (i, gw) in gws.iter().enumerate() {
        let name = format!("erin{i}");
        assert_eq!(register(gw, &name, PW).await.status(), 201);
        let r = client().get(gw.admin_url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_one_gateway_in_a_registration_burst_loses_no_201() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Vec<(String, std::net::SocketAddr, Option<u16>)>>>;
    let mut c = Cluster::start("kill9", 2, "");
    let addrs = [c.gws[0].addr, c.gws[1].addr];
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    // Eight clients register new names on both gateways without pause until told
    // to stop, which is well after the kill.
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (stop, seen) = (stop.clone(), seen.clone());
            tokio::spawn(async move {
                let cl = client();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let addr = addrs[(w + i) % 2];
                    let name = format!("burst{w}x{i}");
                    let r = cl
                        .post(format!("http://{addr}/register"))
                        .json(&json!({"username": name, "password": PW}))
                        .send()
                        .await;
                    let status = r.map(|r| r.status().as_u16()).ok();
                    seen.lock().unwrap().push((name, addr, status));
                    i += 1;
                }
            })
        })
        .collect();
    let answered = |addr| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(_, a, s)| *a == addr && *s == Some(201))
            .count()
    };
    // Kill gateway 0 once it has acknowledged a few, with more on the way.
    let ok = eventually(Duration::from_secs(30), || async {
        answered(addrs[0]) >= 3
    })
    .await;
    assert!(ok, "gateway 0 acknowledged nothing before the kill");
    c.gws[0].kill9();
    let after = answered(addrs[1]);
    let ok = eventually(Duration::from_secs(30), || async {
        answered(addrs[1]) >= after + 5
    })
    .await;
    assert!(ok, "the survivor stopped acknowledging");
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let results = seen.lock().unwrap().clone();
    let failed_on_killed = results
        .iter()
        .filter(|(_, a, s)| *a == addrs[0] && s.is_none())
        .count();
    assert!(failed_on_killed > 0, "the kill hit the burst");
    let created: Vec<&String> = results
        .iter()
        .filter(|(_, _, s)| *s == Some(201))
        .map(|(n, _, _)| n)
        .collect();
    let stored = c.db.query("SELECT username FROM users ORDER BY username");
    for name in &created {
        assert!(
            stored.lines().any(|l| l == name.as_str()),
            "{name} got 201 but is not stored"
        );
    }
    // The survivor logs acknowledged users in, whichever gateway created them.
    for name in created.iter().step_by(created.len() / 5 + 1) {
        login_pair(&c.gws[1], name, PW).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_cli_works_against_postgres_while_gateways_run() {
    let c = Cluster::start("cli", 2, "");
    let gw = &c.gws[0];
    let out = gw.cli(
        &["users", "add", "frank", "--roles", "admin"],
        Some(&format!("{PW}\n")),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (access, _) = login_pair(&c.gws[1], "frank", PW).await;
    assert_eq!(bearer_status(&c.gws[1], "/admin", &access).await, 200);
    let out = gw.cli(&["users", "set-roles", "frank", ""], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (access, _) = login_pair(&c.gws[1], "frank", PW).await;
    assert_eq!(bearer_status(&c.gws[1], "/admin", &access).await, 403);
    let out = gw.cli(&["users", "list"], None);
    assert_eq!(out.code, 0);
    assert!(out.stdout.starts_with("frank\t\t"), "{}", out.stdout);
    let out = gw.cli(&["users", "add", "FRANK"], Some(&format!("{PW}\n")));
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    let out = gw.cli(&["users", "remove", "frank"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (s, _) = post(
        &c.gws[1],
        "/login",
        json!({"username": "frank", "password": PW}),
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schema_newer_than_the_binary_is_refused_in_one_line() {
    let db = PgDb::new("newer");
    db.query("CREATE TABLE authgate_schema (version INTEGER NOT NULL); INSERT INTO authgate_schema VALUES (99)");
    let upstream = Upstream::start();
    let key = SharedKey::new();
    let cfg = store_cfg(upstream.addr, &db.url(), &key.path, "").render();
    let err = match Gateway::start_in(TempDir::new("gw"), &cfg, &[], "serve") {
        Ok(_) => panic!("a gateway started on a newer schema"),
        Err(e) => e,
    };
    let line = err
        .lines()
        .find(|l| l.contains("newer than this authgate"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("v99") && line.contains("(v4)"), "{line}");
    // The tables were left alone.
    assert_eq!(db.query("SELECT version FROM authgate_schema"), "99");
}

#[test]
fn check_refuses_a_postgres_url_with_an_inline_password_and_never_prints_it() {
    let dir = TempDir::new("inline");
    let up = dead_addr();
    let mut cfg = Cfg::new(up);
    cfg.identity = "store = \"postgres://authgate:hunter2secret@127.0.0.1:5432/auth\"\n".into();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, cfg.render()).unwrap();
    let out = run_cli(&path, &["check"], None);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("gateway.toml:5:1: identity.store: a password must not stand inline"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("hunter2secret") && !out.stdout.contains("hunter2secret"));
    // The same URL from a file is fine, and check shows it without the password.
    std::fs::write(
        dir.path().join("store-url"),
        "postgres://authgate:hunter2secret@127.0.0.1:5432/auth?sslmode=require\n",
    )
    .unwrap();
    cfg.identity = "store = \"file:store-url\"\nstore_pool = 4\n".into();
    std::fs::write(&path, cfg.render()).unwrap();
    let out = run_cli(&path, &["check"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("postgres://authgate@127.0.0.1:5432/auth (pool 4"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("hunter2secret") && !out.stderr.contains("hunter2secret"));
}

#[test]
fn bad_store_settings_are_config_errors_with_their_position() {
    let dir = TempDir::new("badstore");
    let mut cfg = Cfg::new(dead_addr());
    cfg.identity = "store = \"env:AUTHGATE_TEST_NO_SUCH_VAR\"\nstore_timeout = \"0ms\"\nstore_pool = 0\nrevocation_poll = \"soon\"\n".into();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, cfg.render()).unwrap();
    let out = run_cli(&path, &["check"], None);
    assert_eq!(out.code, 1);
    for want in [
        "gateway.toml:5:1: identity.store: environment variable AUTHGATE_TEST_NO_SUCH_VAR is not set",
        "gateway.toml:6:1: identity.store_timeout: must be at least 10ms",
        "gateway.toml:7:1: identity.store_pool: must be between 1 and 1000",
        "gateway.toml:8:1: identity.revocation_poll: \"soon\" is not a duration",
    ] {
        assert!(out.stderr.contains(want), "{want}\n{}", out.stderr);
    }
    cfg.identity = "store = \"postgres://u@h/d?sslmode=verify-ca\"\n".into();
    std::fs::write(&path, cfg.render()).unwrap();
    let out = run_cli(&path, &["check"], None);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("identity.store: sslmode=\"verify-ca\""),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_url_can_come_from_the_environment() {
    let db = PgDb::new("envurl");
    let upstream = Upstream::start();
    let key = SharedKey::new();
    let cfg = store_cfg(upstream.addr, "env:AUTHGATE_STORE", &key.path, "").render();
    let gw = Gateway::start_text(&cfg, &[("AUTHGATE_STORE", &db.url())]);
    assert_eq!(register(&gw, "gina", PW).await.status(), 201);
    assert_eq!(db.query("SELECT username FROM users"), "gina");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sslmode_require_encrypts_and_verify_full_refuses_an_untrusted_certificate() {
    let db = PgDb::new("tls");
    let upstream = Upstream::start();
    let key = SharedKey::new();
    let url = format!("{}?sslmode=require", db.url());
    let gw = Gateway::start(&store_cfg(upstream.addr, &url, &key.path, ""));
    assert_eq!(register(&gw, "hank", PW).await.status(), 201);
    let ssl = db.query(
        "SELECT bool_or(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'authgate'",
    );
    assert_eq!(ssl, "t", "the gateway's connections are TLS");
    // The machine's server certificate is self-signed: verify-full must refuse it.
    let url = format!("{}?sslmode=verify-full", db.url());
    let cfg = store_cfg(upstream.addr, &url, &key.path, "").render();
    let err = match Gateway::start_in(TempDir::new("gw"), &cfg, &[], "serve") {
        Ok(_) => panic!("verify-full accepted an untrusted certificate"),
        Err(e) => e,
    };
    assert!(err.contains("identity.store"), "{err}");
}

#[test]
fn the_scale_out_example_passes_check_with_its_credentials_in_place() {
    let dir = TempDir::new("example");
    let creds = dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(
        creds.join("store-url"),
        "postgres://authgate:secret-pw@10.0.0.20:5432/authgate?sslmode=verify-full\n",
    )
    .unwrap();
    let key = creds.join("signing-key");
    let out = run_cli(
        &dir.path().join("none.toml"),
        &[
            "keys",
            "generate",
            "--alg",
            "EdDSA",
            "--out",
            key.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/scale-out/gateway.toml"
    ))
    .unwrap()
    .replace(
        "/run/credentials/authgate.service/",
        &format!("{}/", creds.display()),
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = run_cli(&path, &["check"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("postgres://authgate@10.0.0.20:5432/authgate (pool 16"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("secret-pw"));
}
