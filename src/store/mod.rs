//! The user store: users, roles, refresh tokens, revocations and API keys, and the
//! state of sign-in through a provider (SPEC §14: open flows, SSO sessions,
//! back-channel logout `jti`s). One trait; SQLite is the embedded default,
//! PostgreSQL the shared one (SPEC §9).
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

/// What a refresh-token family knows of its session beyond the user's name. For
/// authgate's own users every field is empty (and `roles` is read fresh from
/// `users` at each refresh); for a sign-in through a provider (SPEC §14) the
/// session carries everything a refresh re-issues, because such identities have no
/// `users` row.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// The `[[issuer]]` name the identity came from; empty: an own user.
    pub idp: String,
    /// The session token's `roles`, from the provider's `roles_claim` at sign-in.
    pub roles: Vec<String>,
    /// Unix seconds of the sign-in: refresh stops at `session_start + session_ttl`.
    pub session_start: u64,
    /// The provider's session id (`sid`), for back-channel logout by sid.
    pub sid: String,
    /// The provider's own `sub` (the session's identity may be another claim, such
    /// as `email`), for back-channel logout by sub.
    pub idp_sub: String,
    /// The provider's ID token, for `id_token_hint` at RP-initiated logout. Kept
    /// server-side only, never in a cookie or a log.
    pub id_token: String,
}

impl SessionInfo {
    pub fn is_sso(&self) -> bool {
        !self.idp.is_empty()
    }
}

/// The ID token never reaches a log through `{:?}`.
impl std::fmt::Debug for SessionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionInfo")
            .field("idp", &self.idp)
            .field("roles", &self.roles)
            .field("session_start", &self.session_start)
            .field("sid", &self.sid)
            .field("idp_sub", &self.idp_sub)
            .field(
                "id_token",
                &if self.id_token.is_empty() { "" } else { "***" },
            )
            .finish()
    }
}

/// A refresh token as stored (only its SHA-256), for `store copy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRow {
    pub token_hash: String,
    pub family: String,
    pub username: String,
    pub expires_at: u64,
    pub session: SessionInfo,
}

