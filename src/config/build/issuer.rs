//! `[[issuer]]` (SPEC §10) and the routes' `issuers = [...]`.

use super::*;
use crate::config::issuer::{
    check_fetch_url, IssuerConfig, IssuerRef, JwksSource, ISSUER_ALGORITHMS,
};

const KEYS: &[&str] = &[
    "name",
    "issuer",
    "discovery",
    "jwks_uri",
    "audiences",
    "algorithms",
    "identity_claim",
    "ca",
    "jwks_wait",
    "refetch_cooldown",
];

fn required(
    r: &mut Reader,
    t: &DeTable,
    p: &str,
    key: &str,
    span: &std::ops::Range<usize>,
) -> Option<(String, std::ops::Range<usize>)> {
    let v = r.string(t, p, key);
    if v.is_none() && Reader::field(t, key).is_none() {
        r.error(span, &join(p, key), "missing");
    }
    v
}

pub(super) fn issuer(
    r: &mut Reader,
    t: &DeTable,
    p: &str,
    span: std::ops::Range<usize>,
    base: &Path,
) -> Option<IssuerConfig> {
    r.only_known(t, p, KEYS);
    let name = required(r, t, p, "name", &span).and_then(|(n, sp)| {
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if n == "self" {
            r.error(
                &sp,
                &join(p, "name"),
                "\"self\" is reserved: it names authgate's own tokens",
            );
            None
        } else if ok {
            Some(n)
        } else {
            r.error(
                &sp,
                &join(p, "name"),
                format!("{n:?}: 1-64 characters of a-z A-Z 0-9 - _ ."),
            );
            None
        }
    });
    let iss = required(r, t, p, "issuer", &span).and_then(|(s, sp)| {
        if s.is_empty() {
            r.error(&sp, &join(p, "issuer"), "must not be empty");
            None
        } else {
            Some((s, sp))
        }
    });
    let discovery = r.boolean(t, p, "discovery");
    let jwks_uri = r.string(t, p, "jwks_uri");
    let jwks = match (discovery, jwks_uri) {
        (Some(true), Some((_, sp))) => {
            r.error(
                &sp,
                &join(p, "jwks_uri"),
                "set either discovery = true or jwks_uri, not both",
            );
            None
        }
        (_, Some((u, sp))) => match check_fetch_url(&u) {
            Ok(()) => Some(JwksSource::Uri(u)),
            Err(e) => {
                r.error(&sp, &join(p, "jwks_uri"), e);
                None
            }
        },
        (Some(true), None) => {
            // The discovery document is fetched from the issuer URL itself.
            if let Some((s, sp)) = &iss {
                if let Err(e) = check_fetch_url(s) {
                    r.error(sp, &join(p, "issuer"), format!("discovery: {e}"));
                }
            }
            Some(JwksSource::Discovery)
        }
        (_, None) => {
            let at = Reader::field(t, "discovery")
                .map(|f| f.span)
                .unwrap_or(span.clone());
            r.error(
                &at,
                &join(p, "discovery"),
                "set discovery = true or a jwks_uri: the issuer's keys must come from somewhere",
            );
            None
        }
    };
    let audiences = match r.strings(t, p, "audiences") {
        Some((a, sp)) if a.is_empty() || a.iter().any(String::is_empty) => {
            r.error(
                &sp,
                &join(p, "audiences"),
                "a non-empty list of non-empty strings",
            );
            None
        }
        Some((a, _)) => Some(a),
        None => {
            if Reader::field(t, "audiences").is_none() {
                // SPEC §10: without an audience check any token of the IdP, for any
                // application, would pass.
                r.error(
                    &span,
                    &join(p, "audiences"),
                    "missing (the token's aud must name this gateway's API)",
                );
            }
            None
        }
    };
    let algorithms = match r.strings(t, p, "algorithms") {
        Some((list, sp)) => {
            let mut out = Vec::new();
            for a in &list {
                match a.as_str() {
                    "RS256" => out.push(jsonwebtoken::Algorithm::RS256),
                    "PS256" => out.push(jsonwebtoken::Algorithm::PS256),
                    "ES256" => out.push(jsonwebtoken::Algorithm::ES256),
                    "EdDSA" => out.push(jsonwebtoken::Algorithm::EdDSA),
                    other => {
                        let why = if other.to_ascii_uppercase().starts_with("HS") {
                            "an HMAC algorithm needs a secret shared with the IdP; it is never accepted from an issuer".to_string()
                        } else if other.eq_ignore_ascii_case("none") {
                            "unsigned tokens are never accepted".to_string()
                        } else {
                            format!("expected one of {}", ISSUER_ALGORITHMS.join(", "))
                        };
                        r.error(&sp, &join(p, "algorithms"), format!("{other:?}: {why}"));
                    }
                }
            }
            if list.is_empty() {
                r.error(&sp, &join(p, "algorithms"), "an empty list accepts nothing");
            }
            out.dedup();
            Some(out)
        }
        None => Some(vec![jsonwebtoken::Algorithm::RS256]),
    };
    let identity_claim = match r.string(t, p, "identity_claim") {
        Some((c, sp)) if c.is_empty() => {
            r.error(&sp, &join(p, "identity_claim"), "must not be empty");
            None
        }
        Some((c, _)) => Some(c),
        None => Some("sub".to_string()),
    };
    let ca = r
        .string(t, p, "ca")
        .and_then(|(s, sp)| match parse_secret_ref(&s, base) {
            Ok(c) => Some(c),
            Err(e) => {
                r.error(&sp, &join(p, "ca"), e);
                None
            }
        });
    let jwks_wait = duration(r, t, p, "jwks_wait", "2s");
    let refetch_cooldown = duration(r, t, p, "refetch_cooldown", "30s");
    Some(IssuerConfig {
        name: name?,
        issuer: iss?.0,
        jwks: jwks?,
        audiences: audiences?,
        algorithms: algorithms?,
        identity_claim: identity_claim?,
        ca,
        jwks_wait,
        refetch_cooldown,
    })
}

