//! The in-process limiter (SPEC `[rate_limit]`, `backend = "local"`), and the
//! fallback of the shared one (SPEC §9).
//!
//! A keyed GCRA like governor's, written out because the per-user rule needs
//! to give an event back: past `login_per_user` failures every attempt on that
//! name is refused — right password included — yet only failures count. An
//! attempt reserves one event *before* its password is hashed (so concurrent
//! guesses cannot all pass before the first failure is counted) and is
//! refunded when it turns out not to be a failure. governor 0.10 has no refund.
//! `gcra.lua` is the same algorithm over Redis; a property test holds them equal.

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
    /// Theoretical arrival time (TAT) per key.
    state: Mutex<HashMap<K, Instant>>,
}

/// Whole seconds for `Retry-After`, rounded up: it must not invite an early retry.
pub fn retry_secs(wait: Duration) -> u64 {
    (wait.as_millis().div_ceil(1000) as u64).max(1)
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

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Counts one event; `Err(seconds)` (and nothing counted) when over the limit.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        self.check_at(key, Instant::now()).map_err(retry_secs)
    }

    /// `check` at a given time; the error is the exact wait.
    pub fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Ok(mut map) = self.state.lock() else {
            return Ok(());
        };
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        let allowed_at = tat.checked_sub(self.tolerance).unwrap_or(now);
        if allowed_at > now {
            return Err(allowed_at - now);
        }
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, t| *t > now);
        }
        map.insert(key.clone(), tat + self.interval);
        Ok(())
    }

    /// Gives back one event counted by `check` (an attempt that did not count after all).
    pub fn refund(&self, key: &K) {
        self.refund_at(key, Instant::now())
    }

    pub fn refund_at(&self, key: &K, now: Instant) {
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
    use proptest::prelude::*;

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

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_secs(Duration::from_micros(1)), 1);
        assert_eq!(retry_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_secs(Duration::ZERO), 1);
    }

    proptest! {
        /// GCRA's bound: over any span of time t, no key is admitted more than
        /// burst + rate × t events (count + ⌊t / interval⌋), whatever the arrivals.
        #[test]
        fn never_admits_more_than_burst_plus_rate_times_t(
            count in 1u32..8,
            per_ms in prop::sample::select(vec![1_000u64, 60_000, 3_600_000]),
            gaps in prop::collection::vec(0u64..20_000, 1..120),
        ) {
            let l = Limiter::new(Rate { count, per: Duration::from_millis(per_ms) });
            let interval = l.interval();
            let t0 = Instant::now();
            let mut at = Duration::ZERO;
            let mut admitted = Vec::new();
            for g in gaps {
                // Gaps in ms, scaled so both bursts and slow trickles occur.
                at += Duration::from_millis(g * per_ms / 60_000);
                if l.check_at(&"k", t0 + at).is_ok() {
                    admitted.push(at);
                }
            }
            for (i, a) in admitted.iter().enumerate() {
                for (j, b) in admitted.iter().enumerate().skip(i) {
                    let span = *b - *a;
                    let bound = count as u128 + span.as_nanos() / interval.as_nanos();
                    prop_assert!((j - i + 1) as u128 <= bound,
                        "{} admitted within {:?} (bound {})", j - i + 1, span, bound);
                }
            }
        }
    }
}
