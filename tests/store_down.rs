//! The shared store goes away (SPEC §9 "Store down"): the identity endpoints
//! answer 503 `store_unavailable` with `Retry-After` within `store_timeout` —
//! never a hang, never a 500 — while protected and public routes keep serving
//! on locally verified tokens, `/readyz` names the store, and everything
//! recovers by itself. Outages are made with a relay, never by touching the
//! machine's PostgreSQL.
mod common;
use common::cluster::*;
use common::services::{PgDb, Relay, PG_ADDR};
use common::*;

use std::time::{Duration, Instant};

use serde_json::json;

const PW: &str = "pw-StoreDown-9023-secret";

/// One gateway reaching its database through a relay; store_timeout 1s.
struct Setup {
    gw: Gateway,
    relay: Relay,
    _db: PgDb,
    _key: SharedKey,
    _upstream: Upstream,
}

fn setup(tag: &str) -> Setup {
    let db = PgDb::new(tag);
    let relay = Relay::start(PG_ADDR);
    let upstream = Upstream::start();
    let key = SharedKey::new();
    let cfg = store_cfg(
        upstream.addr,
        &db.url_via(relay.addr),
        &key.path,
        "store_timeout = \"1s\"\n",
    );
    Setup {
        gw: Gateway::start(&cfg),
        relay,
        _db: db,
        _key: key,
        _upstream: upstream,
    }
}

/// Every identity endpoint answers 503 store_unavailable, with Retry-After,
/// well within a generous bound over store_timeout (1s).
async fn endpoints_answer_503(gw: &Gateway, refresh: &str) {
    let calls = [
        ("/register", json!({"username": "newbie", "password": PW})),
        ("/login", json!({"username": "alice", "password": PW})),
        ("/token/refresh", json!({"refresh_token": refresh})),
        ("/logout", json!({"refresh_token": refresh})),
    ];
    for (path, body) in calls {
        let t = Instant::now();
        let r = client()
            .post(gw.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let took = t.elapsed();
        assert_eq!(r.status(), 503, "{path}");
        assert!(
            took < Duration::from_secs(6),
            "{path} took {took:?} (store_timeout 1s)"
        );
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "{path}: Retry-After {retry}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"], "store_unavailable", "{path}: {v}");
    }
}

async fn routes_keep_serving(gw: &Gateway, access: &str) {
    assert_eq!(bearer_status(gw, "/protected", access).await, 200);
    let r = client().get(gw.url("/public")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A bad token is still refused (verification is local, not skipped).
    assert_eq!(bearer_status(gw, "/protected", "not.a.token").await, 401);
}

async fn readyz(gw: &Gateway) -> (u16, serde_json::Value) {
    let r = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn recovers(gw: &Gateway) {
    let ok = eventually(Duration::from_secs(20), || async {
        let (s, _) = post(gw, "/login", json!({"username": "alice", "password": PW})).await;
        s == 200
    })
    .await;
    assert!(ok, "login did not recover:\n{}", gw.logs());
    assert_eq!(readyz(gw).await.0, 200);
    assert_eq!(register(gw, "after", PW).await.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_cut_gives_503_store_unavailable_while_routes_keep_serving_then_recovers() {
    let s = setup("cut");
    assert_eq!(register(&s.gw, "alice", PW).await.status(), 201);
    let (access, refresh) = login_pair(&s.gw, "alice", PW).await;
    assert_eq!(bearer_status(&s.gw, "/protected", &access).await, 200);
    s.relay.cut();
    endpoints_answer_503(&s.gw, &refresh).await;
    routes_keep_serving(&s.gw, &access).await;
    // A token the gateway has never seen (not cached) verifies too.
    let (fresh, _) = {
        s.relay.restore();
        let pair = login_pair(&s.gw, "alice", PW).await;
        s.relay.cut();
        pair
    };
    assert_eq!(bearer_status(&s.gw, "/protected", &fresh).await, 200);
    let (status, v) = readyz(&s.gw).await;
    assert_eq!(status, 503);
    assert_eq!(v["failing"], "store", "{v}");
    assert!(!s.gw.logs().contains("panicked"));
    s.relay.restore();
    recovers(&s.gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_blackholed_gives_503_within_store_timeout_not_a_hang() {
    let s = setup("blackhole");
    assert_eq!(register(&s.gw, "alice", PW).await.status(), 201);
    let (access, refresh) = login_pair(&s.gw, "alice", PW).await;
    s.relay.blackhole();
    endpoints_answer_503(&s.gw, &refresh).await;
    routes_keep_serving(&s.gw, &access).await;
    let t = Instant::now();
    let (status, v) = readyz(&s.gw).await;
    assert_eq!((status, v["failing"].as_str()), (503, Some("store")), "{v}");
    assert!(t.elapsed() < Duration::from_secs(6));
    s.relay.restore();
    recovers(&s.gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_whose_store_is_down_at_start_says_so_in_one_line() {
    let db = PgDb::new("downstart");
    let relay = Relay::start(PG_ADDR);
    relay.cut();
    let upstream = Upstream::start();
    let key = SharedKey::new();
    let cfg = store_cfg(
        upstream.addr,
        &db.url_via(relay.addr),
        &key.path,
        "store_timeout = \"1s\"\n",
    )
    .render();
    let err = match Gateway::start_in(TempDir::new("gw"), &cfg, &[], "serve") {
        Ok(_) => panic!("started without its store"),
        Err(e) => e,
    };
    assert!(err.contains("identity.store: store unavailable"), "{err}");
}
