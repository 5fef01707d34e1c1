//! PostgreSQL store (SPEC §9): one database shared by every gateway.
//!
//! Design: the `UserStore` trait stays synchronous. This store owns a small
//! tokio runtime of its own (two threads that run the pooled connections) and
//! each call `block_on`s its query under `identity.store_timeout`. Callers
//! already run store calls on `spawn_blocking` threads, so no store call ever
//! runs on an event-loop worker (SPEC §13), the SQLite store and the CLI keep one
//! code path, and a dead database costs a blocking thread for at most the
//! timeout, never a worker.
//!
//! Exactly-once comes from the database, not from check-then-act: usernames are
//! unique by primary key, and a refresh rotation is one statement whose
//! `UPDATE ... WHERE NOT spent` takes the row lock, so of two gateways presenting
//! one token at once exactly one sees the row unspent.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tokio_postgres::error::SqlState;

use super::{
    pg_tls, revocation_key, roles_from_text, roles_to_text, split_revocation_key, ApiKeyRow, Flow,
    RefreshRow, Revocation, Rotation, SessionInfo, StoreError, StoreOptions, User, UserStore,
    SERVICE_PASSWORD_HASH,
};

/// The schema this binary knows. A database at a higher version is refused.
const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE users (
        username TEXT PRIMARY KEY CHECK (username = lower(username)),
        password_hash TEXT NOT NULL,
        roles TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL
     );
     CREATE TABLE refresh_tokens (
        token_hash TEXT PRIMARY KEY,
        family TEXT NOT NULL,
        username TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        spent BOOLEAN NOT NULL DEFAULT false,
        revoked BOOLEAN NOT NULL DEFAULT false
     );
     CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
     CREATE INDEX refresh_tokens_username ON refresh_tokens(username);
     CREATE TABLE revocations (
        username TEXT PRIMARY KEY,
        not_before_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
     );
     CREATE INDEX revocations_updated ON revocations(updated_ms);",
    // v2: nothing. SQLite's v2 (revocations) is part of v1 here; this keeps the
    // schema versions of the two stores equal from v3 on.
    "-- v2: aligned with SQLite",
    // v3: SPEC §14 sign-in through a provider. Refresh rows carry their session
    // (defaults: an own user's), open flows are shared by every gateway, and a
    // back-channel logout token's jti is used once.
    "ALTER TABLE refresh_tokens ADD COLUMN idp TEXT NOT NULL DEFAULT '';
     ALTER TABLE refresh_tokens ADD COLUMN roles TEXT NOT NULL DEFAULT '';
     ALTER TABLE refresh_tokens ADD COLUMN session_start BIGINT NOT NULL DEFAULT 0;
     ALTER TABLE refresh_tokens ADD COLUMN sid TEXT NOT NULL DEFAULT '';
     ALTER TABLE refresh_tokens ADD COLUMN id_token TEXT NOT NULL DEFAULT '';
     ALTER TABLE refresh_tokens ADD COLUMN idp_sub TEXT NOT NULL DEFAULT '';
     CREATE INDEX refresh_tokens_idp_sid ON refresh_tokens(idp, sid);
     CREATE TABLE oidc_flows (
        state_hash TEXT PRIMARY KEY,
        binding_hash TEXT NOT NULL,
        issuer TEXT NOT NULL,
        nonce TEXT NOT NULL,
        verifier TEXT NOT NULL,
        return_to TEXT NOT NULL,
        expires_at BIGINT NOT NULL
     );
     CREATE INDEX oidc_flows_expires ON oidc_flows(expires_at);
     CREATE TABLE oidc_logout_jtis (
        jti_hash TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
     );",
    // v4: SPEC §16 API keys and service accounts
    "ALTER TABLE users ADD COLUMN service BOOLEAN NOT NULL DEFAULT false;
     CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        key_hash TEXT NOT NULL,
        roles TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        revoked_at BIGINT,
        last_used_at BIGINT,
        updated_ms BIGINT NOT NULL
     );
     CREATE INDEX api_keys_username ON api_keys(username);
     CREATE INDEX api_keys_updated ON api_keys(updated_ms);",
];

