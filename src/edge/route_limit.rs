//! The route rate limit step of a request (SPEC §17), after authentication:
//! who the caller counts as, the decision (`limits::route`), the 429 and the
//! `RateLimit-Policy` / `RateLimit` headers every response of the route carries.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Response};

use crate::body::Body;
use crate::config::IssuerRef;
use crate::header_names::X_FORWARDED_FOR;
use crate::limits::route::{Caller, Limited};
use crate::request::ConnInfo;
use crate::state::Snapshot;
use crate::verify::verified::Verified;

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The client's address: the peer, or — when the peer is a trusted proxy — the
/// nearest `X-Forwarded-For` entry that is not itself a trusted proxy (SPEC §5:
/// only a trusted proxy's forwarding headers are believed, and the entries it
/// appended are the ones it vouches for).
pub fn client_ip(rt: &Snapshot, conn: &ConnInfo, h: &HeaderMap) -> IpAddr {
    let peer = conn.peer.ip();
    if !rt.rules.is_trusted(peer) {
        return peer;
    }
    let mut nearest = peer;
    for v in h.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(s) = v.to_str() else { return nearest };
        for entry in s.rsplit(',') {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) if rt.rules.is_trusted(ip) => nearest = ip,
                Ok(ip) => return ip,
                // Garbage from beyond the trusted chain: stop at what was vouched for.
                Err(_) => return nearest,
            }
        }
    }
    nearest
}

/// The headers to set on the route's response: `(RateLimit-Policy, RateLimit)`.
pub type Headers = (HeaderValue, HeaderValue);

/// Counts the request on route `idx` if it has a limit; `Err` when over it, with
/// the headers for the 429.
pub async fn check(
    rt: &Snapshot,
    idx: usize,
    identity: Option<&Verified>,
    conn: &ConnInfo,
    h: &HeaderMap,
) -> Result<Option<Headers>, (Limited, Headers)> {
    let Some(l) = rt.limits.routes.get(idx) else {
        return Ok(None);
    };
    let caller = Caller {
        user: identity.map(|v| {
            let issuer = match v.source {
                IssuerRef::SelfIssued => None,
                IssuerRef::External(i) => Some(i),
            };
            (issuer, v.sub.as_str())
        }),
        ip: client_ip(rt, conn, h),
    };
    match l.admit(rt.limits.shared.as_ref(), caller).await {
        Ok(state) => Ok(Some((l.policy.clone(), state))),
        Err(e) => {
            let label = rt.route_metrics[idx].label().to_string();
            metrics::counter!("authgate_rate_limited_total", "route" => label).increment(1);
            let headers = (l.policy.clone(), e.state.clone());
            Err((e, headers))
        }
    }
}

pub fn apply(headers: Headers, resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(RATELIMIT_POLICY.clone(), headers.0);
    h.insert(RATELIMIT.clone(), headers.1);
}
