//! `[[issuer]]` (SPEC §10), its `[issuer.login]` table (SPEC §14) and the routes'
//! `issuers = [...]`.

use super::*;
use crate::config::issuer::{
    check_fetch_url, check_redirect_uri, ClientAuth, IssuerConfig, IssuerRef, JwksSource,
    LoginAllow, LoginConfig, ISSUER_ALGORITHMS,
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
    "login",
];

const LOGIN_KEYS: &[&str] = &[
    "client_id",
    "client_secret",
    "client_auth",
    "redirect_uri",
    "scopes",
    "display_name",
    "roles_claim",
    "allow",
    "session_ttl",
    "logout_at_provider",
];

/// What `[issuer.login]` is checked against, from outside its table.
struct LoginContext<'a> {
    base: &'a Path,
    /// The issuer's own `discovery = true`.
    discovery: bool,
    /// `[session] cookie = true`.
    session_cookie: bool,
    /// The issuer's name: the button's default text.
    name: Option<&'a str>,
}

/// `[issuer.login]` (SPEC §14). Login needs the authorization, token and end-session
/// endpoints that only discovery names, and ends in the session cookies.
fn login(
    r: &mut Reader,
    t: &DeTable,
    p: &str,
    span: std::ops::Range<usize>,
    cx: LoginContext,
) -> Option<LoginConfig> {
    let LoginContext {
        base,
        discovery,
        session_cookie,
        name,
    } = cx;
    r.only_known(t, p, LOGIN_KEYS);
    if !discovery {
        r.error(
            &span,
            p,
            "needs discovery = true: sign-in uses the authorization, token and end-session endpoints that discovery names",
        );
    }
    if !session_cookie {
        r.error(
            &span,
            p,
            "needs [session] cookie = true: a sign-in ends in the session cookies",
        );
    }
    let non_empty = |r: &mut Reader, key: &str| -> Option<String> {
        match r.string(t, p, key) {
            Some((v, sp)) if v.is_empty() => {
                r.error(&sp, &join(p, key), "must not be empty");
                None
            }
            Some((v, _)) => Some(v),
            None => {
                if Reader::field(t, key).is_none() {
                    r.error(&span, &join(p, key), "missing");
                }
                None
            }
        }
    };
    let client_id = non_empty(r, "client_id");
    let client_secret = match r.string(t, p, "client_secret") {
        Some((s, sp)) => match parse_secret_ref(&s, base) {
            Ok(c) => Some(c),
            Err(e) => {
                r.error(&sp, &join(p, "client_secret"), e);
                None
            }
        },
        None => {
            if Reader::field(t, "client_secret").is_none() {
                r.error(&span, &join(p, "client_secret"), "missing");
            }
            None
        }
    };
    let client_auth = match r.string(t, p, "client_auth") {
        None => Some(ClientAuth::Basic),
        Some((s, _)) if s == "client_secret_basic" => Some(ClientAuth::Basic),
        Some((s, _)) if s == "client_secret_post" => Some(ClientAuth::Post),
        Some((s, sp)) => {
            r.error(
                &sp,
                &join(p, "client_auth"),
                format!("{s:?}: expected \"client_secret_basic\" or \"client_secret_post\""),
            );
            None
        }
    };
    let redirect_uri = match r.string(t, p, "redirect_uri") {
        Some((u, sp)) => match check_redirect_uri(&u) {
            Ok(()) => Some(u),
            Err(e) => {
                r.error(&sp, &join(p, "redirect_uri"), e);
                None
            }
        },
        None => {
            if Reader::field(t, "redirect_uri").is_none() {
                r.error(&span, &join(p, "redirect_uri"), "missing");
            }
            None
        }
    };
    let scopes = match r.strings(t, p, "scopes") {
        None => Some(vec!["openid".into(), "email".into(), "profile".into()]),
        Some((list, sp)) => {
            let bad = list.iter().find(|s| {
                s.is_empty()
                    || !s
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            });
            if let Some(b) = bad {
                r.error(
                    &sp,
                    &join(p, "scopes"),
                    format!("{b:?} is not a scope token"),
                );
                None
            } else if !list.iter().any(|s| s == "openid") {
                // OIDC Core §3.1.2.1: without `openid` the provider returns no ID token.
                r.error(&sp, &join(p, "scopes"), "must contain \"openid\"");
                None
            } else {
                Some(list)
            }
        }
    };
    let display_name = match r.string(t, p, "display_name") {
        Some((d, sp)) if d.trim().is_empty() => {
            r.error(&sp, &join(p, "display_name"), "must not be empty");
            None
        }
        Some((d, _)) => Some(d),
        None => name.map(str::to_string),
    };
    let roles_claim = match r.string(t, p, "roles_claim") {
        Some((c, sp)) if c.is_empty() => {
            r.error(&sp, &join(p, "roles_claim"), "must not be empty");
            None
        }
        other => other.map(|(c, _)| c),
    };
    let mut allow = LoginAllow::default();
    if let Some((at, _)) = r.table(t, p, "allow") {
        let ap = join(p, "allow");
        r.only_known(at, &ap, &["email_domains", "groups"]);
        if let Some((domains, sp)) = r.strings(at, &ap, "email_domains") {
            for d in domains {
                let d = d.to_ascii_lowercase();
                let ok = !d.is_empty()
                    && !d.starts_with('.')
                    && !d.ends_with('.')
                    && d.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
                if ok {
                    allow.email_domains.push(d);
                } else {
                    r.error(
                        &sp,
                        &join(&ap, "email_domains"),
                        format!("{d:?} is not a domain (no @, no wildcard)"),
                    );
                }
            }
        }
        if let Some((groups, sp)) = r.strings(at, &ap, "groups") {
            if groups.iter().any(String::is_empty) {
                r.error(&sp, &join(&ap, "groups"), "a group name is never empty");
            }
            allow.groups = groups;
        }
    }
    let session_ttl = duration(r, t, p, "session_ttl", "12h");
    if session_ttl.is_zero() {
        if let Some(f) = Reader::field(t, "session_ttl") {
            r.error(&f.span, &join(p, "session_ttl"), "must be more than zero");
        }
    }
    let logout_at_provider = r.boolean(t, p, "logout_at_provider").unwrap_or(false);
    if !discovery || !session_cookie {
        return None;
    }
    Some(LoginConfig {
        client_id: client_id?,
        client_secret: client_secret?,
        client_auth: client_auth?,
        redirect_uri: redirect_uri?,
        scopes: scopes?,
        display_name: display_name?,
        roles_claim,
        allow,
        session_ttl,
        logout_at_provider,
    })
}

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
    session_cookie: bool,
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
    let login = match r.table(t, p, "login") {
        None => None,
        // A refused login table leaves the issuer itself standing, so that its
        // routes report nothing spurious; the build fails on the recorded error.
        Some((lt, lsp)) => login(
            r,
            lt,
            &join(p, "login"),
            lsp,
            LoginContext {
                base,
                discovery: discovery == Some(true),
                session_cookie,
                name: name.as_deref(),
            },
        ),
    };
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
        login,
    })
}

