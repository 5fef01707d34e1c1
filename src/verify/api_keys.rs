//! SPEC §16 API keys on the request path: every gateway holds every key's hash in
//! memory (`id → hash, user, roles, expiry, revoked`), refreshed from the store on
//! the revocation poller's tick, so a key created or revoked anywhere works or
//! stops everywhere within `identity.revocation_poll`. A request costs one map
//! lookup, one SHA-256 of 32 bytes and one constant-time compare — no store call,
//! no lock, and (after a key's first use under a config) no allocation. A worker
//! remembers the last key it matched in the current table: the same key again
//! costs one constant-time compare of the whole key instead of the hash.
//!
//! A key is `agk_<id>_<secret>`: `id` names the row, `secret` is 256 random bits
//! (unpadded base64url). Only SHA-256(secret) is stored. A single unsalted hash is
//! right here, unlike passwords: the secret is uniformly random and 256 bits
//! long, so neither a dictionary nor a precomputed table can reach it, and a slow
//! hash (Argon2) would only make every request cost milliseconds.
//!
//! Timing: an unknown id is compared against a fixed dummy hash, so a valid id
//! and an invalid one take the same path; which one it was is decided only after
//! the compare. Revoked and expired are told apart only for a matching secret.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::{ArcSwap, ArcSwapOption};
use aws_lc_rs::digest::{digest, SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::config::{Config, IssuerRef};
use crate::error::ApiError;
use crate::store::{ApiKeyRow, StoreError, UserStore};
use crate::verify::verified::Verified;

pub const PREFIX: &str = "agk_";
/// Unpadded base64url of 32 bytes.
const SECRET_CHARS: usize = 43;
/// Rows are asked for from a little before the newest change seen (see revocation.rs).
const OVERLAP_MS: u64 = 10_000;
/// SPEC §16: last use is recorded at most once a minute per key.
const USE_EVERY_MS: u64 = 60_000;
/// What an unknown id's secret is compared against. No secret hashes to it
/// (that would be a SHA-256 preimage), and it is never taken as a match anyway.
const DUMMY_HASH: [u8; 32] = [0x5a; 32];

/// Why a presented key was refused: the `error_description` of the 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("malformed API key")]
    Malformed,
    /// An unknown id or a wrong secret: one answer for both.
    #[error("unknown API key")]
    Unknown,
    #[error("API key revoked")]
    Revoked,
    #[error("API key expired")]
    Expired,
    #[error("this route does not accept API keys")]
    NotAllowed,
}

impl KeyError {
    /// The `outcome` label of `authgate_api_key_auth_total`.
    pub fn outcome(self) -> &'static str {
        match self {
            KeyError::Malformed => "malformed",
            KeyError::Unknown => "unknown",
            KeyError::Revoked => "revoked",
            KeyError::Expired => "expired",
            KeyError::NotAllowed => "not_allowed",
        }
    }
}

impl From<KeyError> for ApiError {
    /// SPEC §16: every refusal is 401 `invalid_token` (malformed too, never 400),
    /// and the description never echoes the key.
    fn from(e: KeyError) -> ApiError {
        ApiError::InvalidToken(e.to_string())
    }
}

/// `agk_<id>_<secret>` → (id, secret bytes). The id never contains `_`; the
/// secret may (base64url), so the split is at the first `_` after the prefix.
pub fn parse(key: &str) -> Option<(&str, [u8; 32])> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = (8..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !id_ok || secret.len() != SECRET_CHARS {
        return None;
    }
    let mut out = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(secret, &mut out) {
        Ok(32) => Some((id, out)),
        _ => None,
    }
}

