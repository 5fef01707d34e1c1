//! The audit log (SPEC §18): one JSON line per security event, from the gateway
//! and from the CLI, and never a secret in it.
mod common;
use common::*;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";
const WRONG: &str = "wrong horse battery";

fn audit_cfg(up: std::net::SocketAddr) -> Cfg {
    let mut cfg = Cfg::new(up);
    cfg.rate_limit =
        "login_per_ip = \"off\"\nlogin_per_user = \"2/min\"\nregister_per_ip = \"off\"\n".into();
    cfg.rest
        .push_str("\n[session]\ncookie = true\n\n[audit]\npath = \"file:log/audit.log\"\n");
    cfg
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits until the file has `n` lines (the gateway writes on a thread of its own).
fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = lines(path);
        if l.len() >= n || Instant::now() > deadline {
            return l;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn of<'a>(all: &'a [Value], event: &str, key: &str, value: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|l| l["event"] == event && (key.is_empty() || l[key] == value))
        .collect()
}

async fn post(gw: &Gateway, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(gw.url(path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn rid(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn each_gateway_event_is_one_line_with_its_fields_and_no_secret() {
    let up = Upstream::start();
    let cfg = audit_cfg(up.addr);
    let gw = Gateway::start(&cfg);
    let file = gw.dir.path().join("log/audit.log");
    let mut secrets: Vec<String> = vec![PASSWORD.into(), WRONG.into()];

    let r = register(&gw, "alice", PASSWORD).await;
    assert_eq!(r.status(), 201);
    let register_rid = rid(&r);
    let r = login(&gw, "alice", PASSWORD).await;
    assert_eq!(r.status(), 200);
    let login_rid = rid(&r);
    let v: Value = r.json().await.unwrap();
    let (access, refresh1) = (
        v["access_token"].as_str().unwrap(),
        v["refresh_token"].as_str().unwrap(),
    );
    secrets.extend([access.to_string(), refresh1.to_string()]);
    assert_eq!(login(&gw, "alice", WRONG).await.status(), 401);
    // Two failures exhaust mallory's 2/min; the third attempt is throttled.
    assert_eq!(login(&gw, "mallory", WRONG).await.status(), 401);
    assert_eq!(login(&gw, "mallory", WRONG).await.status(), 401);
    assert_eq!(login(&gw, "mallory", WRONG).await.status(), 429);

    // Rotate once, then present the spent token again.
    let r = post(&gw, "/token/refresh", json!({ "refresh_token": refresh1 })).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    secrets.push(v["access_token"].as_str().unwrap().into());
    secrets.push(v["refresh_token"].as_str().unwrap().into());
    let r = post(&gw, "/token/refresh", json!({ "refresh_token": refresh1 })).await;
    assert_eq!(r.status(), 401);

    // A cookie session, then a logout everywhere.
    let r = client()
        .post(gw.url("/login"))
        .header("origin", format!("http://{}", gw.addr))
        .json(&json!({ "username": "alice", "password": PASSWORD, "session": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    for c in r.headers().get_all("set-cookie") {
        let c = c.to_str().unwrap();
        let value = c.split(';').next().unwrap().split_once('=').unwrap().1;
        if value.len() > 8 {
            secrets.push(value.to_string());
        }
    }
    let r = login(&gw, "alice", PASSWORD).await;
    let v: Value = r.json().await.unwrap();
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    secrets.push(v["access_token"].as_str().unwrap().into());
    secrets.push(refresh.clone());
    let r = post(
        &gw,
        "/logout",
        json!({ "refresh_token": refresh, "everywhere": true }),
    )
    .await;
    assert_eq!(r.status(), 204);

    // A reload that works and one that does not.
    assert!(gw.reload(&cfg.render()));
    assert!(!gw.reload("[server\nbroken"));

    let all = wait_lines(&file, 14);
    let text = std::fs::read_to_string(&file).unwrap();
    for l in &all {
        for k in ["time", "event", "user", "peer", "request_id"] {
            assert!(l.get(k).is_some(), "no {k}: {l}");
        }
        assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
    }
    let reg = of(&all, "register", "", "");
    assert_eq!(reg.len(), 1, "{text}");
    assert_eq!(reg[0]["user"], "alice");
    assert_eq!(reg[0]["peer"], "127.0.0.1");
    assert_eq!(reg[0]["request_id"], register_rid.as_str());
    let ok = of(&all, "login", "outcome", "ok");
    assert_eq!(ok.len(), 3, "{text}");
    assert_eq!(ok[0]["user"], "alice");
    assert_eq!(ok[0]["request_id"], login_rid.as_str());
    let bad = of(&all, "login", "outcome", "bad_credentials");
    assert_eq!(bad.len(), 3, "{text}");
    assert_eq!(bad.iter().filter(|l| l["user"] == "mallory").count(), 2);
    let throttled = of(&all, "login", "outcome", "throttled");
    assert_eq!(throttled.len(), 1, "{text}");
    assert_eq!(throttled[0]["user"], "mallory");
    let reuse = of(&all, "refresh_reuse", "", "");
    assert_eq!(reuse.len(), 1, "{text}");
    assert_eq!(reuse[0]["user"], "alice");
    assert_eq!(of(&all, "revoke", "by", "reuse").len(), 1, "{text}");
    let logout = of(&all, "logout", "", "");
    assert_eq!(logout.len(), 1, "{text}");
    assert_eq!(logout[0]["user"], "alice");
    assert_eq!(of(&all, "revoke", "by", "logout").len(), 1, "{text}");
    assert_eq!(
        of(&all, "config_reload", "outcome", "ok").len(),
        1,
        "{text}"
    );
    assert_eq!(
        of(&all, "config_reload", "outcome", "failed").len(),
        1,
        "{text}"
    );
    assert_eq!(all.len(), 14, "{text}");
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "a secret reached the audit log: {s}"
        );
    }
    let m = client().get(gw.url("/public/x")).send().await.unwrap();
    assert_eq!(m.status(), 200);
}

#[tokio::test]
async fn users_commands_append_their_changes_to_the_audit_log() {
    let up = Upstream::start();
    let gw = Gateway::start(&audit_cfg(up.addr));
    let file = gw.dir.path().join("log/audit.log");
    let pw1 = "first cli password";
    let pw2 = "second cli password";
    let ok = |o: CliOutput| assert_eq!(o.code, 0, "{}", o.stderr);
    ok(gw.cli(
        &["users", "add", "carol", "--roles", "a,b"],
        Some(&format!("{pw1}\n")),
    ));
    ok(gw.cli(&["users", "set-roles", "carol", "ops"], None));
    ok(gw.cli(
        &["users", "set-password", "carol"],
        Some(&format!("{pw2}\n")),
    ));
    ok(gw.cli(&["users", "revoke", "carol"], None));
    ok(gw.cli(&["users", "remove", "carol"], None));
    // A refused command changes nothing and records nothing.
    assert_ne!(gw.cli(&["users", "remove", "carol"], None).code, 0);
    let all = lines(&file);
    let text = std::fs::read_to_string(&file).unwrap();
    let actions: Vec<&str> = of(&all, "user_change", "", "")
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["add", "set-roles", "set-password", "revoke", "remove"],
        "{text}"
    );
    assert!(all.iter().all(|l| l["user"] == "carol"), "{text}");
    assert_eq!(
        of(&all, "user_change", "action", "add")[0]["roles"],
        json!(["a", "b"])
    );
    assert_eq!(
        of(&all, "user_change", "action", "set-roles")[0]["roles"],
        json!(["ops"])
    );
    assert_eq!(of(&all, "revoke", "by", "cli").len(), 1, "{text}");
    assert_eq!(all.len(), 6, "{text}");
    for s in [pw1, pw2] {
        assert!(!text.contains(s), "a password reached the audit log");
    }
}

#[tokio::test]
async fn stderr_audit_lines_use_their_own_target_and_an_absent_section_writes_nothing() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.rest.push_str("\n[audit]\npath = \"stderr\"\n");
    let gw = Gateway::start(&cfg);
    assert_eq!(register(&gw, "dave", PASSWORD).await.status(), 201);
    assert!(
        gw.wait_log("authgate::audit", 1, Duration::from_secs(5)),
        "{}",
        gw.logs()
    );
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("authgate::audit"))
        .unwrap();
    assert!(
        line.contains("\"event\":\"register\"") || line.contains("\\\"event\\\":\\\"register\\\""),
        "{line}"
    );
    assert!(!logs.contains(PASSWORD));

    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(register(&gw, "erin", PASSWORD).await.status(), 201);
    assert!(!gw.logs().contains("authgate::audit"));
    assert!(!gw.dir.path().join("log").exists());
}

#[tokio::test]
async fn after_logrotate_renames_the_file_sighup_starts_a_new_one_and_events_are_counted() {
    let up = Upstream::start();
    let mut cfg = audit_cfg(up.addr);
    cfg.admin = Some("listen = \"127.0.0.1:0\"\n".into());
    let gw = Gateway::start(&cfg);
    let file = gw.dir.path().join("log/audit.log");
    assert_eq!(register(&gw, "frank", PASSWORD).await.status(), 201);
    assert_eq!(wait_lines(&file, 1).len(), 1);
    let rotated = gw.dir.path().join("log/audit.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    assert!(gw.reload(&cfg.render()));
    assert_eq!(login(&gw, "frank", PASSWORD).await.status(), 200);
    let fresh = wait_lines(&file, 2);
    assert_eq!(fresh.len(), 2, "{fresh:?}");
    assert_eq!(fresh[0]["event"], "config_reload");
    assert_eq!(fresh[1]["event"], "login");
    assert_eq!(lines(&rotated).len(), 1, "the old file is left alone");
    let m = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("authgate_audit_events_total{kind=\"register\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn apikeys_commands_record_the_key_id_never_the_key() {
    let up = Upstream::start();
    let mut cfg = audit_cfg(up.addr);
    cfg.rest.push_str("\n[api_keys]\nenabled = true\n");
    let gw = Gateway::start(&cfg);
    let file = gw.dir.path().join("log/audit.log");
    let o = gw.cli(&["users", "add", "svc"], Some(&format!("{PASSWORD}\n")));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = gw.cli(&["apikeys", "create", "svc"], None);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let key = o.stdout.trim().to_string();
    let all = lines(&file);
    let created = of(&all, "api_key_change", "action", "create");
    assert_eq!(created.len(), 1, "{all:?}");
    assert_eq!(created[0]["user"], "svc");
    let id = created[0]["key_id"].as_str().unwrap().to_string();
    let o = gw.cli(&["apikeys", "revoke", &id], None);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let all = lines(&file);
    let revoked = of(&all, "api_key_change", "action", "revoke");
    assert_eq!(revoked.len(), 1, "{all:?}");
    assert_eq!(revoked[0]["key_id"], id.as_str());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !key.is_empty() && !text.contains(&key),
        "the key reached the audit log"
    );
    assert!(!text.contains(PASSWORD));
}
