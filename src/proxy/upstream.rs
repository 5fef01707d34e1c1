//! Upstream pools: one pooled hyper-util client per upstream, round robin over
//! targets, skipping those that refused a connection within `unhealthy_cooldown`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use std::sync::{Arc, Weak};

use super::stall::StallConnector;
use crate::body::Body;
use crate::config::{HealthCheck, Upstream};

pub struct Target {
    pub authority: String,
    /// The same, parsed once: request URIs are assembled from parts.
    pub parsed: Option<http::uri::Authority>,
    /// Milliseconds since `epoch` until which the target is skipped (0: healthy).
    down_until: AtomicU64,
}

pub struct UpstreamPool {
    pub name: String,
    pub targets: Vec<Target>,
    next: AtomicUsize,
    pub client: Client<StallConnector, Body>,
    /// The same without a pool: a replay goes out on a connection of its own.
    pub fresh: Client<StallConnector, Body>,
    pub timeout: Duration,
    pub retries: u32,
    cooldown: Duration,
    epoch: Instant,
    health_check: Option<HealthCheck>,
}

impl UpstreamPool {
    pub fn new(u: &Upstream) -> UpstreamPool {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(u.connect_timeout));
        conn.set_nodelay(true);
        conn.set_keepalive(Some(Duration::from_secs(60)));
        // An upstream that stops reading for `timeout` loses its connection (stall.rs).
        let conn = StallConnector {
            inner: conn,
            send_timeout: u.timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(conn.clone());
        let fresh = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(conn);
        UpstreamPool {
            name: u.name.clone(),
            targets: u
                .targets
                .iter()
                .map(|a| Target {
                    authority: a.clone(),
                    parsed: a.parse().ok(),
                    down_until: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            client,
            fresh,
            timeout: u.timeout,
            retries: u.retries,
            cooldown: u.unhealthy_cooldown,
            epoch: Instant::now(),
            health_check: u.health_check.clone(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The next healthy target in round-robin order, avoiding `exclude` when there
    /// is another; when every target is down, the next one anyway.
    pub fn pick(&self, exclude: Option<usize>) -> usize {
        let n = self.targets.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        for k in 0..n {
            let i = (start + k) % n;
            if Some(i) == exclude && n > 1 {
                continue;
            }
            if self.targets[i].down_until.load(Ordering::Relaxed) <= now {
                return i;
            }
        }
        match exclude {
            Some(e) if n > 1 => (e + 1) % n,
            _ => start % n,
        }
    }

    pub fn mark_down(&self, i: usize) {
        let until = self.now_ms() + self.cooldown.as_millis() as u64;
        self.targets[i]
            .down_until
            .store(until.max(1), Ordering::Relaxed);
    }

    pub fn mark_up(&self, i: usize) {
        if self.targets[i].down_until.load(Ordering::Relaxed) != 0 {
            self.targets[i].down_until.store(0, Ordering::Relaxed);
        }
    }
}

/// Active health checks (`health_check = { path, interval }`): GET the path on
/// every target each interval; a 2xx/3xx marks it healthy, anything else skips it
/// for `unhealthy_cooldown`. The task ends when its config snapshot is dropped.
pub fn spawn_health_checks(pool: &Arc<UpstreamPool>) {
    let Some(hc) = pool.health_check.clone() else {
        return;
    };
    let weak: Weak<UpstreamPool> = Arc::downgrade(pool);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(hc.interval.max(Duration::from_millis(100)));
        loop {
            tick.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            for (i, t) in pool.targets.iter().enumerate() {
                let Ok(uri) = format!("http://{}{}", t.authority, hc.path).parse::<http::Uri>()
                else {
                    continue;
                };
                let mut req = http::Request::new(crate::body::empty());
                *req.uri_mut() = uri;
                let timeout = pool.timeout.min(hc.interval.max(Duration::from_secs(1)));
                let ok = matches!(
                    tokio::time::timeout(timeout, pool.client.request(req)).await,
                    Ok(Ok(r)) if r.status().is_success() || r.status().is_redirection()
                );
                if ok {
                    pool.mark_up(i);
                } else {
                    if pool.targets[i].down_until.load(Ordering::Relaxed) == 0 {
                        tracing::warn!(upstream = %pool.name, target = %t.authority, path = %hc.path, "health check failed");
                    }
                    pool.mark_down(i);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> UpstreamPool {
        let u = Upstream {
            name: "u".into(),
            targets: (0..n).map(|i| format!("127.0.0.1:{}", 1000 + i)).collect(),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_cooldown: Duration::from_secs(10),
            retries: 1,
            health_check: None,
        };
        UpstreamPool::new(&u)
    }

    #[tokio::test]
    async fn round_robin_skips_unhealthy_targets() {
        let p = pool(3);
        let picks: Vec<usize> = (0..6).map(|_| p.pick(None)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        p.mark_down(1);
        let picks: Vec<usize> = (0..4).map(|_| p.pick(None)).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert_ne!(p.pick(Some(0)), 0);
        p.mark_up(1);
    }

    #[tokio::test]
    async fn all_down_still_picks_one() {
        let p = pool(2);
        p.mark_down(0);
        p.mark_down(1);
        let i = p.pick(None);
        assert!(i < 2);
    }
}
