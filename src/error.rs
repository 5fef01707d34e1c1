//! The ONLY place an error becomes a status code and a JSON body (SPEC §4, §8).
//! Every module's error converts into [`ApiError`]; upstream faults are 502/504,
//! never 500.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use crate::body::{full, Body};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    InvalidRequest(String),
    /// No `Authorization: Bearer` (or another scheme).
    MissingToken,
    InvalidToken(String),
    InvalidCredentials,
    InvalidGrant,
    InsufficientScope,
    /// SPEC §15: a forward-auth check refused outright (untrusted peer, a missing or
    /// ambiguous description of the original request, no route): 403, never 200.
    Forbidden(String),
    /// SPEC §12: a cookie-authenticated unsafe request from another origin.
    CsrfRejected,
    RegistrationClosed,
    NotFound,
    MethodNotAllowed(&'static str),
    UserExists,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// The request head did not arrive within `header_read_timeout` (SPEC §8).
    RequestTimeout,
    HeadersTooLarge,
    RateLimited {
        retry_after: u64,
    },
    UpstreamUnavailable,
    Overloaded {
        retry_after: u64,
    },
    UpstreamTimeout,
    /// SPEC §9: the user store is unreachable or did not answer in time.
    StoreUnavailable {
        retry_after: u64,
    },
    /// SPEC §10: the token's issuer has no keys yet (its IdP unreachable since start).
    IssuerUnavailable {
        retry_after: u64,
    },
    /// SPEC §14 sign-in failures; the detail (a String) goes to the log only.
    /// The provider said no, or `allow` refused the identity.
    AccessDenied(String),
    /// The callback matches no open flow of this browser.
    InvalidState(String),
    /// The provider answered wrongly.
    ProviderError(String),
    /// The provider could not be reached in time.
    ProviderUnavailable(String),
    /// Our own fault (store unreachable, ...): the detail goes to the log, not the client.
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            InvalidRequest(_) => StatusCode::BAD_REQUEST,
            MissingToken | InvalidToken(_) | InvalidCredentials | InvalidGrant => {
                StatusCode::UNAUTHORIZED
            }
            InsufficientScope | Forbidden(_) | CsrfRejected | RegistrationClosed
            | AccessDenied(_) => StatusCode::FORBIDDEN,
            InvalidState(_) => StatusCode::BAD_REQUEST,
            ProviderError(_) => StatusCode::BAD_GATEWAY,
            ProviderUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            UserExists => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Overloaded { .. } | StoreUnavailable { .. } | IssuerUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidRequest(_) => "invalid_request",
            MissingToken => "missing_token",
            InvalidToken(_) => "invalid_token",
            InvalidCredentials => "invalid_credentials",
            InvalidGrant => "invalid_grant",
            InsufficientScope => "insufficient_scope",
            Forbidden(_) => "forbidden",
            CsrfRejected => "csrf_rejected",
            RegistrationClosed => "registration_closed",
            NotFound => "not_found",
            MethodNotAllowed(_) => "method_not_allowed",
            UserExists => "user_exists",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            RequestTimeout => "request_timeout",
            HeadersTooLarge => "headers_too_large",
            RateLimited { .. } => "rate_limited",
            UpstreamUnavailable => "upstream_unavailable",
            Overloaded { .. } => "overloaded",
            IssuerUnavailable { .. } => "issuer_unavailable",
            UpstreamTimeout => "upstream_timeout",
            StoreUnavailable { .. } => "store_unavailable",
            AccessDenied(_) => "access_denied",
            InvalidState(_) => "invalid_state",
            ProviderError(_) => "provider_error",
            ProviderUnavailable(_) => "provider_unavailable",
            Internal(_) => "internal_error",
        }
    }

    pub fn message(&self) -> String {
        use ApiError::*;
        match self {
            InvalidRequest(m) => m.clone(),
            MissingToken => "A bearer token is required".into(),
            InvalidToken(why) => format!("The access token is invalid: {why}"),
            InvalidCredentials => "Invalid username or password".into(),
            InvalidGrant => "The refresh token is invalid, expired or already used".into(),
            InsufficientScope => "The access token lacks a claim this route requires".into(),
            Forbidden(why) => format!("Refused: {why}"),
            CsrfRejected => "Cookie-authenticated requests from another origin are refused".into(),
            RegistrationClosed => "Registration is closed".into(),
            NotFound => "No route matches this request".into(),
            MethodNotAllowed(allow) => format!("Method not allowed here; allowed: {allow}"),
            UserExists => "A user with that name already exists".into(),
            PayloadTooLarge => "The request body is too large".into(),
            UnsupportedMediaType => "The request body must be application/json".into(),
            RequestTimeout => "The request headers did not arrive in time".into(),
            HeadersTooLarge => "The request headers are too large".into(),
            RateLimited { retry_after } => format!("Too many attempts; retry in {retry_after} s"),
            UpstreamUnavailable => "The upstream could not be reached".into(),
            Overloaded { .. } => "The gateway is overloaded; retry shortly".into(),
            UpstreamTimeout => "The upstream did not answer in time".into(),
            StoreUnavailable { .. } => "The user store is unavailable; retry shortly".into(),
            IssuerUnavailable { .. } => "The token's issuer has no keys yet; retry shortly".into(),
            AccessDenied(_) => "Sign-in was refused".into(),
            InvalidState(_) => {
                "This sign-in is not one this browser started, or it has expired; start again"
                    .into()
            }
            ProviderError(_) => "The identity provider's answer could not be used".into(),
            ProviderUnavailable(_) => {
                "The identity provider could not be reached; retry shortly".into()
            }
            Internal(_) => "Internal error".into(),
        }
    }

    /// The reason label for `authgate_auth_failures_total`.
    pub fn auth_failure_reason(&self) -> Option<&'static str> {
        match self {
            ApiError::MissingToken => Some("missing_token"),
            ApiError::InvalidToken(_) => Some("invalid_token"),
            ApiError::InsufficientScope => Some("insufficient_scope"),
            ApiError::CsrfRejected => Some("csrf_rejected"),
            ApiError::IssuerUnavailable { .. } => Some("issuer_unavailable"),
            _ => None,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({ "error": self.code(), "message": self.message() });
        self.with_body(
            Bytes::from(body.to_string()),
            HeaderValue::from_static("application/json"),
        )
    }

    /// The same status and headers around an HTML page instead of the JSON body:
    /// the sign-in form shown again with this error (SPEC §12).
    pub fn into_page(self, html: String) -> Response<Body> {
        self.with_body(
            Bytes::from(html),
            HeaderValue::from_static("text/html; charset=utf-8"),
        )
    }

    fn with_body(self, body: Bytes, content_type: HeaderValue) -> Response<Body> {
        let status = self.status();
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, content_type);
        match &self {
            ApiError::MissingToken => {
                h.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"authgate\""),
                );
            }
            ApiError::InvalidToken(why) => {
                // RFC 6750 §3: error_description is a quoted-string; keep it plain.
                let desc: String = why
                    .chars()
                    .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
                    .collect();
                let v = format!("Bearer realm=\"authgate\", error=\"invalid_token\", error_description=\"{desc}\"");
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(WWW_AUTHENTICATE, v);
                }
            }
            ApiError::InsufficientScope => {
                h.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"authgate\", error=\"insufficient_scope\"",
                    ),
                );
            }
            ApiError::MethodNotAllowed(allow) => {
                h.insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::RateLimited { retry_after }
            | ApiError::Overloaded { retry_after }
            | ApiError::StoreUnavailable { retry_after }
            | ApiError::IssuerUnavailable { retry_after } => {
                h.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        resp
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Internal(detail)
            | ApiError::AccessDenied(detail)
            | ApiError::InvalidState(detail)
            | ApiError::ProviderError(detail)
            | ApiError::ProviderUnavailable(detail) => write!(f, "{}: {detail}", self.code()),
            other => write!(f, "{}: {}", other.code(), other.message()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_status() {
        let table: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::InvalidRequest("x".into()), 400, "invalid_request"),
            (ApiError::MissingToken, 401, "missing_token"),
            (ApiError::InvalidToken("x".into()), 401, "invalid_token"),
            (ApiError::InvalidCredentials, 401, "invalid_credentials"),
            (ApiError::InvalidGrant, 401, "invalid_grant"),
            (ApiError::InsufficientScope, 403, "insufficient_scope"),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
            (ApiError::CsrfRejected, 403, "csrf_rejected"),
            (ApiError::RegistrationClosed, 403, "registration_closed"),
            (ApiError::NotFound, 404, "not_found"),
            // SPEC §14: the sign-in failure classes.
            (ApiError::AccessDenied("x".into()), 403, "access_denied"),
            (ApiError::InvalidState("x".into()), 400, "invalid_state"),
            (ApiError::ProviderError("x".into()), 502, "provider_error"),
            (
                ApiError::ProviderUnavailable("x".into()),
                503,
                "provider_unavailable",
            ),
            (
                ApiError::MethodNotAllowed("POST"),
                405,
                "method_not_allowed",
            ),
            (ApiError::UserExists, 409, "user_exists"),
            (ApiError::PayloadTooLarge, 413, "payload_too_large"),
            (
                ApiError::UnsupportedMediaType,
                415,
                "unsupported_media_type",
            ),
            (ApiError::RequestTimeout, 408, "request_timeout"),
            (ApiError::HeadersTooLarge, 431, "headers_too_large"),
            (
                ApiError::RateLimited { retry_after: 3 },
                429,
                "rate_limited",
            ),
            (ApiError::UpstreamUnavailable, 502, "upstream_unavailable"),
            (ApiError::Overloaded { retry_after: 1 }, 503, "overloaded"),
            (ApiError::UpstreamTimeout, 504, "upstream_timeout"),
            (
                ApiError::StoreUnavailable { retry_after: 2 },
                503,
                "store_unavailable",
            ),
            (
                ApiError::IssuerUnavailable { retry_after: 2 },
                503,
                "issuer_unavailable",
            ),
        ];
        for (e, status, code) in table {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            assert_eq!(e.code(), code);
            let resp = e.into_response();
            assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        }
    }

    #[test]
    fn bearer_challenges_follow_rfc6750() {
        let r = ApiError::MissingToken.into_response();
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer realm=\"authgate\"");
        let r = ApiError::InvalidToken("token \"expired\"\r\n".into()).into_response();
        assert_eq!(
            r.headers()[WWW_AUTHENTICATE],
            "Bearer realm=\"authgate\", error=\"invalid_token\", error_description=\"token expired\""
        );
        let r = ApiError::RateLimited { retry_after: 7 }.into_response();
        assert_eq!(r.headers()[RETRY_AFTER], "7");
        let r = ApiError::IssuerUnavailable { retry_after: 5 }.into_response();
        assert_eq!(r.headers()[RETRY_AFTER], "5");
    }
}
