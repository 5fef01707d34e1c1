//! The example backend `authgate demo` runs next to the gateway: it trusts
//! `X-User` and nothing else, as a real backend behind authgate would.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;

use crate::body::{full, json, Body};

/// What a browser gets: the greeting as a page, with a way to sign out.
fn greeting_page(user: &str) -> Response<Body> {
    let user = crate::identity::browser::escape(user);
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>authgate demo</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}}</style></head>\n\
         <body><h1>Hello, {user}!</h1><p id=\"greeting\">Hello, {user}! This is a protected resource.</p>\
         <p>The demo backend read your name from the <code>X-User</code> header that authgate set; \
         it never saw your password or your token.</p>\
         <form method=\"post\" action=\"/logout\"><button type=\"submit\">Sign out</button></form></body></html>\n"
    );
    let mut r = Response::new(full(html));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let user = req
        .headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = req.uri().path();
    let browser = crate::identity::session::is_navigation(req.method(), req.headers());
    Ok(if path == "/protected" || path.starts_with("/protected/") {
        match user {
            Some(u) if browser => greeting_page(&u),
            Some(u) => json(
                StatusCode::OK,
                &json!({ "message": format!("Hello, {u}! This is a protected resource."), "user": u }),
            ),
            // Only reachable if the gateway were misconfigured: say so.
            None => json(
                StatusCode::UNAUTHORIZED,
                &json!({ "error": "no X-User header" }),
            ),
        }
    } else if path == "/hello" || path.starts_with("/hello/") {
        json(
            StatusCode::OK,
            &json!({ "message": "Hello! This is a public resource." }),
        )
    } else {
        json(StatusCode::NOT_FOUND, &json!({ "error": "not_found" }))
    })
}

/// Binds the example backend; it serves until the process ends.
pub async fn spawn_backend(addr: SocketAddr) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("demo backend cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        while let Ok((stream, _)) = listener.accept().await {
            let builder = builder.clone();
            tokio::spawn(async move {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    });
    Ok(local)
}
