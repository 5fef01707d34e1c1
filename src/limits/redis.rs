//! The shared limiter (SPEC §9, `rate_limit.backend = "redis://..."`): one Lua
//! script per decision (`gcra.lua`, one round trip), and the supervision that
//! decides whether Redis is used at all.
//!
//! Failure semantics: a decision never waits on Redis for more than
//! [`CALL_TIMEOUT`]. The first call that fails marks the backend down (logged
//! once, gauge `authgate_rate_limit_backend_up` 0) and the front falls back to
//! the in-process limiter; while down, requests never touch Redis. A background
//! task probes with a fresh connection, backing off from [`MIN_BACKOFF`] to
//! [`MAX_BACKOFF`], and marks the backend up again (logged once, gauge 1).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::Notify;

use crate::config::RedisUrl;

/// Bound on one decision's Redis call. A loopback or LAN round trip is well
/// under a millisecond; past 250 ms Redis is treated as down, so a login waits
/// at most this long once per outage, never per request (SPEC §9: a login never
/// fails because Redis is down).
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// Bound on one probe: connect, handshake, load the script. Off the request path.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
pub const MIN_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("not connected")]
    Down,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from gcra.lua: {0:?}")]
    Reply(Vec<i64>),
}

/// A decision of the script: counted, or the wait until the next event fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Counted,
    Wait(Duration),
}

pub struct RedisLimiter {
    url: RedisUrl,
    prefix: String,
    script: Script,
    conn: ArcSwapOption<ConnectionManager>,
    state: AtomicU8,
    /// Wakes the supervisor when a call fails.
    wake: Arc<Notify>,
    started: AtomicBool,
}

impl RedisLimiter {
    pub fn new(url: RedisUrl, prefix: String) -> RedisLimiter {
        RedisLimiter {
            url,
            prefix,
            script: Script::new(include_str!("gcra.lua")),
            conn: ArcSwapOption::empty(),
            state: AtomicU8::new(UNKNOWN),
            wake: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
        }
    }

    /// Same Redis and prefix: a reload keeps this limiter (and its connection).
    pub fn same_target(&self, other: &RedisLimiter) -> bool {
        self.url == other.url && self.prefix == other.prefix
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    /// Starts the supervisor once (on the runtime of the caller); it ends when
    /// the limiter is dropped.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let wake = self.wake.clone();
        tokio::spawn(supervise(weak, wake));
    }

    /// Counts one event in `bucket` (or refuses); `Err` when Redis is not usable,
    /// and then the caller decides in process.
    pub async fn take(
        &self,
        bucket: &str,
        interval: Duration,
        tolerance: Duration,
    ) -> Result<Verdict, SharedError> {
        let reply = self.call("take", bucket, interval, tolerance).await?;
        match reply.as_slice() {
            [1, _] => Ok(Verdict::Counted),
            [0, w] if *w > 0 => Ok(Verdict::Wait(Duration::from_micros(*w as u64))),
            _ => Err(SharedError::Reply(reply)),
        }
    }

    /// `take` for route limits (SPEC §17): `Ok(Ok(debt))` when counted, with how
    /// far the bucket's TAT now runs ahead of Redis's clock; `Ok(Err(wait))` when over.
    pub async fn admit(
        &self,
        bucket: &str,
        interval: Duration,
        tolerance: Duration,
    ) -> Result<Result<Duration, Duration>, SharedError> {
        let reply = self.call("admit", bucket, interval, tolerance).await?;
        match reply.as_slice() {
            [1, d] if *d >= 0 => Ok(Ok(Duration::from_micros(*d as u64))),
            [0, w] if *w > 0 => Ok(Err(Duration::from_micros(*w as u64))),
            _ => Err(SharedError::Reply(reply)),
        }
    }

    /// Gives back one event counted by `take`. Skipped while Redis is down: the
    /// slot then stays taken until it expires (errs on the side of limiting).
    pub async fn refund(&self, bucket: &str, interval: Duration) -> Result<(), SharedError> {
        self.call("refund", bucket, interval, Duration::ZERO)
            .await
            .map(|_| ())
    }

