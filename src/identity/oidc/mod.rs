//! Sign-in through an OpenID Connect provider (SPEC §14): authorization code with
//! PKCE as a relying party, ending in authgate's own session (SPEC §12).
//!
//! What each part owns:
//! - `provider`: the provider's endpoints (discovery, read with the issuer's HTTPS
//!   client of SPEC §10), the authorization URL, PKCE, and the token request;
//! - `tokens`: verifying ID tokens and back-channel logout tokens with the issuer's
//!   keys (the §10 machinery: `kid` among that issuer's keys, its `algorithms`);
//! - `claims`: what a verified ID token yields: the identity, the session's roles,
//!   and the `allow` rules;
//! - [`OidcError`]: the four failure classes a browser may see.
//!
//! Flow state lives in the store (`UserStore::put_flow` / `take_flow`), so any gateway
//! sharing the store can finish a flow another started.

pub mod claims;
pub mod flow;
pub mod logout;
pub mod provider;
pub mod tokens;

use http::StatusCode;

/// The path of the callback; `redirect_uri` must end at it (checked by `check`).
pub use crate::config::issuer::CALLBACK_PATH;
/// Where a sign-in starts, and the back-channel logout endpoint (SPEC §14).
pub use crate::config::issuer::{BACKCHANNEL_LOGOUT_PATH, START_PATH};
/// The cookie binding a flow to the browser that started it: one per browser, shared
/// by its flows (tabs), as long as a flow lives.
pub use crate::identity::session::BINDING_COOKIE;
/// SPEC §14: a flow lives at most 10 minutes.
pub const FLOW_TTL_SECS: u64 = 600;

/// Why a sign-in failed: the class is what the browser's error page names and what
/// `authgate_oidc_logins_total{outcome}` counts; the detail goes to the log only
/// (never a code, token or secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// The provider said no (`error=access_denied`), or `allow` refused the identity.
    #[error("access_denied: {0}")]
    AccessDenied(String),
    /// No open flow of this browser matches (missing, unknown, expired, spent, another
    /// browser's, or an `iss` naming another issuer: RFC 9207 mix-up).
    #[error("invalid_state: {0}")]
    InvalidState(String),
    /// The provider answered, wrongly: a 4xx or malformed token response, an ID token
    /// that does not verify, an unusable identity claim.
    #[error("provider_error: {0}")]
    ProviderError(String),
    /// The provider could not be reached or did not answer in time, or answered 5xx.
    #[error("provider_unavailable: {0}")]
    ProviderUnavailable(String),
}

impl OidcError {
    /// The class: `access_denied`, `invalid_state`, `provider_error`, `provider_unavailable`.
    pub fn class(&self) -> &'static str {
        match self {
            OidcError::AccessDenied(_) => "access_denied",
            OidcError::InvalidState(_) => "invalid_state",
            OidcError::ProviderError(_) => "provider_error",
            OidcError::ProviderUnavailable(_) => "provider_unavailable",
        }
    }

    /// SPEC §14: 403, 400, 502, 503.
    pub fn status(&self) -> StatusCode {
        match self {
            OidcError::AccessDenied(_) => StatusCode::FORBIDDEN,
            OidcError::InvalidState(_) => StatusCode::BAD_REQUEST,
            OidcError::ProviderError(_) => StatusCode::BAD_GATEWAY,
            OidcError::ProviderUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The detail, for the log line.
    pub fn detail(&self) -> &str {
        match self {
            OidcError::AccessDenied(d)
            | OidcError::InvalidState(d)
            | OidcError::ProviderError(d)
            | OidcError::ProviderUnavailable(d) => d,
        }
    }
}

/// The one conversion: each class is its own `ApiError`, mapped to a status in
/// `crate::error` like every other error.
impl From<OidcError> for crate::error::ApiError {
    fn from(e: OidcError) -> crate::error::ApiError {
        use crate::error::ApiError;
        match e {
            OidcError::AccessDenied(d) => ApiError::AccessDenied(d),
            OidcError::InvalidState(d) => ApiError::InvalidState(d),
            OidcError::ProviderError(d) => ApiError::ProviderError(d),
            OidcError::ProviderUnavailable(d) => ApiError::ProviderUnavailable(d),
        }
    }
}

/// Equality of two secrets without an early exit (state hashes, nonces).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_has_its_status() {
        let table = [
            (OidcError::AccessDenied("x".into()), "access_denied", 403),
            (OidcError::InvalidState("x".into()), "invalid_state", 400),
            (OidcError::ProviderError("x".into()), "provider_error", 502),
            (
                OidcError::ProviderUnavailable("x".into()),
                "provider_unavailable",
                503,
            ),
        ];
        for (e, class, status) in table {
            assert_eq!(e.class(), class);
            assert_eq!(e.status().as_u16(), status);
        }
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
