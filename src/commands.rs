//! What each CLI command does. `main` prints the error, if any, as one line.

use std::io::{BufRead, IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::auth::jwt::{satisfies, Verifier};
use crate::auth::keys::{generate_pem, write_private, KeyError, KeySet};
use crate::cli::{Cli, Command, KeysCommand, TokenCommand, UsersCommand};
use crate::config::{Algorithm, AuthMode, Config, StoreUrl};
use crate::edge::normalize::normalize_path;
use crate::proxy::headers::HeaderRules;
use crate::routes::Router;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = cli.config.clone();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config, cli.log_format, false),
        Command::Demo => serve(&cli.config, cli.log_format, true),
        Command::Check => check(&path),
        Command::Users(u) => users(&path, u),
        Command::Keys(KeysCommand::Generate { alg, out, force }) => {
            let alg = Algorithm::parse(&alg)
                .ok_or_else(|| anyhow!("--alg {alg:?}: expected EdDSA, ES256 or RS256"))?;
            let pem = generate_pem(alg)?;
            write_private(&out, &pem, force)?;
            println!("wrote {} key to {} (mode 0600)", alg.name(), out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::Inspect { token }) => inspect(&path, &token),
        Command::Explain {
            method,
            path: req_path,
            host,
            headers,
        } => explain(&path, &method, &req_path, host, &headers),
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load_file(path).map_err(|e| anyhow!("{e}"))
}

