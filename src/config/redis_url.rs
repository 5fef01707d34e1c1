//! `rate_limit.backend` (SPEC §9): `"local"`, or a `redis://HOST:PORT[/DB]` URL
//! written inline or held by `env:NAME` / `file:PATH`.

use std::path::Path;

use super::values::parse_secret_ref;

/// Where the rate-limit counters live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LimitBackend {
    /// In process: each gateway counts alone.
    #[default]
    Local,
    /// Shared by every gateway pointing at this Redis.
    Redis(RedisUrl),
}

/// A checked Redis URL. Debug and Display never show a password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    url: String,
    shown: String,
}

impl RedisUrl {
    /// The whole URL, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Parses the config value: `"local"`, a URL, or `env:`/`file:` holding one.
/// The reason never quotes a URL read from a secret (it may carry a password).
pub fn parse_backend(s: &str, base: &Path) -> Result<LimitBackend, String> {
    if s == "local" {
        return Ok(LimitBackend::Local);
    }
    if s.starts_with("env:") || s.starts_with("file:") {
        let r = parse_secret_ref(s, base)?;
        let bytes = r.read()?;
        let text = String::from_utf8(bytes).map_err(|_| format!("{r} is not UTF-8"))?;
        return parse_url(text.trim(), false)
            .map(LimitBackend::Redis)
            .map_err(|e| format!("{r}: {e}"));
    }
    if s.contains("://") {
        return parse_url(s, true).map(LimitBackend::Redis);
    }
    Err(format!(
        "{s:?}: expected \"local\", \"redis://HOST:PORT[/DB]\", or \"env:NAME\" / \"file:PATH\" holding one"
    ))
}

/// `redis://[USER[:PASSWORD]@]HOST[:PORT][/DB]`. `inline`: written in the
/// config itself, where a password must not stand (SPEC §2: secrets are never inline).
pub fn parse_url(s: &str, inline: bool) -> Result<RedisUrl, String> {
    let u = redis::parse_redis_url(s).ok_or("not a redis:// URL")?;
    match u.scheme() {
        "redis" => {}
        "rediss" | "valkeys" => {
            return Err("TLS to Redis (rediss://) is not supported by this build".into())
        }
        other => return Err(format!("scheme {other}:// is not supported: use redis://")),
    }
    let host = match u.host_str() {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => return Err("needs a host: redis://HOST:PORT[/DB]".into()),
    };
    if u.password().is_some() && inline {
        return Err(
            "a password never stands in the config: put the URL in \"env:NAME\" or \"file:PATH\""
                .into(),
        );
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err("query parameters and fragments are not supported".into());
    }
    let db = match u.path().trim_start_matches('/') {
        "" => 0,
        d => d.parse::<u32>().map_err(|_| {
            format!("the database must be a number (redis://HOST:PORT/DB), not {d:?}")
        })?,
    };
    // The redis crate must accept it too (it connects with this string).
    redis::Client::open(s).map_err(|e| format!("not a usable Redis URL: {e}"))?;
    let port = u.port().unwrap_or(6379);
    let user = if u.username().is_empty() && u.password().is_none() {
        String::new()
    } else if u.password().is_some() {
        format!("{}:***@", u.username())
    } else {
        format!("{}@", u.username())
    };
    Ok(RedisUrl {
        url: s.to_string(),
        shown: format!("redis://{user}{host}:{port}/{db}"),
    })
}

/// `rate_limit.key_prefix`: every key the gateway writes starts with it.
pub fn check_prefix(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_plain_urls_parse() {
        let base = Path::new("/etc/authgate");
        assert_eq!(parse_backend("local", base).unwrap(), LimitBackend::Local);
        let LimitBackend::Redis(u) = parse_backend("redis://127.0.0.1:6379", base).unwrap() else {
            panic!("redis")
        };
        assert_eq!(u.to_string(), "redis://127.0.0.1:6379/0");
        assert_eq!(u.expose(), "redis://127.0.0.1:6379");
        let u = parse_url("redis://cache.internal/3", true).unwrap();
        assert_eq!(u.to_string(), "redis://cache.internal:6379/3");
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for (s, why) in [
            ("redis://", "host"),
            ("http://127.0.0.1:6379", "not a redis:// URL"),
            ("rediss://127.0.0.1:6379", "TLS"),
            ("unix:///run/redis.sock", "redis://"),
            ("redis://127.0.0.1:6379/x", "number"),
            ("redis://127.0.0.1:6379/0?protocol=resp3", "query"),
            ("redis://127.0.0.1:99999", "URL"),
            ("shared", "expected"),
        ] {
            let e = parse_backend(s, Path::new("/")).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn an_inline_password_is_refused_and_a_secret_one_never_shown() {
        let e = parse_url("redis://:hunter2@127.0.0.1:6379", true).unwrap_err();
        assert!(e.contains("never stands in the config"), "{e}");
        assert!(!e.contains("hunter2"));
        let u = parse_url("redis://gw:hunter2@127.0.0.1:6379/1", false).unwrap();
        assert_eq!(
            format!("{u} {u:?}"),
            "redis://gw:***@127.0.0.1:6379/1 redis://gw:***@127.0.0.1:6379/1"
        );
        assert_eq!(u.expose(), "redis://gw:hunter2@127.0.0.1:6379/1");
    }

    #[test]
    fn a_url_can_come_from_a_file_or_the_environment() {
        let dir = std::env::temp_dir().join(format!("authgate-redis-url-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("url"), "redis://:pw@10.0.0.5:6380/2\n").unwrap();
        let LimitBackend::Redis(u) = parse_backend("file:url", &dir).unwrap() else {
            panic!("redis")
        };
        assert_eq!(u.to_string(), "redis://:***@10.0.0.5:6380/2");
        std::fs::write(dir.join("bad"), "redis://:pw@h:1/x\n").unwrap();
        let e = parse_backend("file:bad", &dir).unwrap_err();
        assert!(e.contains("file:") && !e.contains("pw"), "{e}");
        let e = parse_backend("env:AUTHGATE_TEST_UNSET_REDIS_URL", &dir).unwrap_err();
        assert!(e.contains("not set"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn prefixes_are_short_printable_ascii() {
        assert!(check_prefix("authgate:").is_ok());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("a b").is_err());
        assert!(check_prefix("a\nb").is_err());
        assert!(check_prefix(&"x".repeat(65)).is_err());
    }
}
