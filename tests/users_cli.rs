//! The ops CLI of the identity capability (SPEC §1, §8 "CLI"): `users add/list/
//! set-password/set-roles/remove` against a running gateway, `keys generate`,
//! `token inspect`.
mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use serde_json::{json, Value};

const PW: &str = "pw-Cli-4412-secret";

async fn post(gw: &Gateway, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(gw.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn reg(gw: &Gateway, user: &str, pw: &str) -> u16 {
    post(gw, "/register", json!({ "username": user, "password": pw }))
        .await
        .0
}

/// Logs in; Some((access, refresh)) on 200, None on 401, panics on anything else.
async fn log_in(gw: &Gateway, user: &str, pw: &str) -> Option<(String, String)> {
    let (s, v) = post(gw, "/login", json!({ "username": user, "password": pw })).await;
    match s {
        200 => Some((
            v["access_token"].as_str().unwrap().to_string(),
            v["refresh_token"].as_str().unwrap().to_string(),
        )),
        401 => {
            assert_eq!(v["error"], "invalid_credentials");
            None
        }
        other => panic!("login answered {other}: {v}"),
    }
}

async fn refresh(gw: &Gateway, token: &str) -> (u16, Value) {
    post(gw, "/token/refresh", json!({ "refresh_token": token })).await
}

fn roles_of(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["roles"].clone()
}

fn ok(out: &CliOutput) {
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
}

/// SPEC §8: a failed command exits non-zero with one line on stderr.
fn fails_with_one_line(out: &CliOutput, mentions: &str) {
    assert_ne!(out.code, 0, "succeeded: {}", out.stdout);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "stderr: {:?}", out.stderr);
    assert!(
        lines[0].to_lowercase().contains(mentions),
        "{:?} does not mention {mentions:?}",
        lines[0]
    );
    assert!(!out.stderr.contains("panicked"));
}

/// `users list` rows as (name, roles, created); an empty roles column reads "".
fn list(gw: &Gateway) -> Vec<(String, String, String)> {
    let out = gw.cli(&["users", "list"], None);
    ok(&out);
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.len() {
                2 => (f[0].into(), String::new(), f[1].into()),
                3 => (f[0].into(), f[1].into(), f[2].into()),
                _ => panic!("unexpected users list line {l:?}"),
            }
        })
        .collect()
}

fn utc_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

// ---------------------------------------------------------------- users

#[tokio::test]
async fn users_add_reads_the_password_from_stdin_while_the_gateway_runs() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let out = gw.cli(
        &["users", "add", "Bob", "--roles", "a,b"],
        Some(&format!("{PW}\n")),
    );
    ok(&out);
    assert!(!out.stdout.contains(PW) && !out.stderr.contains(PW));
    let (access, _) = log_in(&gw, "bob", PW).await.expect("bob logs in");
    assert_eq!(roles_of(&access), json!(["a", "b"]));
    assert_eq!(bearer_status(&gw, "/protected", &access).await, 200);
    assert_eq!(up.last().header("x-user").as_deref(), Some("bob"));
    assert_eq!(up.last().header("x-user-roles").as_deref(), Some("a,b"));
    // A CRLF line end is not part of the password.
    ok(&gw.cli(&["users", "add", "carol"], Some(&format!("{PW}\r\n"))));
    assert!(log_in(&gw, "carol", PW).await.is_some());
    // The name is taken, for the API too.
    assert_eq!(reg(&gw, "BOB", PW).await, 409);
}

#[tokio::test]
async fn users_list_shows_name_roles_and_created() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let before = utc_now();
    assert_eq!(reg(&gw, "alice", PW).await, 201);
    ok(&gw.cli(
        &["users", "add", "bob", "--roles", "admin,ops"],
        Some(&format!("{PW}\n")),
    ));
    let rows = list(&gw);
    let after = utc_now();
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(rows[0].1, "");
    assert_eq!(rows[1].1, "admin,ops");
    for (name, _, created) in &rows {
        // RFC 3339 UTC, between the clock before and after.
        assert_eq!(created.len(), 20, "{name}: {created}");
        assert!(
            before.as_str() <= created.as_str() && created.as_str() <= after.as_str(),
            "{name} created {created}, not within [{before}, {after}]"
        );
    }
    assert!(!gw.cli(&["users", "list"], None).stdout.contains("argon2"));
}

