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
            let store = app.current.load().store.clone();
            let ping = tokio::task::spawn_blocking(move || store.ping()).await;
            match ping {
                Ok(Ok(())) => json(StatusCode::OK, &json!({ "status": "ok" })),
                Ok(Err(e)) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "status": "unavailable", "failing": "store", "message": e.to_string() }),
                ),
                Err(e) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "status": "unavailable", "failing": "store", "message": e.to_string() }),
                ),
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
        _ => crate::edge::error::ApiError::NotFound.into_response(),
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
