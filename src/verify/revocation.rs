//! SPEC §9 revocation: a map of username → not-before (milliseconds), filled
//! from the store by a poller every `identity.revocation_poll`, read on the
//! request path with one atomic load and one hash lookup — never a store call.
//!
//! One-second `iat` is too coarse: a login in the same second as a revocation
//! must give a working token, and a token issued a moment before it must die.
//! Our tokens therefore carry `iat_ms` (the issuing instant in milliseconds),
//! and a token is revoked when `iat_ms <= not_before`. A token without `iat_ms`
//! counts as issued at the start of its `iat` second: it may be refused for up to
//! a second too long, never accepted wrongly. Only tokens of our own issuer are
//! looked up (an external IdP's `sub` names someone else).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::{Map, Value};

use crate::clock::now_ms;
use crate::store::{Revocation, StoreError, UserStore};

/// Rows are asked for from a little before the newest change seen: a
/// transaction that read the clock before another but committed after it is
/// still picked up. Re-reading a row is harmless (merging keeps the maximum).
const OVERLAP_MS: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token revoked")]
pub struct Revoked;

pub struct Revocations {
    map: ArcSwap<HashMap<String, u64>>,
    /// The newest `updated_ms` seen (store clock).
    cursor: AtomicU64,
    /// How often the poller looks (`identity.revocation_poll`), in ms.
    every_ms: AtomicU64,
    /// Entries whose not-before is older than this (access_ttl + leeway, ms)
    /// can only match expired tokens: they are dropped.
    horizon_ms: AtomicU64,
    /// SPEC §16: API keys ride the same poll, so a key created or revoked anywhere
    /// works or stops within `revocation_poll`, like a revocation.
    pub keys: crate::verify::api_keys::KeyTable,
}

/// When a token was issued, in milliseconds (see the module note).
pub fn issued_ms(claims: &Map<String, Value>) -> Option<u64> {
    if let Some(ms) = claims.get("iat_ms").and_then(Value::as_u64) {
        return Some(ms);
    }
    claims
        .get("iat")
        .and_then(Value::as_u64)
        .and_then(|s| s.checked_mul(1000))
}

impl Revocations {
    pub fn new(every: Duration, horizon: Duration) -> Revocations {
        Revocations {
            map: ArcSwap::from_pointee(HashMap::new()),
            cursor: AtomicU64::new(0),
            every_ms: AtomicU64::new(every.as_millis() as u64),
            horizon_ms: AtomicU64::new(horizon.as_millis() as u64),
            keys: Default::default(),
        }
    }

    /// A reload may change the poll interval and the token lifetime.
    pub fn configure(&self, every: Duration, horizon: Duration) {
        self.every_ms
            .store(every.as_millis() as u64, Ordering::Relaxed);
        self.horizon_ms
            .store(horizon.as_millis() as u64, Ordering::Relaxed);
    }

    /// The request-path check, after the signature and claims verified and
    /// before the route's policy. `issuer` is our own `iss`.
    pub fn check(
        &self,
        sub: &str,
        claims: &Map<String, Value>,
        issuer: &str,
    ) -> Result<(), Revoked> {
        let map = self.map.load();
        if map.is_empty() {
            return Ok(());
        }
        let Some(&not_before) = map.get(sub) else {
            return Ok(());
        };
        if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
            return Ok(());
        }
        match issued_ms(claims) {
            Some(t) if t > not_before => Ok(()),
            _ => Err(Revoked),
        }
    }

    /// The same check for a verified token of authgate's own (the verifier keeps
    /// `issued_ms`, from `iat_ms` or else `iat`, instead of the whole claims map).
    pub fn check_issued(&self, sub: &str, issued_ms: Option<u64>) -> Result<(), Revoked> {
        let map = self.map.load();
        if map.is_empty() {
            return Ok(());
        }
        let Some(&not_before) = map.get(sub) else {
            return Ok(());
        };
        match issued_ms {
            Some(t) if t > not_before => Ok(()),
            _ => Err(Revoked),
        }
    }

    /// Takes rows in (keeping the later not-before per user); returns how many
    /// changed the map.
    pub fn merge(&self, rows: &[Revocation]) -> usize {
        if let Some(max) = rows.iter().map(|r| r.updated_ms).max() {
            self.cursor.fetch_max(max, Ordering::Relaxed);
        }
        let oldest = now_ms().saturating_sub(self.horizon_ms.load(Ordering::Relaxed));
        let fresh: Vec<&Revocation> = rows.iter().filter(|r| r.not_before_ms >= oldest).collect();
        let current = self.map.load();
        let stale = current.values().any(|&nb| nb < oldest);
        let news = fresh
            .iter()
            .filter(|r| {
                current
                    .get(&r.username)
                    .is_none_or(|&nb| nb < r.not_before_ms)
            })
            .count();
        if news == 0 && !stale {
            return 0;
        }
        self.map.rcu(|m| {
            let mut m: HashMap<String, u64> = m
                .iter()
                .filter(|(_, &nb)| nb >= oldest)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            for r in &fresh {
                let e = m.entry(r.username.clone()).or_insert(0);
                *e = (*e).max(r.not_before_ms);
            }
            m
        });
        news
    }

    /// One poll: the rows changed since shortly before the last one seen.
    /// Blocking (a store call): run it off the event loop.
    pub fn poll(&self, store: &dyn UserStore) -> Result<usize, StoreError> {
        let since = self
            .cursor
            .load(Ordering::Relaxed)
            .saturating_sub(OVERLAP_MS);
        let rows = store.revocations_since(since)?;
        let n = self.merge(&rows);
        self.keys.poll(store)?;
        Ok(n)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.load().len()
    }
}