#[tokio::test]
async fn set_roles_apply_to_tokens_issued_afterwards() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await, 201);
    let (t0, r0) = log_in(&gw, "alice", PW).await.unwrap();
    assert_eq!(roles_of(&t0), json!([]));
    assert_eq!(bearer_status(&gw, "/admin", &t0).await, 403);

    ok(&gw.cli(&["users", "set-roles", "ALICE", "admin,ops"], None));
    assert_eq!(list(&gw)[0].1, "admin,ops");
    // Tokens already issued are what they are.
    assert_eq!(bearer_status(&gw, "/admin", &t0).await, 403);
    // A refresh picks the new roles up ...
    let (s, v) = refresh(&gw, &r0).await;
    assert_eq!(s, 200, "{v}");
    let t1 = v["access_token"].as_str().unwrap();
    assert_eq!(roles_of(t1), json!(["admin", "ops"]));
    assert_eq!(bearer_status(&gw, "/admin/x", t1).await, 200);
    assert_eq!(
        up.last().header("x-user-roles").as_deref(),
        Some("admin,ops")
    );
    // ... and so does a new login.
    let (t2, _) = log_in(&gw, "alice", PW).await.unwrap();
    assert_eq!(roles_of(&t2), json!(["admin", "ops"]));

    // "" clears.
    ok(&gw.cli(&["users", "set-roles", "alice", ""], None));
    assert_eq!(list(&gw)[0].1, "");
    let (t3, _) = log_in(&gw, "alice", PW).await.unwrap();
    assert_eq!(roles_of(&t3), json!([]));
    assert_eq!(bearer_status(&gw, "/admin", &t3).await, 403);

    fails_with_one_line(
        &gw.cli(&["users", "set-roles", "nobody", "admin"], None),
        "nobody",
    );
}

#[tokio::test]
async fn set_password_replaces_the_password_from_stdin() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await, 201);
    let new_pw = "another-Secret-5519";
    let out = gw.cli(
        &["users", "set-password", "alice"],
        Some(&format!("{new_pw}\n")),
    );
    ok(&out);
    assert!(!out.stdout.contains(new_pw) && !out.stderr.contains(new_pw));
    assert!(log_in(&gw, "alice", PW).await.is_none());
    assert!(log_in(&gw, "alice", new_pw).await.is_some());
    // Too short: refused, and the password stays.
    fails_with_one_line(
        &gw.cli(&["users", "set-password", "alice"], Some("short\n")),
        "password",
    );
    assert!(log_in(&gw, "alice", new_pw).await.is_some());
    fails_with_one_line(
        &gw.cli(
            &["users", "set-password", "nobody"],
            Some(&format!("{PW}\n")),
        ),
        "nobody",
    );
}

#[tokio::test]
async fn users_remove_deletes_the_user_and_their_refresh_tokens() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await, 201);
    assert_eq!(reg(&gw, "bob", PW).await, 201);
    let (_, r) = log_in(&gw, "alice", PW).await.unwrap();
    let (_, rb) = log_in(&gw, "bob", PW).await.unwrap();
    ok(&gw.cli(&["users", "remove", "Alice"], None));
    assert!(log_in(&gw, "alice", PW).await.is_none());
    let (s, v) = refresh(&gw, &r).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_grant")));
    let names: Vec<String> = list(&gw).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["bob"]);
    // Bob is untouched; the name is free again.
    assert_eq!(refresh(&gw, &rb).await.0, 200);
    fails_with_one_line(&gw.cli(&["users", "remove", "alice"], None), "alice");
    assert_eq!(reg(&gw, "alice", "a new password").await, 201);
}

