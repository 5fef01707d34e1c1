//! External token issuers (SPEC §10): per issuer, its keys as last fetched, a fetch
//! loop on the key-fetch runtime, and the request-side lookup that may wait for keys.
//!
//! - Start is never delayed: the loop fetches in the background; `/readyz` names
//!   issuers without keys; a request for such an issuer waits up to `jwks_wait` for
//!   the first keys, then the caller answers 503 `issuer_unavailable`.
//! - Keys are refreshed after `Cache-Control: max-age` (clamped); a failed fetch keeps
//!   the last good keys for up to 24 h after they were fetched (stale-if-error).
//! - An unknown `kid` asks for one refetch, single-flight, at most once per
//!   `refetch_cooldown`: every request that arrives meanwhile waits for that same
//!   fetch or is refused, so a flood of made-up kids costs the IdP one request.

pub mod fetch;
pub mod jwks;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::{watch, Notify};

use crate::config::{Config, IssuerConfig, JwksSource};
use crate::verify::jwk::VerifyKey;
use fetch::{Discovery, FetchError, HttpsClient};
use jwks::KeyMap;

/// SPEC §10: the last good keys keep working this long after they were fetched.
pub const STALE_LIMIT: Duration = Duration::from_secs(24 * 3600);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Keys from one successful fetch.
pub struct KeySnapshot {
    pub keys: KeyMap,
    pub fetched: Instant,
    /// Unix seconds of the fetch, for `token inspect` and logs.
    pub fetched_unix: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("unknown kid")]
    UnknownKid,
    /// No usable keys (yet, or any more): 503 with `Retry-After`.
    #[error("issuer {name} has no keys yet")]
    Unavailable { name: String, retry_after: u64 },
}

#[derive(Debug, thiserror::Error)]
#[error("issuer[{index}] ({name}): {why}")]
pub struct BuildError {
    pub index: usize,
    pub name: String,
    pub why: String,
}

pub struct IssuerState {
    pub cfg: IssuerConfig,
    keys: ArcSwapOption<KeySnapshot>,
    /// Bumped after every fetch attempt, good or bad: what waiting requests watch.
    attempts: watch::Sender<u64>,
    wake: Arc<Notify>,
    stop: Arc<Notify>,
    /// An on-demand refetch was asked for and its fetch has not finished.
    demand: AtomicBool,
    /// Milliseconds since `epoch` of the last on-demand refetch (`u64::MAX`: none).
    last_demand: AtomicU64,
    epoch: Instant,
    client: HttpsClient,
    /// The last discovery document read (SPEC §14 sign-in needs its endpoints).
    discovered: ArcSwapOption<Discovery>,
}

impl Drop for IssuerState {
    fn drop(&mut self) {
        // The fetch loop holds only a Weak; tell it to stop instead of sleeping on.
        self.stop.notify_one();
    }
}

impl IssuerState {
    fn new(cfg: IssuerConfig, index: usize) -> Result<IssuerState, BuildError> {
        let err = |why: String| BuildError {
            index,
            name: cfg.name.clone(),
            why,
        };
        let ca = match &cfg.ca {
            Some(c) => Some(c.read().map_err(|e| err(format!("ca: {e}")))?),
            None => None,
        };
        let client = fetch::client(ca.as_deref()).map_err(|e| err(e.to_string()))?;
        Ok(IssuerState {
            keys: ArcSwapOption::empty(),
            attempts: watch::channel(0).0,
            wake: Arc::new(Notify::new()),
            stop: Arc::new(Notify::new()),
            demand: AtomicBool::new(false),
            last_demand: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            client,
            discovered: ArcSwapOption::empty(),
            cfg,
        })
    }

    /// The HTTPS client of this issuer (system roots plus its `ca`).
    pub fn client(&self) -> &HttpsClient {
        &self.client
    }

    /// The discovery document as last read, if any.
    pub fn discovered(&self) -> Option<Arc<Discovery>> {
        self.discovered.load_full()
    }