/// SHA-256 of the secret's bytes, as stored (hex) and held (bytes).
pub fn hash(secret: &[u8; 32]) -> [u8; 32] {
    let d = digest(&SHA256, secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A new key: (id, the whole key to show once, the hex hash to store).
pub fn generate() -> Result<(String, String, String), StoreError> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = [0u8; 16 + 32];
    aws_lc_rs::rand::fill(&mut raw)
        .map_err(|_| StoreError::Backend("the system random source failed".into()))?;
    // 252 = 7 × 36: bytes at or above it are redrawn, so each character is uniform.
    let mut id = String::with_capacity(16);
    let mut pool = raw[..16].to_vec();
    while id.len() < 16 {
        for &b in &pool {
            if b < 252 && id.len() < 16 {
                id.push(ALPHABET[(b % 36) as usize] as char);
            }
        }
        let mut more = [0u8; 16];
        aws_lc_rs::rand::fill(&mut more)
            .map_err(|_| StoreError::Backend("the system random source failed".into()))?;
        pool = more.to_vec();
    }
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&raw[16..]);
    let key = format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret));
    Ok((id, key, crate::ids::hex(&hash(&secret))))
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let n = |c: u8| (c as char).to_digit(16);
        *o = (n(b[2 * i])? * 16 + n(b[2 * i + 1])?) as u8;
    }
    Some(out)
}

/// The one comparison a presented key costs, counted in tests so that "an unknown
/// id and a wrong secret take the same path" is checked, not assumed.
fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    #[cfg(test)]
    COMPARES.with(|c| c.set(c.get() + 1));
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
thread_local! {
    static COMPARES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The `Verified` of a key under one config (its headers depend on `[forward]`).
struct Cached {
    config: Weak<Config>,
    verified: Arc<Verified>,
}

/// One key as held in memory.
pub struct Entry {
    hash: [u8; 32],
    pub user: String,
    pub roles: Vec<String>,
    /// Unix ms: revocation not-befores apply to keys created before them.
    pub created_ms: u64,
    expires_ms: Option<u64>,
    revoked: bool,
    updated_ms: u64,
    /// When a use was last marked for recording, and the use waiting to be written.
    marked_ms: AtomicU64,
    pending_ms: AtomicU64,
    cached: ArcSwapOption<Cached>,
}

impl Entry {
    fn of(row: &ApiKeyRow) -> Option<Entry> {
        Some(Entry {
            hash: unhex(&row.key_hash)?,
            user: row.username.clone(),
            roles: row.roles.clone(),
            created_ms: row.created_at,
            expires_ms: row.expires_at,
            revoked: row.revoked_at.is_some(),
            updated_ms: row.updated_ms,
            marked_ms: AtomicU64::new(row.last_used_at.unwrap_or(0)),
            pending_ms: AtomicU64::new(0),
            cached: ArcSwapOption::empty(),
        })
    }

    /// SPEC §16: at most once a minute per key, and only an atomic here; the
    /// poller writes the batch off the request path.
    fn mark_used(&self, now: u64) {
        let last = self.marked_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= USE_EVERY_MS
            && self
                .marked_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.pending_ms.store(now, Ordering::Relaxed);
        }
    }

    /// The caller this key makes, built once per key and config: the identity
    /// header, claim headers from `roles` (and `sub`), and the issuer header.
    pub fn verified(&self, config: &Arc<Config>) -> Result<Arc<Verified>, KeyError> {
        if let Some(c) = self.cached.load().as_ref() {
            // The Weak keeps the old config's allocation, so its address is never
            // reused while it is held here: equal pointers mean the same config.
            if std::ptr::eq(c.config.as_ptr(), Arc::as_ptr(config)) {
                return Ok(c.verified.clone());
            }
        }
        let v = Arc::new(self.build(config)?);
        self.cached.store(Some(Arc::new(Cached {
            config: Arc::downgrade(config),
            verified: v.clone(),
        })));
        Ok(v)
    }

    fn build(&self, config: &Config) -> Result<Verified, KeyError> {
        let value = |s: &str| HeaderValue::from_str(s).map_err(|_| KeyError::Malformed);
        let fwd = &config.forward;
        let joined = self.roles.join(",");
        let mut headers: Vec<(HeaderName, HeaderValue)> =
            vec![(fwd.identity_header.clone(), value(&self.user)?)];
        for (h, claim) in &fwd.claim_headers {
            match claim.as_str() {
                "roles" if !self.roles.is_empty() => headers.push((h.clone(), value(&joined)?)),
                "sub" => headers.push((h.clone(), value(&self.user)?)),
                _ => {}
            }
        }
        if let Some(h) = &fwd.issuer_header {
            headers.push((h.clone(), HeaderValue::from_static("apikey")));
        }
        let roles = Value::Array(self.roles.iter().cloned().map(Value::String).collect());
        Ok(Verified {
            // The key's user is one of authgate's own users.
            source: IssuerRef::SelfIssued,
            sub: self.user.clone(),
            iat: Some(self.created_ms / 1000),
            issued_ms: Some(self.created_ms),
            exp: self.expires_ms.map_or(u64::MAX, |ms| ms / 1000),
            nbf: None,
            headers,
            claims: vec![
                ("roles".to_string(), roles),
                ("sub".to_string(), Value::String(self.user.clone())),
            ],
            // A key's user is a local account; `users revoke` ends its keys in the
            // store, which the key poll carries to every gateway.
            revocation_key: Some(self.user.clone()),
        })
    }
}

