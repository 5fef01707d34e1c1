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

impl RouteLimit {
    /// For `explain`: `100/min, burst 20, per user (...)`.
    pub fn describe(&self) -> String {
        let unit = match self.rate.per.as_secs() {
            1 => "sec",
            60 => "min",
            _ => "hour",
        };
        let who = match self.per {
            LimitPer::User => "per user (anonymous callers by address)",
            LimitPer::Ip => "per client address",
            LimitPer::Route => "one bucket for the whole route",
        };
        format!(
            "{}/{unit}, burst {}, {who}; over it: 429 rate_limited + Retry-After (never forwarded)",
            self.rate.count, self.burst
        )
    }
}

impl Cors {
    /// For `explain`: the policy on one line.
    pub fn describe(&self) -> String {
        let mut origins = self.origins.clone();
        if self.any_origin {
            origins.push("*".into());
        }
        let v = |h: &Option<HeaderValue>| {
            h.as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string()
        };
        format!(
            "origins [{}], methods {}, headers {}, credentials {}, max_age {} s, expose {}; preflights answered by the gateway",
            origins.join(", "),
            self.allow_methods.to_str().unwrap_or(""),
            v(&self.allow_headers),
            self.credentials,
            self.max_age.as_secs(),
            v(&self.expose_value),
        )
    }
}
