//! `[forward_auth]` (SPEC §15): where the forward-auth endpoints live and which
//! peers may describe an original request to them.

use super::*;

/// Loopback only, both families: the usual place for a proxy beside authgate.
pub(super) const DEFAULT_TRUSTED: &[&str] = &["127.0.0.1/32", "::1/128"];

pub(super) fn forward_auth(
    r: &mut Reader,
    t: &DeTable,
    identity: Option<&IdentityPaths>,
) -> Option<ForwardAuth> {
    let p = "forward_auth";
    r.only_known(t, p, &["path", "trusted"]);
    let path = match r.string(t, p, "path") {
        Some((s, sp)) => match crate::edge::normalize::normalize_path(&s) {
            // The endpoints are `{path}/nginx` and `{path}/forward`: a canonical
            // prefix without a trailing slash, and not the root (that would make
            // `/nginx` an endpoint).
            Ok(n) if s.starts_with('/') && n == s && n.len() > 1 && !n.ends_with('/') => {
                let clash = identity.and_then(|ps| {
                    [&ps.register, &ps.login, &ps.refresh, &ps.logout, &ps.jwks]
                        .into_iter()
                        .find(|ip| {
                            ip.as_str() == format!("{n}/nginx")
                                || ip.as_str() == format!("{n}/forward")
                                // `path = "/login"` would put the endpoints under it.
                                || ip.as_str() == n
                        })
                });
                match clash {
                    Some(ip) => {
                        r.error(
                            &sp,
                            "forward_auth.path",
                            format!("{s:?} collides with the identity endpoint {ip:?}"),
                        );
                        None
                    }
                    None => Some(n),
                }
            }
            _ => {
                r.error(
                    &sp,
                    "forward_auth.path",
                    format!(
                        "{s:?} is not a canonical absolute path without a trailing '/' (e.g. \"/authz\")"
                    ),
                );
                None
            }
        },
        None => Some("/authz".to_string()),
    };
    let trusted = match r.strings(t, p, "trusted") {
        Some((v, span)) => {
            let mut out = Vec::with_capacity(v.len());
            for (i, s) in v.iter().enumerate() {
                match Cidr::parse(s) {
                    Ok(c) => out.push(c),
                    Err(e) => r.error(&span, &format!("forward_auth.trusted[{i}]"), e),
                }
            }
            out
        }
        None => DEFAULT_TRUSTED
            .iter()
            .filter_map(|s| Cidr::parse(s).ok())
            .collect(),
    };
    Some(ForwardAuth {
        path: path?,
        trusted,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Cidr, Config, ForwardAuthKind};
    use std::path::Path;

    const BASE: &str = "[[upstream]]\nname = \"app\"\ntargets = [\"http://127.0.0.1:9000\"]\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n\n";

    fn load(extra: &str) -> Result<Config, String> {
        Config::load_str(&format!("{BASE}{extra}"), "t.toml", Path::new("/"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn forward_auth_is_off_without_its_section_and_defaults_to_loopback_under_authz() {
        let c = load("").unwrap();
        assert!(c.forward_auth.is_none());
        assert_eq!(c.forward_auth_endpoint("/authz/nginx"), None);
        let c = load("[forward_auth]\n").unwrap();
        let fa = c.forward_auth.as_ref().unwrap();
        assert_eq!(fa.path, "/authz");
        assert_eq!(
            fa.trusted,
            vec![
                Cidr::parse("127.0.0.1/32").unwrap(),
                Cidr::parse("::1/128").unwrap()
            ]
        );
        assert_eq!(
            c.forward_auth_endpoint("/authz/nginx"),
            Some(ForwardAuthKind::Nginx)
        );
        assert_eq!(
            c.forward_auth_endpoint("/authz/forward"),
            Some(ForwardAuthKind::Forward)
        );
        assert_eq!(c.forward_auth_endpoint("/authz"), None);
        assert_eq!(c.forward_auth_endpoint("/authz/nginxx"), None);
        assert_eq!(c.forward_auth_endpoint("/authzz/nginx"), None);
    }

    #[test]
    fn bad_forward_auth_values_are_reported_at_their_key() {
        for (text, want) in [
            (
                "[forward_auth]\npath = \"authz\"\n",
                "t.toml:10:1: forward_auth.path",
            ),
            (
                "[forward_auth]\npath = \"/a/../authz\"\n",
                "t.toml:10:1: forward_auth.path",
            ),
            (
                "[forward_auth]\npath = \"/authz/\"\n",
                "t.toml:10:1: forward_auth.path",
            ),
            (
                "[forward_auth]\npath = \"/\"\n",
                "t.toml:10:1: forward_auth.path",
            ),
            (
                "[forward_auth]\npath = \"/login\"\n",
                "collides with the identity endpoint \"/login\"",
            ),
            (
                "[forward_auth]\n\ntrusted = [\"10.0.0.0/33\"]\n",
                "t.toml:11:1: forward_auth.trusted[0]",
            ),
            (
                "[forward_auth]\nport = 1\n",
                "forward_auth.port: unknown key",
            ),
        ] {
            let e = load(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn a_route_may_omit_its_upstream_but_not_name_a_missing_one() {
        let c = load("[[route]]\npath = \"/checks\"\n").unwrap();
        assert_eq!(c.routes[1].upstream, None);
        assert_eq!(c.routes[0].upstream, Some(0));
        let e = load("[[route]]\npath = \"/checks\"\nupstream = \"nope\"\n").unwrap_err();
        assert!(e.contains("route[1].upstream: no upstream named"), "{e}");
    }
}
