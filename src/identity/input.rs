//! Reading the identity endpoints' request bodies: media type, size bound, JSON object.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use crate::body::Body;
use crate::error::ApiError;
use crate::state::Snapshot;

/// Is the body of this media type (parameters such as `; charset=utf-8` aside)?
pub(crate) fn has_media_type(req: &Request<Incoming>, media: &str) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(media))
}

/// Reads a JSON object body within `identity.max_body`.
pub(crate) async fn read_json(
    rt: &Snapshot,
    req: Request<Incoming>,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    if !has_media_type(&req, "application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = read_body(rt, req).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiError::InvalidRequest(
            "the body must be a JSON object".into(),
        )),
    }
}

/// Reads a whole body within `identity.max_body`.
pub(crate) async fn read_body(rt: &Snapshot, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let max = rt.config.identity.max_body;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    match Limited::new(req.into_body(), max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge),
        Err(_) => Err(ApiError::InvalidRequest(
            "the request body could not be read".into(),
        )),
    }
}

pub(crate) fn string_field(
    m: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<String, ApiError> {
    match m.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(ApiError::InvalidRequest(format!(
            "\"{key}\" must be a string"
        ))),
    }
}

pub(crate) fn no_store(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
