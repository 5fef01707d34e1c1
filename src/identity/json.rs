//! The JSON front-end of the identity endpoints (SPEC §3): register, login, refresh,
//! logout with JSON bodies.

use std::net::IpAddr;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::core::*;
use super::input::*;
use super::username::normalize_username;
use crate::body::{empty, json, Body};
use crate::error::ApiError;
use crate::request::ConnInfo;
use crate::state::Snapshot;
use crate::store::revocation_key;

pub(crate) async fn register(
    rt: &Snapshot,
    req: Request<Incoming>,
    ip: IpAddr,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    let r = register_inner(rt, req, ip).await;
    if let Ok((_, Some(u))) = &r {
        crate::audit::emit(crate::audit::Event::Register, u);
    }
    outcome(
        "authgate_registrations_total",
        match &r {
            Ok(_) => "created",
            Err(ApiError::UserExists) => "exists",
            Err(ApiError::RateLimited { .. }) => "rate_limited",
            Err(ApiError::RegistrationClosed) => "closed",
            Err(ApiError::Internal(_))
            | Err(ApiError::Overloaded { .. })
            | Err(ApiError::StoreUnavailable { .. }) => "error",
            Err(_) => "invalid",
        },
    );
    r
}

pub(crate) async fn register_inner(
    rt: &Snapshot,
    req: Request<Incoming>,
    ip: IpAddr,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    let id = &rt.config.identity;
    if !id.registration_open {
        return Err(ApiError::RegistrationClosed);
    }
    rt.limits
        .register_ip(ip)
        .await
        .map_err(|s| ApiError::RateLimited { retry_after: s })?;
    let body = read_json(rt, req).await?;
    let username = normalize_username(&string_field(&body, "username")?)?;
    let password = string_field(&body, "password")?;
    let chars = password.chars().count();
    if chars < id.min_password_length || chars > id.max_password_length {
        return Err(ApiError::InvalidRequest(format!(
            "password must be {} to {} characters",
            id.min_password_length, id.max_password_length
        )));
    }
    let hash = rt.passwords.hash(password).await?;
    let u = username.clone();
    store(rt, move |s| s.create_user(&u, &hash, &[])).await?;
    tracing::info!(user = %username, "registered");
    let body = json!({ "message": "User registered successfully", "username": username });
    Ok((json(StatusCode::CREATED, &body), Some(username)))
}

pub(crate) async fn login(
    rt: &Snapshot,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    let r = login_inner(rt, req, conn).await;
    count_login(&r);
    r
}

pub(crate) async fn login_inner(
    rt: &Snapshot,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    check_login_ip(rt, conn.peer.ip()).await?;
    // Decided before the body is read (the headers go with the request).
    let csrf = super::cookies::csrf(rt, &req, conn);
    let body = read_json(rt, req).await?;
    let raw_user = string_field(&body, "username")?;
    let password = string_field(&body, "password")?;
    // SPEC §12: `"session": true` puts the tokens in cookies instead of the body.
    let session = match body.get("session") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "\"session\" must be true or false".into(),
            ))
        }
    };
    if session {
        if !rt.config.session.cookie {
            return Err(ApiError::InvalidRequest(
                "browser sessions are off on this gateway (session.cookie = false)".into(),
            ));
        }
        // A login that sets cookies obeys the CSRF rule (login CSRF).
        csrf?;
    }
    let user = authenticate(rt, &raw_user, password).await?;
    let pair = issue_pair(rt, &user.username, &user.roles, None).await?;
    let resp = if session {
        super::cookies::session_response(rt, &pair, &user.username)
    } else {
        no_store(json(StatusCode::OK, &pair.body(rt)))
    };
    Ok((resp, Some(user.username)))
}

pub(crate) async fn refresh(
    rt: &Snapshot,
    req: Request<Incoming>,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    let body = read_json(rt, req).await?;
    let old = string_field(&body, "refresh_token")?;
    let (username, pair) = rotate(rt, &old).await?;
    Ok((
        no_store(json(StatusCode::OK, &pair.body(rt))),
        Some(username),
    ))
}

pub(crate) async fn logout(
    rt: &Snapshot,
    req: Request<Incoming>,
) -> Result<(Response<Body>, Option<String>), ApiError> {
    let body = read_json(rt, req).await?;
    let token = string_field(&body, "refresh_token")?;
    // SPEC §9: `"everywhere": true` revokes every session of the token's user.
    let everywhere = match body.get("everywhere") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "\"everywhere\" must be true or false".into(),
            ))
        }
    };
    let (username, session) = revoke_session(rt, &token).await?;
    if everywhere {
        revoke_everywhere(rt, &revocation_key(&session.idp, &username)).await?;
    }
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok((r, Some(username)))
}
