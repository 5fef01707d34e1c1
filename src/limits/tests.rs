//! The front and the Lua script, against the machine's real Redis
//! (127.0.0.1:6379; each test under a key prefix of its own).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::redis::RedisLimiter;
use super::*;
use crate::config::redis_url::parse_url;
use crate::config::Rate;

const REDIS: &str = "redis://127.0.0.1:6379";

fn prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "authgate-unit:{tag}:{}:{nanos:x}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A direct connection for looking at what the script wrote.
fn inspect() -> ::redis::Connection {
    ::redis::Client::open(REDIS)
        .unwrap()
        .get_connection()
        .expect("Redis answers on 127.0.0.1:6379")
}

fn cleanup(prefix: &str) {
    let mut c = inspect();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut c)
        .unwrap_or_default();
    for k in keys {
        let _: Result<(), _> = ::redis::cmd("DEL").arg(k).query(&mut c);
    }
}

fn rate(count: u32, secs: u64) -> Rate {
    Rate {
        count,
        per: Duration::from_secs(secs),
    }
}

fn config(user: u32, backend: &str, prefix: &str) -> RateLimit {
    RateLimit {
        login_per_ip: Some(rate(20, 60)),
        login_per_user: Some(rate(user, 60)),
        register_per_ip: Some(rate(1, 60)),
        backend: match backend {
            "local" => LimitBackend::Local,
            url => LimitBackend::Redis(parse_url(url, true).unwrap()),
        },
        key_prefix: prefix.to_string(),
    }
}

async fn shared_limits(user: u32, prefix: &str) -> Limits {
    let l = Limits::new(&config(user, REDIS, prefix));
    l.shared.as_ref().unwrap().connect_now().await.unwrap();
    l
}

#[test]
fn unchanged_limits_keep_their_counters_across_a_reload() {
    let old = Limits::new(&config(1, "local", "authgate:"));
    let user = "alice".to_string();
    old.login_user.as_ref().unwrap().local.check(&user).unwrap();
    let mut same = Limits::new(&config(1, "local", "authgate:"));
    same.carry_over(&old);
    assert!(same
        .login_user
        .as_ref()
        .unwrap()
        .local
        .check(&user)
        .is_err());
    let mut changed = Limits::new(&config(2, "local", "authgate:"));
    changed.carry_over(&old);
    assert!(changed
        .login_user
        .as_ref()
        .unwrap()
        .local
        .check(&user)
        .is_ok());
    assert!(Arc::ptr_eq(
        &changed.register_ip.as_ref().unwrap().local,
        &old.register_ip.as_ref().unwrap().local
    ));
}

#[test]
fn a_reload_keeps_the_redis_connection_only_for_the_same_target() {
    let old = Limits::new(&config(1, REDIS, "a:"));
    let mut same = Limits::new(&config(1, REDIS, "a:"));
    same.carry_over(&old);
    assert!(Arc::ptr_eq(
        same.shared.as_ref().unwrap(),
        old.shared.as_ref().unwrap()
    ));
    for (url, p) in [(REDIS, "b:"), ("redis://127.0.0.1:6379/1", "a:")] {
        let mut other = Limits::new(&config(1, url, p));
        other.carry_over(&old);
        assert!(!Arc::ptr_eq(
            other.shared.as_ref().unwrap(),
            old.shared.as_ref().unwrap()
        ));
    }
}

#[test]
fn malformed_usernames_never_reach_redis_in_clear() {
    assert_eq!("alice".to_string().bucket_part(), "alice");
    let typed_password = "Correct Horse!".to_string();
    let part = typed_password.bucket_part();
    assert!(part.starts_with('#') && part.len() == 65, "{part}");
    assert!(!part.contains("Horse"));
    assert_eq!("x".repeat(10_000).bucket_part().len(), 65);
    let ip: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(ip.bucket_part(), "2001:db8::1");
}

#[tokio::test]
async fn five_failures_shared_then_refused_with_the_computed_wait() {
    let p = prefix("five");
    let l = shared_limits(5, &p).await;
    for _ in 0..5 {
        let mut r = l.reserve_login_user("alice").await.unwrap().unwrap();
        assert_eq!(r.counted(), Counted::Shared { mirrored: true });
        r.failed();
    }
    // 5/min: the sixth fits 12 s after the first.
    let wait = l.reserve_login_user("alice").await.err().unwrap();
    assert!((6..=12).contains(&wait), "{wait}");
    // Another gateway (its own process state, same Redis) sees the same bucket.
    let other = shared_limits(5, &p).await;
    assert!(other.reserve_login_user("alice").await.is_err());
    assert!(other.reserve_login_user("bob").await.is_ok());
    let key = format!("{p}login_user:alice");
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg(&key)
        .query(&mut inspect())
        .unwrap();
    // The key expires when the bucket is full again: 5 × 12 s from the first failure.
    assert!((50_000..=60_000).contains(&pttl), "{pttl}");
    cleanup(&p);
}

