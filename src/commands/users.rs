//! `users ...`: manage the user store, offline or while gateways run.

use super::*;

pub(super) fn read_password(prompt: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    if tty {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        // Best effort: no echo while typing.
        let _ = std::process::Command::new("stty").arg("-echo").status();
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if tty {
        let _ = std::process::Command::new("stty").arg("echo").status();
        eprintln!();
    }
    read.context("cannot read the password")?;
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        bail!("no password given (type it at the prompt or pipe one line to stdin)");
    }
    Ok(pw.to_string())
}

pub(super) fn parse_roles(s: &str) -> anyhow::Result<Vec<String>> {
    let roles: Vec<String> = s
        .split(',')
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    for r in &roles {
        if !r
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'))
        {
            bail!("role {r:?}: use letters, digits and . _ - : /");
        }
    }
    Ok(roles)
}

pub(super) fn users(path: &Path, cmd: UsersCommand) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let store = crate::store::open(
        &config.identity.store,
        crate::store::StoreOptions::of(&config.identity),
    )?;
    let id = &config.identity;
    let check_len = |pw: &str| -> anyhow::Result<()> {
        let n = pw.chars().count();
        if n < id.min_password_length || n > id.max_password_length {
            bail!(
                "password must be {} to {} characters",
                id.min_password_length,
                id.max_password_length
            );
        }
        Ok(())
    };
    // SPEC §18: each change is appended to the audit log by this process.
    let audit = |action: &'static str, roles: Option<&[String]>, user: &str| {
        let ev = crate::audit::Event::UserChange { action, roles };
        crate::audit::cli_event(config.audit.as_ref(), ev, Some(user));
    };
    let name = |n: &str| {
        crate::identity::username::normalize_username(n).map_err(|e| anyhow!(e.message()))
    };
    match cmd {
        UsersCommand::Add {
            name: n,
            roles,
            service,
        } => {
            let n = name(&n)?;
            let roles = parse_roles(&roles)?;
            let hash = if service {
                // SPEC §16: no password at all, so no prompt.
                crate::store::SERVICE_PASSWORD_HASH.to_string()
            } else {
                let pw = read_password("Password: ")?;
                check_len(&pw)?;
                crate::identity::passwords::hash_now(id.password_hash, &pw)?
            };
            store.create_user(&n, &hash, &roles).map_err(|e| match e {
                crate::store::StoreError::Conflict => anyhow!("user {n:?} already exists"),
                other => anyhow!(other),
            })?;
            audit("add", Some(&roles), &n);
            println!(
                "added {n}{}",
                if service { " (service account)" } else { "" }
            );
        }
        UsersCommand::Remove { name: n } => {
            let n = name(&n)?;
            if !store.remove_user(&n)? {
                bail!("no user {n:?}");
            }
            audit("remove", None, &n);
            println!("removed {n} (and revoked their tokens)");
        }
        UsersCommand::List => {
            for u in store.list_users()? {
                println!(
                    "{}\t{}\t{}",
                    u.username,
                    u.roles.join(","),
                    format_time(u.created_at)
                );
            }
        }
        UsersCommand::SetPassword { name: n } => {
            let n = name(&n)?;
            match store.get_user(&n)? {
                None => bail!("no user {n:?}"),
                Some(u) if u.service => {
                    bail!("{n:?} is a service account: it has no password (use API keys)")
                }
                Some(_) => {}
            }
            let pw = read_password("New password: ")?;
            check_len(&pw)?;
            let hash = crate::identity::passwords::hash_now(id.password_hash, &pw)?;
            store.set_password(&n, &hash)?;
            // SPEC §9: a new password ends every session of the old one.
            store.revoke_user(&n, crate::clock::now_ms())?;
            audit("set-password", None, &n);
            println!("password set for {n}; their earlier tokens are revoked");
        }
        UsersCommand::Revoke {
            name: n,
            issuer: Some(issuer),
        } => {
            // SPEC §14: a provider identity is revoked under `issuer:name`, a key no
            // local account can have.
            if !config.issuers.iter().any(|c| c.name == issuer) {
                bail!("no [[issuer]] named {issuer:?}");
            }
            if n.is_empty() || n.chars().any(char::is_control) {
                bail!("{n:?} is not an identity");
            }
            let key = crate::store::revocation_key(&issuer, &n);
            store.revoke_user(&key, crate::clock::now_ms())?;
            println!(
                "revoked every token issued to {n} of issuer {issuer} until now (every gateway within identity.revocation_poll = {:?})",
                id.revocation_poll
            );
        }
        UsersCommand::Revoke {
            name: n,
            issuer: None,
        } => {
            let n = name(&n)?;
            if store.get_user(&n)?.is_none() {
                bail!("no user {n:?}");
            }
            store.revoke_user(&n, crate::clock::now_ms())?;
            audit("revoke", None, &n);
            let by_cli = crate::audit::Event::Revoke { by: "cli" };
            crate::audit::cli_event(config.audit.as_ref(), by_cli, Some(&n));
            println!(
                "revoked every token issued to {n} until now (every gateway within identity.revocation_poll = {:?})",
                id.revocation_poll
            );
        }
        UsersCommand::SetRoles { name: n, roles } => {
            let n = name(&n)?;
            let roles = parse_roles(&roles)?;
            if !store.set_roles(&n, &roles)? {
                bail!("no user {n:?}");
            }
            audit("set-roles", Some(&roles), &n);
            println!("roles of {n}: {}", roles.join(","));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Unix seconds as an RFC 3339 UTC timestamp.
pub fn format_time(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
