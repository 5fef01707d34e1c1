//! authgate: an authenticating reverse proxy and API gateway.

pub mod audit;
pub mod body;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod demo;
pub mod edge;
pub mod error;
pub mod header_names;
pub mod identity;
pub mod ids;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod request;
pub mod routes;
pub mod server;
pub mod state;
pub mod store;
pub mod trace;
pub mod verify;

/// jsonwebtoken and rustls both use aws-lc-rs; install it as the process default
/// once, so neither ever has to guess (CRATES.md: the backend trap).
pub fn install_crypto() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Property-test cases: 1,024 by default (all of them run in a few seconds in a
/// debug build); `PROPTEST_CASES=N` for a longer run (bench/README.md).
#[cfg(test)]
pub(crate) fn test_cases() -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    proptest::test_runner::Config {
        cases,
        ..proptest::test_runner::Config::default()
    }
}
