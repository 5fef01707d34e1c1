//! Login and registration throttling (SPEC `[rate_limit]`), in process.
//!
//! A keyed GCRA like governor's, written out because the per-user rule needs
//! to give an event back: past `login_per_user` failures every attempt on that
//! name is refused — right password included — yet only failures count. An
//! attempt reserves one event *before* its password is hashed (so concurrent
//! guesses cannot all pass before the first failure is counted) and is
//! refunded when it turns out not to be a failure. governor 0.10 has no refund.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Rate;

/// Keys beyond this are pruned of fully recovered entries; memory stays bounded.
const MAX_KEYS: usize = 100_000;

pub struct Limiter<K> {
    rate: Rate,
    /// Time between two events at the sustained rate.
    interval: Duration,
    /// How far ahead of now the theoretical arrival time may run (the burst).
    tolerance: Duration,
    state: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Rate) -> Limiter<K> {
        let interval = rate.per / rate.count;
        Limiter {
            rate,
            interval,
            tolerance: interval * (rate.count - 1),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// The configured rate (a reload keeps this limiter's state when it is unchanged).
    pub fn rate(&self) -> Rate {
        self.rate
    }

    fn retry_after(&self, tat: Instant, now: Instant) -> Option<u64> {
        let allowed_at = tat.checked_sub(self.tolerance).unwrap_or(now);
        if allowed_at > now {
            // Round up: Retry-After is whole seconds and must not invite an early retry.
            Some((allowed_at - now).as_millis().div_ceil(1000).max(1) as u64)
        } else {
            None
        }
    }

    /// Counts one event; `Err(seconds)` (and nothing counted) when over the limit.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut map) = self.state.lock() else {
            return Ok(());
        };
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        if let Some(s) = self.retry_after(tat, now) {
            return Err(s);
        }
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, t| *t > now);
        }
        map.insert(key.clone(), tat + self.interval);
        Ok(())
    }

    /// Gives back one event counted by `check` (an attempt that did not count after all).
    pub fn refund(&self, key: &K) {
        let now = Instant::now();
        let Ok(mut map) = self.state.lock() else {
            return;
        };
        if let Some(tat) = map.get_mut(key) {
            match tat.checked_sub(self.interval) {
                Some(t) if t > now => *tat = t,
                _ => {
                    map.remove(key);
                }
            }
        }
    }

    /// Drops fully recovered keys; called periodically.
    pub fn prune(&self) {
        let now = Instant::now();
        if let Ok(mut map) = self.state.lock() {
            map.retain(|_, t| *t > now);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, secs: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(secs),
        }
    }

    #[test]
    fn allows_the_burst_then_refuses() {
        let l = Limiter::new(rate(5, 60));
        for _ in 0..5 {
            assert!(l.check(&"a").is_ok());
        }
        let wait = l.check(&"a").unwrap_err();
        assert!((1..=12).contains(&wait), "{wait}");
        // Another key is untouched.
        assert!(l.check(&"b").is_ok());
    }

    #[test]
    fn refunded_events_do_not_count() {
        let l = Limiter::new(rate(2, 60));
        for _ in 0..10 {
            assert!(l.check(&"a").is_ok());
            l.refund(&"a");
        }
        assert!(l.check(&"a").is_ok());
        assert!(l.check(&"a").is_ok());
        assert!(l.check(&"a").is_err());
        // A refund frees exactly one slot.
        l.refund(&"a");
        assert!(l.check(&"a").is_ok());
        assert!(l.check(&"a").is_err());
        // Refunding an unknown key is harmless.
        l.refund(&"b");
        assert!(l.check(&"b").is_ok());
    }

    #[test]
    fn recovered_keys_are_pruned() {
        let l = Limiter::new(Rate {
            count: 1000,
            per: Duration::from_millis(1),
        });
        for i in 0..100 {
            l.check(&i).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        l.prune();
        assert_eq!(l.len(), 0);
    }
}
