//! Route rate limits (SPEC §17): one limiter per `[[route]]` with a
//! `rate_limit`, compiled with the config; the decision for one request, shared
//! through Redis when `[rate_limit] backend` names one, in process otherwise
//! (and while Redis is down, as the login limits do, SPEC §9); and what the
//! `RateLimit-Policy` / `RateLimit` headers say about it.
//!
//! Header mapping (draft-ietf-httpapi-ratelimit-headers-09): the quota `q` is
//! the burst — what a client may send at once — and the window `w` is the time
//! a drained burst takes to come back at the sustained rate (burst × interval),
//! so q/w is the configured rate. `r` is how many requests would be admitted
//! right now back to back; `t` the seconds until the bucket is full again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::redis::RedisLimiter;
use super::sharded::{Decision, Gcra};
use crate::config::{LimitPer, Route, RouteLimit};
use crate::error::ApiError;

/// Who one request is: the verified identity (`issuer` is `None` for
/// authgate's own tokens, so an external issuer's `alice` never shares a bucket
/// with authgate's), and the client address.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub user: Option<(Option<usize>, &'a str)>,
    pub ip: IpAddr,
}

/// The bucket one request counts in.
#[derive(Debug, Clone, Copy)]
enum Bucket<'a> {
    Route,
    Ip(IpAddr),
    User(Option<usize>, &'a str),
}

/// The limit refused the request: 429 with `Retry-After`, never forwarded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("route rate limit reached; retry in {retry_after} s")]
pub struct Limited {
    pub retry_after: u64,
    /// `RateLimit` for the 429 (r=0).
    pub state: HeaderValue,
}

impl From<Limited> for ApiError {
    fn from(l: Limited) -> ApiError {
        ApiError::RateLimited {
            retry_after: l.retry_after,
        }
    }
}

pub struct RouteLimiter {
    pub limit: RouteLimit,
    /// `route:{host}{path}:`, under `key_prefix` in Redis: stable across reloads
    /// that reorder routes.
    bucket: String,
    local: Arc<Gcra>,
    /// `RateLimit-Policy`, the same on every response of the route.
    pub policy: HeaderValue,
}

/// The limiters of one config, by route index.
#[derive(Default)]
pub struct RouteLimits {
    by_route: Vec<Option<RouteLimiter>>,
}

impl RouteLimits {
    pub fn new(routes: &[Route]) -> RouteLimits {
        RouteLimits {
            by_route: routes
                .iter()
                .map(|r| r.rate_limit.map(|l| RouteLimiter::new(r, l)))
                .collect(),
        }
    }

    pub fn get(&self, route: usize) -> Option<&RouteLimiter> {
        self.by_route.get(route).and_then(|l| l.as_ref())
    }

    /// A reload keeps the counts of every route limit it left unchanged (same
    /// host, path, rate, burst and `per`): it must not hand out fresh budgets.
    pub fn carry_over(&mut self, old: &RouteLimits) {
        for n in self.by_route.iter_mut().flatten() {
            if let Some(o) = old
                .by_route
                .iter()
                .flatten()
                .find(|o| o.bucket == n.bucket && o.limit == n.limit)
            {
                n.local = o.local.clone();
            }
        }
    }

    pub fn prune(&self) {
        for l in self.by_route.iter().flatten() {
            l.local.prune();
        }
    }
}