type KeyMap = HashMap<String, Arc<Entry>>;

thread_local! {
    /// The last key this worker matched, so that the next request presenting the
    /// same key (a client keeps its connection, and so its worker) skips the base64
    /// decode and the SHA-256: that is what made a key cost more than a cached
    /// token. Revoked and expired are still read from the entry on every request.
    static LAST: std::cell::RefCell<Option<Memo>> = const { std::cell::RefCell::new(None) };
}

/// A matched key and the table version it matched in.
struct Memo {
    /// The map the entry came from. The Weak keeps its allocation, so its address
    /// is never reused while held here: the same address is the same version, and
    /// any change (a revoke, a new row) is a new map, so the memo is not used.
    map: Weak<KeyMap>,
    key: Box<str>,
    entry: Arc<Entry>,
}

impl Memo {
    fn of(map: &Arc<KeyMap>, key: &str, entry: &Arc<Entry>) -> Memo {
        Memo {
            map: Arc::downgrade(map),
            key: key.into(),
            entry: entry.clone(),
        }
    }

    /// The entry, when `key` is the remembered one, compared in constant time, in
    /// the same table version.
    fn hit(&self, map: &Arc<KeyMap>, key: &str) -> Option<Arc<Entry>> {
        let same = std::ptr::eq(self.map.as_ptr(), Arc::as_ptr(map))
            && aws_lc_rs::constant_time::verify_slices_are_equal(
                self.key.as_bytes(),
                key.as_bytes(),
            )
            .is_ok();
        same.then(|| self.entry.clone())
    }
}

/// The entry whose stored hash the presented key's secret matches; remembered for
/// this worker's next request. Known id or not, one hash and one compare: the
/// outcome is read only after them.
fn matched(map: &Arc<KeyMap>, presented: &str) -> Result<Arc<Entry>, KeyError> {
    let (id, secret) = parse(presented).ok_or(KeyError::Malformed)?;
    let entry = map.get(id);
    let stored = entry.map_or(&DUMMY_HASH, |e| &e.hash);
    let same = same_hash(&hash(&secret), stored);
    match entry {
        Some(e) if same => {
            LAST.with(|m| *m.borrow_mut() = Some(Memo::of(map, presented, e)));
            Ok(e.clone())
        }
        _ => Err(KeyError::Unknown),
    }
}

/// Every key, by id: read with one atomic load, replaced whole by the poller.
pub struct KeyTable {
    map: ArcSwap<KeyMap>,
    /// The newest `updated_ms` seen (store clock).
    cursor: AtomicU64,
}

impl Default for KeyTable {
    fn default() -> KeyTable {
        KeyTable {
            map: ArcSwap::from_pointee(HashMap::new()),
            cursor: AtomicU64::new(0),
        }
    }
}