/// All `[[issuer]]` tables, names and `issuer` URLs unique.
pub(super) fn issuers(
    r: &mut Reader,
    doc: &DeTable,
    base: &Path,
    session_cookie: bool,
) -> Vec<IssuerConfig> {
    let mut out: Vec<IssuerConfig> = Vec::new();
    for (i, (t, span)) in r.tables(doc, "", "issuer").into_iter().enumerate() {
        let p = format!("issuer[{i}]");
        let Some(c) = issuer(r, t, &p, span.clone(), base, session_cookie) else {
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

    const LOGIN: &str = r#"
[issuer.login]
client_id = "authgate"
client_secret = "file:corp-client-secret"
redirect_uri = "https://gw.example.com/oauth2/callback"
"#;

    const COOKIE: &str = "[session]\ncookie = true\n";

    #[test]
    fn a_login_table_gets_its_defaults() {
        let c = load(&format!("{COOKIE}{BASE}{CORP}{LOGIN}")).unwrap();
        let l = c.issuers[0].login.as_ref().unwrap();
        assert_eq!(l.client_id, "authgate");
        assert_eq!(
            l.client_secret,
            crate::config::SecretRef::File("/etc/authgate/corp-client-secret".into())
        );
        assert_eq!(l.client_auth, crate::config::ClientAuth::Basic);
        assert_eq!(l.redirect_uri, "https://gw.example.com/oauth2/callback");
        assert_eq!(l.scopes, ["openid", "email", "profile"]);
        assert_eq!(l.display_name, "corp");
        assert_eq!(l.roles_claim, None);
        assert_eq!(l.allow, crate::config::LoginAllow::default());
        assert_eq!(l.session_ttl.as_secs(), 12 * 3600);
        assert!(!l.logout_at_provider);
        // Without the table, an issuer is no sign-in provider.
        assert!(load(&format!("{COOKIE}{BASE}{CORP}")).unwrap().issuers[0]
            .login
            .is_none());
    }

    #[test]
    fn every_login_key_is_read() {
        let full = format!(
            "{LOGIN}client_auth = \"client_secret_post\"\nscopes = [\"openid\", \"groups\"]\ndisplay_name = \"Corp SSO\"\nroles_claim = \"groups\"\nallow = {{ email_domains = [\"Example.com\"], groups = [\"staff\"] }}\nsession_ttl = \"1h\"\nlogout_at_provider = true\n"
        )
        .replace("file:corp-client-secret", "env:CORP_SECRET");
        let c = load(&format!("{COOKIE}{BASE}{CORP}{full}")).unwrap();
        let l = c.issuers[0].login.as_ref().unwrap();
        assert_eq!(
            l.client_secret,
            crate::config::SecretRef::Env("CORP_SECRET".into())
        );
        assert_eq!(l.client_auth, crate::config::ClientAuth::Post);
        assert_eq!(l.scopes, ["openid", "groups"]);
        assert_eq!(l.display_name, "Corp SSO");
        assert_eq!(l.roles_claim.as_deref(), Some("groups"));
        assert_eq!(l.allow.email_domains, ["example.com"]);
        assert_eq!(l.allow.groups, ["staff"]);
        assert_eq!(l.session_ttl.as_secs(), 3600);
        assert!(l.logout_at_provider);
    }

    /// SPEC §14: each refusal of `check`, at the offending key's line.
    #[test]
    fn check_refuses_each_unsafe_login_at_its_key() {
        // CORP starts on line 17 after COOKIE + BASE; [issuer.login] is line 23.
        let cases = [
            (
                format!("{COOKIE}{BASE}{}{LOGIN}", CORP.replace("discovery = true\n", "jwks_uri = \"https://id.example.com/keys\"\n")),
                "gateway.toml:23:9: issuer[0].login: needs discovery = true",
            ),
            (
                format!("{COOKIE}{BASE}{CORP}{}", LOGIN.replace("file:corp-client-secret", "hunter2")),
                "gateway.toml:25:1: issuer[0].login.client_secret: secrets are never inline",
            ),
            (
                format!("{COOKIE}{BASE}{CORP}{}", LOGIN.replace("https://gw", "http://gw")),
                "gateway.toml:26:1: issuer[0].login.redirect_uri: \"http://gw.example.com/oauth2/callback\": plain http is allowed only to a loopback address",
            ),
            (
                format!("{COOKIE}{BASE}{CORP}{}", LOGIN.replace("/oauth2/callback", "/corp/cb")),
                "gateway.toml:26:1: issuer[0].login.redirect_uri: \"https://gw.example.com/corp/cb\": its path must be /oauth2/callback",
            ),
            (
                format!("{BASE}{CORP}{LOGIN}"),
                "gateway.toml:21:9: issuer[0].login: needs [session] cookie = true",
            ),
            (
                format!("{COOKIE}{BASE}{CORP}{LOGIN}client_auth = \"private_key_jwt\"\n"),
                "issuer[0].login.client_auth: \"private_key_jwt\": expected",
            ),
            (
                format!("{COOKIE}{BASE}{CORP}{LOGIN}scopes = [\"email\"]\n"),
                "issuer[0].login.scopes: must contain \"openid\"",
            ),
            (
                format!("{COOKIE}{BASE}{CORP}{LOGIN}allow = {{ email_domains = [\"*.example.com\"] }}\n"),
                "issuer[0].login.allow.email_domains: \"*.example.com\" is not a domain",
            ),
            (
                format!("{COOKIE}{BASE}{CORP}{LOGIN}colour = 1\n"),
                "issuer[0].login.colour: unknown key",
            ),
            (
                format!("{COOKIE}{BASE}{CORP}{}", LOGIN.replace("client_id = \"authgate\"\n", "")),
                "issuer[0].login.client_id: missing",
            ),
        ];
        for (text, why) in cases {
            let e = load(&text).map(|_| String::new()).unwrap_or_else(|e| e);
            assert!(e.contains(why), "{why}\n--- got:\n{e}");
        }
        // Loopback http is allowed (a local provider in development and tests).
        let local = LOGIN.replace("https://gw.example.com", "http://127.0.0.1:8080");
        assert!(load(&format!("{COOKIE}{BASE}{CORP}{local}")).is_ok());
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