#[tokio::test]
async fn a_reservation_not_marked_failed_is_refunded_in_redis() {
    let p = prefix("refund");
    let l = shared_limits(2, &p).await;
    let key = format!("{p}login_user:alice");
    let exists = |k: &str| -> bool {
        ::redis::cmd("EXISTS")
            .arg(k)
            .query::<i64>(&mut inspect())
            .unwrap()
            == 1
    };
    for _ in 0..5 {
        let r = l.reserve_login_user("alice").await.unwrap();
        drop(r);
        // The refund runs off the response path: wait for it (the only event
        // refunded, the bucket is full again and the key gone).
        let deadline = Instant::now() + Duration::from_secs(5);
        while exists(&key) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!exists(&key), "refund did not reach Redis");
    }
    // Refunds gave every slot back: two failures fit, the third is refused.
    l.reserve_login_user("alice")
        .await
        .unwrap()
        .unwrap()
        .failed();
    l.reserve_login_user("alice")
        .await
        .unwrap()
        .unwrap()
        .failed();
    assert!(l.reserve_login_user("alice").await.is_err());
    // The mirror refunded too: the local limiter saw the same two failures.
    let local = &l.login_user.as_ref().unwrap().local;
    assert!(local.check(&"alice".to_string()).is_err());
    cleanup(&p);
}

#[tokio::test]
async fn an_unreachable_redis_falls_back_at_once_without_waiting() {
    // A listener that never accepts: connecting to it hangs until the probe's
    // timeout (1 s), which no decision may wait for.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    let l = Limits::new(&config(2, &url, "authgate:"));
    l.start();
    let started = Instant::now();
    let mut r = l.reserve_login_user("alice").await.unwrap().unwrap();
    assert_eq!(r.counted(), Counted::Local);
    r.failed();
    l.reserve_login_user("alice")
        .await
        .unwrap()
        .unwrap()
        .failed();
    assert!(
        l.reserve_login_user("alice").await.is_err(),
        "local limits bite"
    );
    assert!(l.login_ip("127.0.0.1".parse().unwrap()).await.is_ok());
    // Generous for a loaded machine, still below the probe's 1 s timeout.
    assert!(
        started.elapsed() < Duration::from_millis(750),
        "{:?}",
        started.elapsed()
    );
    assert!(!l.shared.as_ref().unwrap().is_up());
    drop(silent);
}

#[tokio::test]
async fn the_script_refuses_unknown_modes() {
    let p = prefix("mode");
    let s = RedisLimiter::new(parse_url(REDIS, true).unwrap(), p.clone());
    s.connect_now().await.unwrap();
    let r = s
        .call_at(
            "peek",
            &format!("{p}x"),
            Duration::from_secs(1),
            Duration::ZERO,
            1,
        )
        .await;
    assert!(r.is_err(), "{r:?}");
}

/// Route limits' mode: a take that answers the bucket's lead over now (SPEC §17).
#[tokio::test]
async fn admit_answers_how_far_the_bucket_runs_ahead() {
    let p = prefix("admit");
    let s = RedisLimiter::new(parse_url(REDIS, true).unwrap(), p.clone());
    s.connect_now().await.unwrap();
    let (i, tol) = (Duration::from_secs(1), Duration::from_secs(1));
    let key = format!("{p}x");
    let at = |now_us| s.call_at("admit", &key, i, tol, now_us);
    let t0 = 1_700_000_000_000_000u64;
    assert_eq!(at(t0).await.unwrap(), vec![1, 1_000_000]);
    assert_eq!(at(t0).await.unwrap(), vec![1, 2_000_000]);
    assert_eq!(at(t0).await.unwrap(), vec![0, 1_000_000]);
    assert_eq!(at(t0 + 1_500_000).await.unwrap(), vec![1, 1_500_000]);
    cleanup(&p);
}

#[derive(Debug, Clone)]
enum Op {
    Take(u8),
    Refund(u8),
}

fn op() -> impl Strategy<Value = (u32, Op)> {
    (
        0u32..=12,
        prop_oneof![3 => (0u8..2).prop_map(Op::Take), 1 => (0u8..2).prop_map(Op::Refund)],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// gcra.lua and local.rs decide alike — admit, refuse, and the exact wait —
    /// on the same sequence of takes and refunds at the same instants.
    #[test]
    fn the_redis_script_agrees_with_the_local_gcra(
        count in prop::sample::select(vec![1u32, 2, 4, 5, 8, 10]),
        per in prop::sample::select(vec![60u64, 3600]),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let p = prefix("agree");
        let s = RedisLimiter::new(parse_url(REDIS, true).unwrap(), p.clone());
        rt.block_on(s.connect_now()).unwrap();
        let local = Limiter::<u8>::new(rate(count, per));
        let (interval, tolerance) = (local.interval(), local.tolerance());
        // Time moves in quarters of the interval, so every TTL the script sets
        // is far longer than the real time between two calls.
        let quantum = interval / 4;
        let t0 = Instant::now();
        let base_us: u64 = 1_700_000_000_000_000;
        let mut at = Duration::ZERO;
        for (gap, op) in ops {
            at += quantum * gap;
            let now_us = base_us + at.as_micros() as u64;
            match op {
                Op::Take(k) => {
                    let l = local.check_at(&k, t0 + at);
                    let r = rt.block_on(s.call_at("take", &format!("{p}{k}"), interval, tolerance, now_us)).unwrap();
                    let expected = match l {
                        Ok(()) => vec![1, 0],
                        Err(w) => vec![0, w.as_micros() as i64],
                    };
                    prop_assert_eq!(r, expected);
                }
                Op::Refund(k) => {
                    local.refund_at(&k, t0 + at);
                    let r = rt.block_on(s.call_at("refund", &format!("{p}{k}"), interval, Duration::ZERO, now_us)).unwrap();
                    prop_assert_eq!(r, vec![1, 0]);
                }
            }
        }
        cleanup(&p);
    }
}