#[tokio::test]
async fn the_password_is_never_taken_from_argv() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await, 201);
    for args in [
        &["users", "add", "carol", "hunter2hunter2"][..],
        &["users", "add", "carol", "--password", "hunter2hunter2"],
        &["users", "add", "carol", "--password=hunter2hunter2"],
        &["users", "set-password", "alice", "hunter2hunter2"],
        &[
            "users",
            "set-password",
            "alice",
            "--password",
            "hunter2hunter2",
        ],
    ] {
        let out = gw.cli(args, Some("hunter2hunter2\n"));
        assert_ne!(out.code, 0, "{args:?} accepted");
    }
    // No stdin at all (not a terminal, nothing piped): refused, nothing created.
    fails_with_one_line(&gw.cli(&["users", "add", "carol"], None), "password");
    let names: Vec<String> = list(&gw).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["alice"]);
    assert!(log_in(&gw, "alice", "hunter2hunter2").await.is_none());
    assert!(log_in(&gw, "alice", PW).await.is_some());
}

#[tokio::test]
async fn users_add_refuses_bad_input_in_one_line() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await, 201);
    let pw = format!("{PW}\n");
    fails_with_one_line(&gw.cli(&["users", "add", "ALICE"], Some(&pw)), "alice");
    fails_with_one_line(
        &gw.cli(&["users", "add", "bob"], Some("short\n")),
        "password",
    );
    fails_with_one_line(&gw.cli(&["users", "add", "b b"], Some(&pw)), "username");
    fails_with_one_line(&gw.cli(&["users", "add", "ab"], Some(&pw)), "username");
    let out = gw.cli(&["users", "add", "bob", "--roles", "admin,x y"], Some(&pw));
    assert_ne!(out.code, 0);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    let names: Vec<String> = list(&gw).into_iter().map(|r| r.0).collect();
    assert_eq!(names, ["alice"]);
}

#[tokio::test]
async fn cli_writes_while_the_gateway_registers_users_all_succeed() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let config = gw.config_path.clone();
    let cli = std::thread::spawn(move || {
        (0..5)
            .map(|i| {
                run_cli(
                    &config,
                    &["users", "add", &format!("ops{i}"), "--roles", "admin"],
                    Some(&format!("{PW}\n")),
                )
            })
            .collect::<Vec<_>>()
    });
    let http = futures_util::future::join_all((0..20).map(|i| {
        let gw = &gw;
        async move { reg(gw, &format!("web{i}"), PW).await }
    }))
    .await;
    assert!(http.iter().all(|&s| s == 201), "{http:?}");
    for out in cli.join().unwrap() {
        ok(&out);
    }
    assert_eq!(list(&gw).len(), 25);
    let (t, _) = log_in(&gw, "ops3", PW).await.unwrap();
    assert_eq!(roles_of(&t), json!(["admin"]));
}

// ---------------------------------------------------------------- keys generate

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn keys_generate(dir: &TempDir, alg: &str, out: &Path, force: bool) -> CliOutput {
    let mut args = vec![
        "keys",
        "generate",
        "--alg",
        alg,
        "--out",
        out.to_str().unwrap(),
    ];
    if force {
        args.push("--force");
    }
    run_cli(&dir.path().join("gateway.toml"), &args, None)
}

#[test]
fn keys_generate_writes_pkcs8_pem_with_mode_0600() {
    authgate::install_crypto();
    let dir = TempDir::new("keys");
    for alg in ["EdDSA", "ES256", "RS256"] {
        let p = dir.path().join(format!("new/{alg}.pem"));
        ok(&keys_generate(&dir, alg, &p, false));
        assert_eq!(mode(&p), 0o600, "{alg}");
        let pem = std::fs::read_to_string(&p).unwrap();
        // PKCS#8: the generic label, not "EC PRIVATE KEY" / "RSA PRIVATE KEY".
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"), "{pem}");
        let loaded = match alg {
            "EdDSA" => jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()),
            "ES256" => jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()),
        };
        assert!(loaded.is_ok(), "{alg} key does not load");
        // Each run makes a new key.
        let q = dir.path().join(format!("new/{alg}-2.pem"));
        ok(&keys_generate(&dir, alg, &q, false));
        assert_ne!(std::fs::read(&q).unwrap(), pem.as_bytes());
    }
    for bad in ["HS256", "none", "RS512"] {
        let p = dir.path().join(format!("{bad}.pem"));
        fails_with_one_line(&keys_generate(&dir, bad, &p, false), "");
        assert!(!p.exists());
    }
}

