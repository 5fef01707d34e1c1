//! `[tokens]`: signing algorithm, keys, issuer, audience, lifetimes.

use super::*;

pub(super) fn tokens(r: &mut Reader, t: &DeTable, base: &Path) -> Option<Tokens> {
    let p = "tokens";
    r.only_known(
        t,
        p,
        &[
            "algorithm",
            "signing_key",
            "secret",
            "previous_keys",
            "issuer",
            "audience",
            "access_ttl",
            "refresh_ttl",
            "leeway",
        ],
    );
    let algorithm = match r.string(t, p, "algorithm") {
        Some((s, span)) => Algorithm::parse(&s).unwrap_or_else(|| {
            r.error(
                &span,
                "tokens.algorithm",
                format!("{s:?}: expected EdDSA, ES256, RS256 or HS256"),
            );
            Algorithm::EdDSA
        }),
        None => Algorithm::EdDSA,
    };
    let secret_key = |r: &mut Reader, key: &str| {
        r.string(t, p, key).and_then(|(s, span)| {
            parse_secret_ref(&s, base)
                .map_err(|e| r.error(&span, &join(p, key), e))
                .ok()
        })
    };
    let mut signing_key = secret_key(r, "signing_key");
    let secret = secret_key(r, "secret");
    if algorithm == Algorithm::HS256 {
        if secret.is_none() && Reader::field(t, "secret").is_none() {
            let span = Reader::field(t, "algorithm")
                .map(|f| f.span)
                .unwrap_or(0..0);
            r.error(
                &span,
                "tokens.secret",
                "HS256 needs secret = \"env:NAME\" or \"file:PATH\" (at least 32 bytes)",
            );
        }
        if let Some(f) = Reader::field(t, "signing_key") {
            r.error(
                &f.span,
                "tokens.signing_key",
                "not used with HS256 (use tokens.secret)",
            );
        }
    } else {
        if let Some(f) = Reader::field(t, "secret") {
            r.error(
                &f.span,
                "tokens.secret",
                format!("only used with HS256, not {}", algorithm.name()),
            );
        }
        if signing_key.is_none() && Reader::field(t, "signing_key").is_none() {
            signing_key = Some(SecretRef::File(base.join("data/signing-key.pem")));
        }
    }
    let mut previous_keys = Vec::new();
    if let Some((v, span)) = r.strings(t, p, "previous_keys") {
        for (i, s) in v.iter().enumerate() {
            match parse_secret_ref(s, base) {
                Ok(k) => previous_keys.push(k),
                Err(e) => r.error(&span, &format!("tokens.previous_keys[{i}]"), e),
            }
        }
    }
    let text = |r: &mut Reader, key: &str, default: &str| {
        let v = r.string(t, p, key);
        match v {
            Some((s, span)) if s.is_empty() => {
                r.error(&span, &join(p, key), "must not be empty");
                s
            }
            Some((s, _)) => s,
            None => default.to_string(),
        }
    };
    let issuer = text(r, "issuer", "authgate");
    let audience = text(r, "audience", "api");
    let access_ttl = duration(r, t, p, "access_ttl", "15m");
    let refresh_ttl = duration(r, t, p, "refresh_ttl", "14d");
    let leeway = duration(r, t, p, "leeway", "30s");
    for (key, v) in [("access_ttl", access_ttl), ("refresh_ttl", refresh_ttl)] {
        if v.is_zero() {
            if let Some(f) = Reader::field(t, key) {
                r.error(&f.span, &join(p, key), "must be greater than zero");
            }
        }
    }
    Some(Tokens {
        algorithm,
        signing_key,
        secret,
        previous_keys,
        issuer,
        audience,
        access_ttl,
        refresh_ttl,
        leeway,
    })
}