    async fn call(
        &self,
        mode: &str,
        bucket: &str,
        interval: Duration,
        tolerance: Duration,
    ) -> Result<Vec<i64>, SharedError> {
        if !self.is_up() {
            return Err(SharedError::Down);
        }
        let Some(conn) = self.conn.load_full() else {
            return Err(SharedError::Down);
        };
        let mut conn = (*conn).clone();
        let mut inv = self.script.key(bucket);
        inv.arg(mode).arg(micros(interval)).arg(micros(tolerance));
        let r = match tokio::time::timeout(CALL_TIMEOUT, inv.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(SharedError::Redis(e)),
            Err(_) => Err(SharedError::Timeout(CALL_TIMEOUT)),
        };
        if let Err(e) = &r {
            self.mark_down(e);
        }
        r
    }

    fn mark_down(&self, why: &SharedError) {
        let was = self.state.swap(DOWN, Ordering::AcqRel);
        if was != DOWN {
            // SPEC §9: logged once per change of state, not per request.
            metrics::gauge!("authgate_rate_limit_backend_up").set(0.0);
            tracing::warn!(backend = %self.url, error = %why,
                "rate_limit backend unreachable: each gateway limits in process until it is back");
            self.wake.notify_one();
        }
    }

    fn mark_up(&self) {
        let was = self.state.swap(UP, Ordering::AcqRel);
        if was != UP {
            metrics::gauge!("authgate_rate_limit_backend_up").set(1.0);
            tracing::info!(backend = %self.url, prefix = %self.prefix,
                "rate_limit backend connected: limits are shared across gateways");
        }
    }

    /// A fresh connection (a silent one is never reused), its handshake and the
    /// script loaded, so the first decision is a single EVALSHA.
    async fn connect(&self) -> Result<ConnectionManager, SharedError> {
        let client = redis::Client::open(self.url.expose())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(PROBE_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            // The supervisor retries, with its own backoff.
            .set_number_of_retries(0);
        let attempt = async {
            let mut conn = ConnectionManager::new_with_config(client, config).await?;
            self.script.prepare_invoke().load_async(&mut conn).await?;
            Ok::<_, SharedError>(conn)
        };
        tokio::time::timeout(PROBE_TIMEOUT, attempt)
            .await
            .map_err(|_| SharedError::Timeout(PROBE_TIMEOUT))?
    }

    #[cfg(test)]
    pub(crate) async fn connect_now(&self) -> Result<(), SharedError> {
        let c = self.connect().await?;
        self.conn.store(Some(Arc::new(c)));
        self.mark_up();
        Ok(())
    }

    /// `take`/`refund` at a given time (µs), for the tests that drive the clock.
    #[cfg(test)]
    pub(crate) async fn call_at(
        &self,
        mode: &str,
        bucket: &str,
        interval: Duration,
        tolerance: Duration,
        now_us: u64,
    ) -> Result<Vec<i64>, SharedError> {
        let Some(conn) = self.conn.load_full() else {
            return Err(SharedError::Down);
        };
        let mut conn = (*conn).clone();
        let mut inv = self.script.key(bucket);
        inv.arg(mode)
            .arg(micros(interval))
            .arg(micros(tolerance))
            .arg(now_us);
        Ok(inv.invoke_async(&mut conn).await?)
    }
}

/// Whole microseconds, at least 1 for a non-zero interval.
fn micros(d: Duration) -> u64 {
    let us = d.as_micros().min(u64::MAX as u128) as u64;
    if us == 0 && !d.is_zero() {
        1
    } else {
        us
    }
}

/// Connects while down, with backoff; sleeps while up until a call fails.
async fn supervise(weak: Weak<RedisLimiter>, wake: Arc<Notify>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let Some(me) = weak.upgrade() else { return };
        if me.is_up() {
            drop(me);
            backoff = MIN_BACKOFF;
            // Wake up now and then to notice that the limiter was dropped (reload).
            let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
            continue;
        }
        match me.connect().await {
            Ok(c) => {
                me.conn.store(Some(Arc::new(c)));
                me.mark_up();
                continue;
            }
            Err(e) => {
                // The old connection is dropped: a probe always starts afresh.
                me.conn.store(None);
                me.mark_down(&e);
            }
        }
        drop(me);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
