//! Argon2id on a bounded pool off the async workers (SPEC §3): `hash_concurrency`
//! hashes at once, `hash_queue` more may wait; past that → 503 + Retry-After.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::config::HashParams;
use crate::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing queue is full")]
    Full,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

type Job = Box<dyn FnOnce() + Send>;

pub struct HashingThreads {
    params: HashParams,
    /// (`hash_concurrency`, `hash_queue`): with `params`, what a reload compares to
    /// keep this pool instead of building a new one.
    sizes: (usize, usize),
    admit: Arc<Semaphore>,
    /// Jobs for the hashing threads; dropping the pool ends them.
    jobs: std::sync::mpsc::Sender<Job>,
    /// A real hash of a random password: unknown users are verified against it,
    /// so a login for a missing user costs the same time as for a real one. Made
    /// by the first hashing thread, not before the gateway is ready (it was about
    /// half of start-to-ready at the default parameters).
    dummy: Arc<OnceLock<String>>,
}

fn argon(p: HashParams) -> Result<Argon2<'static>, HashError> {
    let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None)
        .map_err(|e| HashError::Failed(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes synchronously (for the ops CLI and the pool's workers).
pub fn hash_now(p: HashParams, password: &str) -> Result<String, HashError> {
    argon(p)?
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| HashError::Failed(e.to_string()))
}

/// Constant-shape verification: a malformed stored hash is a failed login.
pub fn verify_now(p: HashParams, password: &str, phc: &str) -> bool {
    match argon(p) {
        Ok(a) => a.verify_password(password.as_bytes(), phc).is_ok(),
        Err(_) => false,
    }
}

/// The pool's dummy hash, made on first use (a login that comes before the first
/// hashing thread made it waits for it, once).
fn dummy_hash(cell: &OnceLock<String>, p: HashParams) -> &str {
    cell.get_or_init(|| hash_now(p, &crate::ids::uuid_v4()).unwrap_or_default())
}

/// Whether a stored hash was made with other parameters than `p` (then it is
/// upgraded at the next successful login).
pub fn needs_rehash(p: HashParams, phc: &str) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return true;
    };
    if h.algorithm.as_str() != "argon2id" {
        return true;
    }
    match Params::try_from(&h) {
        Ok(stored) => {
            stored.m_cost() != p.memory_kib
                || stored.t_cost() != p.iterations
                || stored.p_cost() != p.parallelism
        }
        Err(_) => true,
    }
}

/// Hashing threads run at nice 10 (SCHED_BATCH): a login flood uses the CPU that
/// proxied requests leave, instead of taking it from them. Best effort: a sandbox
/// that forbids it leaves the default priority.
fn lower_priority() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
    };
    // Crossplatform 22 of 0..=99 maps to niceness 10 on Linux.
    let Ok(value) = ThreadPriorityValue::try_from(22u8) else {
        return;
    };
    let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    if let Err(e) = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(value),
        policy,
    ) {
        tracing::debug!(error = ?e, "could not lower the hashing threads' priority");
    }
}

impl HashingThreads {
    pub fn new(
        params: HashParams,
        concurrency: usize,
        queue: usize,
    ) -> Result<HashingThreads, HashError> {
        argon(params)?; // the parameters are checked now, as the dummy hash did
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..concurrency.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("authgate-hash-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| HashError::Failed(format!("cannot start a hashing thread: {e}")))?;
        }
        let dummy = Arc::new(OnceLock::new());
        let d = dummy.clone();
        jobs.send(Box::new(move || {
            dummy_hash(&d, params);
        }))
        .map_err(|_| HashError::Failed("the hashing threads are gone".into()))?;
        Ok(HashingThreads {
            params,
            sizes: (concurrency, queue),
            admit: Arc::new(Semaphore::new(concurrency + queue)),
            jobs,
            dummy,
        })
    }

    pub fn params(&self) -> HashParams {
        self.params
    }

    /// Whether this pool was built with these settings. A reload keeps such a pool:
    /// a new one would start new hashing threads and hash a new dummy (19 MiB of
    /// Argon2 memory each time at the defaults, which glibc keeps in whichever arena
    /// the reload ran on — the soak's RSS steps).
    pub fn is_built_with(&self, params: HashParams, concurrency: usize, queue: usize) -> bool {
        self.params == params && self.sizes == (concurrency, queue)
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _admitted = self
            .admit
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashError::Full)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| HashError::Failed("the hashing threads are gone".into()))?;
        rx.await
            .map_err(|_| HashError::Failed("a hashing thread died".into()))
    }

    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let p = self.params;
        self.run(move || hash_now(p, &password)).await?
    }

    /// `None` verifies against the dummy hash and always fails, at the same cost.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        let p = self.params;
        let known = phc.is_some();
        let dummy = self.dummy.clone();
        let ok = self
            .run(move || match &phc {
                Some(phc) => verify_now(p, &password, phc),
                None => verify_now(p, &password, dummy_hash(&dummy, p)),
            })
            .await?;
        Ok(ok && known)
    }
}

impl From<HashError> for ApiError {
    fn from(e: HashError) -> ApiError {
        match e {
            HashError::Full => ApiError::Overloaded { retry_after: 1 },
            HashError::Failed(m) => ApiError::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: HashParams = HashParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn hashes_are_phc_argon2id_with_the_parameters() {
        let h = hash_now(FAST, "correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        assert!(verify_now(FAST, "correct horse", &h));
        assert!(!verify_now(FAST, "wrong", &h));
        assert!(!needs_rehash(FAST, &h));
        assert!(needs_rehash(
            HashParams {
                memory_kib: 128,
                ..FAST
            },
            &h
        ));
        assert!(needs_rehash(FAST, "garbage"));
    }

    #[tokio::test]
    async fn hashing_threads_run_below_normal_priority() {
        let pool = HashingThreads::new(FAST, 1, 1).unwrap();
        let stat = pool
            .run(|| std::fs::read_to_string("/proc/thread-self/stat"))
            .await
            .unwrap()
            .unwrap();
        // Fields after the command's ')' start at field 3 (state); nice is field 19.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(fields[16], "10", "{stat}");
    }

    #[tokio::test]
    async fn a_full_queue_is_refused() {
        let pool = Arc::new(HashingThreads::new(FAST, 1, 0).unwrap());
        let _hold = pool.admit.clone().try_acquire_owned().unwrap();
        assert!(matches!(pool.hash("x".into()).await, Err(HashError::Full)));
    }

    #[tokio::test]
    async fn unknown_users_never_verify() {
        let pool = HashingThreads::new(FAST, 1, 4).unwrap();
        assert!(!pool.verify("anything".into(), None).await.unwrap());
    }
}
