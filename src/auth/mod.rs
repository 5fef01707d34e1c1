//! Identity: keys, tokens, passwords, rate limits and the endpoints that use them.

pub mod browser;
pub mod cache;
pub mod endpoints;
pub mod issuers;
pub mod jwt;
pub mod keys;
pub mod passwords;
pub mod ratelimit;
pub mod revocation;
pub mod session;
pub mod token;
pub mod vkey;
