//! The admin listener: /healthz, /readyz, /metrics (SPEC §6).

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{full, json, Body};
use crate::state::App;

async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    Ok(match req.uri().path() {
        "/healthz" => json(StatusCode::OK, &json!({ "status": "ok" })),
        "/readyz" => {
            let rt = app.current.load_full();
            let store = rt.store.clone();
            let limit = rt.config.identity.store_timeout;
            // SPEC §10: issuers without keys are named, but do not make the gateway
            // unready: its other routes and issuers serve, and every gateway behind a
            // load balancer would be pulled at once for one IdP's outage.
            let missing: Vec<String> = rt
                .verifier
                .issuers()
                .without_keys()
                .into_iter()
                .map(String::from)
                .collect();
            drop(rt);
            // Bounded like every store call: a silent store is "not ready", not a hang.
            let ping =
                tokio::time::timeout(limit, tokio::task::spawn_blocking(move || store.ping()))
                    .await;
            let failing = |message: String| {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "status": "unavailable", "failing": "store", "message": message }),
                )
            };
            match ping {
                Ok(Ok(Ok(()))) if !missing.is_empty() => json(
                    StatusCode::OK,
                    &json!({ "status": "ok", "issuers_without_keys": missing }),
                ),
                Ok(Ok(Ok(()))) => json(StatusCode::OK, &json!({ "status": "ok" })),
                Ok(Ok(Err(e))) => failing(format!("user store: {e}")),
                Ok(Err(e)) => failing(format!("user store: {e}")),
                Err(_) => failing(format!(
                    "user store: no answer within {}ms",
                    limit.as_millis()
                )),
            }
        }
        "/metrics" => {
            let mut r = Response::new(full(crate::metrics::render()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => crate::error::ApiError::NotFound.into_response(),
    })
}

pub async fn serve(listener: TcpListener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = stop.changed() => return,
        };
        let app = app.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(app.clone(), req));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