    /// Remembers a discovery document read outside the fetch loop (sign-in).
    pub fn remember_discovery(&self, d: Discovery) -> Arc<Discovery> {
        let d = Arc::new(d);
        self.discovered.store(Some(d.clone()));
        d
    }

    /// The keys, unless none were ever fetched or the last good ones are over 24 h old.
    pub fn current(&self) -> Option<Arc<KeySnapshot>> {
        self.keys
            .load_full()
            .filter(|s| s.fetched.elapsed() <= STALE_LIMIT)
    }

    fn unavailable(&self) -> LookupError {
        LookupError::Unavailable {
            name: self.cfg.name.clone(),
            retry_after: self.cfg.refetch_cooldown.as_secs().clamp(1, 30),
        }
    }

    /// The key a token's `kid` names, among this issuer's keys only.
    pub async fn key(&self, kid: &str) -> Result<Arc<VerifyKey>, LookupError> {
        let had_keys = match self.current() {
            Some(s) => match s.keys.get(kid) {
                Some(k) => return Ok(k.clone()),
                None => true,
            },
            None => false,
        };
        self.refetch_and_wait(!had_keys).await;
        match self.current() {
            Some(s) => s.keys.get(kid).cloned().ok_or(LookupError::UnknownKid),
            None => Err(self.unavailable()),
        }
    }

    /// Asks for a refetch (single-flight, at most once per `refetch_cooldown`) and
    /// waits up to `jwks_wait` for it. Without keys, it waits for any fetch attempt
    /// to finish (the first one may be under way) even when none may be asked for.
    async fn refetch_and_wait(&self, no_keys: bool) {
        let mut rx = self.attempts.subscribe();
        let asked = self.demand.load(Ordering::Acquire) || self.claim_refetch();
        if !asked && !no_keys {
            return;
        }
        let _ = tokio::time::timeout(self.cfg.jwks_wait, rx.changed()).await;
    }

    /// True when this caller may start a refetch now (the cooldown has passed).
    fn claim_refetch(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let cooldown = self.cfg.refetch_cooldown.as_millis() as u64;
        let last = self.last_demand.load(Ordering::Acquire);
        if last != u64::MAX && now.saturating_sub(last) < cooldown {
            return false;
        }
        if self
            .last_demand
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another request claimed it first: share its fetch.
            return self.demand.load(Ordering::Acquire);
        }
        self.demand.store(true, Ordering::Release);
        self.wake.notify_one();
        true
    }

    async fn fetch_once(
        &self,
        jwks_uri: &mut Option<String>,
    ) -> Result<(KeyMap, Duration), FetchError> {
        let url = match (&self.cfg.jwks, jwks_uri.as_ref()) {
            (JwksSource::Uri(u), _) => u.clone(),
            (JwksSource::Discovery, Some(u)) => u.clone(),
            (JwksSource::Discovery, None) => {
                let d = fetch::discover(&self.client, &self.cfg.issuer).await?;
                let u = d.jwks_uri.clone();
                self.discovered.store(Some(Arc::new(d)));
                *jwks_uri = Some(u.clone());
                u
            }
        };
        let result = async {
            let (headers, body) = fetch::get(&self.client, &url).await?;
            let keys = jwks::parse(&body, &self.cfg.algorithms, &self.cfg.name).map_err(|err| {
                FetchError::Jwks {
                    url: url.clone(),
                    err,
                }
            })?;
            Ok((keys, jwks::max_age(&headers)))
        }
        .await;
        if result.is_err() {
            // The provider may have moved its keys: discover again next time.
            *jwks_uri = None;
        }
        result
    }
}

/// An issuer with fixed keys and no fetch loop, for unit tests of code that verifies
/// with an issuer's keys (sign-in, SPEC §14).
#[cfg(test)]
pub(crate) fn for_test(cfg: IssuerConfig, keys: KeyMap) -> Arc<IssuerState> {
    let s = IssuerState::new(cfg, 0).expect("an issuer without ca builds");
    s.keys.store(Some(Arc::new(KeySnapshot {
        keys,
        fetched: Instant::now(),
        fetched_unix: 0,
    })));
    Arc::new(s)
}