/// Polls `store` every `revocation_poll` until `revs` is dropped (its snapshot
/// replaced by one on another store). An outage is logged once when it starts
/// and once when it ends.
pub fn spawn_poller(store: Arc<dyn UserStore>, revs: Weak<Revocations>) {
    tokio::spawn(async move {
        let mut down = false;
        loop {
            let every = match revs.upgrade() {
                Some(r) => r.every_ms.load(Ordering::Relaxed).max(10),
                None => return,
            };
            tokio::time::sleep(Duration::from_millis(every)).await;
            let Some(r) = revs.upgrade() else { return };
            let s = store.clone();
            let polled = tokio::task::spawn_blocking(move || r.poll(s.as_ref())).await;
            match polled {
                Ok(Ok(n)) => {
                    if down {
                        tracing::info!("revocations: store reachable again");
                        down = false;
                    }
                    if n > 0 {
                        tracing::info!(users = n, "revocations: new not-before times applied");
                    }
                }
                Ok(Err(e)) => {
                    if !down {
                        tracing::warn!(error = %e, "revocations: cannot poll the store; known revocations stay in force");
                        down = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "revocations: poll task failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn rev(user: &str, nb: u64, updated: u64) -> Revocation {
        Revocation {
            username: user.into(),
            not_before_ms: nb,
            updated_ms: updated,
        }
    }

    #[test]
    fn tokens_issued_up_to_the_not_before_are_revoked_and_later_ones_pass() {
        let r = Revocations::new(Duration::from_secs(1), Duration::from_secs(3600));
        let t = now_ms();
        assert_eq!(r.merge(&[rev("alice", t, 1)]), 1);
        let tok = |ms: u64| claims(json!({"iss": "authgate", "iat": ms / 1000, "iat_ms": ms}));
        assert_eq!(r.check("alice", &tok(t - 1), "authgate"), Err(Revoked));
        assert_eq!(r.check("alice", &tok(t), "authgate"), Err(Revoked));
        // Same second, a millisecond later: a fresh login works.
        assert_eq!(r.check("alice", &tok(t + 1), "authgate"), Ok(()));
        assert_eq!(r.check("bob", &tok(t - 1), "authgate"), Ok(()));
        // Another issuer's "alice" is someone else.
        let other = claims(json!({"iss": "https://idp", "iat": 1}));
        assert_eq!(r.check("alice", &other, "authgate"), Ok(()));
    }

    #[test]
    fn a_token_without_milliseconds_counts_from_the_start_of_its_second() {
        let r = Revocations::new(Duration::from_secs(1), Duration::from_secs(3600));
        let t = now_ms() / 1000 * 1000 + 500;
        r.merge(&[rev("alice", t, 1)]);
        let same_second = claims(json!({"iss": "authgate", "iat": t / 1000}));
        assert_eq!(r.check("alice", &same_second, "authgate"), Err(Revoked));
        let next = claims(json!({"iss": "authgate", "iat": t / 1000 + 1}));
        assert_eq!(r.check("alice", &next, "authgate"), Ok(()));
        let no_iat = claims(json!({"iss": "authgate"}));
        assert_eq!(r.check("alice", &no_iat, "authgate"), Err(Revoked));
    }

    #[test]
    fn merging_keeps_the_later_not_before_and_drops_expired_entries() {
        let r = Revocations::new(Duration::from_secs(1), Duration::from_secs(60));
        let t = now_ms();
        r.merge(&[rev("a", t, 5), rev("b", t - 3_600_000, 6)]);
        assert_eq!(r.len(), 1, "b's tokens have all expired");
        assert_eq!(r.merge(&[rev("a", t - 10, 7)]), 0);
        let tok = claims(json!({"iss": "i", "iat_ms": t - 5}));
        assert_eq!(r.check("a", &tok, "i"), Err(Revoked));
        assert_eq!(r.cursor.load(Ordering::Relaxed), 7);
    }
}
