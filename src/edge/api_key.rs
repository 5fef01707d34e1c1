//! SPEC §16 on the request path: which API key a request presents, whether the
//! route takes it, the caller it makes, and removing it before forwarding.

use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::config::{ApiKeys, Route};
use crate::error::ApiError;
use crate::state::Snapshot;
use crate::verify::api_keys::{KeyError, PREFIX};
use crate::verify::verified::{satisfies, Verified};

/// The key a request presents, if keys are on: `Authorization: Bearer agk_...`
/// (`bearer` is that header's token, already taken apart), or the whole value of
/// the configured header.
pub fn presented<'h>(
    cfg: &ApiKeys,
    h: &'h HeaderMap,
    bearer: Option<&'h str>,
) -> Result<Option<&'h str>, ApiError> {
    if !cfg.enabled {
        return Ok(None);
    }
    let Some(name) = &cfg.header else {
        return Ok(bearer.filter(|t| t.starts_with(PREFIX)));
    };
    let mut all = h.get_all(name).iter();
    let Some(v) = all.next() else { return Ok(None) };
    // Two copies of the key header: two parsers could pick different ones.
    if all.next().is_some() {
        return Err(ApiError::InvalidRequest(format!(
            "more than one {name} header"
        )));
    }
    match v.to_str() {
        Ok(s) => Ok(Some(s.trim())),
        Err(_) => Err(KeyError::Malformed.into()),
    }
}

/// The caller a presented key makes on this route, or why not; counted in
/// `authgate_api_key_auth_total{outcome}`.
pub fn authorize(rt: &Snapshot, route: &Route, key: &str) -> Result<Arc<Verified>, ApiError> {
    let checked = if route.credentials.api_key {
        rt.revocations
            .keys
            .check(key, crate::clock::now_ms())
            .and_then(|e| {
                // SPEC §9 + §16: `users revoke` ends keys created before it. The
                // store revokes the rows too; the not-before acts at once, on
                // this poll, whichever row change arrives first.
                rt.revocations
                    .check_issued(&e.user, Some(e.created_ms))
                    .map_err(|_| KeyError::Revoked)?;
                e.verified(&rt.config)
            })
    } else {
        // A route that takes only tokens refuses a key like a bad token.
        Err(KeyError::NotAllowed)
    };
    let outcome = match &checked {
        Ok(_) => "ok",
        Err(e) => e.outcome(),
    };
    counted(outcome).increment(1);
    let v = checked?;
    if !satisfies(&v.claims, &route.require) {
        return Err(ApiError::InsufficientScope);
    }
    Ok(v)
}

const OUTCOMES: [&str; 6] = [
    "ok",
    "unknown",
    "revoked",
    "expired",
    "malformed",
    "not_allowed",
];

/// `authgate_api_key_auth_total{outcome}`, registered once: the success path then
/// costs one atomic add, not a registry lookup with a key built per request.
fn counted(outcome: &'static str) -> &'static metrics::Counter {
    static COUNTERS: std::sync::OnceLock<Vec<metrics::Counter>> = std::sync::OnceLock::new();
    let all = COUNTERS.get_or_init(|| {
        OUTCOMES
            .iter()
            .map(|&o| metrics::counter!("authgate_api_key_auth_total", "outcome" => o))
            .collect()
    });
    // Every outcome is in the list (a test checks): the fallback is not reached.
    let i = OUTCOMES.iter().position(|&o| o == outcome).unwrap_or(0);
    &all[i]
}

/// SPEC §16: the key never reaches a backend. A header of its own is removed on
/// every route; `Authorization` only when it carries a key (a token in it is
/// forwarded, SPEC §4).
pub fn strip(cfg: &ApiKeys, h: &mut HeaderMap) {
    match &cfg.header {
        Some(name) => {
            h.remove(name);
        }
        None => {
            let carries_key = h.get(AUTHORIZATION).is_some_and(|v| {
                let b = v.as_bytes();
                b.len() > 7
                    && b[..7].eq_ignore_ascii_case(b"bearer ")
                    && b[7..].trim_ascii_start().starts_with(PREFIX.as_bytes())
            });
            if carries_key {
                h.remove(AUTHORIZATION);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    #[test]
    fn every_refusal_has_its_own_metric_label() {
        use crate::verify::api_keys::KeyError::*;
        for e in [Malformed, Unknown, Revoked, Expired, NotAllowed] {
            assert!(OUTCOMES[1..].contains(&e.outcome()), "{e:?}");
        }
    }

    #[test]
    fn a_key_in_authorization_is_stripped_and_a_token_is_kept() {
        let cfg = ApiKeys {
            enabled: true,
            header: None,
        };
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer eyJ.x.y"));
        strip(&cfg, &mut h);
        assert!(h.contains_key(AUTHORIZATION));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer agk_x_y"));
        strip(&cfg, &mut h);
        assert!(!h.contains_key(AUTHORIZATION));
        let own = ApiKeys {
            enabled: true,
            header: Some(HeaderName::from_static("x-api-key")),
        };
        h.insert("x-api-key", HeaderValue::from_static("anything"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer eyJ.x.y"));
        strip(&own, &mut h);
        assert!(!h.contains_key("x-api-key"));
        assert!(h.contains_key(AUTHORIZATION));
    }
}