impl KeyTable {
    /// The request-path check. `now` in Unix ms.
    pub fn check(&self, presented: &str, now: u64) -> Result<Arc<Entry>, KeyError> {
        let map = self.map.load();
        let remembered = LAST.with(|m| m.borrow().as_ref().and_then(|m| m.hit(&map, presented)));
        let entry = match remembered {
            Some(e) => e,
            None => matched(&map, presented)?,
        };
        if entry.revoked {
            Err(KeyError::Revoked)
        } else if entry.expires_ms.is_some_and(|x| x <= now) {
            Err(KeyError::Expired)
        } else {
            entry.mark_used(now);
            Ok(entry)
        }
    }

    /// Takes changed rows in; returns how many changed the table.
    pub fn merge(&self, rows: &[ApiKeyRow]) -> usize {
        if let Some(max) = rows.iter().map(|r| r.updated_ms).max() {
            self.cursor.fetch_max(max, Ordering::Relaxed);
        }
        let current = self.map.load();
        let news: Vec<&ApiKeyRow> = rows
            .iter()
            .filter(|r| {
                current
                    .get(&r.id)
                    .is_none_or(|e| e.updated_ms < r.updated_ms)
            })
            .collect();
        if news.is_empty() {
            return 0;
        }
        let mut m: KeyMap = (**current).clone();
        let mut changed = 0;
        for r in news {
            match Entry::of(r) {
                Some(e) => {
                    if let Some(old) = m.get(&r.id) {
                        // Keep a use not yet written.
                        e.pending_ms
                            .store(old.pending_ms.load(Ordering::Relaxed), Ordering::Relaxed);
                        e.marked_ms
                            .fetch_max(old.marked_ms.load(Ordering::Relaxed), Ordering::Relaxed);
                    }
                    m.insert(r.id.clone(), Arc::new(e));
                    changed += 1;
                }
                None => {
                    tracing::warn!(id = %r.id, "api key: stored hash is not 64 hex digits; key ignored")
                }
            }
        }
        self.map.store(Arc::new(m));
        changed
    }

    /// Uses marked since the last call, for one batched write.
    fn take_uses(&self) -> Vec<(String, u64)> {
        self.map
            .load()
            .iter()
            .filter_map(|(id, e)| match e.pending_ms.swap(0, Ordering::Relaxed) {
                0 => None,
                ms => Some((id.clone(), ms)),
            })
            .collect()
    }

    /// One tick: write the marked uses, then read the changed rows. Blocking.
    pub fn poll(&self, store: &dyn UserStore) -> Result<usize, StoreError> {
        let uses = self.take_uses();
        if !uses.is_empty() {
            if let Err(e) = store.touch_api_keys(&uses) {
                // Last use is advisory: a failed write is not retried, not fatal.
                tracing::debug!(error = %e, "api keys: cannot record last use");
            }
        }
        let since = self
            .cursor
            .load(Ordering::Relaxed)
            .saturating_sub(OVERLAP_MS);
        let rows = store.api_keys_since(since)?;
        Ok(self.merge(&rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, secret: &[u8; 32], updated: u64) -> ApiKeyRow {
        ApiKeyRow {
            id: id.into(),
            username: "svc".into(),
            label: String::new(),
            key_hash: crate::ids::hex(&hash(secret)),
            roles: vec!["reader".into()],
            created_at: 1,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            updated_ms: updated,
        }
    }

    fn key(id: &str, secret: &[u8; 32]) -> String {
        format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret))
    }

    fn compares() -> usize {
        COMPARES.with(|c| c.get())
    }

    #[test]
    fn an_unknown_id_and_a_wrong_secret_take_the_same_path() {
        let t = KeyTable::default();
        t.merge(&[row("abcdefgh12345678", &[7; 32], 1)]);
        let before = compares();
        assert_eq!(
            t.check(&key("zzzzzzzz12345678", &[7; 32]), 0).err(),
            Some(KeyError::Unknown)
        );
        assert_eq!(compares() - before, 1, "an unknown id is compared once");
        let before = compares();
        assert_eq!(
            t.check(&key("abcdefgh12345678", &[8; 32]), 0).err(),
            Some(KeyError::Unknown)
        );
        assert_eq!(compares() - before, 1, "a wrong secret is compared once");
        let before = compares();
        assert!(t.check(&key("abcdefgh12345678", &[7; 32]), 0).is_ok());
        assert_eq!(compares() - before, 1);
        // Malformed input never reaches the table.
        let before = compares();
        assert_eq!(t.check("agk_", 0).err(), Some(KeyError::Malformed));
        assert_eq!(compares(), before);
    }

