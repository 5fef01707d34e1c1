//! `[identity]`: the built-in user store.

use super::*;

pub(super) fn identity(r: &mut Reader, t: &DeTable, base: &Path) -> Option<Identity> {
    let p = "identity";
    r.only_known(
        t,
        p,
        &[
            "enabled",
            "store",
            "registration",
            "min_password_length",
            "max_password_length",
            "max_body",
            "password_hash",
            "paths",
            "hash_concurrency",
            "hash_queue",
            "store_timeout",
            "store_pool",
            "revocation_poll",
        ],
    );
    let store = match r.string(t, p, "store") {
        Some((s, span)) => crate::config::store_url::parse(&s, base).unwrap_or_else(|e| {
            r.error(&span, "identity.store", e);
            crate::config::store_url::default_sqlite(base)
        }),
        None => crate::config::store_url::default_sqlite(base),
    };
    let (store_timeout, store_pool, revocation_poll) = store_keys(r, t);
    let registration_open = match r.string(t, p, "registration") {
        Some((s, _)) if s == "open" => true,
        Some((s, _)) if s == "closed" => false,
        Some((s, span)) => {
            r.error(
                &span,
                "identity.registration",
                format!("{s:?}: expected \"open\" or \"closed\""),
            );
            true
        }
        None => true,
    };
    let min = r.bounded(t, p, "min_password_length", 1, 4096).unwrap_or(8) as usize;
    let max = r
        .bounded(t, p, "max_password_length", 1, 65536)
        .unwrap_or(1024) as usize;
    if min > max {
        let span = Reader::field(t, "min_password_length")
            .map(|f| f.span)
            .unwrap_or(0..0);
        r.error(
            &span,
            "identity.min_password_length",
            format!("is greater than max_password_length ({max})"),
        );
    }
    let max_body = size(r, t, p, "max_body", 16 * 1024) as usize;
    let mut password_hash = HashParams {
        memory_kib: 19456,
        iterations: 2,
        parallelism: 1,
    };
    if let Some((ht, _)) = r.table(t, p, "password_hash") {
        let hp = "identity.password_hash";
        r.only_known(ht, hp, &["memory_kib", "iterations", "parallelism"]);
        if let Some(v) = r.bounded(ht, hp, "memory_kib", 8, 4 << 20) {
            password_hash.memory_kib = v as u32;
        }
        if let Some(v) = r.bounded(ht, hp, "iterations", 1, 100) {
            password_hash.iterations = v as u32;
        }
        if let Some(v) = r.bounded(ht, hp, "parallelism", 1, 64) {
            password_hash.parallelism = v as u32;
        }
        if password_hash.memory_kib < 8 * password_hash.parallelism {
            let span = Reader::field(ht, "memory_kib")
                .map(|f| f.span)
                .unwrap_or(0..0);
            r.error(
                &span,
                "identity.password_hash.memory_kib",
                "must be at least 8 × parallelism",
            );
        }
    }
    let mut paths = IdentityPaths {
        register: "/register".into(),
        login: "/login".into(),
        refresh: "/token/refresh".into(),
        logout: "/logout".into(),
        jwks: "/.well-known/jwks.json".into(),
    };
    if let Some((pt, _)) = r.table(t, p, "paths") {
        let pp = "identity.paths";
        r.only_known(pt, pp, &["register", "login", "refresh", "logout", "jwks"]);
        for (key, slot) in [
            ("register", &mut paths.register),
            ("login", &mut paths.login),
            ("refresh", &mut paths.refresh),
            ("logout", &mut paths.logout),
            ("jwks", &mut paths.jwks),
        ] {
            if let Some((s, span)) = r.string(pt, pp, key) {
                match crate::edge::normalize::normalize_path(&s) {
                    Ok(n) if n == s && s.starts_with('/') => *slot = s,
                    _ => r.error(
                        &span,
                        &join(pp, key),
                        format!("{s:?} is not a canonical absolute path"),
                    ),
                }
            }
        }
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let hash_concurrency = r
        .bounded(t, p, "hash_concurrency", 1, 256)
        .map(|v| v as usize)
        .unwrap_or(cores);
    let hash_queue = r.bounded(t, p, "hash_queue", 0, 100_000).unwrap_or(64) as usize;
    let enabled = r.boolean(t, p, "enabled").unwrap_or(true);
    Some(Identity {
        enabled,
        store,
        registration_open,
        min_password_length: min,
        max_password_length: max,
        max_body,
        password_hash,
        paths,
        hash_concurrency,
        hash_queue,
        store_timeout,
        store_pool,
        revocation_poll,
    })
}

/// SPEC §9: `store_timeout`, `store_pool`, `revocation_poll`.
fn store_keys(r: &mut Reader, t: &DeTable) -> (Duration, usize, Duration) {
    let p = "identity";
    let positive =
        |r: &mut Reader, key: &str, default: &str, min: Duration| match r.string(t, p, key) {
            Some((s, span)) => match parse_duration(&s) {
                Ok(d) if d >= min => d,
                Ok(_) => {
                    r.error(&span, &join(p, key), format!("must be at least {min:?}"));
                    parse_duration(default).unwrap_or(min)
                }
                Err(e) => {
                    r.error(&span, &join(p, key), e);
                    parse_duration(default).unwrap_or(min)
                }
            },
            None => parse_duration(default).unwrap_or(min),
        };
    let timeout = positive(r, "store_timeout", "2s", Duration::from_millis(10));
    let poll = positive(r, "revocation_poll", "1s", Duration::from_millis(10));
    let pool = r.bounded(t, p, "store_pool", 1, 1000).unwrap_or(16) as usize;
    (timeout, pool, poll)
}
