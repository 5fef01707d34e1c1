//! SQLite store: WAL + synchronous=FULL, so a 201 means the row survives a
//! `kill -9` or power loss the next instant. A busy timeout lets the ops CLI
//! write while the gateway runs.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::{
    revocation_key, roles_from_text, roles_to_text, split_revocation_key, ApiKeyRow, Flow,
    RefreshRow, Revocation, Rotation, SessionInfo, StoreError, User, UserStore,
    SERVICE_PASSWORD_HASH,
};

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn be(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE users (
        username TEXT PRIMARY KEY NOT NULL,
        password_hash TEXT NOT NULL,
        roles TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL
     );
     CREATE TABLE refresh_tokens (
        token_hash TEXT PRIMARY KEY NOT NULL,
        family TEXT NOT NULL,
        username TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        spent INTEGER NOT NULL DEFAULT 0,
        revoked INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
     CREATE INDEX refresh_tokens_username ON refresh_tokens(username);",
    // v2: SPEC §9 revocations (sub → not-before), polled by every gateway.
    "CREATE TABLE revocations (
        username TEXT PRIMARY KEY NOT NULL,
        not_before_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
     );
     CREATE INDEX revocations_updated ON revocations(updated_ms);",
    // v3: SPEC §14 sign-in through a provider. Refresh rows carry their session
    // (defaults: an own user's), open flows are shared by every gateway, and a
    // back-channel logout token's jti is used once.
    "ALTER TABLE refresh_tokens ADD COLUMN idp TEXT NOT NULL DEFAULT '';
     ALTER TABLE refresh_tokens ADD COLUMN roles TEXT NOT NULL DEFAULT '';
     ALTER TABLE refresh_tokens ADD COLUMN session_start INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE refresh_tokens ADD COLUMN sid TEXT NOT NULL DEFAULT '';
     ALTER TABLE refresh_tokens ADD COLUMN id_token TEXT NOT NULL DEFAULT '';
     ALTER TABLE refresh_tokens ADD COLUMN idp_sub TEXT NOT NULL DEFAULT '';
     CREATE INDEX refresh_tokens_idp_sid ON refresh_tokens(idp, sid);
     CREATE TABLE oidc_flows (
        state_hash TEXT PRIMARY KEY NOT NULL,
        binding_hash TEXT NOT NULL,
        issuer TEXT NOT NULL,
        nonce TEXT NOT NULL,
        verifier TEXT NOT NULL,
        return_to TEXT NOT NULL,
        expires_at INTEGER NOT NULL
     );
     CREATE INDEX oidc_flows_expires ON oidc_flows(expires_at);
     CREATE TABLE oidc_logout_jtis (
        jti_hash TEXT PRIMARY KEY NOT NULL,
        expires_at INTEGER NOT NULL
     );",
    // v4: SPEC §16 API keys and service accounts
    "ALTER TABLE users ADD COLUMN service INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE api_keys (
        id TEXT PRIMARY KEY NOT NULL,
        username TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        key_hash TEXT NOT NULL,
        roles TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER,
        last_used_at INTEGER,
        updated_ms INTEGER NOT NULL
     );
     CREATE INDEX api_keys_username ON api_keys(username);
     CREATE INDEX api_keys_updated ON api_keys(updated_ms);",
];

/// SPEC §16: `users revoke`/`remove` end the user's keys in their transaction.
fn end_keys_in(tx: &rusqlite::Transaction, username: &str) -> Result<(), StoreError> {
    let now = crate::clock::now_ms() as i64;
    tx.execute(
        "UPDATE api_keys SET revoked_at = ?2, updated_ms = ?2 WHERE username = ?1 AND revoked_at IS NULL",
        params![username, now],
    )
    .map_err(be)?;
    Ok(())
}

const KEY_COLUMNS: &str = "id, username, label, key_hash, roles, created_at, expires_at, revoked_at, last_used_at, updated_ms";

fn row_key(r: &rusqlite::Row) -> rusqlite::Result<ApiKeyRow> {
    let opt = |v: Option<i64>| v.map(|x| x as u64);
    Ok(ApiKeyRow {
        id: r.get(0)?,
        username: r.get(1)?,
        label: r.get(2)?,
        key_hash: r.get(3)?,
        roles: roles_from_text(&r.get::<_, String>(4)?),
        created_at: r.get::<_, i64>(5)? as u64,
        expires_at: opt(r.get(6)?),
        revoked_at: opt(r.get(7)?),
        last_used_at: opt(r.get(8)?),
        updated_ms: r.get::<_, i64>(9)? as u64,
    })
}