    #[test]
    fn a_remembered_key_skips_the_hash_only_in_the_same_table_version() {
        let id = "abcdefgh12345678";
        let k = key(id, &[7; 32]);
        let t = KeyTable::default();
        let mut r = row(id, &[7; 32], 1);
        r.expires_at = Some(100);
        t.merge(&[r.clone()]);
        assert!(t.check(&k, 0).is_ok());
        let before = compares();
        assert!(t.check(&k, 0).is_ok());
        assert_eq!(compares(), before, "the same key again is not hashed");
        // Expiry is read on a hit too.
        assert_eq!(t.check(&k, 200).err(), Some(KeyError::Expired));
        // Another secret for the remembered id takes the whole path.
        assert_eq!(
            t.check(&key(id, &[8; 32]), 0).err(),
            Some(KeyError::Unknown)
        );
        // Another table never answers from this one's memo.
        let other = KeyTable::default();
        assert_eq!(other.check(&k, 0).err(), Some(KeyError::Unknown));
        // A revoke is a new table version: the memo is not used.
        assert!(t.check(&k, 0).is_ok());
        r.revoked_at = Some(2);
        r.updated_ms = 2;
        t.merge(&[r]);
        let before = compares();
        assert_eq!(t.check(&k, 0).err(), Some(KeyError::Revoked));
        assert_eq!(compares() - before, 1);
    }

    #[test]
    fn generated_keys_parse_and_hash_to_what_is_stored() {
        let (id, k, h) = generate().unwrap();
        assert_eq!(id.len(), 16);
        let (pid, secret) = parse(&k).unwrap();
        assert_eq!(pid, id);
        assert_eq!(crate::ids::hex(&hash(&secret)), h);
        assert!(!k.contains(&h));
        assert_ne!(generate().unwrap().1, k);
    }

    #[test]
    fn revoked_and_expired_are_told_only_for_the_right_secret() {
        let t = KeyTable::default();
        let mut r = row("abcdefgh12345678", &[1; 32], 1);
        r.expires_at = Some(1000);
        t.merge(&[r.clone()]);
        let k = key("abcdefgh12345678", &[1; 32]);
        assert!(t.check(&k, 999).is_ok());
        assert_eq!(t.check(&k, 1000).err(), Some(KeyError::Expired));
        r.revoked_at = Some(5);
        r.updated_ms = 2;
        assert_eq!(t.merge(&[r]), 1);
        assert_eq!(t.check(&k, 0).err(), Some(KeyError::Revoked));
        let wrong = key("abcdefgh12345678", &[2; 32]);
        assert_eq!(t.check(&wrong, 0).err(), Some(KeyError::Unknown));
    }

    #[test]
    fn uses_are_marked_at_most_once_a_minute() {
        let t = KeyTable::default();
        t.merge(&[row("abcdefgh12345678", &[3; 32], 1)]);
        let k = key("abcdefgh12345678", &[3; 32]);
        t.check(&k, 100_000).unwrap();
        t.check(&k, 100_500).unwrap();
        assert_eq!(
            t.take_uses(),
            vec![("abcdefgh12345678".to_string(), 100_000)]
        );
        t.check(&k, 130_000).unwrap();
        assert!(t.take_uses().is_empty());
        t.check(&k, 160_000).unwrap();
        assert_eq!(t.take_uses().len(), 1);
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = key("abcdefgh12345678", &[9; 32]);
        assert!(parse(&good).is_some());
        for bad in [
            "agk_",
            "agk_abcdefgh12345678",
            "agk_abcdefgh12345678_",
            &good[..good.len() - 1],
            &format!("{good}A"),
            "agk_ABCDEFGH12345678_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "agk_short_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "xyz_abcdefgh12345678_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
