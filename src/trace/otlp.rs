//! OTLP/HTTP span export (SPEC §18): one SERVER span per request of a sampled
//! trace, queued in a bounded channel (full: dropped and counted, a worker never
//! waits), batched by a thread of its own (512 spans or 1 s) and POSTed to
//! `{otlp_endpoint}/v1/traces` as OTLP JSON. JSON rather than protobuf: the
//! collector accepts both, and JSON needs no new dependency (serde_json is here).
//!
//! Off unless `[telemetry] otlp_endpoint` is set at start; the request path then
//! pays one `OnceLock` check.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::TraceContext;

const BATCH_SPANS: usize = 512;
const BATCH_WAIT: Duration = Duration::from_secs(1);
/// Spans waiting for the exporter; beyond this they are dropped, not queued.
const QUEUE: usize = 8192;
const POST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("telemetry.otlp_endpoint: {0}")]
    Endpoint(String),
    #[error("telemetry: cannot start the exporter: {0}")]
    Start(String),
}

/// What one finished request contributes to its trace.
pub struct SpanRecord {
    pub ctx: TraceContext,
    pub method: Method,
    /// The route's label (its path prefix, an identity endpoint, or "none").
    pub route: String,
    pub path: String,
    pub status: u16,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
}

static QUEUE_TX: OnceLock<mpsc::Sender<SpanRecord>> = OnceLock::new();

/// Whether spans are exported (checked once per request).
pub fn enabled() -> bool {
    QUEUE_TX.get().is_some()
}

/// Queues one span; never waits. A full queue drops the span and counts it.
pub fn submit(span: SpanRecord) {
    if let Some(tx) = QUEUE_TX.get() {
        if tx.try_send(span).is_err() {
            metrics::counter!("authgate_trace_spans_dropped_total").increment(1);
        }
    }
}

/// The request path's hook: one span for a finished request of a sampled
/// trace. With export off this is the one branch the request pays.
#[inline]
pub fn finish(
    ctx: &TraceContext,
    method: &Method,
    route: &str,
    path: Option<&str>,
    status: u16,
    elapsed: Duration,
) {
    if !enabled() || !ctx.sampled() {
        return;
    }
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let end_ns = end.as_nanos() as u64;
    submit(SpanRecord {
        ctx: *ctx,
        method: method.clone(),
        route: route.to_string(),
        path: path.unwrap_or("-").to_string(),
        status,
        start_unix_nanos: end_ns.saturating_sub(elapsed.as_nanos() as u64),
        end_unix_nanos: end_ns,
    });
}

type OtlpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// `[telemetry]` at start: export on when `otlp_endpoint` is set. A failure to
/// start is logged; the gateway serves without export rather than not at all.
pub fn start_from(t: &crate::config::telemetry::Telemetry) {
    if let Some(e) = &t.otlp_endpoint {
        if let Err(e) = start(e) {
            tracing::error!(error = %e, "span export off");
        }
    }
}

/// Starts the exporter thread for `endpoint` (once per process; a reload that
/// changes the endpoint needs a restart).
pub fn start(endpoint: &str) -> Result<(), OtlpError> {
    if QUEUE_TX.get().is_some() {
        return Ok(());
    }
    let url: http::Uri = format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        .parse()
        .map_err(|e: http::uri::InvalidUri| OtlpError::Endpoint(e.to_string()))?;
    let tls = crate::net::https::client_config(&crate::net::https::ClientTlsOptions {
        extra_ca_pem: None,
        client_identity: None,
        alpn: &[],
    })
    .map_err(|e| OtlpError::Start(e.to_string()))?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OtlpError::Start(e.to_string()))?;
    std::thread::Builder::new()
        .name("authgate-otlp".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                http.set_connect_timeout(Some(Duration::from_secs(5)));
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config((*tls).clone())
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http);
                let client: OtlpClient = Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(https);
                run(rx, client, url).await
            })
        })
        .map_err(|e| OtlpError::Start(e.to_string()))?;
    let _ = QUEUE_TX.set(tx);
    Ok(())
}

async fn run(mut rx: mpsc::Receiver<SpanRecord>, client: OtlpClient, url: http::Uri) {
    let mut batch = Vec::with_capacity(BATCH_SPANS);
    loop {
        // Wait for a first span, then up to BATCH_WAIT for the batch to fill.
        match rx.recv().await {
            Some(s) => batch.push(s),
            None => return,
        }
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while batch.len() < BATCH_SPANS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let body = export_request(&batch);
        batch.clear();
        post(&client, &url, body).await;
    }
}

async fn post(client: &OtlpClient, url: &http::Uri, body: Vec<u8>) {
    let n = body.len();
    let req = match Request::post(url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "otlp export: cannot build the request");
            return;
        }
    };
    let outcome = match tokio::time::timeout(POST_TIMEOUT, client.request(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() => "ok",
        Ok(Ok(resp)) => {
            tracing::warn!(
                status = resp.status().as_u16(),
                bytes = n,
                "otlp export refused"
            );
            "refused"
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "otlp export failed");
            "error"
        }
        Err(_) => {
            tracing::warn!("otlp export timed out");
            "error"
        }
    };
    metrics::counter!("authgate_trace_exports_total", "outcome" => outcome).increment(1);
}

fn attr_str(k: &str, v: &str) -> Value {
    json!({ "key": k, "value": { "stringValue": v } })
}

/// The OTLP JSON encoding of an ExportTraceServiceRequest (ids as hex, times as
/// decimal strings, enums as integers: OTLP spec, "JSON Protobuf Encoding").
pub fn export_request(spans: &[SpanRecord]) -> Vec<u8> {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let hex = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let mut span = json!({
                "traceId": hex(&s.ctx.trace_id),
                "spanId": hex(&s.ctx.span_id),
                "name": format!("{} {}", s.method, s.route),
                "kind": 2,
                "startTimeUnixNano": s.start_unix_nanos.to_string(),
                "endTimeUnixNano": s.end_unix_nanos.to_string(),
                "attributes": [
                    attr_str("http.request.method", s.method.as_str()),
                    attr_str("http.route", &s.route),
                    attr_str("url.path", &s.path),
                    json!({ "key": "http.response.status_code", "value": { "intValue": s.status.to_string() } }),
                ],
                // STATUS_CODE_ERROR = 2 for 5xx (semantic conventions: server spans).
                "status": if s.status >= 500 { json!({ "code": 2 }) } else { json!({}) },
            });
            if let Some(p) = &s.ctx.parent_id {
                span["parentSpanId"] = Value::String(hex(p));
            }
            span
        })
        .collect();
    let req = json!({
        "resourceSpans": [{
            "resource": { "attributes": [attr_str("service.name", "authgate")] },
            "scopeSpans": [{
                "scope": { "name": "authgate", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    });
    serde_json::to_vec(&req).unwrap_or_default()
}
