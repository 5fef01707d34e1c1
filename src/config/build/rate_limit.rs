//! `[rate_limit]`: login and registration throttles, and where they count (SPEC §9).

use super::super::redis_url::{check_prefix, parse_backend, LimitBackend};
use super::*;

pub(super) fn rate_limit(r: &mut Reader, t: &DeTable, base: &Path) -> Option<RateLimit> {
    let p = "rate_limit";
    r.only_known(
        t,
        p,
        &[
            "login_per_ip",
            "login_per_user",
            "register_per_ip",
            "backend",
            "key_prefix",
        ],
    );
    let rate = |r: &mut Reader, key: &str, default: &str| {
        let (s, span) = r.string(t, p, key).unwrap_or((default.to_string(), 0..0));
        parse_rate(&s).unwrap_or_else(|e| {
            r.error(&span, &join(p, key), e);
            None
        })
    };
    let login_per_ip = rate(r, "login_per_ip", "20/min");
    let login_per_user = rate(r, "login_per_user", "5/min");
    let register_per_ip = rate(r, "register_per_ip", "10/hour");
    let backend = match r.string(t, p, "backend") {
        Some((s, span)) => parse_backend(&s, base).unwrap_or_else(|e| {
            r.error(&span, "rate_limit.backend", e);
            LimitBackend::Local
        }),
        None => LimitBackend::Local,
    };
    let key_prefix = match r.string(t, p, "key_prefix") {
        Some((s, span)) => {
            if let Err(e) = check_prefix(&s) {
                r.error(&span, "rate_limit.key_prefix", e);
            }
            s
        }
        None => "authgate:".to_string(),
    };
    Some(RateLimit {
        login_per_ip,
        login_per_user,
        register_per_ip,
        backend,
        key_prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::MINIMAL;
    use super::*;

    fn load(extra: &str) -> Result<Config, ConfigErrors> {
        let text = format!("[rate_limit]\n{extra}\n{MINIMAL}");
        Config::load_str(&text, "gateway.toml", Path::new("/etc/authgate"))
    }

    #[test]
    fn the_backend_is_local_with_the_authgate_prefix_by_default() {
        let c = load("").unwrap();
        assert_eq!(c.rate_limit.backend, LimitBackend::Local);
        assert_eq!(c.rate_limit.key_prefix, "authgate:");
        let c = load("backend = \"local\"").unwrap();
        assert_eq!(c.rate_limit.backend, LimitBackend::Local);
    }

    #[test]
    fn a_redis_backend_and_prefix_are_read() {
        let c = load("backend = \"redis://127.0.0.1:6379/2\"\nkey_prefix = \"gw-eu:\"").unwrap();
        let LimitBackend::Redis(u) = &c.rate_limit.backend else {
            panic!("{:?}", c.rate_limit.backend)
        };
        assert_eq!(u.to_string(), "redis://127.0.0.1:6379/2");
        assert_eq!(c.rate_limit.key_prefix, "gw-eu:");
    }

    #[test]
    fn bad_backends_and_prefixes_name_their_line() {
        let e = load("login_per_ip = \"20/min\"\nbackend = \"redis://:pw@127.0.0.1:6379\"\nkey_prefix = \"a b\"")
            .unwrap_err()
            .to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 2, "{e}");
        assert!(
            lines[0].starts_with(
                "gateway.toml:3:1: rate_limit.backend: a password never stands in the config"
            ),
            "{e}"
        );
        assert!(
            lines[1].starts_with("gateway.toml:4:1: rate_limit.key_prefix: must be printable"),
            "{e}"
        );
        assert!(!e.contains("pw@"), "{e}");
    }
}
