//! `authgate check` and `authgate explain` (SPEC §1, §8): check validates the
//! config like `nginx -t`, every error on its own line at its key; explain says
//! what the running proxy does with a request; every failing command prints one
//! line on stderr, never a panic trace.
mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Stdio};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml");

fn cli_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut c = Command::new(BIN);
    c.arg("-c")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("AUTHGATE_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `text` as gateway.toml in a fresh folder.
fn config_file(text: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new("check");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn assert_one_clean_line(what: &str, out: &CliOutput) {
    assert_ne!(out.code, 0, "{what}: exit 0");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{what}: stderr was {:?}", out.stderr);
    for bad in [
        "panicked",
        "RUST_BACKTRACE",
        "stack backtrace",
        "Error {",
        "Os {",
    ] {
        assert!(!out.stderr.contains(bad), "{what}: {:?}", out.stderr);
    }
}

const MINIMAL: &str = "[[upstream]]\nname = \"app\"\ntargets = [\"http://127.0.0.1:9000\"]\n\n\
                       [[route]]\npath = \"/protected\"\nupstream = \"app\"\n";

// ---------------------------------------------------------------- check

#[test]
fn the_shipped_gateway_toml_passes_check_and_is_summarised() {
    let out = run_cli(Path::new(SHIPPED), &["check"], None);
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(out.stderr, "");
    let lines: Vec<&str> = out.stdout.lines().collect();
    for want in [
        "listener  http://127.0.0.1:8080",
        "upstream  app: http://127.0.0.1:9000 (connect 2s, timeout 30s)",
        "route     * /protected -> app (auth required)",
        "route     * /hello -> app (auth public)",
    ] {
        assert!(
            lines.contains(&want),
            "no line {want:?} in:\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("configuration OK"), "{}", out.stdout);
}

#[test]
fn every_config_error_is_reported_on_its_own_line_at_its_key() {
    let text = "\
[server]
listen = [\"127.0.0.1:0\"]
header_read_timout = \"10s\"
  idle_timeout = \"10 parsecs\"

[tokens]
algorithm = \"HS256\"
secret = \"hunter2hunter2hunter2hunter2hunter2\"

[[upstream]]
name = \"app\"
targets = [\"http://127.0.0.1:9000\"]

[[route]]
path = \"/a\"
upstream = \"ap\"

[[route]]
path = \"/b\"
upstream = \"app\"

[[route]]
path = \"/b\"
upstream = \"app\"
";
    let (_dir, path) = config_file(text);
    let out = run_cli(&path, &["check"], None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.stdout, "", "nothing is summarised when invalid");
    let file = path.display().to_string();
    let lines: Vec<&str> = out.stderr.lines().collect();
    let expected = [
        (3, 1, "server.header_read_timout", "unknown key"),
        (4, 3, "server.idle_timeout", "10 parsecs"),
        (8, 1, "tokens.secret", "inline"),
        (16, 1, "route[0].upstream", "\"ap\""),
        (23, 1, "route[2].path", "same"),
    ];
    assert_eq!(lines.len(), expected.len(), "{}", out.stderr);
    for (line, col, key, why) in expected {
        let prefix = format!("{file}:{line}:{col}: {key}: ");
        let found = lines.iter().find(|l| l.starts_with(&prefix));
        assert!(
            found.is_some_and(|l| l.contains(why)),
            "no line {prefix}…{why}… in:\n{}",
            out.stderr
        );
    }
}

#[test]
fn a_missing_asymmetric_signing_key_is_not_an_error_for_check() {
    for alg in ["EdDSA", "ES256", "RS256"] {
        let (dir, path) = config_file(&format!(
            "[tokens]\nalgorithm = \"{alg}\"\nsigning_key = \"file:keys/signing.pem\"\n\n{MINIMAL}"
        ));
        let out = run_cli(&path, &["check"], None);
        assert_eq!(out.code, 0, "{alg}: {}", out.stderr);
        assert!(
            out.stdout.contains("will be created on first start"),
            "{alg}: {}",
            out.stdout
        );
        // check validates; it creates nothing.
        assert!(!dir.path().join("keys/signing.pem").exists(), "{alg}");
    }
}

#[test]
fn an_hs256_secret_shorter_than_32_bytes_is_an_error_naming_tokens_secret() {
    let (dir, path) = config_file(&format!(
        "[tokens]\nalgorithm = \"HS256\"\nsecret = \"env:AUTHGATE_TEST_SECRET\"\n\n{MINIMAL}"
    ));
    let file = path.display().to_string();
    let short = "x".repeat(31);
    let out = cli_env(&path, &["check"], &[("AUTHGATE_TEST_SECRET", &short)]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with(&format!("{file}:3:1: tokens.secret: ")),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("32"), "{}", lines[0]);
    assert!(!lines[0].contains(&short), "the secret itself is printed");
    // Exactly 32 bytes is enough.
    let out = cli_env(
        &path,
        &["check"],
        &[("AUTHGATE_TEST_SECRET", &"x".repeat(32))],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // A file's trailing newline does not count.
    std::fs::write(dir.path().join("secret"), format!("{short}\n")).unwrap();
    std::fs::write(
        &path,
        format!("[tokens]\nalgorithm = \"HS256\"\nsecret = \"file:secret\"\n\n{MINIMAL}"),
    )
    .unwrap();
    let out = run_cli(&path, &["check"], None);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr
            .starts_with(&format!("{file}:3:1: tokens.secret: ")),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------- explain

/// What `explain` predicts for one request.
#[derive(Debug, PartialEq)]
enum Verdict {
    Refused(u16),
    Routed {
        path: String,
        auth: String,
        forwards: String,
    },
}

fn explain(gw: &Gateway, args: &[&str]) -> Verdict {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    let out = gw.cli(&all, None);
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    let field = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    if let Some(r) = field("refused") {
        return Verdict::Refused(r[..3].parse().unwrap());
    }
    let path = field("path").unwrap_or_else(|| panic!("{args:?}: {}", out.stdout));
    Verdict::Routed {
        path: path.split(' ').next().unwrap().to_string(),
        auth: field("auth")
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .to_string(),
        forwards: field("forwards").unwrap(),
    }
}

#[tokio::test]
async fn explain_agrees_with_what_the_running_gateway_does() {
    let up = Upstream::start();
    let mut cfg = Cfg::new(up.addr);
    cfg.rest.push_str(
        "\n[[route]]\npath = \"/api-only\"\nupstream = \"app\"\nauth = \"public\"\nhost = \"api.example.com\"\n\
         \n[[route]]\npath = \"/strip\"\nupstream = \"app\"\nauth = \"public\"\nstrip_prefix = true\n",
    );
    let gw = Gateway::start(&cfg);
    let two_auth: &[&str] = &["Authorization: Bearer a.b.c", "Authorization: Bearer d.e.f"];
    let cases: &[(&str, &str, &[&str])] = &[
        ("/protected", "gw.test", &[]),
        ("/public/../protected", "gw.test", &[]),
        ("/nope", "gw.test", &[]),
        ("/protected;x", "gw.test", &[]),
        ("/protected%2fx", "gw.test", &[]),
        ("/PROTECTED", "gw.test", &[]),
        ("/..", "gw.test", &[]),
        ("/public/./x?a=1", "gw.test", &[]),
        ("/%70ublic//y", "gw.test", &[]),
        ("/strip/a/../b", "gw.test", &[]),
        ("/api-only", "API.example.com:8443", &[]),
        ("/api-only", "evil.test", &[]),
        (
            "/protected",
            "gw.test",
            &["Authorization: Bearer not.a.jwt"],
        ),
        ("/protected", "gw.test", &["Authorization: Bearer"]),
        (
            "/protected",
            "gw.test",
            &["Authorization: Basic dXNlcjpwYXNz"],
        ),
        ("/protected", "gw.test", two_auth),
        ("/public/x", "gw.test", two_auth),
        ("/public/x", "gw.test", &["Authorization: Bearer not.a.jwt"]),
    ];
    for &(target, host, headers) in cases {
        let mut args = vec!["GET", target, "--host", host];
        for h in headers {
            args.extend_from_slice(&["-H", h]);
        }
        let verdict = explain(&gw, &args);
        let before = up.count();
        let mut req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        for h in headers {
            req.push_str(&format!("{h}\r\n"));
        }
        let r = raw(gw.addr, &format!("{req}\r\n"));
        let target = format!("{target} {headers:?}");
        match &verdict {
            Verdict::Refused(status) => {
                assert_eq!(
                    r.status, *status,
                    "{target}: explain said {verdict:?}; {r:?}"
                );
                assert_eq!(up.count(), before, "{target} was forwarded");
            }
            Verdict::Routed { auth, forwards, .. } if auth == "required" => {
                assert_eq!(r.status, 401, "{target}: explain said {verdict:?}; {r:?}");
                assert_eq!(r.json()["error"], "missing_token", "{target}");
                assert_eq!(up.count(), before, "{target} was forwarded");
                assert!(forwards.starts_with("GET http://"), "{forwards}");
            }
            Verdict::Routed { auth, forwards, .. } => {
                assert_eq!(auth, "public", "{target}");
                assert_eq!(r.status, 200, "{target}: explain said {verdict:?}; {r:?}");
                assert_eq!(
                    forwards,
                    &format!("GET http://{}{}", up.addr, up.last().uri),
                    "{target}"
                );
            }
        }
    }
    // The ones the task names, pinned.
    assert_eq!(
        explain(&gw, &["GET", "/public/../protected"]),
        Verdict::Routed {
            path: "/protected".into(),
            auth: "required".into(),
            forwards: format!("GET http://{}/protected", up.addr),
        }
    );
    assert_eq!(
        explain(&gw, &["GET", "/protected;x"]),
        Verdict::Refused(400)
    );
    assert_eq!(explain(&gw, &["GET", "/nope"]), Verdict::Refused(404));

    // With a token, both say the caller gets through, as the same user.
    let (token, _) = token_for(&gw, "alice").await;
    let auth = format!("Authorization: Bearer {token}");
    let out = gw.cli(
        &["explain", "GET", "/public/../protected/x", "-H", &auth],
        None,
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("token") && l.contains("\"alice\"")),
        "{}",
        out.stdout
    );
    let r = get(gw.addr, "/public/../protected/x", &[&auth]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.last().uri, "/protected/x");
    assert_eq!(up.last().header("x-user").as_deref(), Some("alice"));
}

// ---------------------------------------------------------------- failures

#[test]
fn failing_commands_print_one_line_on_stderr_and_exit_non_zero() {
    let missing = Path::new("/nonexistent/authgate/gateway.toml");
    for args in [
        &["check"][..],
        &["serve"],
        &["explain", "GET", "/x"],
        &["users", "list"],
        &["token", "inspect", "abc"],
    ] {
        let out = run_cli(missing, args, None);
        assert_one_clean_line(&format!("{args:?} without a config"), &out);
        assert!(
            out.stderr.contains("/nonexistent/authgate/gateway.toml"),
            "{}",
            out.stderr
        );
    }
    let (dir, broken) = config_file("[server\nlisten = 1\n");
    for args in [&["check"][..], &["serve"], &["explain", "GET", "/x"]] {
        let out = run_cli(&broken, args, None);
        assert_one_clean_line(&format!("{args:?} with a syntax error"), &out);
        assert!(out.stderr.contains(":1:"), "{}", out.stderr);
    }
    let (_dir2, ok) = config_file(MINIMAL);
    let out = run_cli(&ok, &["explain", "GE T", "/x"], None);
    assert_one_clean_line("explain with a bad method", &out);
    let out = run_cli(&ok, &["explain", "GET", "/x", "-H", "no colon"], None);
    assert_one_clean_line("explain with a bad header", &out);
    let key = dir.path().join("k.pem");
    let out = run_cli(
        &ok,
        &[
            "keys",
            "generate",
            "--alg",
            "HS512",
            "--out",
            key.to_str().unwrap(),
        ],
        None,
    );
    assert_one_clean_line("keys generate with a bad alg", &out);
    let gen = [
        "keys",
        "generate",
        "--alg",
        "EdDSA",
        "--out",
        key.to_str().unwrap(),
    ];
    assert_eq!(run_cli(&ok, &gen, None).code, 0);
    let out = run_cli(&ok, &gen, None);
    assert_one_clean_line("keys generate over an existing file", &out);
}

#[test]
fn a_usage_error_is_one_line_on_stderr() {
    for args in [
        &["users", "add"][..],
        &["users", "add", "alice", "hunter2hunter2"][..],
        &["--bogus"][..],
    ] {
        let out = std::process::Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("authgate: "), "{err}");
    }
}