fn insert_key(
    c: &Connection,
    k: &ApiKeyRow,
    updated_ms: u64,
    or_ignore: bool,
) -> Result<usize, StoreError> {
    let opt = |v: Option<u64>| v.map(|x| x as i64);
    let sql =
        format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10){}",
        if or_ignore { " ON CONFLICT (id) DO NOTHING" } else { "" }
    );
    match c.execute(
        &sql,
        params![
            k.id,
            k.username,
            k.label,
            k.key_hash,
            roles_to_text(&k.roles),
            k.created_at as i64,
            opt(k.expires_at),
            opt(k.revoked_at),
            opt(k.last_used_at),
            updated_ms as i64
        ],
    ) {
        Ok(n) => Ok(n),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
            Err(StoreError::Conflict)
        }
        Err(e) => Err(be(e)),
    }
}

/// The session columns of `refresh_tokens`, in [`session_of`]'s order.
const SESSION_COLS: &str = "idp, roles, session_start, sid, id_token, idp_sub";

/// The six session columns starting at column `at`.
fn session_of(r: &rusqlite::Row, at: usize) -> rusqlite::Result<SessionInfo> {
    Ok(SessionInfo {
        idp: r.get(at)?,
        roles: roles_from_text(&r.get::<_, String>(at + 1)?),
        session_start: r.get::<_, i64>(at + 2)? as u64,
        sid: r.get(at + 3)?,
        id_token: r.get(at + 4)?,
        idp_sub: r.get(at + 5)?,
    })
}

