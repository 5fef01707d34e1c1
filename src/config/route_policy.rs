//! Per-route policies of SPEC §17, as `check` leaves them: a route's rate limit
//! and its CORS policy. The CORS response header values are built here, once per
//! config, so that a request only copies them.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use super::Rate;

/// What one bucket of a route's limit stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitPer {
    /// The verified identity; anonymous callers (optional routes) by address.
    User,
    /// The client address (`trusted_proxies` honoured).
    Ip,
    /// One bucket for the whole route.
    Route,
}

impl LimitPer {
    pub fn name(self) -> &'static str {
        match self {
            LimitPer::User => "user",
            LimitPer::Ip => "ip",
            LimitPer::Route => "route",
        }
    }
}

/// `rate_limit = { rate, burst, per }` on a `[[route]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimit {
    /// The sustained rate.
    pub rate: Rate,
    /// How many requests may arrive at once (default: the rate's count).
    pub burst: u32,
    pub per: LimitPer,
}

/// `cors = { origins, methods, headers, credentials, max_age, expose }`.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Canonical origins (`parse_origin`): lowercase, default port dropped.
    pub origins: Vec<String>,
    /// `"*"`: every origin (refused with `credentials`).
    pub any_origin: bool,
    pub methods: Vec<Method>,
    /// Lowercase, as `HeaderName` spells every name.
    pub headers: Vec<HeaderName>,
    pub credentials: bool,
    pub max_age: Duration,
    pub expose: Vec<HeaderName>,
    /// `Access-Control-Allow-Methods` of an allowed preflight.
    pub allow_methods: HeaderValue,
    /// `Access-Control-Allow-Headers`; `None` when no header is allowed.
    pub allow_headers: Option<HeaderValue>,
    pub max_age_value: HeaderValue,
    /// `Access-Control-Expose-Headers`; `None` when nothing is exposed.
    pub expose_value: Option<HeaderValue>,
}
