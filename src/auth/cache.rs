//! A bounded cache of verified tokens, keyed by the whole token string, so a
//! token seen again costs a lookup instead of a signature check. It lives in the
//! config snapshot, so a reload (new keys) starts it empty.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use super::jwt::Verified;

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

type Map = HashMap<Box<str>, Arc<Verified>, BuildHasherDefault<TailHasher>>;

pub struct TokenCache {
    shards: Vec<Mutex<Map>>,
    per_shard: usize,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, token: &str) -> &Mutex<Map> {
        // The signature's last byte is as good as random; no second hash needed.
        let b = token.as_bytes().last().copied().unwrap_or(0) as usize;
        &self.shards[b % SHARDS]
    }

    pub fn get(&self, token: &str) -> Option<Arc<Verified>> {
        let map = self.shard(token).lock().ok()?;
        map.get(token).cloned()
    }

    pub fn insert(&self, token: &str, value: Arc<Verified>) {
        let Ok(mut map) = self.shard(token).lock() else {
            return;
        };
        if map.len() >= self.per_shard && !map.contains_key(token) {
            // Full: evict one arbitrary entry, O(1). (Clearing the shard made a working
            // set larger than the cache drop a thousand entries at a time; sweeping for
            // expired ones on every insert is O(n).) Expired entries are never served:
            // the verifier re-checks exp on every hit.
            if let Some(k) = map.keys().next().cloned() {
                map.remove(&k);
            }
        }
        map.insert(token.into(), value);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> Arc<Verified> {
        Arc::new(Verified {
            sub: "a".into(),
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
        assert!(c.get("y").is_none());
    }
}
