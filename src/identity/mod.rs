//! The built-in identity provider: accounts and their usernames and passwords, the
//! endpoints that serve them (JSON and browser front-ends over one core), browser
//! sessions, and the keys that sign authgate's own tokens. Sign-in through another
//! provider and API keys live here too. Deciding whether a presented credential is
//! good is not this module's job: that is `verify`.

pub mod browser;
pub mod cookies;
pub mod core;
pub mod endpoints;
pub mod input;
pub mod json;
pub mod oidc;
pub mod passwords;
pub mod session;
pub mod signer;
pub mod signing_keys;
pub mod username;
