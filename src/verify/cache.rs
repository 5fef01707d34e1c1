//! A bounded cache of verified tokens, keyed by the whole token string, so a
//! token seen again costs a lookup instead of a signature check. It lives in the
//! config snapshot, so a reload (new keys) starts it empty.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use super::verified::Verified;

const SHARDS: usize = 16;

/// Hashes a token by its last 16 bytes (the signature's tail) instead of SipHash
/// over all ~300: only tokens with a valid signature are ever inserted, so an
/// attacker cannot fill a bucket with crafted collisions; equality still compares
/// the whole token.
#[derive(Default)]
struct TailHasher(u64);

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        let tail = &bytes[bytes.len().saturating_sub(16)..];
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
        for &b in tail {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type Map = HashMap<Arc<str>, Arc<Verified>, BuildHasherDefault<TailHasher>>;

/// One shard: the entries, and their keys in insertion order for eviction.
#[derive(Default)]
struct Shard {
    map: Map,
    order: VecDeque<Arc<str>>,
}

pub struct TokenCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, token: &str) -> &Mutex<Shard> {
        // The signature's last byte is as good as random; no second hash needed.
        let b = token.as_bytes().last().copied().unwrap_or(0) as usize;
        &self.shards[b % SHARDS]
    }

    pub fn get(&self, token: &str) -> Option<Arc<Verified>> {
        let shard = self.shard(token).lock().ok()?;
        shard.map.get(token).cloned()
    }

    pub fn insert(&self, token: &str, value: Arc<Verified>) {
        let Ok(mut shard) = self.shard(token).lock() else {
            return;
        };
        let shard = &mut *shard;
        if let Some(v) = shard.map.get_mut(token) {
            *v = value;
            return;
        }
        // Full: the oldest entry goes (FIFO). O(1), unlike sweeping for expired
        // entries; expired ones are never served anyway, since the verifier re-checks
        // exp on every hit.
        while shard.map.len() >= self.per_shard {
            match shard.order.pop_front() {
                Some(old) => {
                    shard.map.remove(&old);
                }
                None => break,
            }
        }
        let key: Arc<str> = Arc::from(token);
        shard.order.push_back(key.clone());
        shard.map.insert(key, value);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.map.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> Arc<Verified> {
        Arc::new(Verified {
            source: crate::config::IssuerRef::SelfIssued,
            revocation_key: None,
            sub: "a".into(),
            iat: None,
            issued_ms: None,
            claims: Default::default(),
            exp: 0,
            nbf: None,
            headers: vec![],
        })
    }

    #[test]
    fn stays_within_its_bound() {
        let c = TokenCache::new(64);
        for i in 0..10_000 {
            c.insert(&format!("token-{i}"), v());
        }
        assert!(c.len() <= 64, "{}", c.len());
        c.insert("x", v());
        assert!(c.get("x").is_some());
        // The newest entries survive: eviction is oldest first.
        for i in 0..60 {
            c.insert(&format!("late-{i}"), v());
        }
        assert!(c.get("late-59").is_some());
        assert!(c.get("token-0").is_none());
        assert!(c.get("y").is_none());
    }
}