const KEY_COLUMNS: &str = "id, username, label, key_hash, roles, created_at, expires_at, revoked_at, last_used_at, updated_ms";

fn key_of(r: &tokio_postgres::Row) -> ApiKeyRow {
    let opt = |v: Option<i64>| v.map(|x| x as u64);
    ApiKeyRow {
        id: r.get(0),
        username: r.get(1),
        label: r.get(2),
        key_hash: r.get(3),
        roles: roles_from_text(r.get::<_, &str>(4)),
        created_at: r.get::<_, i64>(5) as u64,
        expires_at: opt(r.get(6)),
        revoked_at: opt(r.get(7)),
        last_used_at: opt(r.get(8)),
        updated_ms: r.get::<_, i64>(9) as u64,
    }
}

/// SPEC §16: `users revoke`/`remove` end the user's keys in their transaction.
async fn end_keys_in(
    tx: &deadpool_postgres::Transaction<'_>,
    username: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "UPDATE api_keys SET revoked_at = $2, updated_ms = {DB_NOW_MS}
             WHERE username = $1 AND revoked_at IS NULL"
        ),
        &[&username, &(now_ms as i64)],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

async fn insert_key(c: &Object, k: &ApiKeyRow, or_ignore: bool) -> Result<u64, StoreError> {
    let opt = |v: Option<u64>| v.map(|x| x as i64);
    let roles = roles_to_text(&k.roles);
    let sql = format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {DB_NOW_MS}){}",
        if or_ignore { " ON CONFLICT (id) DO NOTHING" } else { "" }
    );
    c.execute(
        &sql,
        &[
            &k.id,
            &k.username,
            &k.label,
            &k.key_hash,
            &roles,
            &(k.created_at as i64),
            &opt(k.expires_at),
            &opt(k.revoked_at),
            &opt(k.last_used_at),
        ],
    )
    .await
    .map_err(pg_err)
}

/// The session columns of `refresh_tokens`, in [`session_of`]'s order.
const SESSION_COLS: &str = "idp, roles, session_start, sid, id_token, idp_sub";

/// The six session columns starting at column `at`.
fn session_of(r: &tokio_postgres::Row, at: usize) -> SessionInfo {
    SessionInfo {
        idp: r.get(at),
        roles: roles_from_text(r.get::<_, &str>(at + 1)),
        session_start: r.get::<_, i64>(at + 2) as u64,
        sid: r.get(at + 3),
        id_token: r.get(at + 4),
        idp_sub: r.get(at + 5),
    }
}

/// `pg_advisory_xact_lock` key for migrations ("authgate" in ASCII, truncated).
const MIGRATION_LOCK: i64 = 0x6175_7468_6761_7465;

/// The database's clock in milliseconds: revocation rows are ordered by it, so
/// pollers on machines with different clocks still see every change.
const DB_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

pub struct PostgresStore {
    /// Taken out on drop: a runtime must not be dropped inside another one.
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    timeout: Duration,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) if *db.code() == SqlState::UNIQUE_VIOLATION => StoreError::Conflict,
        Some(db) => {
            let c = db.code().code();
            // Connection exceptions, shutdowns, too many connections: the store is down.
            if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") {
                StoreError::Unavailable(db.message().to_string())
            } else {
                StoreError::Backend(db.message().to_string())
            }
        }
        // No server answer at all: closed connection, I/O error, TLS failure.
        None => StoreError::Unavailable(e.to_string()),
    }
}

fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg_err(e),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn user_of(r: &tokio_postgres::Row) -> User {
    User {
        username: r.get(0),
        password_hash: r.get(1),
        roles: roles_from_text(r.get::<_, &str>(2)),
        created_at: r.get::<_, i64>(3) as u64,
        service: r.get(4),
    }
}

/// Checks a URL's syntax and TLS settings without connecting (`authgate check`).
pub fn validate_url(url: &str) -> Result<(), String> {
    let t = pg_tls::parse(url)?;
    pg_tls::connector(&t).map(|_| ())
}

