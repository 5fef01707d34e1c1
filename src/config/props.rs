//! Property tests of the config reader: any text, and mutations of a valid
//! config, never panic, and every error names a line (SPEC §8: FILE:LINE:COL).
//! `PROPTEST_CASES=N` runs more cases (bench/README.md).

use super::*;
use proptest::prelude::*;

const VALID: &str = r#"[server]
listen = ["127.0.0.1:0"]
header_read_timeout = "10s"
max_header_bytes = "64KiB"

[identity]
store = "sqlite:data/users.db"

[rate_limit]
login_per_ip = "20/min"

[tokens]
algorithm = "EdDSA"
signing_key = "file:data/signing-key.pem"

[forward]
identity_header = "X-User"
claim_headers = { "X-User-Roles" = "roles" }

[[upstream]]
name = "app"
targets = ["http://127.0.0.1:9000"]
timeout = "30s"

[[route]]
path = "/protected"
upstream = "app"
"#;

/// Values of every TOML kind, with the odd ones the reader must refuse cleanly.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"\"".to_string()),
        Just("\"10s\"".to_string()),
        Just("\"-1s\"".to_string()),
        Just("\"99999999999999999999d\"".to_string()),
        Just("\"1/sec\"".to_string()),
        Just("\"64KiB\"".to_string()),
        Just("\"env:NOPE\"".to_string()),
        Just("\"file:/nonexistent\"".to_string()),
        Just("\"http://[::1\"".to_string()),
        Just("[]".to_string()),
        Just("[1, \"a\"]".to_string()),
        Just("{}".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("{ rate = \"1/sec\", burst = 0, per = \"x\" }".to_string()),
        Just(
            "{ origins = [\"*\", \"null\"], credentials = true, headers = [\"a b\"] }".to_string()
        ),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("nan".to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
    ]
}

fn key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "listen",
        "header_read_timeout",
        "idle_timeout",
        "max_connections",
        "max_header_bytes",
        "workers",
        "trusted_proxies",
        "store",
        "registration",
        "min_password_length",
        "password_hash",
        "paths",
        "login_per_ip",
        "backend",
        "algorithm",
        "signing_key",
        "secret",
        "access_ttl",
        "identity_header",
        "claim_headers",
        "name",
        "targets",
        "timeout",
        "retries",
        "health_check",
        "tls",
        "path",
        "upstream",
        "auth",
        "methods",
        "host",
        "require",
        "strip_prefix",
        "issuers",
        "rate_limit",
        "cors",
        "cookie",
        "typo_key",
    ])
}

fn section() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "[server]",
        "[admin]",
        "[identity]",
        "[rate_limit]",
        "[tokens]",
        "[forward]",
        "[[upstream]]",
        "[[route]]",
        "[[issuer]]",
        "[session]",
        "[nope]",
        "[server.x]",
    ])
}

/// A valid config with lines inserted, replaced or removed.
fn mutated() -> impl Strategy<Value = String> {
    let edit = prop_oneof![
        (key(), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        section().prop_map(str::to_string),
        "[ -~]{0,20}",
    ];
    prop::collection::vec((any::<prop::sample::Index>(), edit, 0u8..3), 1..6).prop_map(|edits| {
        let mut lines: Vec<String> = VALID.lines().map(str::to_string).collect();
        for (at, text, how) in edits {
            let i = at.index(lines.len() + 1);
            match how {
                0 => lines.insert(i, text),
                1 if i < lines.len() => lines[i] = text,
                _ if i < lines.len() => {
                    lines.remove(i);
                }
                _ => lines.push(text),
            }
        }
        lines.join("\n")
    })
}

fn check(text: &str) -> Result<(), TestCaseError> {
    let dir = std::env::temp_dir();
    if let Err(e) = Config::load_str(text, "gateway.toml", &dir) {
        let lines = text.lines().count().max(1);
        prop_assert!(!e.issues.is_empty(), "an error without an issue");
        for i in &e.issues {
            prop_assert!(
                i.line >= 1 && i.line <= lines + 1,
                "line {} of {}: {:?}\n{}",
                i.line,
                lines,
                i.reason,
                text
            );
            prop_assert!(i.col >= 1, "{:?}", i.reason);
            prop_assert!(!i.reason.is_empty());
        }
        let shown = e.to_string();
        prop_assert!(shown.starts_with("gateway.toml:"), "{}", shown);
    }
    Ok(())
}

#[test]
fn the_base_config_is_valid() {
    assert!(Config::load_str(VALID, "gateway.toml", &std::env::temp_dir()).is_ok());
}

proptest! {
    #![proptest_config(crate::test_cases())]

    #[test]
    fn arbitrary_text_never_panics_and_errors_carry_a_line(text in "(?s).{0,300}") {
        check(&text)?;
    }

    #[test]
    fn a_mutated_config_never_panics_and_errors_carry_a_line(text in mutated()) {
        check(&text)?;
    }
}
