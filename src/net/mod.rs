//! Outbound network plumbing shared by the proxy and the issuers' key fetchers.

pub mod https;