/// Marks every refresh token of the identity `key` (a `revocation_key`) revoked and
/// records the not-before. `updated_ms` is this machine's clock: SQLite writers
/// share the machine.
fn revoke_in(tx: &rusqlite::Transaction, key: &str, now_ms: u64) -> Result<(), StoreError> {
    let (idp, sub) = split_revocation_key(key);
    tx.execute(
        "UPDATE refresh_tokens SET revoked = 1 WHERE username = ?1 AND idp = ?2 AND revoked = 0",
        params![sub, idp],
    )
    .map_err(be)?;
    let username = key;
    tx.execute(
        "INSERT INTO revocations (username, not_before_ms, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (username) DO UPDATE
         SET not_before_ms = MAX(not_before_ms, excluded.not_before_ms), updated_ms = excluded.updated_ms",
        params![username, now_ms as i64, crate::clock::now_ms() as i64],
    )
    .map_err(be)?;
    Ok(())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(be)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(be)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(be)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(be)?;
        let mut store = SqliteStore {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let conn = self
            .conn
            .get_mut()
            .map_err(|_| StoreError::Backend("poisoned".into()))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(be)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(be)?;
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::Backend(format!(
                "the database schema (v{version}) is newer than this authgate (v{})",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(m).map_err(be)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(be)?;
        }
        tx.commit().map_err(be)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self
            .conn
            .lock()
            .map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
        f(&mut c)
    }
}

fn now_secs() -> u64 {
    crate::clock::now_secs()
}

fn row_user(r: &rusqlite::Row) -> rusqlite::Result<User> {
    Ok(User {
        username: r.get(0)?,
        password_hash: r.get(1)?,
        roles: roles_from_text(&r.get::<_, String>(2)?),
        created_at: r.get::<_, i64>(3)? as u64,
        service: r.get(4)?,
    })
}

impl UserStore for SqliteStore {
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        roles: &[String],
    ) -> Result<(), StoreError> {
        self.with(|c| {
            // The primary key is the uniqueness guarantee: no check-then-insert race.
            match c.execute(
                "INSERT INTO users (username, password_hash, roles, created_at, service) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![username, password_hash, roles_to_text(roles), now_secs() as i64, password_hash == SERVICE_PASSWORD_HASH],
            ) {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
                    Err(StoreError::Conflict)
                }
                Err(e) => Err(be(e)),
            }
        })
    }

    fn get_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT username, password_hash, roles, created_at, service FROM users WHERE username = ?1",
            )
            .and_then(|mut s| s.query_row([username], row_user).optional())
            .map_err(be)
        })
    }

    fn set_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE users SET password_hash = ?2 WHERE username = ?1",
                params![username, password_hash],
            )
            .map(|n| n > 0)
            .map_err(be)
        })
    }

    fn set_roles(&self, username: &str, roles: &[String]) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE users SET roles = ?2 WHERE username = ?1",
                params![username, roles_to_text(roles)],
            )
            .map(|n| n > 0)
            .map_err(be)
        })
    }

    fn remove_user(&self, username: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(be)?;
            let n = tx
                .execute("DELETE FROM users WHERE username = ?1", [username])
                .map_err(be)?;
            if n > 0 {
                revoke_in(&tx, username, crate::clock::now_ms())?;
            }
            end_keys_in(&tx, username)?;
            // Only the local account's sessions: a provider identity of the same
            // name is someone else (SPEC §14).
            tx.execute(
                "DELETE FROM refresh_tokens WHERE username = ?1 AND idp = ''",
                [username],
            )
            .map_err(be)?;
            tx.commit().map_err(be)?;
            Ok(n > 0)
        })
    }

    fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.with(|c| {
            let mut s = c
                .prepare("SELECT username, password_hash, roles, created_at, service FROM users ORDER BY username")
                .map_err(be)?;
            let rows = s.query_map([], row_user).map_err(be)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(be)
        })
    }

    fn insert_refresh(
        &self,
        token_hash: &str,
        family: &str,
        username: &str,
        expires_at: u64,
        session: &SessionInfo,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                &format!("INSERT INTO refresh_tokens (token_hash, family, username, expires_at, {SESSION_COLS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    token_hash,
                    family,
                    username,
                    expires_at as i64,
                    session.idp,
                    roles_to_text(&session.roles),
                    session.session_start as i64,
                    session.sid,
                    session.id_token,
                    session.idp_sub
                ],
            )
            .map(|_| ())
            .map_err(be)
        })
    }

    fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<Rotation, StoreError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(be)?;
            let out = match lookup(&tx, old_hash, now)? {
                Found::Live { username, session } => {
                    tx.execute("UPDATE refresh_tokens SET spent = 1 WHERE token_hash = ?1", [old_hash]).map_err(be)?;
                    // The new token continues the family and its session.
                    tx.execute(
                        &format!("INSERT INTO refresh_tokens (token_hash, family, username, expires_at, {SESSION_COLS})
                         SELECT ?1, family, username, ?2, {SESSION_COLS} FROM refresh_tokens WHERE token_hash = ?3"),
                        params![new_hash, expires_at as i64, old_hash],
                    )
                    .map_err(be)?;
                    Rotation::Rotated { username, session }
                }
                Found::Spent { family, key } => {
                    tx.execute("UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1", [family]).map_err(be)?;
                    revoke_in(&tx, &key, crate::clock::now_ms())?;
                    Rotation::Reused { username: key }
                }
                Found::Dead => Rotation::Invalid,
            };
            tx.commit().map_err(be)?;
            Ok(out)
        })
    }

    fn revoke_family(&self, token_hash: &str, now: u64) -> Result<Rotation, StoreError> {
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(be)?;
            let out = match lookup(&tx, token_hash, now)? {
                Found::Live { username, session } => {
                    tx.execute(
                        "UPDATE refresh_tokens SET revoked = 1 WHERE family = (SELECT family FROM refresh_tokens WHERE token_hash = ?1)",
                        [token_hash],
                    )
                    .map_err(be)?;
                    Rotation::Rotated { username, session }
                }
                Found::Spent { family, key } => {
                    tx.execute(
                        "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
                        [family],
                    )
                    .map_err(be)?;
                    revoke_in(&tx, &key, crate::clock::now_ms())?;
                    Rotation::Reused { username: key }
                }
                Found::Dead => Rotation::Invalid,
            };
            tx.commit().map_err(be)?;
            Ok(out)
        })
    }

    fn revoke_user(&self, username: &str, now_ms: u64) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(be)?;
            revoke_in(&tx, username, now_ms)?;
            end_keys_in(&tx, username)?;
            tx.commit().map_err(be)
        })
    }

    fn revocations_since(&self, after_ms: u64) -> Result<Vec<Revocation>, StoreError> {
        self.with(|c| {
            let mut s = c
                .prepare_cached("SELECT username, not_before_ms, updated_ms FROM revocations WHERE updated_ms > ?1")
                .map_err(be)?;
            let rows = s
                .query_map([after_ms.min(i64::MAX as u64) as i64], |r| {
                    Ok(Revocation {
                        username: r.get(0)?,
                        not_before_ms: r.get::<_, i64>(1)? as u64,
                        updated_ms: r.get::<_, i64>(2)? as u64,
                    })
                })
                .map_err(be)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(be)
        })
    }

    fn live_refresh_tokens(&self, now: u64) -> Result<Vec<RefreshRow>, StoreError> {
        self.with(|c| {
            let mut s = c
                .prepare(&format!(
                    "SELECT token_hash, family, username, expires_at, {SESSION_COLS} FROM refresh_tokens
                     WHERE spent = 0 AND revoked = 0 AND expires_at > ?1 ORDER BY token_hash",
                ))
                .map_err(be)?;
            let rows = s
                .query_map([now as i64], |r| {
                    Ok(RefreshRow {
                        token_hash: r.get(0)?,
                        family: r.get(1)?,
                        username: r.get(2)?,
                        expires_at: r.get::<_, i64>(3)? as u64,
                        session: session_of(r, 4)?,
                    })
                })
                .map_err(be)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(be)
        })
    }

    fn import_user(&self, u: &User) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO users (username, password_hash, roles, created_at, service) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (username) DO NOTHING",
                params![u.username, u.password_hash, roles_to_text(&u.roles), u.created_at as i64, u.service],
            )
            .map(|n| n > 0)
            .map_err(be)
        })
    }

    fn import_refresh(&self, r: &RefreshRow) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute(
                &format!("INSERT INTO refresh_tokens (token_hash, family, username, expires_at, {SESSION_COLS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (token_hash) DO NOTHING"),
                params![
                    r.token_hash,
                    r.family,
                    r.username,
                    r.expires_at as i64,
                    r.session.idp,
                    roles_to_text(&r.session.roles),
                    r.session.session_start as i64,
                    r.session.sid,
                    r.session.id_token,
                    r.session.idp_sub
                ],
            )
            .map(|n| n > 0)
            .map_err(be)
        })
    }

    fn import_revocation(&self, r: &Revocation) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO revocations (username, not_before_ms, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (username) DO UPDATE
                 SET not_before_ms = excluded.not_before_ms, updated_ms = excluded.updated_ms
                 WHERE not_before_ms < excluded.not_before_ms",
                params![
                    r.username,
                    r.not_before_ms as i64,
                    crate::clock::now_ms() as i64
                ],
            )
            .map(|n| n > 0)
            .map_err(be)
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(be))
    }

    fn create_api_key(&self, k: &ApiKeyRow) -> Result<(), StoreError> {
        self.with(|c| insert_key(c, k, crate::clock::now_ms(), false).map(|_| ()))
    }

    fn list_api_keys(&self, username: Option<&str>) -> Result<Vec<ApiKeyRow>, StoreError> {
        self.with(|c| {
            let mut s = c
                .prepare(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE ?1 IS NULL OR username = ?1 ORDER BY username, created_at, id"
                ))
                .map_err(be)?;
            let rows = s.query_map([username], row_key).map_err(be)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(be)
        })
    }

    fn revoke_api_key(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE api_keys SET revoked_at = ?2, updated_ms = ?3 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now_ms as i64, crate::clock::now_ms() as i64],
            )
            .map(|n| n > 0)
            .map_err(be)
        })
    }

    fn api_keys_since(&self, after_ms: u64) -> Result<Vec<ApiKeyRow>, StoreError> {
        self.with(|c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE updated_ms > ?1"
                ))
                .map_err(be)?;
            let rows = s
                .query_map([after_ms.min(i64::MAX as u64) as i64], row_key)
                .map_err(be)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(be)
        })
    }

    fn touch_api_keys(&self, uses: &[(String, u64)]) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction().map_err(be)?;
            for (id, ms) in uses {
                tx.execute(
                    "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?2) WHERE id = ?1",
                    params![id, *ms as i64],
                )
                .map_err(be)?;
            }
            tx.commit().map_err(be)
        })
    }

    fn import_api_key(&self, k: &ApiKeyRow) -> Result<bool, StoreError> {
        self.with(|c| insert_key(c, k, crate::clock::now_ms(), true).map(|n| n > 0))
    }

    fn put_flow(&self, f: &Flow, now: u64) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(be)?;
            tx.execute(
                "DELETE FROM oidc_flows WHERE expires_at <= ?1",
                [now as i64],
            )
            .map_err(be)?;
            tx.execute(
                "INSERT INTO oidc_flows (state_hash, binding_hash, issuer, nonce, verifier, return_to, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    f.state_hash,
                    f.binding_hash,
                    f.issuer,
                    f.nonce,
                    f.verifier,
                    f.return_to,
                    f.expires_at as i64
                ],
            )
            .map_err(be)?;
            tx.commit().map_err(be)
        })
    }

    fn take_flow(
        &self,
        state_hash: &str,
        binding_hash: &str,
        now: u64,
    ) -> Result<Option<Flow>, StoreError> {
        self.with(|c| {
            // One statement: the row is gone for every other caller once read.
            let f = c
                .query_row(
                    "DELETE FROM oidc_flows WHERE state_hash = ?1 AND binding_hash = ?2
                     RETURNING state_hash, binding_hash, issuer, nonce, verifier, return_to, expires_at",
                    [state_hash, binding_hash],
                    |r| {
                        Ok(Flow {
                            state_hash: r.get(0)?,
                            binding_hash: r.get(1)?,
                            issuer: r.get(2)?,
                            nonce: r.get(3)?,
                            verifier: r.get(4)?,
                            return_to: r.get(5)?,
                            expires_at: r.get::<_, i64>(6)? as u64,
                        })
                    },
                )
                .optional()
                .map_err(be)?;
            Ok(f.filter(|f| f.expires_at > now))
        })
    }

    fn record_logout_jti(
        &self,
        jti_hash: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(be)?;
            tx.execute(
                "DELETE FROM oidc_logout_jtis WHERE expires_at <= ?1",
                [now as i64],
            )
            .map_err(be)?;
            let n = tx
                .execute(
                    "INSERT INTO oidc_logout_jtis (jti_hash, expires_at) VALUES (?1, ?2)
                     ON CONFLICT (jti_hash) DO NOTHING",
                    params![jti_hash, expires_at as i64],
                )
                .map_err(be)?;
            tx.commit().map_err(be)?;
            Ok(n > 0)
        })
    }

    fn logout_subjects(
        &self,
        idp: &str,
        idp_sub: Option<&str>,
        sid: Option<&str>,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        if idp.is_empty() || (idp_sub.is_none() && sid.is_none()) {
            return Ok(Vec::new());
        }
        self.with(|c| {
            let mut s = c
                .prepare_cached(
                    "SELECT DISTINCT username FROM refresh_tokens
                     WHERE idp = ?1 AND (?2 IS NULL OR idp_sub = ?2) AND (?3 IS NULL OR sid = ?3)
                       AND expires_at > ?4 ORDER BY username",
                )
                .map_err(be)?;
            let rows = s
                .query_map(params![idp, idp_sub, sid, now as i64], |r| r.get(0))
                .map_err(be)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(be)
        })
    }
}