impl PostgresStore {
    /// Connects, then creates or migrates the tables under an advisory lock.
    pub fn open(url: &str, opts: StoreOptions) -> Result<PostgresStore, StoreError> {
        let mut target = pg_tls::parse(url).map_err(StoreError::Backend)?;
        let tls = pg_tls::connector(&target).map_err(StoreError::Backend)?;
        target.config.connect_timeout(opts.timeout);
        target.config.application_name("authgate");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("authgate-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot start the store runtime: {e}")))?;
        let manager = Manager::from_config(
            target.config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(opts.timeout))
            .create_timeout(Some(opts.timeout))
            .recycle_timeout(Some(opts.timeout))
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let store = PostgresStore {
            rt: Some(rt),
            pool,
            timeout: opts.timeout,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Runs `f` on a pooled connection, bounded by `store_timeout` in all
    /// (waiting for a connection, connecting, the queries).
    fn call<T>(
        &self,
        limit: Duration,
        f: impl AsyncFnOnce(&mut Object) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("store closed".into()))?;
        rt.block_on(async {
            let work = async {
                let mut c = self.pool.get().await.map_err(pool_err)?;
                f(&mut c).await
            };
            match tokio::time::timeout(limit, work).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "no answer within {}ms",
                    limit.as_millis()
                ))),
            }
        })
    }

    fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut Object) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.call(self.timeout, f)
    }

    /// SPEC §9: tables created or migrated at start under `pg_advisory_xact_lock`,
    /// so gateways starting together on an empty database all come up; a schema
    /// newer than this binary is refused.
    fn migrate(&self) -> Result<(), StoreError> {
        // Waiting for another gateway's migration may take longer than one call.
        let limit = self.timeout.max(Duration::from_secs(30));
        self.call(limit, async |c| {
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg_err)?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS authgate_schema (version INTEGER NOT NULL)")
                .await
                .map_err(pg_err)?;
            let version: i32 = match tx
                .query_opt("SELECT version FROM authgate_schema", &[])
                .await
                .map_err(pg_err)?
            {
                Some(r) => r.get(0),
                None => {
                    tx.execute("INSERT INTO authgate_schema (version) VALUES (0)", &[])
                        .await
                        .map_err(pg_err)?;
                    0
                }
            };
            let known = MIGRATIONS.len() as i32;
            if version > known {
                return Err(StoreError::Backend(format!(
                    "the database schema (v{version}) is newer than this authgate (v{known}); upgrade authgate"
                )));
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.batch_execute(m).await.map_err(pg_err)?;
                tx.execute(
                    "UPDATE authgate_schema SET version = $1",
                    &[&(i as i32 + 1)],
                )
                .await
                .map_err(pg_err)?;
            }
            tx.commit().await.map_err(pg_err)
        })
    }
}

