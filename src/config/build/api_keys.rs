//! `[api_keys]` and a route's `credentials` (SPEC §16).

use super::*;

pub(super) fn api_keys(r: &mut Reader, t: &DeTable) -> crate::config::ApiKeys {
    let p = "api_keys";
    r.only_known(t, p, &["enabled", "header"]);
    let enabled = r.boolean(t, p, "enabled").unwrap_or(false);
    let header = match r.string(t, p, "header") {
        // "Authorization" means the Bearer scheme, as for tokens.
        Some((s, _)) if s.eq_ignore_ascii_case("authorization") => None,
        Some((s, span)) => forward::header_name(r, &s, &span, "api_keys.header"),
        None => None,
    };
    crate::config::ApiKeys { enabled, header }
}

/// `credentials = ["token", "api_key"]`; the default is `["token"]`.
pub(super) fn credentials(r: &mut Reader, t: &DeTable, p: &str) -> crate::config::Credentials {
    let Some((values, span)) = r.strings(t, p, "credentials") else {
        return crate::config::Credentials::default();
    };
    let mut c = crate::config::Credentials {
        token: false,
        api_key: false,
    };
    for v in &values {
        match v.as_str() {
            "token" => c.token = true,
            "api_key" => c.api_key = true,
            _ => r.error(
                &span,
                &join(p, "credentials"),
                format!("{v:?}: expected \"token\" or \"api_key\""),
            ),
        }
    }
    if values.is_empty() {
        r.error(
            &span,
            &join(p, "credentials"),
            "an empty list lets no caller in; use auth = \"public\" for that",
        );
    }
    c
}

/// A route that takes API keys needs `[api_keys] enabled = true`: said at the
/// route's `credentials` line.
pub(super) fn check_route(r: &mut Reader, t: &DeTable, p: &str, route: &Route, on: bool) {
    if route.credentials.api_key && !on {
        if let Some(f) = Reader::field(t, "credentials") {
            r.error(
                &f.span,
                &join(p, "credentials"),
                "\"api_key\" needs [api_keys] enabled = true",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const BASE: &str = "[[upstream]]\nname = \"app\"\ntargets = [\"http://127.0.0.1:9\"]\n";

    fn load(extra: &str) -> Result<Config, String> {
        Config::load_str(&format!("{BASE}{extra}"), "g.toml", Path::new("/tmp"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn api_keys_are_off_and_routes_take_tokens_by_default() {
        let c = load("[[route]]\npath = \"/a\"\nupstream = \"app\"\n").unwrap();
        assert!(!c.api_keys.enabled);
        assert_eq!(c.api_keys.header, None);
        assert!(c.routes[0].credentials.token && !c.routes[0].credentials.api_key);
    }

    #[test]
    fn a_route_taking_keys_while_keys_are_off_is_refused_at_its_line() {
        let e = load("[[route]]\npath = \"/a\"\nupstream = \"app\"\ncredentials = [\"token\", \"api_key\"]\n")
            .unwrap_err();
        assert!(e.contains("g.toml:7:1: route[0].credentials"), "{e}");
        let ok = load("[api_keys]\nenabled = true\nheader = \"X-API-Key\"\n[[route]]\npath = \"/a\"\nupstream = \"app\"\ncredentials = [\"api_key\"]\n")
            .unwrap();
        assert_eq!(
            ok.api_keys.header.as_ref().map(|h| h.as_str()),
            Some("x-api-key")
        );
        assert!(!ok.routes[0].credentials.token && ok.routes[0].credentials.api_key);
    }

    #[test]
    fn unknown_credentials_are_refused() {
        let e = load("[api_keys]\nenabled = true\n[[route]]\npath = \"/a\"\nupstream = \"app\"\ncredentials = [\"password\"]\n")
            .unwrap_err();
        assert!(e.contains("route[0].credentials: \"password\""), "{e}");
    }
}
