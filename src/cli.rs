//! The command line (SPEC §1).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "authgate",
    version,
    about = "Authenticating reverse proxy and API gateway"
)]
pub struct Cli {
    /// The config file.
    #[arg(
        short,
        long,
        global = true,
        env = "AUTHGATE_CONFIG",
        default_value = "gateway.toml"
    )]
    pub config: PathBuf,
    /// Log line format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "AUTHGATE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate the config and the keys it names, print a summary (like `nginx -t`).
    Check,
    /// `serve` plus a bundled example backend on the config's upstream address.
    Demo,
    /// Manage the user store offline.
    #[command(subcommand)]
    Users(UsersCommand),
    /// The user store as a whole.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Which route a request would take, and what the gateway would do with it.
    Explain {
        method: String,
        path: String,
        #[arg(long)]
        host: Option<String>,
        /// Extra request header, `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user; the password is read from a prompt or one line of stdin.
    Add {
        name: String,
        /// Comma-separated roles.
        #[arg(long, default_value = "")]
        roles: String,
    },
    /// Remove a user and revoke their refresh tokens.
    Remove { name: String },
    /// List users: name, roles, created.
    List,
    /// Set a user's password (prompt or one line of stdin).
    SetPassword { name: String },
    /// Set a user's roles (comma-separated; "" clears).
    SetRoles { name: String, roles: String },
    /// Revoke every access and refresh token issued to a user until now.
    Revoke {
        name: String,
        /// NAME is an identity signed in through this `[[issuer]]` (SPEC §14), as the
        /// identity header shows it (its `identity_claim`), not a local account.
        #[arg(long)]
        issuer: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy users, live refresh tokens and revocations from one store to another
    /// (sqlite:PATH, postgres://..., env:NAME or file:PATH); idempotent.
    Copy { from: String, to: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a signing key (PKCS#8 PEM, mode 0600).
    Generate {
        #[arg(long)]
        alg: String,
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Decode and verify a token against the configured keys.
    Inspect { token: String },
}
