//! A bounded cache of verified tokens, keyed by the whole token string, so a
//! token seen again costs a lookup instead of a signature check. It lives in the
//! config snapshot, so a reload (new keys) starts it empty.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use super::jwt::{now_secs, Verified};

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

type Map = HashMap<Box<str>, Entry, BuildHasherDefault<TailHasher>>;

struct Entry {
    value: Arc<Verified>,
    /// Unix seconds after which the entry is useless (exp + leeway).
    until: u64,
}

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
        map.get(token).map(|e| e.value.clone())
    }

    pub fn insert(&self, token: &str, value: Arc<Verified>, until: u64) {
        let Ok(mut map) = self.shard(token).lock() else {
            return;
        };
        if map.len() >= self.per_shard {
            let now = now_secs();
            map.retain(|_, e| e.until >= now);
            if map.len() >= self.per_shard {
                // Still full of live tokens: start over rather than grow.
                map.clear();
            }
        }
        map.insert(token.into(), Entry { value, until });
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
        let far = now_secs() + 3600;
        for i in 0..10_000 {
            c.insert(&format!("token-{i}"), v(), far);
        }
        assert!(c.len() <= 64 + SHARDS, "{}", c.len());
        c.insert("x", v(), far);
        assert!(c.get("x").is_some());
        assert!(c.get("y").is_none());
    }
}
