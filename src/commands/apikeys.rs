//! `apikeys create|list|revoke` (SPEC §16): offline or while gateways run, on
//! SQLite or PostgreSQL. The key is printed once by `create`; nothing else ever
//! shows its secret or its hash.

use super::*;
use crate::cli::ApikeysCommand;
use crate::store::ApiKeyRow;

pub(super) fn apikeys(path: &Path, cmd: ApikeysCommand) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let store = crate::store::open(
        &config.identity.store,
        crate::store::StoreOptions::of(&config.identity),
    )?;
    let name = |n: &str| {
        crate::identity::username::normalize_username(n).map_err(|e| anyhow!(e.message()))
    };
    match cmd {
        ApikeysCommand::Create {
            user,
            roles,
            expires,
            name: label,
        } => {
            let user = name(&user)?;
            let Some(u) = store.get_user(&user)? else {
                bail!("no user {user:?}");
            };
            // SPEC §16: a key's roles are at most its user's, at creation.
            let roles = match roles {
                Some(r) => parse_roles(&r)?,
                None => u.roles.clone(),
            };
            if let Some(extra) = roles.iter().find(|r| !u.roles.contains(r)) {
                bail!("{user:?} does not hold the role {extra:?}: a key's roles are at most its user's");
            }
            let now = crate::clock::now_ms();
            let expires_at = match expires {
                Some(e) => {
                    let d = crate::config::values::parse_duration(&e)
                        .map_err(|why| anyhow!("--expires {e:?}: {why}"))?;
                    if d.is_zero() {
                        bail!("--expires {e:?}: must be more than zero");
                    }
                    Some(now.saturating_add(d.as_millis() as u64))
                }
                None => None,
            };
            let label = label.unwrap_or_default();
            if label.chars().any(char::is_control) {
                bail!("--name: no control characters");
            }
            let (id, key, key_hash) = crate::verify::api_keys::generate()?;
            store.create_api_key(&ApiKeyRow {
                id: id.clone(),
                username: user.clone(),
                label,
                key_hash,
                roles,
                created_at: now,
                expires_at,
                revoked_at: None,
                last_used_at: None,
                updated_ms: now,
            })?;
            eprintln!(
                "created key {id} for {user}; it is shown once, store it now (works on every gateway within identity.revocation_poll = {:?})",
                config.identity.revocation_poll
            );
            println!("{key}");
        }
        ApikeysCommand::List { user } => {
            let user = user.map(|u| name(&u)).transpose()?;
            println!("id\tuser\tlabel\troles\tcreated\texpires\tlast used\tstate");
            let now = crate::clock::now_ms();
            let time = |ms: Option<u64>| ms.map_or("-".to_string(), |t| format_time(t / 1000));
            for k in store.list_api_keys(user.as_deref())? {
                let state = match (k.revoked_at, k.expires_at) {
                    (Some(_), _) => "revoked",
                    (None, Some(e)) if e <= now => "expired",
                    _ => "active",
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{state}",
                    k.id,
                    k.username,
                    if k.label.is_empty() { "-" } else { &k.label },
                    k.roles.join(","),
                    time(Some(k.created_at)),
                    time(k.expires_at),
                    time(k.last_used_at),
                );
            }
        }
        ApikeysCommand::Revoke { id } => {
            if !store.revoke_api_key(&id, crate::clock::now_ms())? {
                bail!("no live API key {id:?}");
            }
            println!(
                "revoked {id} (every gateway within identity.revocation_poll = {:?})",
                config.identity.revocation_poll
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
