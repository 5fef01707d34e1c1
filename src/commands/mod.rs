//! What each CLI command does, one file per command. `main` prints the error,
//! if any, as one line.

mod apikeys;
mod check;
mod docs;
mod explain;
mod serve;
mod store;
mod token;
mod users;

use std::io::{BufRead, IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::cli::{Cli, Command, KeysCommand, StoreCommand, TokenCommand, UsersCommand};
use crate::config::{Algorithm, AuthMode, Config, StoreUrl};
use crate::edge::normalize::normalize_path;
use crate::identity::signing_keys::{generate_pem, write_private, KeyError, KeySet};
use crate::proxy::headers::HeaderRules;
use crate::routes::Router;
use crate::verify::jwt::Verifier;
use crate::verify::verified::satisfies;
use check::*;
use explain::*;
use serve::*;
use token::*;
pub use users::format_time;
use users::*;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = cli.config.clone();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config, cli.log_format, false),
        Command::Demo => serve(&cli.config, cli.log_format, true),
        Command::Check => check(&path),
        Command::Users(u) => users(&path, u),
        Command::Apikeys(a) => apikeys::apikeys(&path, a),
        Command::Store(StoreCommand::Copy { from, to }) => store::copy(&from, &to),
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
            forward_auth,
        } => explain(&path, &method, &req_path, host, &headers, forward_auth),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man => docs::man(),
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load_file(path).map_err(|e| anyhow!("{e}"))
}

/// The gateway's verifier, offline: own keys (when the built-in identity is on) and
/// every `[[issuer]]`, whose keys are fetched now, as `serve` would (SPEC §10:
/// `token inspect` and `explain` know about issuers).
fn offline_verifier(config: &Config) -> anyhow::Result<Verifier> {
    let keys = if config.issues_tokens() {
        Some(KeySet::load(&config.tokens, false)?)
    } else {
        None
    };
    let issuers = std::sync::Arc::new(crate::verify::issuers::IssuerSet::build(config)?);
    issuers.start();
    Verifier::new(config, keys.as_ref(), issuers).map_err(|e| anyhow!("tokens: {e}"))
}

/// Runs one verification to completion (it may wait up to an issuer's `jwks_wait`).
fn verify_now(
    v: &Verifier,
    token: &str,
) -> anyhow::Result<
    Result<std::sync::Arc<crate::verify::verified::Verified>, crate::verify::jwt::VerifyError>,
> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    Ok(rt.block_on(v.verify(token)))
}