/// An open sign-in flow (SPEC §14): created at `/oauth2/start`, taken once at the
/// callback. The state and the browser binding are stored only as SHA-256 hex.
#[derive(Clone, PartialEq, Eq)]
pub struct Flow {
    pub state_hash: String,
    /// SHA-256 of the `__Host-authgate-oidc` cookie of the browser that started it.
    pub binding_hash: String,
    /// The `[[issuer]]` name.
    pub issuer: String,
    pub nonce: String,
    /// The PKCE code verifier (RFC 7636).
    pub verifier: String,
    /// Already sanitised (SPEC §12): a path on this gateway.
    pub return_to: String,
    /// Unix seconds.
    pub expires_at: u64,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("issuer", &self.issuer)
            .field("return_to", &self.return_to)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// SPEC §14: the revocation key of an identity (the `revocations` table and the
/// in-memory map are keyed by it). An own user's key is the username; an identity
/// from issuer `corp` is `corp:alice@example.com`. Usernames never contain `:`
/// (`normalize_username`: `a-z 0-9 . _ @ -` only), and neither do issuer names
/// (`a-z A-Z 0-9 - _ .`), so the first `:` splits a key without ambiguity and no
/// provider identity can ever collide with a local account.
pub fn revocation_key(idp: &str, sub: &str) -> String {
    if idp.is_empty() {
        sub.to_string()
    } else {
        format!("{idp}:{sub}")
    }
}

/// The inverse of [`revocation_key`]: `(idp, sub)`, `idp` empty for an own user.
pub fn split_revocation_key(key: &str) -> (&str, &str) {
    match key.split_once(':') {
        Some((idp, sub)) => (idp, sub),
        None => ("", key),
    }
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
    /// Spent the old token; the new one is stored in the same family, with the
    /// same session (returned here).
    Rotated {
        username: String,
        session: SessionInfo,
    },
    /// The token was already spent: its whole family is now revoked, and so is
    /// every access token of its user (SPEC §9). The user is named for the audit log.
    Reused { username: String },
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
        session: &SessionInfo,
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
    /// issued before `now_ms` is refused from the next poll on. `username` is a
    /// [`revocation_key`]: `corp:alice@example.com` ends that provider identity's
    /// sessions only.
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

    /// SPEC §14: stores an open sign-in flow, and deletes expired ones.
    fn put_flow(&self, flow: &Flow, now: u64) -> Result<(), StoreError>;
    /// Deletes and returns the flow of `state_hash` started by the browser bound by
    /// `binding_hash`, in one statement, so that of two gateways presenting one state
    /// exactly one gets it; `None` when unknown, another browser's (which leaves it
    /// for its own browser) or expired at `now`.
    fn take_flow(
        &self,
        state_hash: &str,
        binding_hash: &str,
        now: u64,
    ) -> Result<Option<Flow>, StoreError>;
    /// Back-channel logout (OpenID BCL 1.0 §2.6): records a logout token's `jti`
    /// hash until `expires_at`; false when it was seen before (a replay).
    fn record_logout_jti(
        &self,
        jti_hash: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError>;
    /// Back-channel logout: the identities with unexpired sessions at `idp` whose
    /// provider session is `sid` and whose provider subject is `idp_sub` (each when
    /// given); none when neither is given. A family already logged out counts: its
    /// access tokens may still be live.
    fn logout_subjects(
        &self,
        idp: &str,
        idp_sub: Option<&str>,
        sid: Option<&str>,
        now: u64,
    ) -> Result<Vec<String>, StoreError>;
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

/// SHA-256 of a secret (refresh token, state, binding cookie, jti), as stored.
pub fn sha256_hex(s: &str) -> String {
    use aws_lc_rs::digest::{digest, SHA256};
    crate::ids::hex(digest(&SHA256, s.as_bytes()).as_ref())
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

/// The store a config asks for: none at all when authgate issues no tokens of its
/// own (SPEC §10: built-in identity off and no sign-in provider), so that no
/// database file is created or opened. Sign-in sessions (SPEC §14) need it.
pub fn open_for(config: &crate::config::Config) -> Result<Arc<dyn UserStore>, StoreError> {
    let identity = &config.identity;
    if config.issues_tokens() {
        open(&identity.store, StoreOptions::of(identity))
    } else {
        Ok(Arc::new(disabled::Disabled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_keys_of_provider_identities_never_collide_with_usernames() {
        assert_eq!(revocation_key("", "alice"), "alice");
        assert_eq!(
            revocation_key("corp", "alice@example.com"),
            "corp:alice@example.com"
        );
        assert_eq!(split_revocation_key("alice"), ("", "alice"));
        assert_eq!(
            split_revocation_key("corp:alice@example.com"),
            ("corp", "alice@example.com")
        );
        // A provider `sub` may itself contain ':'; the issuer name never does.
        assert_eq!(split_revocation_key("corp:urn:x:1"), ("corp", "urn:x:1"));
        // No valid username contains ':', so no local key looks like a provider's.
        assert!(crate::identity::username::normalize_username("corp:alice").is_err());
    }

    #[test]
    fn debug_never_shows_the_id_token_or_the_flow_secrets() {
        let s = SessionInfo {
            idp: "corp".into(),
            id_token: "eyJsecret".into(),
            ..SessionInfo::default()
        };
        assert!(!format!("{s:?}").contains("eyJsecret"));
        let f = Flow {
            state_hash: "h".into(),
            binding_hash: "b".into(),
            issuer: "corp".into(),
            nonce: "n0nce".into(),
            verifier: "v3rifier".into(),
            return_to: "/".into(),
            expires_at: 1,
        };
        let d = format!("{f:?}");
        assert!(!d.contains("n0nce") && !d.contains("v3rifier"), "{d}");
    }
}
