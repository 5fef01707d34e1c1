//! The user store: users, roles, refresh tokens, revocations and API keys. One trait;
//! SQLite is the embedded default, PostgreSQL the shared one (SPEC §9).
//!
//! Calls block. Async callers run them on `spawn_blocking`, never on an event-loop
//! worker (SPEC §13); the PostgreSQL store drives its own small runtime inside
//! each call, bounded by `identity.store_timeout`.

pub mod copy;
pub mod disabled;
mod pg_tls;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use crate::config::StoreUrl;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub created_at: u64,
    /// SPEC §16: a service account has no password and never logs in; its
    /// `password_hash` is [`SERVICE_PASSWORD_HASH`], which no password verifies.
    pub service: bool,
}

/// The password hash of a service account: not a PHC string, so it can never
/// verify, and `create_user` with it marks the row `service`.
pub const SERVICE_PASSWORD_HASH: &str = "!service-account";

/// SPEC §16: an API key as stored. Only the SHA-256 of its secret is kept.
/// Times are Unix milliseconds (a key may expire seconds after creation, and its
/// creation instant is compared with revocation not-befores, which are in ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub username: String,
    pub label: String,
    /// Lowercase hex SHA-256 of the secret's 32 bytes.
    pub key_hash: String,
    pub roles: Vec<String>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
    pub last_used_at: Option<u64>,
    /// When the row last changed (store clock): gateways poll changes since a time.
    /// Recording a last use does not count as a change.
    pub updated_ms: u64,
}

/// A refresh token as stored (only its SHA-256), for `store copy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRow {
    pub token_hash: String,
    pub family: String,
    pub username: String,
    pub expires_at: u64,
}

/// SPEC §9: every token issued to `username` before `not_before_ms` is revoked.
/// `updated_ms` is when the row last changed, by the store's clock: pollers ask
/// for rows changed since their last look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub username: String,
    pub not_before_ms: u64,
    pub updated_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user already exists")]
    Conflict,
    /// The store cannot be reached or did not answer within `store_timeout`:
    /// the caller answers 503 `store_unavailable`, never 500 (SPEC §9).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Backend(String),
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// Spent the old token; the new one is stored in the same family.
    Rotated { username: String },
    /// The token was already spent: its whole family is now revoked, and so is
    /// every access token of its user (SPEC §9).
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

pub trait UserStore: Send + Sync {
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        roles: &[String],
    ) -> Result<(), StoreError>;
    fn get_user(&self, username: &str) -> Result<Option<User>, StoreError>;
    fn set_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError>;
    fn set_roles(&self, username: &str, roles: &[String]) -> Result<bool, StoreError>;
    /// Removes the user and every refresh token they hold, and revokes their
    /// access tokens (one transaction).
    fn remove_user(&self, username: &str) -> Result<bool, StoreError>;
    fn list_users(&self) -> Result<Vec<User>, StoreError>;
    fn insert_refresh(
        &self,
        token_hash: &str,
        family: &str,
        username: &str,
        expires_at: u64,
    ) -> Result<(), StoreError>;
    fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<Rotation, StoreError>;
    /// Revokes the family of a live token. `Reused` and `Invalid` as for rotation.
    fn revoke_family(&self, token_hash: &str, now: u64) -> Result<Rotation, StoreError>;
    /// SPEC §9: every refresh token of `username` dies and every access token
    /// issued before `now_ms` is refused from the next poll on.
    fn revoke_user(&self, username: &str, now_ms: u64) -> Result<(), StoreError>;
    /// Revocations whose row changed after `after_ms` (store clock).
    fn revocations_since(&self, after_ms: u64) -> Result<Vec<Revocation>, StoreError>;
    /// Refresh tokens neither spent, revoked nor expired at `now` (for `store copy`).
    fn live_refresh_tokens(&self, now: u64) -> Result<Vec<RefreshRow>, StoreError>;
    /// `store copy`: inserts unless present; true when something was written.
    fn import_user(&self, user: &User) -> Result<bool, StoreError>;
    fn import_refresh(&self, row: &RefreshRow) -> Result<bool, StoreError>;
    /// Keeps the later of the two not-befores; true when the row changed.
    fn import_revocation(&self, r: &Revocation) -> Result<bool, StoreError>;
    fn ping(&self) -> Result<(), StoreError>;
    /// SPEC §16: stores a new key; `Conflict` if the id exists.
    fn create_api_key(&self, key: &ApiKeyRow) -> Result<(), StoreError>;
    /// Every key, or one user's, ordered by user then creation.
    fn list_api_keys(&self, username: Option<&str>) -> Result<Vec<ApiKeyRow>, StoreError>;
    /// Marks a key revoked; false when no live key has that id.
    fn revoke_api_key(&self, id: &str, now_ms: u64) -> Result<bool, StoreError>;
    /// Keys whose row changed after `after_ms` (store clock), for the gateways' poll.
    fn api_keys_since(&self, after_ms: u64) -> Result<Vec<ApiKeyRow>, StoreError>;
    /// Records last uses `(id, ms)` in one batch; never moves `updated_ms`.
    fn touch_api_keys(&self, uses: &[(String, u64)]) -> Result<(), StoreError>;
    /// `store copy`: inserts unless present; true when something was written.
    fn import_api_key(&self, key: &ApiKeyRow) -> Result<bool, StoreError>;
}

/// How a shared store is reached: `identity.store_pool`, `identity.store_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    pub pool: usize,
    pub timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            pool: 16,
            timeout: Duration::from_secs(2),
        }
    }
}

impl StoreOptions {
    pub fn of(id: &crate::config::Identity) -> StoreOptions {
        StoreOptions {
            pool: id.store_pool,
            timeout: id.store_timeout,
        }
    }
}

/// Opens (and creates or migrates) the store. Blocking: never call it on an
/// event-loop thread.
pub fn open(url: &StoreUrl, opts: StoreOptions) -> Result<Arc<dyn UserStore>, StoreError> {
    match url {
        StoreUrl::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path)?)),
        StoreUrl::Postgres(u) => Ok(Arc::new(postgres::PostgresStore::open(u.as_str(), opts)?)),
    }
}

pub fn roles_to_text(roles: &[String]) -> String {
    roles.join(",")
}

pub fn roles_from_text(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|r| !r.is_empty())
        .map(String::from)
        .collect()
}

/// The store a config asks for: none at all when the built-in identity is off
/// (SPEC §10: no store needed), so that no database file is created or opened.
pub fn open_for(identity: &crate::config::Identity) -> Result<Arc<dyn UserStore>, StoreError> {
    if identity.enabled {
        open(&identity.store, StoreOptions::of(identity))
    } else {
        Ok(Arc::new(disabled::Disabled))
    }
}
