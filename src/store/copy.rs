//! `authgate store copy FROM TO` (SPEC §9): users (hashes, roles, creation
//! time), live refresh tokens, revocations and API keys (SPEC §16: their hashes,
//! revoked ones too, so a revocation is never undone by a copy), from one store
//! to another.
//!
//! Idempotent by construction: every row is inserted only when absent (a
//! revocation only when it moves the not-before later), so a second run writes
//! nothing, and a copy into a store that gateways are already using never
//! overwrites what they wrote (a user who changed password there keeps it).

use super::{StoreError, UserStore};

/// Rows seen in the source and rows actually written, per kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub seen: usize,
    pub copied: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    pub users: Counts,
    pub refresh_tokens: Counts,
    pub revocations: Counts,
    pub api_keys: Counts,
}

impl std::fmt::Display for CopyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = |f: &mut std::fmt::Formatter<'_>, what: &str, c: Counts| {
            writeln!(
                f,
                "{what:<15} {} copied, {} already present",
                c.copied,
                c.seen - c.copied
            )
        };
        line(f, "users", self.users)?;
        line(f, "refresh tokens", self.refresh_tokens)?;
        line(f, "revocations", self.revocations)?;
        line(f, "api keys", self.api_keys)
    }
}

/// Copies everything `from` holds that `to` lacks. `now` (seconds) decides
/// which refresh tokens are still live.
pub fn copy(from: &dyn UserStore, to: &dyn UserStore, now: u64) -> Result<CopyReport, StoreError> {
    let mut r = CopyReport::default();
    // Users first: tokens and revocations name them.
    for u in from.list_users()? {
        r.users.seen += 1;
        if to.import_user(&u)? {
            r.users.copied += 1;
        }
    }
    for t in from.live_refresh_tokens(now)? {
        r.refresh_tokens.seen += 1;
        if to.import_refresh(&t)? {
            r.refresh_tokens.copied += 1;
        }
    }
    for v in from.revocations_since(0)? {
        r.revocations.seen += 1;
        if to.import_revocation(&v)? {
            r.revocations.copied += 1;
        }
    }
    for k in from.list_api_keys(None)? {
        r.api_keys.seen += 1;
        if to.import_api_key(&k)? {
            r.api_keys.copied += 1;
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Rotation, SessionInfo};

    fn temp(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "authgate-copy-{tag}-{}-{}/users.db",
            std::process::id(),
            crate::ids::uuid_v4()
        ))
    }

    #[test]
    fn a_second_copy_writes_nothing_and_spent_tokens_stay_behind() {
        let (pa, pb) = (temp("a"), temp("b"));
        let a = SqliteStore::open(&pa).unwrap();
        let b = SqliteStore::open(&pb).unwrap();
        a.create_user("alice", "h1", &["admin".into()]).unwrap();
        a.create_user("bob", "h2", &[]).unwrap();
        a.insert_refresh(
            "live",
            "f1",
            "alice",
            2_000_000_000,
            &SessionInfo::default(),
        )
        .unwrap();
        a.insert_refresh("old", "f2", "bob", 2_000_000_000, &SessionInfo::default())
            .unwrap();
        assert!(matches!(
            a.rotate_refresh("old", "new", 100, 2_000_000_000).unwrap(),
            Rotation::Rotated { .. }
        ));
        a.insert_refresh("expired", "f3", "bob", 50, &SessionInfo::default())
            .unwrap();
        // SPEC §14: an SSO session travels with its provider, roles, sid and ID token.
        let sso = SessionInfo {
            idp: "corp".into(),
            roles: vec!["staff".into()],
            session_start: 99,
            sid: "s1".into(),
            id_token: "h.p.s".into(),
            idp_sub: "u1".into(),
        };
        a.insert_refresh("sso", "f4", "alice@example.com", 2_000_000_000, &sso)
            .unwrap();
        a.revoke_user("bob", 1234).unwrap();
        // bob's revocation killed "new" as well: only alice's token is live.
        let first = copy(&a, &b, 100).unwrap();
        assert_eq!(first.users, Counts { seen: 2, copied: 2 });
        assert_eq!(first.refresh_tokens, Counts { seen: 2, copied: 2 });
        assert_eq!(first.revocations, Counts { seen: 1, copied: 1 });
        let second = copy(&a, &b, 100).unwrap();
        assert_eq!(second.users.copied, 0);
        assert_eq!(second.refresh_tokens.copied, 0);
        assert_eq!(second.revocations.copied, 0);
        let alice = b.get_user("alice").unwrap().unwrap();
        assert_eq!(alice, a.get_user("alice").unwrap().unwrap());
        assert_eq!(
            b.rotate_refresh("live", "x", 100, 2_000_000_000).unwrap(),
            Rotation::Rotated {
                username: "alice".into(),
                session: SessionInfo::default(),
            }
        );
        assert_eq!(b.revocations_since(0).unwrap()[0].not_before_ms, 1234);
        assert_eq!(
            b.rotate_refresh("sso", "y", 100, 2_000_000_000).unwrap(),
            Rotation::Rotated {
                username: "alice@example.com".into(),
                session: sso,
            }
        );
        for p in [pa, pb] {
            std::fs::remove_dir_all(p.parent().unwrap()).ok();
        }
    }
}
