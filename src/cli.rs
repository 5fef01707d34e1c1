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
    /// API keys of users and service accounts (SPEC §16).
    #[command(subcommand)]
    Apikeys(ApikeysCommand),
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
        /// The request's Host (default: none).
        #[arg(long)]
        host: Option<String>,
        /// Extra request header, `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Show what the forward-auth endpoints (SPEC §15) would answer a proxy in
        /// front that describes this request, instead of what the proxy would do.
        #[arg(long = "forward-auth")]
        forward_auth: bool,
    },
    /// Print the shell completion script to stdout (needs no config file).
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the man page (roff) to stdout (needs no config file).
    Man,
}

/// The shells `authgate completions` writes a script for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user; the password is read from a prompt or one line of stdin.
    Add {
        name: String,
        /// Comma-separated roles.
        #[arg(long, default_value = "")]
        roles: String,
        /// A service account: no password, never logs in, uses API keys.
        #[arg(long)]
        service: bool,
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
pub enum ApikeysCommand {
    /// Create a key for USER and print it once (only its hash is stored).
    Create {
        user: String,
        /// Comma-separated roles, at most the user's (default: all of them).
        #[arg(long)]
        roles: Option<String>,
        /// Lifetime, e.g. 90d (default: none).
        #[arg(long)]
        expires: Option<String>,
        /// A label to tell keys apart.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (all, or USER's): id, user, label, roles, created, expires, last used.
    List { user: Option<String> },
    /// Revoke a key by id (every gateway within identity.revocation_poll).
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a signing key (PKCS#8 PEM, mode 0600).
    Generate {
        /// EdDSA, ES256 or RS256.
        #[arg(long)]
        alg: String,
        /// The PEM file to write.
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
