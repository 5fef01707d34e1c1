//! The in-process GCRA of route limits (SPEC §17): no lock that every worker
//! takes on every request.
//!
//! Each key's theoretical arrival time (TAT) is one `AtomicU64` (ns since the
//! limiter's epoch), advanced by compare-and-swap, so a decision on a known key
//! is a shard read lock and a CAS. Keys are spread over [`SHARDS`] maps by a
//! keyed 64-bit hash of the identity: the maps hold `u64 → AtomicU64` (no string
//! copied per request; the key is hashed with a per-process random SipHash key, so
//! a caller cannot choose two identities that share a bucket). A shard's write
//! lock is taken only to add a key (a caller's first request in a while) and by
//! the periodic prune. `per = "route"` has one bucket and no map at all: one CAS.
//!
//! Why not the login limiter (`local.rs`): it is one `Mutex<HashMap>` — fine
//! for logins, which cost an Argon2 hash each, not for every proxied request.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// A power of two, several times the usual worker count: two workers rarely
/// meet on one shard, and when they do, read locks do not wait for each other.
pub const SHARDS: usize = 64;
/// Keys per shard beyond which recovered entries are dropped on insert.
const MAX_KEYS_PER_SHARD: usize = 4096;

/// The decision: admitted with `debt` (how far the TAT runs ahead of now after
/// this request), or refused with the wait until one fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Admitted { debt: Duration },
    Refused { wait: Duration },
}

/// The keys are already SipHash outputs: hashing them again would be waste.
#[derive(Default)]
struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = RwLock<HashMap<u64, AtomicU64, BuildHasherDefault<Passthrough>>>;

pub struct Gcra {
    epoch: Instant,
    interval: u64,
    tolerance: u64,
    hasher: std::collections::hash_map::RandomState,
    single: AtomicU64,
    shards: Box<[Shard]>,
}

impl Gcra {
    /// `burst` requests at once, then one per `interval`.
    pub fn new(interval: Duration, burst: u32) -> Gcra {
        let interval = interval.as_nanos().clamp(1, u64::MAX as u128) as u64;
        Gcra {
            epoch: Instant::now(),
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1) - 1)),
            hasher: Default::default(),
            single: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval)
    }

    pub fn tolerance(&self) -> Duration {
        Duration::from_nanos(self.tolerance)
    }

    fn now(&self) -> u64 {
        // +1: TAT 0 is "never seen", which must read as full.
        self.epoch.elapsed().as_nanos().min(u64::MAX as u128) as u64 + 1
    }

    /// The keyed hash that names `key`'s bucket.
    pub fn key_of<K: Hash + ?Sized>(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The one bucket of a `per = "route"` limit.
    pub fn check_single(&self) -> Decision {
        self.decide(&self.single, self.now())
    }

    /// The bucket of a key from [`Gcra::key_of`].
    pub fn check(&self, key: u64) -> Decision {
        self.check_at(key, self.now())
    }

    fn check_at(&self, key: u64, now: u64) -> Decision {
        let shard = &self.shards[(key as usize) & (SHARDS - 1)];
        // A poisoned lock only means a panic elsewhere; the map is still whole.
        {
            let map = shard.read().unwrap_or_else(|p| p.into_inner());
            if let Some(tat) = map.get(&key) {
                return self.decide(tat, now);
            }
        }
        let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS_PER_SHARD && !map.contains_key(&key) {
            map.retain(|_, t| t.load(Ordering::Relaxed) > now);
        }
        let tat = map.entry(key).or_insert_with(|| AtomicU64::new(0));
        self.decide(tat, now)
    }

    /// GCRA on one TAT: admitted when `tat - tolerance <= now`, then `tat += interval`.
    fn decide(&self, tat: &AtomicU64, now: u64) -> Decision {
        let mut current = tat.load(Ordering::Acquire);
        loop {
            let base = current.max(now);
            let allowed_at = base.saturating_sub(self.tolerance);
            if allowed_at > now {
                return Decision::Refused {
                    wait: Duration::from_nanos(allowed_at - now),
                };
            }
            let next = base.saturating_add(self.interval);
            match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return Decision::Admitted {
                        debt: Duration::from_nanos(next - now),
                    }
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Drops fully recovered keys; called periodically, off the request path.
    pub fn prune(&self) {
        let now = self.now();
        for s in self.shards.iter() {
            let mut map = s.write().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, t| t.load(Ordering::Relaxed) > now);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn admits_the_burst_then_one_per_interval() {
        let g = Gcra::new(Duration::from_secs(1), 3);
        let k = g.key_of("alice");
        let t0 = 1_000;
        for i in 0..3 {
            match g.check_at(k, t0) {
                Decision::Admitted { debt } => {
                    assert_eq!(debt, Duration::from_secs(i + 1))
                }
                d => panic!("{d:?}"),
            }
        }
        assert_eq!(
            g.check_at(k, t0),
            Decision::Refused {
                wait: Duration::from_secs(1)
            }
        );
        assert!(matches!(
            g.check_at(k, t0 + 1_000_000_000),
            Decision::Admitted { .. }
        ));
        // Another key has its own bucket.
        assert!(matches!(
            g.check_at(g.key_of("bob"), t0),
            Decision::Admitted { .. }
        ));
    }

    #[test]
    fn concurrent_threads_never_admit_more_than_the_burst() {
        // Slow enough that no event is earned back while the threads race.
        let g = Arc::new(Gcra::new(Duration::from_secs(3600), 50));
        let k = g.key_of("shared");
        let admitted: usize = (0..8)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| matches!(g.check(k), Decision::Admitted { .. }))
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(admitted, 50);
    }

    #[test]
    fn the_single_bucket_is_shared_by_every_thread() {
        let g = Arc::new(Gcra::new(Duration::from_secs(3600), 20));
        let admitted: usize = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| matches!(g.check_single(), Decision::Admitted { .. }))
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(admitted, 20);
    }

    #[test]
    fn recovered_keys_are_pruned() {
        let g = Gcra::new(Duration::from_micros(1), 1);
        for i in 0..1000u32 {
            let _ = g.check(g.key_of(&i));
        }
        assert_eq!(g.len(), 1000);
        std::thread::sleep(Duration::from_millis(2));
        g.prune();
        assert_eq!(g.len(), 0);
    }
}