/// The fetch loop of one issuer; it ends when the issuer's snapshot is dropped.
async fn run(state: Weak<IssuerState>, wake: Arc<Notify>, stop: Arc<Notify>) {
    let mut backoff = Duration::from_secs(1);
    let mut jwks_uri = None;
    loop {
        let Some(s) = state.upgrade() else { return };
        let name = s.cfg.name.clone();
        let next = match s.fetch_once(&mut jwks_uri).await {
            Ok((keys, max_age)) => {
                tracing::info!(issuer = %name, keys = keys.len(), refresh_in_s = max_age.as_secs(), "issuer keys fetched");
                s.keys.store(Some(Arc::new(KeySnapshot {
                    keys,
                    fetched: Instant::now(),
                    fetched_unix: crate::clock::now_secs(),
                })));
                metrics::counter!("authgate_jwks_fetches_total", "issuer" => name, "outcome" => "ok").increment(1);
                backoff = Duration::from_secs(1);
                max_age
            }
            Err(e) => {
                let stale = s.current().is_some();
                tracing::warn!(issuer = %name, error = %e, keeping_last_keys = stale, "issuer key fetch failed");
                metrics::counter!("authgate_jwks_fetches_total", "issuer" => name, "outcome" => e.outcome()).increment(1);
                if !stale {
                    s.keys.store(None);
                }
                let b = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                b
            }
        };
        s.demand.store(false, Ordering::Release);
        s.attempts.send_modify(|n| *n += 1);
        drop(s);
        let deadline = tokio::time::Instant::now() + next;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.notified() => return,
                _ = wake.notified() => {
                    match state.upgrade() {
                        Some(s) if s.demand.load(Ordering::Acquire) => break,
                        Some(_) => {}
                        None => return,
                    }
                }
            }
        }
    }
}

/// Every configured issuer of one config snapshot.
#[derive(Default)]
pub struct IssuerSet {
    pub list: Vec<Arc<IssuerState>>,
}

impl IssuerSet {
    /// Builds every issuer, reading each `ca` (an unreadable one fails the build, so
    /// a reload keeps the old config).
    pub fn build(config: &Config) -> Result<IssuerSet, BuildError> {
        let mut list = Vec::with_capacity(config.issuers.len());
        for (i, cfg) in config.issuers.iter().enumerate() {
            list.push(Arc::new(IssuerState::new(cfg.clone(), i)?));
        }
        Ok(IssuerSet { list })
    }

    /// Takes over the keys of `old`'s issuers whose config is unchanged, so a reload
    /// does not make their tokens wait; they are fetched again at once all the same
    /// (a reload re-reads everything).
    pub fn adopt_keys(&self, old: &IssuerSet) {
        for s in &self.list {
            if let Some(prev) = old.list.iter().find(|p| p.cfg == s.cfg) {
                if s.keys.load().is_none() {
                    s.keys.store(prev.keys.load_full());
                }
            }
        }
    }

    /// Starts every issuer's fetch loop on the key-fetch runtime.
    pub fn start(&self) {
        if self.list.is_empty() {
            return; // no thread for a gateway without issuers
        }
        let Some(rt) = fetch::runtime() else {
            tracing::error!("no key-fetch runtime: issuer keys will not be fetched");
            return;
        };
        for s in &self.list {
            rt.spawn(run(Arc::downgrade(s), s.wake.clone(), s.stop.clone()));
        }
    }

    /// The issuer whose `issuer` equals the token's `iss`, exactly.
    pub fn by_iss(&self, iss: &str) -> Option<(usize, &Arc<IssuerState>)> {
        self.list
            .iter()
            .enumerate()
            .find(|(_, s)| s.cfg.issuer == iss)
    }

    /// Names of issuers without usable keys, for `/readyz`.
    pub fn without_keys(&self) -> Vec<&str> {
        self.list
            .iter()
            .filter(|s| s.current().is_none())
            .map(|s| s.cfg.name.as_str())
            .collect()
    }
}