enum Found {
    Live {
        username: String,
        session: SessionInfo,
    },
    /// `key`: the identity's `revocation_key`, revoked on reuse.
    Spent {
        family: String,
        key: String,
    },
    Dead,
}

fn lookup(tx: &rusqlite::Transaction, hash: &str, now: u64) -> Result<Found, StoreError> {
    type Row = (String, String, i64, bool, bool, SessionInfo);
    let row: Option<Row> = tx
        .query_row(
            &format!("SELECT family, username, expires_at, spent, revoked, {SESSION_COLS} FROM refresh_tokens WHERE token_hash = ?1"),
            [hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, session_of(r, 5)?)),
        )
        .optional()
        .map_err(be)?;
    Ok(match row {
        None => Found::Dead,
        Some((_, _, _, _, true, _)) => Found::Dead,
        Some((family, username, _, true, false, session)) => Found::Spent {
            family,
            key: revocation_key(&session.idp, &username),
        },
        Some((_, _, exp, false, false, _)) if (exp as u64) <= now => Found::Dead,
        Some((_, username, _, false, false, session)) => Found::Live { username, session },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (SqliteStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "authgate-store-{}-{}",
            std::process::id(),
            crate::ids::uuid_v4()
        ));
        let s = SqliteStore::open(&dir.join("sub/users.db")).unwrap();
        (s, dir)
    }

    #[test]
    fn usernames_are_unique_by_constraint() {
        let (s, dir) = store();
        s.create_user("alice", "h", &[]).unwrap();
        assert!(matches!(
            s.create_user("alice", "h2", &[]),
            Err(StoreError::Conflict)
        ));
        assert_eq!(s.get_user("alice").unwrap().unwrap().password_hash, "h");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_reused_refresh_token_revokes_its_family() {
        let (s, dir) = store();
        s.create_user("bob", "h", &["admin".into()]).unwrap();
        s.insert_refresh("t1", "fam", "bob", 2_000_000_000, &SessionInfo::default())
            .unwrap();
        assert_eq!(
            s.rotate_refresh("t1", "t2", 100, 2_000_000_000).unwrap(),
            Rotation::Rotated {
                username: "bob".into(),
                session: SessionInfo::default(),
            }
        );
        assert_eq!(
            s.rotate_refresh("t1", "t3", 100, 2_000_000_000).unwrap(),
            Rotation::Reused {
                username: "bob".into()
            }
        );
        // The newer sibling died with the family.
        assert_eq!(
            s.rotate_refresh("t2", "t4", 100, 2_000_000_000).unwrap(),
            Rotation::Invalid
        );
        assert_eq!(
            s.rotate_refresh("nope", "t5", 100, 2_000_000_000).unwrap(),
            Rotation::Invalid
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn expired_refresh_tokens_are_invalid() {
        let (s, dir) = store();
        s.insert_refresh("t1", "fam", "bob", 50, &SessionInfo::default())
            .unwrap();
        assert_eq!(
            s.rotate_refresh("t1", "t2", 100, 200).unwrap(),
            Rotation::Invalid
        );
        std::fs::remove_dir_all(dir).ok();
    }

    fn sso(sid: &str) -> SessionInfo {
        SessionInfo {
            idp: "corp".into(),
            roles: vec!["staff".into()],
            session_start: 1_000,
            sid: sid.into(),
            id_token: "id.token.sig".into(),
            idp_sub: "u-1".into(),
        }
    }

    fn flow(state: &str, expires_at: u64) -> Flow {
        Flow {
            state_hash: state.into(),
            binding_hash: "b".into(),
            issuer: "corp".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            return_to: "/app".into(),
            expires_at,
        }
    }

    #[test]
    fn a_flow_is_taken_once_and_never_after_it_expires() {
        let (s, dir) = store();
        s.put_flow(&flow("s1", 700), 100).unwrap();
        s.put_flow(&flow("s2", 700), 100).unwrap();
        s.put_flow(&flow("old", 150), 100).unwrap();
        // Another browser's binding neither gets nor spends it.
        assert_eq!(s.take_flow("s1", "other", 200).unwrap(), None);
        assert_eq!(s.take_flow("s1", "b", 200).unwrap(), Some(flow("s1", 700)));
        assert_eq!(s.take_flow("s1", "b", 200).unwrap(), None, "single use");
        // Another tab's flow is untouched.
        assert_eq!(s.take_flow("s2", "b", 200).unwrap(), Some(flow("s2", 700)));
        assert_eq!(s.take_flow("old", "b", 200).unwrap(), None, "expired");
        assert_eq!(s.take_flow("nope", "b", 200).unwrap(), None);
        // put_flow sweeps expired rows.
        s.put_flow(&flow("old2", 150), 100).unwrap();
        s.put_flow(&flow("s3", 900), 300).unwrap();
        let n: i64 = s
            .with(|c| {
                c.query_row("SELECT COUNT(*) FROM oidc_flows", [], |r| r.get(0))
                    .map_err(be)
            })
            .unwrap();
        assert_eq!(n, 1);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn two_connections_racing_for_one_flow_get_it_once() {
        let (s, dir) = store();
        let path = dir.join("sub/users.db");
        s.put_flow(&flow("race", 10_000), 100).unwrap();
        let other = SqliteStore::open(&path).unwrap();
        let got = std::thread::scope(|sc| {
            let a = sc.spawn(|| s.take_flow("race", "b", 200).unwrap());
            let b = sc.spawn(|| other.take_flow("race", "b", 200).unwrap());
            [a.join().unwrap(), b.join().unwrap()]
        });
        assert_eq!(got.iter().filter(|f| f.is_some()).count(), 1);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_sso_session_rotates_with_its_session_and_dies_by_its_own_key() {
        let (s, dir) = store();
        // A local alice and corp's alice are two people.
        s.insert_refresh(
            "local",
            "f0",
            "alice",
            2_000_000_000,
            &SessionInfo::default(),
        )
        .unwrap();
        s.insert_refresh("t1", "f1", "alice", 2_000_000_000, &sso("sid-1"))
            .unwrap();
        assert_eq!(
            s.rotate_refresh("t1", "t2", 100, 2_000_000_000).unwrap(),
            Rotation::Rotated {
                username: "alice".into(),
                session: sso("sid-1")
            }
        );
        let live = s.live_refresh_tokens(100).unwrap();
        let t2 = live.iter().find(|r| r.token_hash == "t2").unwrap();
        assert_eq!(t2.session, sso("sid-1"));
        let by = |idp, sub, sid| s.logout_subjects(idp, sub, sid, 100).unwrap();
        assert_eq!(by("corp", None, Some("sid-1")), ["alice"]);
        assert_eq!(by("corp", Some("u-1"), None), ["alice"]);
        assert_eq!(by("corp", Some("u-1"), Some("sid-1")), ["alice"]);
        assert!(by("corp", Some("u-2"), Some("sid-1")).is_empty());
        assert!(by("corp", None, Some("sid-2")).is_empty());
        assert!(by("other", None, Some("sid-1")).is_empty());
        assert!(by("corp", None, None).is_empty());
        // A family already logged out still names its identity: its access tokens
        // may live on until a back-channel logout revokes them.
        s.revoke_family("t2", 100).unwrap();
        assert_eq!(by("corp", None, Some("sid-1")), ["alice"]);
        s.revoke_user("corp:alice", 5).unwrap();
        assert_eq!(
            s.rotate_refresh("t2", "t3", 100, 2_000_000_000).unwrap(),
            Rotation::Invalid
        );
        // The local account's session lives on.
        assert!(matches!(
            s.rotate_refresh("local", "l2", 100, 2_000_000_000).unwrap(),
            Rotation::Rotated { .. }
        ));
        let keys: Vec<String> = s
            .revocations_since(0)
            .unwrap()
            .into_iter()
            .map(|r| r.username)
            .collect();
        assert_eq!(keys, ["corp:alice"]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn reuse_of_a_sso_refresh_token_revokes_the_provider_identity() {
        let (s, dir) = store();
        s.insert_refresh("t1", "f1", "alice", 2_000_000_000, &sso(""))
            .unwrap();
        s.rotate_refresh("t1", "t2", 100, 2_000_000_000).unwrap();
        assert_eq!(
            s.rotate_refresh("t1", "t3", 100, 2_000_000_000).unwrap(),
            Rotation::Reused {
                username: "corp:alice".into()
            }
        );
        let keys: Vec<String> = s
            .revocations_since(0)
            .unwrap()
            .into_iter()
            .map(|r| r.username)
            .collect();
        assert_eq!(keys, ["corp:alice"]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_logout_jti_is_recorded_once() {
        let (s, dir) = store();
        assert!(s.record_logout_jti("j1", 500, 100).unwrap());
        assert!(!s.record_logout_jti("j1", 500, 200).unwrap(), "replay");
        assert!(s.record_logout_jti("j2", 500, 200).unwrap());
        // Once expired it is swept (a token that old fails its iat check anyway).
        assert!(s.record_logout_jti("j1", 900, 600).unwrap());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_v2_database_migrates_and_its_refresh_tokens_stay_local_users() {
        let dir = std::env::temp_dir().join(format!("authgate-v2-{}", crate::ids::uuid_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute_batch(MIGRATIONS[1]).unwrap();
            c.pragma_update(None, "user_version", 2).unwrap();
            c.execute(
                "INSERT INTO refresh_tokens (token_hash, family, username, expires_at) VALUES ('t', 'f', 'bob', 2000000000)",
                [],
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.rotate_refresh("t", "t2", 100, 2_000_000_000).unwrap(),
            Rotation::Rotated {
                username: "bob".into(),
                session: SessionInfo::default()
            }
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
