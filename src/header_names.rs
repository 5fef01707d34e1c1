//! Header names the gateway manages itself, and the rule for which of them the
//! configuration may not claim: below both the config and the proxy, so neither
//! depends on the other for it.

use http::header::{self, HeaderName};

/// RFC 9110 §7.6.1 plus the legacy ones; never forwarded in either direction.
pub const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers the gateway manages itself; config may not name them as identity headers.
pub fn is_reserved(h: &HeaderName) -> bool {
    HOP_BY_HOP.contains(h)
        || [
            &header::HOST,
            &header::AUTHORIZATION,
            &header::CONTENT_LENGTH,
            &header::CONTENT_TYPE,
            &header::COOKIE,
            &header::FORWARDED,
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &X_REQUEST_ID,
            &KEEP_ALIVE,
            &PROXY_CONNECTION,
        ]
        .contains(&h)
}
