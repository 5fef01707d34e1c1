//! Login and registration throttling (SPEC `[rate_limit]`, §9): the front that
//! takes each decision from the shared limiter (Redis) while it is up, and
//! from the in-process one otherwise.
//!
//! `local.rs` is the in-process GCRA; `redis.rs` the same GCRA as one Lua
//! script over Redis, with its connection supervision. Every limit keeps its
//! local limiter even with Redis: it decides while Redis is down, and while
//! Redis is up it mirrors what this gateway admitted, so a fallback continues
//! from this gateway's own history instead of handing out a fresh budget.

pub mod local;
pub mod redis;
pub mod route;
pub mod sharded;

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

pub use self::local::{retry_secs, Limiter};
use self::redis::{RedisLimiter, Verdict};
use crate::config::{LimitBackend, RateLimit};

/// What a limit is keyed by, and how that key is spelled in Redis.
pub trait LimitKey: Hash + Eq + Clone + Send + Sync + 'static {
    fn bucket_part(&self) -> String;
}

impl LimitKey for IpAddr {
    fn bucket_part(&self) -> String {
        self.to_string()
    }
}

impl LimitKey for String {
    /// A well-formed username as it is (readable for ops). Anything else — a
    /// malformed name, perhaps a password typed into the name field — only as
    /// `#` + its SHA-256, so it never lands in Redis in clear and keys stay
    /// short (`#` cannot occur in a username, so the two never collide).
    fn bucket_part(&self) -> String {
        if crate::identity::username::normalize_username(self).is_ok_and(|u| &u == self) {
            self.clone()
        } else {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.as_bytes());
            format!("#{}", crate::ids::hex(d.as_ref()))
        }
    }
}

/// One configured limit: its name in Redis keys and its in-process limiter.
pub struct Limit<K> {
    name: &'static str,
    local: Arc<Limiter<K>>,
}

impl<K: LimitKey> Limit<K> {
    fn new(name: &'static str, rate: Option<crate::config::Rate>) -> Option<Limit<K>> {
        rate.map(|r| Limit {
            name,
            local: Arc::new(Limiter::new(r)),
        })
    }

    /// `{prefix}{limit}:{key}`, e.g. `authgate:login_user:alice`.
    fn bucket(&self, prefix: &str, key: &K) -> String {
        format!("{prefix}{}:{}", self.name, key.bucket_part())
    }

    /// Counts one event, shared when Redis is up, else in process; `Err(seconds)`
    /// (nothing counted) when over the limit.
    async fn take(&self, shared: Option<&Arc<RedisLimiter>>, key: &K) -> Result<Counted, u64> {
        if let Some(s) = shared.filter(|s| s.is_up()) {
            let bucket = self.bucket(s.prefix(), key);
            let (interval, tolerance) = (self.local.interval(), self.local.tolerance());
            match s.take(&bucket, interval, tolerance).await {
                Ok(Verdict::Counted) => {
                    let mirrored = self.local.check(key).is_ok();
                    return Ok(Counted::Shared { mirrored });
                }
                Ok(Verdict::Wait(w)) => return Err(retry_secs(w)),
                // Down: logged once by the limiter; this decision is taken here.
                Err(_) => {}
            }
        }
        self.local.check(key).map(|()| Counted::Local)
    }
}

/// Where an event was counted, so that a refund goes to the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Local,
    Shared { mirrored: bool },
}

pub struct Limits {
    pub login_ip: Option<Limit<IpAddr>>,
    pub login_user: Option<Limit<String>>,
    pub register_ip: Option<Limit<IpAddr>>,
    /// The Redis backend, when configured; shared by the three limits.
    pub shared: Option<Arc<RedisLimiter>>,
    /// SPEC §17: the routes' own limits, on the same backend.
    pub routes: route::RouteLimits,
}

/// `new` takes over `old`'s counters when both exist with the same rate.
fn keep<K: LimitKey>(new: &mut Option<Limit<K>>, old: &Option<Limit<K>>) {
    if let (Some(n), Some(o)) = (new.as_mut(), old) {
        if n.local.rate() == o.local.rate() {
            n.local = o.local.clone();
        }
    }
}