#[test]
fn keys_generate_refuses_to_overwrite_without_force() {
    let dir = TempDir::new("keys");
    let p = dir.path().join("signing.pem");
    ok(&keys_generate(&dir, "EdDSA", &p, false));
    let first = std::fs::read(&p).unwrap();
    fails_with_one_line(&keys_generate(&dir, "EdDSA", &p, false), "--force");
    assert_eq!(std::fs::read(&p).unwrap(), first, "the key was overwritten");
    ok(&keys_generate(&dir, "EdDSA", &p, true));
    assert_ne!(std::fs::read(&p).unwrap(), first);
    assert_eq!(mode(&p), 0o600);

    // --force over a file someone left world-readable: the key must still end up 0600.
    let q = dir.path().join("loose.pem");
    std::fs::write(&q, "placeholder").unwrap();
    std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o644)).unwrap();
    fails_with_one_line(&keys_generate(&dir, "ES256", &q, false), "--force");
    assert_eq!(std::fs::read_to_string(&q).unwrap(), "placeholder");
    ok(&keys_generate(&dir, "ES256", &q, true));
    assert!(std::fs::read_to_string(&q)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(mode(&q), 0o600, "a private key left readable by others");
}

// ---------------------------------------------------------------- token inspect

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs `claims` with the gateway's own EdDSA key file, under `kid`.
fn sign_with(key_file: &Path, kid: &str, claims: &Value) -> String {
    let pem = std::fs::read(key_file).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

/// SPEC §8: 1 and the reason in one line.
fn rejected(out: &CliOutput, why: &str) {
    assert_eq!(
        out.code, 1,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = all
        .lines()
        .filter(|l| l.to_lowercase().contains("reject"))
        .collect();
    assert_eq!(lines.len(), 1, "{all}");
    assert!(
        lines[0].to_lowercase().contains(why),
        "{:?} lacks {why:?}",
        lines[0]
    );
}

#[tokio::test]
async fn token_inspect_exits_0_for_a_valid_token_and_1_with_the_reason_otherwise() {
    authgate::install_crypto();
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    assert_eq!(reg(&gw, "alice", PW).await, 201);
    let (token, _) = log_in(&gw, "alice", PW).await.unwrap();

    let out = gw.cli(&["token", "inspect", &token], None);
    ok(&out);
    assert!(out.stdout.contains("alice"), "{}", out.stdout);
    assert!(
        out.stdout.contains("\"kid\""),
        "the header is printed: {}",
        out.stdout
    );

    // Tampered payload: the signature no longer matches.
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&parts[1])
            .unwrap(),
    )
    .unwrap();
    claims["sub"] = json!("admin");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    rejected(
        &gw.cli(&["token", "inspect", &parts.join(".")], None),
        "signature",
    );

    // Tampered signature.
    let mut sig = token.clone();
    let last = sig.pop().unwrap();
    sig.push(if last == 'A' { 'B' } else { 'A' });
    let out = gw.cli(&["token", "inspect", &sig], None);
    assert_eq!(out.code, 1, "{}", out.stdout);

    // Properly signed with the gateway's key, but expired (beyond the leeway).
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let key_file = gw.dir.path().join("data/signing-key.pem");
    let t = now();
    let base = json!({"sub":"alice","iss":"authgate","aud":"api","jti":"x","roles":[]});
    let with_times = |iat: u64, exp: u64| {
        let mut c = base.clone();
        c["iat"] = json!(iat);
        c["nbf"] = json!(iat);
        c["exp"] = json!(exp);
        c
    };
    // The forging itself is sound: the same recipe, unexpired, is accepted.
    ok(&gw.cli(
        &[
            "token",
            "inspect",
            &sign_with(&key_file, &kid, &with_times(t, t + 600)),
        ],
        None,
    ));
    let expired = sign_with(&key_file, &kid, &with_times(t - 7200, t - 3600));
    rejected(&gw.cli(&["token", "inspect", &expired], None), "expired");
    // The gateway agrees.
    assert_eq!(bearer_status(&gw, "/protected", &expired).await, 401);

    // Not a token at all.
    let out = gw.cli(&["token", "inspect", "not-a-token"], None);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(!out.stderr.contains("panicked"));
}
