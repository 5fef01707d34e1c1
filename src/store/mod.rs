//! The user store: users, roles, refresh tokens. One trait; SQLite is the
//! embedded default. Calls block: async callers run them on `spawn_blocking`.

pub mod sqlite;

use std::sync::Arc;

use crate::config::StoreUrl;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub created_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user already exists")]
    Conflict,
    #[error("store error: {0}")]
    Backend(String),
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// Spent the old token; the new one is stored in the same family.
    Rotated { username: String },
    /// The token was already spent: its whole family is now revoked.
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
    /// Removes the user and every refresh token they hold.
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
    fn ping(&self) -> Result<(), StoreError>;
}

pub fn open(url: &StoreUrl) -> Result<Arc<dyn UserStore>, StoreError> {
    match url {
        StoreUrl::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStore::open(path)?)),
        StoreUrl::Postgres(_) => Err(StoreError::Backend(
            "the postgres:// store is not supported by this build; use sqlite:PATH".into(),
        )),
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