impl Limits {
    pub fn new(c: &RateLimit) -> Limits {
        Limits {
            login_ip: Limit::new("login_ip", c.login_per_ip),
            login_user: Limit::new("login_user", c.login_per_user),
            register_ip: Limit::new("register_ip", c.register_per_ip),
            shared: match &c.backend {
                LimitBackend::Local => None,
                LimitBackend::Redis(url) => Some(Arc::new(RedisLimiter::new(
                    url.clone(),
                    c.key_prefix.clone(),
                ))),
            },
            routes: route::RouteLimits::default(),
        }
    }

    /// With the route limits of `routes` (SPEC §17).
    pub fn with_routes(mut self, routes: &[crate::config::Route]) -> Limits {
        self.routes = route::RouteLimits::new(routes);
        self
    }

    /// Keeps the counters of every limit whose rate a reload left unchanged: a
    /// reload must not hand out a fresh brute-force budget. Shared counters live
    /// in Redis and survive by themselves; the same Redis and prefix keep their
    /// connection (and its up/down state) too.
    pub fn carry_over(&mut self, old: &Limits) {
        keep(&mut self.login_ip, &old.login_ip);
        keep(&mut self.login_user, &old.login_user);
        keep(&mut self.register_ip, &old.register_ip);
        self.routes.carry_over(&old.routes);
        if let (Some(n), Some(o)) = (&self.shared, &old.shared) {
            if o.same_target(n) {
                self.shared = Some(o.clone());
            }
        }
    }

    /// Starts the Redis supervisor (once per backend); sets the gauge for a local one.
    pub fn start(&self) {
        match &self.shared {
            Some(s) => s.start(),
            // The in-process backend is always there.
            None => metrics::gauge!("authgate_rate_limit_backend_up").set(1.0),
        }
    }

    pub fn prune(&self) {
        self.routes.prune();
        if let Some(l) = &self.login_ip {
            l.local.prune();
        }
        if let Some(l) = &self.login_user {
            l.local.prune();
        }
        if let Some(l) = &self.register_ip {
            l.local.prune();
        }
    }

    /// `login_per_ip`: every attempt counts.
    pub async fn login_ip(&self, ip: IpAddr) -> Result<(), u64> {
        match &self.login_ip {
            Some(l) => l.take(self.shared.as_ref(), &ip).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// `register_per_ip`: every attempt counts.
    pub async fn register_ip(&self, ip: IpAddr) -> Result<(), u64> {
        match &self.register_ip {
            Some(l) => l.take(self.shared.as_ref(), &ip).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// `login_per_user`: reserves this attempt's failure before the password is
    /// hashed; the reservation is given back on drop unless marked failed.
    pub async fn reserve_login_user(&self, name: &str) -> Result<Option<Reservation>, u64> {
        let Some(l) = &self.login_user else {
            return Ok(None);
        };
        let key = name.to_string();
        let counted = l.take(self.shared.as_ref(), &key).await?;
        Ok(Some(Reservation {
            bucket: self.shared.as_ref().map(|s| l.bucket(s.prefix(), &key)),
            local: l.local.clone(),
            shared: self.shared.clone(),
            key,
            counted,
            failed: false,
        }))
    }
}

/// One attempt counted against `login_per_user`; given back on drop unless it
/// failed (a success, an overloaded pool, a store error, or a request abandoned
/// mid-hash).
pub struct Reservation {
    local: Arc<Limiter<String>>,
    shared: Option<Arc<RedisLimiter>>,
    bucket: Option<String>,
    key: String,
    counted: Counted,
    failed: bool,
}

impl Reservation {
    /// The attempt failed: it stays counted.
    pub fn failed(&mut self) {
        self.failed = true;
    }

    pub fn counted(&self) -> Counted {
        self.counted
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.failed {
            return;
        }
        match self.counted {
            Counted::Local => self.local.refund(&self.key),
            Counted::Shared { mirrored } => {
                if mirrored {
                    self.local.refund(&self.key);
                }
                // Off the response path: the refund needs no answer. If Redis
                // is down by then, the slot stays taken until it expires.
                let (Some(s), Some(bucket)) = (self.shared.clone(), self.bucket.take()) else {
                    return;
                };
                let interval = self.local.interval();
                if let Ok(h) = tokio::runtime::Handle::try_current() {
                    h.spawn(async move {
                        let _ = s.refund(&bucket, interval).await;
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
