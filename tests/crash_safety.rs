//! Crash safety of the SQLite store (SPEC §3, §8): ten times in a row, the
//! gateway is killed with SIGKILL under mixed load (register, login, refresh;
//! 50 concurrent clients) and started again on the same store. Every 201 is a
//! user, no refresh token works twice (not even across a crash), and
//! `PRAGMA integrity_check` is ok after every kill.
mod common;
use common::*;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROUNDS: usize = 10;
const CLIENTS: usize = 50;
const PASSWORD: &str = "correct horse battery";

/// What the clients were told, across all rounds.
#[derive(Default)]
struct Ledger {
    /// Usernames answered 201.
    registered: Mutex<Vec<String>>,
    /// Refresh tokens a refresh answered 200 for: spent, must never work again.
    spent: Mutex<Vec<String>>,
    /// Refresh tokens presented twice at once that were accepted twice.
    double_spends: AtomicUsize,
    /// Statuses that no request may get, whatever the load (500s, ...).
    unexpected: Mutex<Vec<String>>,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(4)
        .build()
        .unwrap()
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> Option<(u16, serde_json::Value)> {
    let r = c.post(url).json(&body).send().await.ok()?;
    let status = r.status().as_u16();
    let v = r.json().await.unwrap_or(serde_json::Value::Null);
    Some((status, v))
}

async fn refresh(c: &reqwest::Client, base: &str, token: &str) -> Option<(u16, Option<String>)> {
    let (s, v) = post(
        c,
        &format!("{base}/token/refresh"),
        serde_json::json!({ "refresh_token": token }),
    )
    .await?;
    Some((s, v["refresh_token"].as_str().map(str::to_string)))
}

/// One client: register a new user, log in, refresh, then present the new
/// refresh token twice at once; again and again until the gateway dies.
async fn client(base: String, tag: String, ledger: Arc<Ledger>, dead: Arc<AtomicBool>) {
    let c = http();
    let note = |what: &str, s: u16, ok: &[u16]| {
        if !ok.contains(&s) {
            ledger
                .unexpected
                .lock()
                .unwrap()
                .push(format!("{what}: {s}"));
        }
    };
    for i in 0.. {
        if dead.load(Ordering::SeqCst) {
            return;
        }
        let name = format!("{tag}n{i}");
        let creds = serde_json::json!({ "username": name, "password": PASSWORD });
        let Some((s, _)) = post(&c, &format!("{base}/register"), creds.clone()).await else {
            return;
        };
        note("register", s, &[201]);
        if s != 201 {
            continue;
        }
        ledger.registered.lock().unwrap().push(name.clone());
        let Some((s, v)) = post(&c, &format!("{base}/login"), creds).await else {
            return;
        };
        note("login", s, &[200]);
        let Some(mut token) = v["refresh_token"].as_str().map(str::to_string) else {
            continue;
        };
        let Some((s, new)) = refresh(&c, &base, &token).await else {
            return;
        };
        note("refresh", s, &[200]);
        if s != 200 {
            continue;
        }
        ledger.spent.lock().unwrap().push(token);
        let Some(new) = new else { continue };
        token = new;
        // The same token twice at once: at most one 200.
        let (a, b) = tokio::join!(refresh(&c, &base, &token), refresh(&c, &base, &token));
        let oks = [&a, &b]
            .iter()
            .filter(|r| matches!(r, Some((200, _))))
            .count();
        for r in [&a, &b].into_iter().flatten() {
            note("double refresh", r.0, &[200, 401]);
        }
        if oks > 1 {
            ledger.double_spends.fetch_add(1, Ordering::SeqCst);
        }
        if oks >= 1 {
            ledger.spent.lock().unwrap().push(token);
        }
        if a.is_none() || b.is_none() {
            return;
        }
    }
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open the store");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .expect("integrity_check")
}

fn users_in(db: &Path) -> HashSet<String> {
    let conn = rusqlite::Connection::open(db).expect("open the store");
    let mut st = conn.prepare("SELECT username FROM users").unwrap();
    st.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kill_9s_under_load_lose_no_user_and_spend_no_refresh_token_twice() {
    let up = Upstream::start();
    let cfg = Cfg::new(up.addr).render();
    let mut gw = Gateway::start_text(&cfg, &[]);
    let db = gw.dir.path().join("data/users.db");
    let ledger = Arc::new(Ledger::default());
    for round in 0..ROUNDS {
        let base = format!("http://{}", gw.addr);
        let dead = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|k| {
                tokio::spawn(client(
                    base.clone(),
                    format!("r{round}c{k}"),
                    ledger.clone(),
                    dead.clone(),
                ))
            })
            .collect();
        // Let the load build (on a busy machine it takes a while), then pull the
        // plug mid-flight: the moment varies by round.
        let users_before = ledger.registered.lock().unwrap().len();
        let spent_before = ledger.spent.lock().unwrap().len();
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        while (ledger.registered.lock().unwrap().len() < users_before + 20
            || ledger.spent.lock().unwrap().len() < spent_before + 10)
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100 + 53 * round as u64)).await;
        dead.store(true, Ordering::SeqCst);
        let status = tokio::task::block_in_place(|| gw.kill9());
        assert!(
            !status.success(),
            "round {round}: the gateway was not killed: {status}"
        );
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(integrity(&db), "ok", "round {round}");
        let users = users_in(&db);
        let lost: Vec<_> = ledger
            .registered
            .lock()
            .unwrap()
            .iter()
            .filter(|u| !users.contains(*u))
            .cloned()
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: answered 201 but not in the store: {lost:?}"
        );
        tokio::task::block_in_place(|| gw.restart(&cfg));
    }
    let registered = ledger.registered.lock().unwrap().len();
    let spent: Vec<String> = ledger.spent.lock().unwrap().clone();
    assert!(
        registered >= ROUNDS * 20,
        "too little load to mean anything: {registered} users"
    );
    assert!(
        spent.len() >= ROUNDS * 10,
        "too few refreshes: {}",
        spent.len()
    );
    assert_eq!(
        ledger.double_spends.load(Ordering::SeqCst),
        0,
        "a refresh token was accepted twice at once"
    );
    let unexpected = ledger.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    // Every token a refresh accepted before a crash is still spent after it.
    let c = http();
    let base = format!("http://{}", gw.addr);
    for token in &spent {
        let (s, _) = refresh(&c, &base, token)
            .await
            .expect("the restarted gateway answers");
        assert_eq!(s, 401, "a spent refresh token worked again");
    }
    // And every user answered 201 can log in after ten crashes.
    let users: Vec<String> = ledger
        .registered
        .lock()
        .unwrap()
        .iter()
        .step_by(7)
        .cloned()
        .collect();
    for u in users {
        let (s, _) = post(
            &c,
            &format!("{base}/login"),
            serde_json::json!({ "username": u, "password": PASSWORD }),
        )
        .await
        .unwrap();
        assert_eq!(s, 200, "{u}");
    }
    println!(
        "crash safety: {ROUNDS} kills, {registered} users registered, {} refresh tokens spent",
        spent.len()
    );
}