/// Marks every refresh token of the identity `key` (a `revocation_key`) revoked and
/// records the not-before.
async fn revoke_in(
    tx: &deadpool_postgres::Transaction<'_>,
    key: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let (idp, sub) = split_revocation_key(key);
    tx.execute(
        "UPDATE refresh_tokens SET revoked = true WHERE username = $1 AND idp = $2 AND NOT revoked",
        &[&sub, &idp],
    )
    .await
    .map_err(pg_err)?;
    let username = key;
    tx.execute(
        &format!(
            "INSERT INTO revocations (username, not_before_ms, updated_ms) VALUES ($1, $2, {DB_NOW_MS})
             ON CONFLICT (username) DO UPDATE
             SET not_before_ms = GREATEST(revocations.not_before_ms, EXCLUDED.not_before_ms),
                 updated_ms = EXCLUDED.updated_ms"
        ),
        &[&username, &(now_ms as i64)],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

impl UserStore for PostgresStore {
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        roles: &[String],
    ) -> Result<(), StoreError> {
        let roles = roles_to_text(roles);
        let now = crate::clock::now_secs() as i64;
        let service = password_hash == SERVICE_PASSWORD_HASH;
        self.run(async |c| {
            // The primary key decides: of N concurrent registrations one inserts.
            let st = c
                .prepare_cached("INSERT INTO users (username, password_hash, roles, created_at, service) VALUES ($1, $2, $3, $4, $5)")
                .await
                .map_err(pg_err)?;
            c.execute(&st, &[&username, &password_hash, &roles, &now, &service])
                .await
                .map_err(pg_err)?;
            Ok(())
        })
    }

    fn get_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.run(async |c| {
            let st = c
                .prepare_cached("SELECT username, password_hash, roles, created_at, service FROM users WHERE username = $1")
                .await
                .map_err(pg_err)?;
            let row = c.query_opt(&st, &[&username]).await.map_err(pg_err)?;
            Ok(row.as_ref().map(user_of))
        })
    }

    fn set_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
        self.run(async |c| {
            let n = c
                .execute(
                    "UPDATE users SET password_hash = $2 WHERE username = $1",
                    &[&username, &password_hash],
                )
                .await
                .map_err(pg_err)?;
            Ok(n > 0)
        })
    }

    fn set_roles(&self, username: &str, roles: &[String]) -> Result<bool, StoreError> {
        let roles = roles_to_text(roles);
        self.run(async |c| {
            let n = c
                .execute(
                    "UPDATE users SET roles = $2 WHERE username = $1",
                    &[&username, &roles],
                )
                .await
                .map_err(pg_err)?;
            Ok(n > 0)
        })
    }

    fn remove_user(&self, username: &str) -> Result<bool, StoreError> {
        let now_ms = crate::clock::now_ms();
        self.run(async |c| {
            let tx = c.transaction().await.map_err(pg_err)?;
            let n = tx
                .execute("DELETE FROM users WHERE username = $1", &[&username])
                .await
                .map_err(pg_err)?;
            if n > 0 {
                revoke_in(&tx, username, now_ms).await?;
            }
            end_keys_in(&tx, username, now_ms).await?;
            // Only the local account's sessions: a provider identity of the same
            // name is someone else (SPEC §14).
            tx.execute(
                "DELETE FROM refresh_tokens WHERE username = $1 AND idp = ''",
                &[&username],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)?;
            Ok(n > 0)
        })
    }

    fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.run(async |c| {
            let rows = c
                .query(
                    "SELECT username, password_hash, roles, created_at, service FROM users ORDER BY username",
                    &[],
                )
                .await
                .map_err(pg_err)?;
            Ok(rows.iter().map(user_of).collect())
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
        let exp = expires_at as i64;
        let roles = roles_to_text(&session.roles);
        let start = session.session_start as i64;
        self.run(async |c| {
            let st = c
                .prepare_cached(&format!(
                    "INSERT INTO refresh_tokens (token_hash, family, username, expires_at, {SESSION_COLS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ))
                .await
                .map_err(pg_err)?;
            c.execute(
                &st,
                &[
                    &token_hash,
                    &family,
                    &username,
                    &exp,
                    &session.idp,
                    &roles,
                    &start,
                    &session.sid,
                    &session.id_token,
                    &session.idp_sub,
                ],
            )
            .await
            .map_err(pg_err)?;
            Ok(())
        })
    }

    fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<Rotation, StoreError> {
        let (now, exp) = (now as i64, expires_at as i64);
        let now_ms = crate::clock::now_ms();
        self.run(async |c| {
            // SPEC §9: one atomic statement. The UPDATE takes the row lock; a
            // concurrent rotation of the same token waits, re-checks `NOT spent`
            // and finds nothing, so exactly one caller gets the new token.
            // The new token continues the family and its session (SPEC §14).
            let st = c
                .prepare_cached(&format!(
                    "WITH old AS (
                        UPDATE refresh_tokens SET spent = true
                        WHERE token_hash = $1 AND NOT spent AND NOT revoked AND expires_at > $3
                        RETURNING family, username, {SESSION_COLS})
                     INSERT INTO refresh_tokens (token_hash, family, username, expires_at, {SESSION_COLS})
                     SELECT $2, family, username, $4, {SESSION_COLS} FROM old
                     RETURNING username, {SESSION_COLS}",
                ))
                .await
                .map_err(pg_err)?;
            if let Some(r) = c
                .query_opt(&st, &[&old_hash, &new_hash, &now, &exp])
                .await
                .map_err(pg_err)?
            {
                return Ok(Rotation::Rotated {
                    username: r.get(0),
                    session: session_of(&r, 1),
                });
            }
            // Not rotated: a reuse of a spent token kills its family and revokes
            // the user's access tokens, in one transaction.
            let tx = c.transaction().await.map_err(pg_err)?;
            let spent = tx
                .query_opt(
                    "SELECT family, username, idp FROM refresh_tokens
                     WHERE token_hash = $1 AND spent AND NOT revoked FOR UPDATE",
                    &[&old_hash],
                )
                .await
                .map_err(pg_err)?;
            let out = match spent {
                Some(r) => {
                    let (family, username, idp): (String, String, String) =
                        (r.get(0), r.get(1), r.get(2));
                    tx.execute(
                        "UPDATE refresh_tokens SET revoked = true WHERE family = $1",
                        &[&family],
                    )
                    .await
                    .map_err(pg_err)?;
                    let key = revocation_key(&idp, &username);
                    revoke_in(&tx, &key, now_ms).await?;
                    Rotation::Reused { username: key }
                }
                None => Rotation::Invalid,
            };
            tx.commit().await.map_err(pg_err)?;
            Ok(out)
        })
    }

    fn revoke_family(&self, token_hash: &str, now: u64) -> Result<Rotation, StoreError> {
        let now = now as i64;
        let now_ms = crate::clock::now_ms();
        self.run(async |c| {
            let tx = c.transaction().await.map_err(pg_err)?;
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT family, username, expires_at, spent, {SESSION_COLS} FROM refresh_tokens
                         WHERE token_hash = $1 AND NOT revoked FOR UPDATE"
                    ),
                    &[&token_hash],
                )
                .await
                .map_err(pg_err)?;
            let out = match row {
                None => Rotation::Invalid,
                Some(r) => {
                    let (family, username): (String, String) = (r.get(0), r.get(1));
                    let (exp, spent): (i64, bool) = (r.get(2), r.get(3));
                    let session = session_of(&r, 4);
                    if !spent && exp <= now {
                        Rotation::Invalid
                    } else {
                        tx.execute(
                            "UPDATE refresh_tokens SET revoked = true WHERE family = $1",
                            &[&family],
                        )
                        .await
                        .map_err(pg_err)?;
                        if spent {
                            let key = revocation_key(&session.idp, &username);
                            revoke_in(&tx, &key, now_ms).await?;
                            Rotation::Reused { username: key }
                        } else {
                            Rotation::Rotated { username, session }
                        }
                    }
                }
            };
            tx.commit().await.map_err(pg_err)?;
            Ok(out)
        })
    }

    fn revoke_user(&self, username: &str, now_ms: u64) -> Result<(), StoreError> {
        self.run(async |c| {
            let tx = c.transaction().await.map_err(pg_err)?;
            revoke_in(&tx, username, now_ms).await?;
            end_keys_in(&tx, username, now_ms).await?;
            tx.commit().await.map_err(pg_err)
        })
    }

    fn revocations_since(&self, after_ms: u64) -> Result<Vec<Revocation>, StoreError> {
        let after = after_ms.min(i64::MAX as u64) as i64;
        self.run(async |c| {
            let st = c
                .prepare_cached("SELECT username, not_before_ms, updated_ms FROM revocations WHERE updated_ms > $1")
                .await
                .map_err(pg_err)?;
            let rows = c.query(&st, &[&after]).await.map_err(pg_err)?;
            Ok(rows
                .iter()
                .map(|r| Revocation {
                    username: r.get(0),
                    not_before_ms: r.get::<_, i64>(1) as u64,
                    updated_ms: r.get::<_, i64>(2) as u64,
                })
                .collect())
        })
    }

    fn live_refresh_tokens(&self, now: u64) -> Result<Vec<RefreshRow>, StoreError> {
        let now = now as i64;
        self.run(async |c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT token_hash, family, username, expires_at, {SESSION_COLS} FROM refresh_tokens
                         WHERE NOT spent AND NOT revoked AND expires_at > $1 ORDER BY token_hash"
                    ),
                    &[&now],
                )
                .await
                .map_err(pg_err)?;
            Ok(rows
                .iter()
                .map(|r| RefreshRow {
                    token_hash: r.get(0),
                    family: r.get(1),
                    username: r.get(2),
                    expires_at: r.get::<_, i64>(3) as u64,
                    session: session_of(r, 4),
                })
                .collect())
        })
    }

    fn import_user(&self, u: &User) -> Result<bool, StoreError> {
        let roles = roles_to_text(&u.roles);
        let created = u.created_at as i64;
        self.run(async |c| {
            let n = c
                .execute(
                    "INSERT INTO users (username, password_hash, roles, created_at, service) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (username) DO NOTHING",
                    &[&u.username, &u.password_hash, &roles, &created, &u.service],
                )
                .await
                .map_err(pg_err)?;
            Ok(n > 0)
        })
    }

    fn import_refresh(&self, r: &RefreshRow) -> Result<bool, StoreError> {
        let exp = r.expires_at as i64;
        let roles = roles_to_text(&r.session.roles);
        let start = r.session.session_start as i64;
        self.run(async |c| {
            let n = c
                .execute(
                    &format!(
                        "INSERT INTO refresh_tokens (token_hash, family, username, expires_at, {SESSION_COLS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                         ON CONFLICT (token_hash) DO NOTHING"
                    ),
                    &[
                        &r.token_hash,
                        &r.family,
                        &r.username,
                        &exp,
                        &r.session.idp,
                        &roles,
                        &start,
                        &r.session.sid,
                        &r.session.id_token,
                        &r.session.idp_sub,
                    ],
                )
                .await
                .map_err(pg_err)?;
            Ok(n > 0)
        })
    }

    fn import_revocation(&self, r: &Revocation) -> Result<bool, StoreError> {
        let nb = r.not_before_ms as i64;
        self.run(async |c| {
            let n = c
                .execute(
                    &format!(
                        "INSERT INTO revocations (username, not_before_ms, updated_ms) VALUES ($1, $2, {DB_NOW_MS})
                         ON CONFLICT (username) DO UPDATE
                         SET not_before_ms = EXCLUDED.not_before_ms, updated_ms = EXCLUDED.updated_ms
                         WHERE revocations.not_before_ms < EXCLUDED.not_before_ms"
                    ),
                    &[&r.username, &nb],
                )
                .await
                .map_err(pg_err)?;
            Ok(n > 0)
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.run(async |c| {
            c.simple_query("SELECT 1").await.map_err(pg_err)?;
            Ok(())
        })
    }

    fn create_api_key(&self, k: &ApiKeyRow) -> Result<(), StoreError> {
        self.run(async |c| insert_key(c, k, false).await.map(|_| ()))
    }

    fn list_api_keys(&self, username: Option<&str>) -> Result<Vec<ApiKeyRow>, StoreError> {
        self.run(async |c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys WHERE $1::TEXT IS NULL OR username = $1
                         ORDER BY username, created_at, id"
                    ),
                    &[&username],
                )
                .await
                .map_err(pg_err)?;
            Ok(rows.iter().map(key_of).collect())
        })
    }

    fn revoke_api_key(&self, id: &str, now_ms: u64) -> Result<bool, StoreError> {
        let now = now_ms as i64;
        self.run(async |c| {
            let n = c
                .execute(
                    &format!(
                        "UPDATE api_keys SET revoked_at = $2, updated_ms = {DB_NOW_MS}
                         WHERE id = $1 AND revoked_at IS NULL"
                    ),
                    &[&id, &now],
                )
                .await
                .map_err(pg_err)?;
            Ok(n > 0)
        })
    }

    fn api_keys_since(&self, after_ms: u64) -> Result<Vec<ApiKeyRow>, StoreError> {
        let after = after_ms.min(i64::MAX as u64) as i64;
        self.run(async |c| {
            let st = c
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE updated_ms > $1"
                ))
                .await
                .map_err(pg_err)?;
            let rows = c.query(&st, &[&after]).await.map_err(pg_err)?;
            Ok(rows.iter().map(key_of).collect())
        })
    }

    fn touch_api_keys(&self, uses: &[(String, u64)]) -> Result<(), StoreError> {
        let ids: Vec<&str> = uses.iter().map(|(id, _)| id.as_str()).collect();
        let times: Vec<i64> = uses.iter().map(|(_, ms)| *ms as i64).collect();
        self.run(async |c| {
            // One statement for the whole batch.
            c.execute(
                "UPDATE api_keys k SET last_used_at = GREATEST(COALESCE(k.last_used_at, 0), u.ms)
                 FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS u(id, ms) WHERE k.id = u.id",
                &[&ids, &times],
            )
            .await
            .map_err(pg_err)?;
            Ok(())
        })
    }

    fn import_api_key(&self, k: &ApiKeyRow) -> Result<bool, StoreError> {
        self.run(async |c| insert_key(c, k, true).await.map(|n| n > 0))
    }

    fn put_flow(&self, f: &Flow, now: u64) -> Result<(), StoreError> {
        let (now, exp) = (now as i64, f.expires_at as i64);
        self.run(async |c| {
            c.execute("DELETE FROM oidc_flows WHERE expires_at <= $1", &[&now])
                .await
                .map_err(pg_err)?;
            let st = c
                .prepare_cached(
                    "INSERT INTO oidc_flows (state_hash, binding_hash, issuer, nonce, verifier, return_to, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await
                .map_err(pg_err)?;
            c.execute(
                &st,
                &[
                    &f.state_hash,
                    &f.binding_hash,
                    &f.issuer,
                    &f.nonce,
                    &f.verifier,
                    &f.return_to,
                    &exp,
                ],
            )
            .await
            .map_err(pg_err)?;
            Ok(())
        })
    }

    fn take_flow(
        &self,
        state_hash: &str,
        binding_hash: &str,
        now: u64,
    ) -> Result<Option<Flow>, StoreError> {
        self.run(async |c| {
            // DELETE ... RETURNING takes the row lock: of two gateways presenting
            // one state at once, the second finds nothing (SPEC §14: usable once).
            let st = c
                .prepare_cached(
                    "DELETE FROM oidc_flows WHERE state_hash = $1 AND binding_hash = $2
                     RETURNING state_hash, binding_hash, issuer, nonce, verifier, return_to, expires_at",
                )
                .await
                .map_err(pg_err)?;
            let row = c
                .query_opt(&st, &[&state_hash, &binding_hash])
                .await
                .map_err(pg_err)?;
            Ok(row
                .map(|r| Flow {
                    state_hash: r.get(0),
                    binding_hash: r.get(1),
                    issuer: r.get(2),
                    nonce: r.get(3),
                    verifier: r.get(4),
                    return_to: r.get(5),
                    expires_at: r.get::<_, i64>(6) as u64,
                })
                .filter(|f| f.expires_at > now))
        })
    }

    fn record_logout_jti(
        &self,
        jti_hash: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (now, exp) = (now as i64, expires_at as i64);
        self.run(async |c| {
            c.execute(
                "DELETE FROM oidc_logout_jtis WHERE expires_at <= $1",
                &[&now],
            )
            .await
            .map_err(pg_err)?;
            // The primary key decides: of two gateways, one inserts.
            let n = c
                .execute(
                    "INSERT INTO oidc_logout_jtis (jti_hash, expires_at) VALUES ($1, $2)
                     ON CONFLICT (jti_hash) DO NOTHING",
                    &[&jti_hash, &exp],
                )
                .await
                .map_err(pg_err)?;
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
        let now = now as i64;
        self.run(async |c| {
            let rows = c
                .query(
                    "SELECT DISTINCT username FROM refresh_tokens
                     WHERE idp = $1 AND ($2::TEXT IS NULL OR idp_sub = $2) AND ($3::TEXT IS NULL OR sid = $3)
                       AND expires_at > $4 ORDER BY username",
                    &[&idp, &idp_sub, &sid, &now],
                )
                .await
                .map_err(pg_err)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}