fn serve(path: &Path, format: crate::logging::LogFormat, demo: bool) -> anyhow::Result<ExitCode> {
    crate::logging::init(format);
    let config = load(path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("authgate")
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async move {
        if demo {
            let target = config
                .upstreams
                .first()
                .and_then(|u| u.targets.first())
                .ok_or_else(|| anyhow!("demo needs an [[upstream]] with a target for its example backend"))?;
            let addr: SocketAddr = target
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| anyhow!("cannot resolve demo backend address {target}"))?;
            let bound = crate::demo::spawn_backend(addr).await.map_err(|e| anyhow!(e))?;
            tracing::info!("demo backend listening on {bound}");
            if let Some(gw) = config.server.listen.first() {
                let p = &config.identity.paths;
                let url = format!("http://{gw}");
                eprintln!(
                    "\nTry it:\n  curl -s -X POST {url}{} -H 'Content-Type: application/json' -d '{{\"username\":\"alice\",\"password\":\"correct horse\"}}'\n  \
                     TOKEN=$(curl -s -X POST {url}{} -H 'Content-Type: application/json' -d '{{\"username\":\"alice\",\"password\":\"correct horse\"}}' | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')\n  \
                     curl -s {url}/protected -H \"Authorization: Bearer $TOKEN\"\n  curl -s {url}/hello\n",
                    p.register, p.login
                );
            }
        }
        crate::server::run(path.to_path_buf(), config).await.map_err(|e| anyhow!(e))
    });
    crate::logging::flush();
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Line and column of a key in the config text, for errors found after parsing.
fn position(text: &str, section: &str, key: &str) -> (usize, usize) {
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return (1, 1);
    };
    let span = doc
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref() == section)
        .map(|(k, v)| match v.get_ref() {
            toml::de::DeValue::Table(t) => t
                .iter()
                .find(|(kk, _)| kk.get_ref() == key)
                .map(|(kk, _)| kk.span())
                .unwrap_or_else(|| k.span()),
            _ => k.span(),
        });
    let r = crate::config::reader::Reader::new(text);
    span.map(|s| r.line_col(s.start)).unwrap_or((1, 1))
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let config = match Config::load_file(path) {
        Ok(c) => c,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("{line}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let origin = path.display();
    let mut errors = Vec::new();
    let mut key_note = String::new();
    match KeySet::load(&config.tokens, false) {
        Ok(k) => key_note = format!("kid {}", k.signing_kid),
        Err(KeyError::Missing(p)) => key_note = format!("{p} will be created on first start"),
        Err(e) => {
            let key = if config.tokens.algorithm == Algorithm::HS256 {
                "secret"
            } else {
                "signing_key"
            };
            let key = if e.to_string().contains("previous") {
                "previous_keys"
            } else {
                key
            };
            let (l, c) = position(&text, "tokens", key);
            errors.push(format!("{origin}:{l}:{c}: tokens.{key}: {e}"));
        }
    }
    if let Err(e) = crate::server::tls::acceptor(&config) {
        let (l, c) = position(&text, "server", "tls");
        errors.push(format!("{origin}:{l}:{c}: {e}"));
    }
    if let StoreUrl::Postgres(_) = config.identity.store {
        let (l, c) = position(&text, "identity", "store");
        errors.push(format!("{origin}:{l}:{c}: identity.store: postgres:// is not supported by this build; use sqlite:PATH"));
    }
    if !errors.is_empty() {
        for e in errors {
            eprintln!("{e}");
        }
        return Ok(ExitCode::FAILURE);
    }
    let s = &config.server;
    let scheme = if s.tls.is_some() { "https" } else { "http" };
    println!("{origin}: configuration OK");
    for a in &s.listen {
        println!("listener  {scheme}://{a}");
    }
    if let Some(a) = &config.admin {
        println!("admin     http://{}  (/healthz /readyz /metrics)", a.listen);
    }
    let id = &config.identity;
    let store = match &id.store {
        StoreUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
        StoreUrl::Postgres(u) => u
            .split('@')
            .next_back()
            .map(|h| format!("postgres://…@{h}"))
            .unwrap_or_default(),
    };
    println!(
        "identity  {store}, registration {}, endpoints {} {} {} {} {}",
        if id.registration_open {
            "open"
        } else {
            "closed"
        },
        id.paths.register,
        id.paths.login,
        id.paths.refresh,
        id.paths.logout,
        id.paths.jwks
    );
    println!(
        "tokens    {} ({key_note}), issuer {:?}, audience {:?}, access {:?}, refresh {:?}",
        config.tokens.algorithm.name(),
        config.tokens.issuer,
        config.tokens.audience,
        config.tokens.access_ttl,
        config.tokens.refresh_ttl
    );
    for u in &config.upstreams {
        let targets: Vec<String> = u.targets.iter().map(|t| format!("http://{t}")).collect();
        println!(
            "upstream  {}: {} (connect {:?}, timeout {:?})",
            u.name,
            targets.join(", "),
            u.connect_timeout,
            u.timeout
        );
    }
    for r in &config.routes {
        let methods = r
            .methods
            .as_ref()
            .map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_else(|| "*".into());
        let note = if config.identity_endpoint(&r.path).is_some() {
            "  (shadowed by the gateway's own endpoint)"
        } else {
            ""
        };
        println!(
            "route     {methods} {}{} -> {} (auth {}){note}",
            r.host.as_deref().unwrap_or(""),
            r.path,
            config.upstream_of(r).name,
            r.auth.name()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn read_password(prompt: &str) -> anyhow::Result<String> {
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

fn parse_roles(s: &str) -> anyhow::Result<Vec<String>> {
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

fn users(path: &Path, cmd: UsersCommand) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let store = crate::store::open(&config.identity.store)?;
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
    let name =
        |n: &str| crate::auth::endpoints::normalize_username(n).map_err(|e| anyhow!(e.message()));
    match cmd {
        UsersCommand::Add { name: n, roles } => {
            let n = name(&n)?;
            let roles = parse_roles(&roles)?;
            let pw = read_password("Password: ")?;
            check_len(&pw)?;
            let hash = crate::auth::passwords::hash_now(id.password_hash, &pw)?;
            store.create_user(&n, &hash, &roles).map_err(|e| match e {
                crate::store::StoreError::Conflict => anyhow!("user {n:?} already exists"),
                other => anyhow!(other),
            })?;
            println!("added {n}");
        }
        UsersCommand::Remove { name: n } => {
            let n = name(&n)?;
            if !store.remove_user(&n)? {
                bail!("no user {n:?}");
            }
            println!("removed {n}");
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
            if store.get_user(&n)?.is_none() {
                bail!("no user {n:?}");
            }
            let pw = read_password("New password: ")?;
            check_len(&pw)?;
            let hash = crate::auth::passwords::hash_now(id.password_hash, &pw)?;
            store.set_password(&n, &hash)?;
            println!("password set for {n}");
        }
        UsersCommand::SetRoles { name: n, roles } => {
            let n = name(&n)?;
            let roles = parse_roles(&roles)?;
            if !store.set_roles(&n, &roles)? {
                bail!("no user {n:?}");
            }
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

fn inspect(path: &Path, token: &str) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let keys = KeySet::load(&config.tokens, false)?;
    let verifier = Verifier::new(&config, &keys);
    match jsonwebtoken::decode_header(token) {
        Ok(h) => println!("header: {}", serde_json::to_string(&h).unwrap_or_default()),
        Err(e) => println!(
            "header: unreadable ({})",
            crate::auth::jwt::describe(e.kind())
        ),
    }
    match jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(token) {
        Ok(c) => println!("claims: {c}"),
        Err(e) => println!(
            "claims: unreadable ({})",
            crate::auth::jwt::describe(e.kind())
        ),
    }
    match verifier.verify(token) {
        Ok(v) => {
            println!(
                "valid: accepted for sub {:?}, expires {}",
                v.sub,
                format_time(v.exp)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("rejected: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn explain(
    path: &Path,
    method: &str,
    raw: &str,
    host: Option<String>,
    extra: &[String],
) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| anyhow!("{method:?} is not an HTTP method"))?;
    let (raw_path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    let mut headers = HeaderMap::new();
    for h in extra {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow!("--header {h:?}: expected 'Name: value'"))?;
        headers.append(
            HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| anyhow!("bad header name {k:?}"))?,
            HeaderValue::from_str(v.trim()).map_err(|_| anyhow!("bad header value for {k}"))?,
        );
    }
    println!(
        "request   {method} {raw} (host: {})",
        host.as_deref().unwrap_or("-")
    );
    // The same order of checks as edge::dispatch, so that explain agrees with the proxy.
    if headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        println!("refused   400 invalid_request: more than one Authorization header");
        return Ok(ExitCode::SUCCESS);
    }
    let canon = match normalize_path(raw_path) {
        Ok(p) => p,
        Err(e) => {
            println!("refused   400 invalid_request: {e}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!(
        "path      {canon}{}",
        if canon == raw_path {
            ""
        } else {
            " (normalised)"
        }
    );
    if let Some(ep) = config.identity_endpoint(&canon) {
        println!("answered  by the gateway itself: {ep:?} endpoint (never forwarded)");
        return Ok(ExitCode::SUCCESS);
    }
    let router = Router::new(&config);
    let Some((i, route)) = router.find(host.as_deref(), &method, &canon) else {
        println!("refused   404 not_found: no route matches (never forwarded)");
        return Ok(ExitCode::SUCCESS);
    };
    let up = config.upstream_of(route);
    println!(
        "route     route[{i}] {}{} (methods {}) -> upstream {:?}",
        route.host.as_deref().unwrap_or(""),
        route.path,
        route
            .methods
            .as_ref()
            .map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_else(|| "any".into()),
        up.name
    );
    let policy = match route.auth {
        AuthMode::Required => {
            "required: no Bearer token → 401 missing_token; a bad one → 401 invalid_token"
        }
        AuthMode::Optional => {
            "optional: anonymous requests pass without identity headers; a bad token → 401"
        }
        AuthMode::Public => "public: tokens are not looked at; no identity header is set",
    };
    println!("auth      {policy}");
    if !route.require.is_empty() {
        let req: Vec<String> = route
            .require
            .iter()
            .map(|(c, v)| format!("{c} ∈ [{}]", v.join(", ")))
            .collect();
        println!(
            "require   {} (else 403 insufficient_scope)",
            req.join(" and ")
        );
    }
    let token = match route.auth {
        AuthMode::Public => None,
        _ => match crate::edge::bearer(&headers) {
            Ok(t) => t,
            Err(e) => {
                println!(
                    "refused   {} {}: {}",
                    e.status().as_u16(),
                    e.code(),
                    e.message()
                );
                None
            }
        },
    };
    if let Some(t) = token {
        match KeySet::load(&config.tokens, false) {
            Ok(keys) => match Verifier::new(&config, &keys).verify(t) {
                Ok(v) if satisfies(&v.claims, &route.require) => {
                    println!("token     valid for {:?}", v.sub)
                }
                Ok(_) => {
                    println!("refused   403 insufficient_scope: the token lacks a required claim")
                }
                Err(e) => println!("refused   401 invalid_token: {e}"),
            },
            Err(e) => println!("token     cannot be checked: {e}"),
        }
    }
    let rules = HeaderRules::new(&config.forward, &config.server.trusted_proxies);
    let removed = rules.removed(&headers);
    let mut protected = vec![config.forward.identity_header.to_string()];
    protected.extend(
        config
            .forward
            .claim_headers
            .iter()
            .map(|(h, _)| h.to_string()),
    );
    println!(
        "removes   {}{}hop-by-hop headers and those named in Connection, any client {} (any case, '_' aliases)",
        removed.join(", "),
        if removed.is_empty() { "" } else { "; always: " },
        protected.join(", ")
    );
    let mut injected = Vec::new();
    if route.auth != AuthMode::Public {
        injected.push(format!("{} from sub", config.forward.identity_header));
        injected.extend(
            config
                .forward
                .claim_headers
                .iter()
                .map(|(h, c)| format!("{h} from {c}")),
        );
    }
    injected.extend(
        [
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "Forwarded",
            "X-Request-Id",
        ]
        .map(String::from),
    );
    println!("injects   {}", injected.join(", "));
    let fwd_path = route.forwarded_path(canon.clone());
    let q = query.map(|q| format!("?{q}")).unwrap_or_default();
    for t in &up.targets {
        println!("forwards  {method} http://{t}{fwd_path}{q}");
    }
    Ok(ExitCode::SUCCESS)
}
