//! Everything that decides whether a presented credential is good: JWT parsing and
//! checks, verification keys from PEM or JWK, the verified-token cache, external
//! issuers and their JWKS, the revocation list and API-key hashes. The request path calls into here
//! once per request; nothing here touches the user store on that path.

pub mod api_keys;
pub mod cache;
pub mod issuers;
pub mod jwk;
pub mod jwt;
pub mod revocation;
pub mod token;
pub mod verified;
