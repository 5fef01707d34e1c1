//! `identity.store` and `store copy` arguments (SPEC §9): `sqlite:PATH`,
//! `postgres://...`, or `env:NAME` / `file:PATH` holding one of those.
//!
//! A PostgreSQL password never stands inline (in the config or on a command
//! line, where `ps` shows it): only inside an `env:`/`file:` secret. No message
//! and no `Debug` output ever repeats a URL's password.

use std::path::{Path, PathBuf};

use super::values::parse_secret_ref;
use super::StoreUrl;

/// A `postgres://` URL whose Debug and Display hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(String);

impl PgUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `postgres://user@host:port/db` without password or query, for logs and `check`.
    pub fn redacted(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("postgres", &self.0));
        let rest = rest.split('?').next().unwrap_or("");
        let (auth, host) = match rest.split_once('/') {
            Some((a, db)) => (a, format!("/{db}")),
            None => (rest, String::new()),
        };
        let auth = match auth.rsplit_once('@') {
            Some((user, h)) => {
                let user = user.split(':').next().unwrap_or("");
                format!("{user}@{h}")
            }
            None => auth.to_string(),
        };
        format!("{scheme}://{auth}{host}")
    }
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Does this URL carry a password (`user:pw@` or `?password=`)?
pub fn has_password(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or("");
    let inline = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    inline
        || query
            .split('&')
            .any(|kv| kv.split('=').next() == Some("password"))
}

fn is_postgres(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// Parses a store reference. `base` anchors relative `sqlite:` and `file:` paths.
/// Secrets are read now, so a missing variable is reported where it is named.
pub fn parse(s: &str, base: &Path) -> Result<StoreUrl, String> {
    if let Some(path) = s.strip_prefix("sqlite:") {
        if path.is_empty() {
            return Err("\"sqlite:\" needs a path".into());
        }
        return Ok(StoreUrl::Sqlite(base.join(path)));
    }
    if is_postgres(s) {
        if has_password(s) {
            return Err("a password must not stand inline: put the whole postgres:// URL in \"env:NAME\" or \"file:PATH\"".into());
        }
        return Ok(StoreUrl::Postgres(PgUrl(s.to_string())));
    }
    if s.starts_with("env:") || s.starts_with("file:") {
        let secret = parse_secret_ref(s, base)?;
        let bytes = secret.read()?;
        let inner =
            String::from_utf8(bytes).map_err(|_| format!("{secret} does not hold UTF-8 text"))?;
        let inner = inner.trim();
        if is_postgres(inner) {
            return Ok(StoreUrl::Postgres(PgUrl(inner.to_string())));
        }
        if let Some(path) = inner.strip_prefix("sqlite:") {
            if !path.is_empty() {
                return Ok(StoreUrl::Sqlite(base.join(path)));
            }
        }
        // Never echo the content: it may be a mistyped URL with a password.
        return Err(format!(
            "{secret} must hold a postgres:// URL or sqlite:PATH"
        ));
    }
    Err("expected \"sqlite:PATH\", \"postgres://...\", \"env:NAME\" or \"file:PATH\"".into())
}

/// The default embedded store, relative to the config's folder.
pub fn default_sqlite(base: &Path) -> StoreUrl {
    StoreUrl::Sqlite(PathBuf::from(base).join("data/users.db"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_passwords_are_refused_and_never_repeated() {
        let base = Path::new("/etc/authgate");
        for url in [
            "postgres://app:hunter2@db:5432/auth",
            "postgresql://app:hunter2@db/auth",
            "postgres://app@db/auth?sslmode=require&password=hunter2",
            "postgres://app:@db/auth",
        ] {
            let e = parse(url, base).unwrap_err();
            assert!(e.contains("must not stand inline"), "{url}: {e}");
            assert!(!e.contains("hunter2"));
        }
        assert!(parse("postgres://app@db:5432/auth?sslmode=verify-full", base).is_ok());
        // An '@' or ':' in the path or query is not a password.
        assert!(!has_password("postgres://app@db/auth?application_name=a:b"));
    }

    #[test]
    fn secrets_hold_the_url_and_debug_hides_the_password() {
        let dir = std::env::temp_dir().join(format!("authgate-url-{}", crate::ids::uuid_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("store"), "postgres://app:hunter2@db/auth\n").unwrap();
        let u = parse("file:store", &dir).unwrap();
        let StoreUrl::Postgres(pg) = &u else {
            panic!("{u:?}")
        };
        assert_eq!(pg.as_str(), "postgres://app:hunter2@db/auth");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert_eq!(pg.redacted(), "postgres://app@db/auth");
        std::fs::write(dir.join("bad"), "mysql://app:hunter2@db/auth").unwrap();
        let e = parse("file:bad", &dir).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(parse("env:AUTHGATE_TEST_SURELY_UNSET", &dir)
            .unwrap_err()
            .contains("not set"));
        std::fs::write(dir.join("lite"), "sqlite:data/u.db").unwrap();
        assert_eq!(
            parse("file:lite", &dir).unwrap(),
            StoreUrl::Sqlite(dir.join("data/u.db"))
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