/// All `[[issuer]]` tables, names and `issuer` URLs unique.
pub(super) fn issuers(r: &mut Reader, doc: &DeTable, base: &Path) -> Vec<IssuerConfig> {
    let mut out: Vec<IssuerConfig> = Vec::new();
    for (i, (t, span)) in r.tables(doc, "", "issuer").into_iter().enumerate() {
        let p = format!("issuer[{i}]");
        let Some(c) = issuer(r, t, &p, span.clone(), base) else {
            continue;
        };
        let at = |key: &str| {
            Reader::field(t, key)
                .map(|f| f.span)
                .unwrap_or(span.clone())
        };
        if out.iter().any(|o| o.name == c.name) {
            r.error(
                &at("name"),
                &join(&p, "name"),
                format!("issuer {:?} is defined twice", c.name),
            );
            continue;
        }
        if out.iter().any(|o| o.issuer == c.issuer) {
            // SPEC §10: the token's iss chooses the issuer, so it must name one.
            r.error(
                &at("issuer"),
                &join(&p, "issuer"),
                format!("another [[issuer]] has issuer {:?}", c.issuer),
            );
            continue;
        }
        out.push(c);
    }
    out
}

/// A route's `issuers = ["corp", "self"]`; `None` when the key is absent (every issuer).
pub(super) fn route_issuers(
    r: &mut Reader,
    t: &DeTable,
    p: &str,
    issuers: &[IssuerConfig],
    identity_enabled: bool,
) -> Option<Vec<IssuerRef>> {
    let (names, sp) = r.strings(t, p, "issuers")?;
    let mut out = Vec::new();
    for n in &names {
        let found = if n == "self" {
            if !identity_enabled {
                r.error(
                    &sp,
                    &join(p, "issuers"),
                    "\"self\": [identity] enabled = false, so authgate issues no tokens",
                );
                continue;
            }
            IssuerRef::SelfIssued
        } else if let Some(i) = issuers.iter().position(|c| &c.name == n) {
            IssuerRef::External(i)
        } else {
            let known: Vec<&str> = std::iter::once("self")
                .chain(issuers.iter().map(|c| c.name.as_str()))
                .collect();
            r.error(
                &sp,
                &join(p, "issuers"),
                format!("no issuer named {n:?} (known: {})", known.join(", ")),
            );
            continue;
        };
        if !out.contains(&found) {
            out.push(found);
        }
    }
    if names.is_empty() {
        r.error(
            &sp,
            &join(p, "issuers"),
            "an empty list accepts no token; use auth = \"public\" or name an issuer",
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, IssuerRef, JwksSource};
    use std::path::Path;

    const BASE: &str = r#"
[[upstream]]
name = "app"
targets = ["http://127.0.0.1:9000"]

[[route]]
path = "/corp"
upstream = "app"
issuers = ["corp", "self"]

[[route]]
path = "/any"
upstream = "app"
"#;

    const CORP: &str = r#"
[[issuer]]
name = "corp"
issuer = "https://id.example.com/realms/main"
discovery = true
audiences = ["api"]
"#;

    fn load(text: &str) -> Result<Config, String> {
        Config::load_str(text, "gateway.toml", Path::new("/etc/authgate"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_issuer_gets_its_defaults_and_routes_name_it() {
        let c = load(&format!("{BASE}{CORP}")).unwrap();
        let i = &c.issuers[0];
        assert_eq!(i.jwks, JwksSource::Discovery);
        assert_eq!(i.algorithms, vec![jsonwebtoken::Algorithm::RS256]);
        assert_eq!(i.identity_claim, "sub");
        assert_eq!(i.jwks_wait.as_secs(), 2);
        assert_eq!(i.refetch_cooldown.as_secs(), 30);
        assert_eq!(
            c.routes[0].issuers,
            Some(vec![IssuerRef::External(0), IssuerRef::SelfIssued])
        );
        assert_eq!(c.routes[1].issuers, None);
    }

    #[test]
    fn hmac_none_and_unknown_algorithms_are_refused_with_their_line() {
        let text = format!("{BASE}{CORP}algorithms = [\"HS256\", \"none\", \"RS512\"]\n");
        let e = load(&text).unwrap_err();
        assert!(
            e.contains("issuer[0].algorithms: \"HS256\": an HMAC algorithm"),
            "{e}"
        );
        assert!(
            e.contains("\"none\": unsigned tokens are never accepted"),
            "{e}"
        );
        assert!(
            e.contains("\"RS512\": expected one of RS256, PS256, ES256, EdDSA"),
            "{e}"
        );
        assert!(e.contains("gateway.toml:20:1: issuer[0].algorithms"), "{e}");
    }

    #[test]
    fn plain_http_keys_are_refused_unless_on_loopback() {
        let http = CORP.replace(
            "discovery = true",
            "jwks_uri = \"http://id.example.com/keys\"",
        );
        let e = load(&format!("{BASE}{http}")).unwrap_err();
        assert!(
            e.contains("issuer[0].jwks_uri") && e.contains("loopback"),
            "{e}"
        );
        let local = CORP.replace(
            "discovery = true",
            "jwks_uri = \"http://127.0.0.1:8081/keys\"",
        );
        assert!(load(&format!("{BASE}{local}")).is_ok());
        let plain_iss = CORP.replace("https://id.example.com", "http://id.example.com");
        assert!(load(&format!("{BASE}{plain_iss}"))
            .unwrap_err()
            .contains("discovery"));
    }

    #[test]
    fn every_issuer_mistake_is_reported() {
        let cases = [
            (
                CORP.replace("audiences = [\"api\"]\n", ""),
                "issuer[0].audiences: missing",
            ),
            (
                CORP.replace("discovery = true\n", ""),
                "issuer[0].discovery: set discovery",
            ),
            (
                format!("{CORP}jwks_uri = \"https://x.example/k\"\n"),
                "not both",
            ),
            (CORP.replace("\"corp\"", "\"self\""), "reserved"),
            (format!("{CORP}{CORP}"), "defined twice"),
            (
                CORP.replace("https://id.example.com/realms/main", "authgate"),
                "equals tokens.issuer",
            ),
            (format!("{CORP}color = 1\n"), "issuer[0].color: unknown key"),
        ];
        for (issuer, why) in cases {
            let text = format!("{BASE}{issuer}");
            let e = load(&text).map(|_| String::new()).unwrap_or_else(|e| e);
            assert!(e.contains(why), "{why}: {e}");
        }
        let e = load(&BASE.replace("[\"corp\", \"self\"]", "[\"nobody\"]")).unwrap_err();
        assert!(
            e.contains("route[0].issuers: no issuer named \"nobody\""),
            "{e}"
        );
        let e = load(&BASE.replace("[\"corp\", \"self\"]", "[]")).unwrap_err();
        assert!(e.contains("an empty list accepts no token"), "{e}");
    }

    #[test]
    fn without_the_built_in_identity_self_is_unknown_and_something_must_verify() {
        let off = "[identity]\nenabled = false\n";
        let e = load(&format!("{off}{BASE}{CORP}")).unwrap_err();
        assert!(e.contains("\"self\": [identity] enabled = false"), "{e}");
        let e = load(&format!(
            "{off}{}",
            BASE.replace("issuers = [\"corp\", \"self\"]\n", "")
        ))
        .unwrap_err();
        assert!(e.contains("no token can pass"), "{e}");
        let ok = format!(
            "{off}{}{CORP}",
            BASE.replace("\"corp\", \"self\"", "\"corp\"")
        );
        let c = load(&ok).unwrap();
        assert!(!c.identity.enabled);
        assert_eq!(c.identity_endpoint("/login"), None);
    }
}