impl RouteLimiter {
    fn new(route: &Route, limit: RouteLimit) -> RouteLimiter {
        let interval = limit.rate.per / limit.rate.count;
        let window = (interval * limit.burst).as_secs_f64().ceil().max(1.0) as u64;
        let policy = format!("\"default\";q={};w={window}", limit.burst);
        RouteLimiter {
            limit,
            bucket: format!(
                "route:{}{}:",
                route.host.as_deref().unwrap_or(""),
                route.path
            ),
            local: Arc::new(Gcra::new(interval, limit.burst)),
            // Digits, quotes and ASCII: always a valid value.
            policy: HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("")),
        }
    }

    /// Counts one request of `caller`; `Ok(RateLimit header)` when admitted.
    pub async fn admit(
        &self,
        shared: Option<&Arc<RedisLimiter>>,
        caller: Caller<'_>,
    ) -> Result<HeaderValue, Limited> {
        let bucket = match (self.limit.per, caller.user) {
            (LimitPer::Route, _) => Bucket::Route,
            (LimitPer::User, Some((issuer, sub))) => Bucket::User(issuer, sub),
            // SPEC §17: anonymous callers of an optional route count by address.
            (LimitPer::User | LimitPer::Ip, _) => Bucket::Ip(caller.ip),
        };
        let key = match bucket {
            Bucket::Route => None,
            Bucket::Ip(ip) => Some(self.local.key_of(&ip)),
            Bucket::User(issuer, sub) => Some(self.local.key_of(&(issuer, sub))),
        };
        let local = || match key {
            Some(k) => self.local.check(k),
            None => self.local.check_single(),
        };
        let decision = match shared.filter(|s| s.is_up()) {
            Some(s) => {
                let bucket = self.redis_key(s.prefix(), bucket);
                // Boxed: the Redis call's future would otherwise size every
                // request's future, limited or not, local or not.
                let shared =
                    Box::pin(s.admit(&bucket, self.local.interval(), self.local.tolerance())).await;
                match shared {
                    Ok(d) => {
                        // Mirrored, so a fallback continues from this gateway's own
                        // history instead of a fresh budget (as limits/mod.rs does).
                        if d.is_ok() {
                            let _ = local();
                        }
                        match d {
                            Ok(debt) => Decision::Admitted { debt },
                            Err(wait) => Decision::Refused { wait },
                        }
                    }
                    // Down: logged once by the limiter; this decision is taken here.
                    Err(_) => local(),
                }
            }
            None => local(),
        };
        match decision {
            Decision::Admitted { debt } => Ok(self.state(debt)),
            Decision::Refused { wait } => {
                let retry_after = super::retry_secs(wait);
                Err(Limited {
                    retry_after,
                    state: rate_limit_value(0, retry_after),
                })
            }
        }
    }

    /// `RateLimit` after an admission that left the TAT `debt` ahead of now.
    fn state(&self, debt: Duration) -> HeaderValue {
        let interval = self.local.interval().as_nanos().max(1);
        let room = (self.local.tolerance() + self.local.interval()).as_nanos();
        let remaining = room.saturating_sub(debt.as_nanos()) / interval;
        let reset = debt.as_nanos().div_ceil(1_000_000_000);
        rate_limit_value(
            remaining.min(u64::MAX as u128) as u64,
            reset.min(u64::MAX as u128) as u64,
        )
    }

    /// `{prefix}route:{host}{path}:{who}`; a user's name as it is when it is a
    /// plain username, else its SHA-256 (see `LimitKey for String`).
    fn redis_key(&self, prefix: &str, bucket: Bucket<'_>) -> String {
        use super::LimitKey;
        let base = &self.bucket;
        match bucket {
            Bucket::Route => format!("{prefix}{base}"),
            Bucket::Ip(ip) => format!("{prefix}{base}ip:{ip}"),
            Bucket::User(issuer, sub) => {
                let who = sub.to_string().bucket_part();
                match issuer {
                    None => format!("{prefix}{base}u:{who}"),
                    Some(i) => format!("{prefix}{base}u{i}:{who}"),
                }
            }
        }
    }
}

/// `"default";r=R;t=T`, written without `format!`: on every response of a
/// limited route, and the formatting machinery was most of the limit's cost
/// (bench/profile.sh limited-local).
fn rate_limit_value(r: u64, t: u64) -> HeaderValue {
    fn digits(buf: &mut [u8], mut at: usize, mut n: u64) -> usize {
        let start = at;
        loop {
            buf[at] = b'0' + (n % 10) as u8;
            at += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        buf[start..at].reverse();
        at
    }
    // 15 fixed bytes + two u64s of at most 20 digits each.
    let mut buf = [0u8; 15 + 40];
    const HEAD: &[u8] = b"\"default\";r=";
    buf[..HEAD.len()].copy_from_slice(HEAD);
    let mut at = digits(&mut buf, HEAD.len(), r);
    buf[at..at + 3].copy_from_slice(b";t=");
    at = digits(&mut buf, at + 3, t);
    // Quotes, letters, digits, `;` and `=`: always a valid value.
    HeaderValue::from_bytes(&buf[..at]).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::rate_limit_value;

    #[test]
    fn the_ratelimit_value_is_the_drafts_structured_field() {
        assert_eq!(rate_limit_value(0, 1), "\"default\";r=0;t=1");
        assert_eq!(rate_limit_value(19, 12), "\"default\";r=19;t=12");
        assert_eq!(
            rate_limit_value(u64::MAX, u64::MAX),
            "\"default\";r=18446744073709551615;t=18446744073709551615"
        );
    }
}
