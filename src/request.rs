//! Facts about a request that the dispatcher, the identity endpoints and the proxy
//! all read: the client connection (computed once when it is accepted) and the host
//! a request is for.

use std::net::SocketAddr;

use http::header::{HeaderValue, HOST};
use http::Request;

/// What is known of a client connection, computed once when it is accepted.
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The peer's IP as text (X-Forwarded-For, Forwarded).
    pub peer_text: HeaderValue,
    pub tls: bool,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        let peer_text = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        ConnInfo {
            peer,
            peer_text,
            tls,
        }
    }
}

/// The host a request is for: the absolute-form/HTTP/2 authority (without any
/// userinfo), else `Host` (RFC 9112 §3.2.2).
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h)),
        None => req.headers().get(HOST).and_then(|v| v.to_str().ok()),
    }
}
