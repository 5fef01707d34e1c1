//! Trace context (SPEC §18): what the upstream receives as `traceparent` and
//! `tracestate`, the access log's `trace_id`, and the spans exported over OTLP/HTTP.
mod common;
use common::*;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// `00-<32 hex>-<16 hex>-<2 hex>`, lower case, ids not all zero.
fn parse_tp(v: &str) -> (String, String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "{v}");
    assert_eq!(parts[0], "00", "{v}");
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    assert!(
        hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2),
        "{v}"
    );
    assert!(parts[1].bytes().any(|b| b != b'0') && parts[2].bytes().any(|b| b != b'0'));
    (parts[1].into(), parts[2].into(), parts[3].into())
}

async fn send(gw: &Gateway, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = client().get(gw.url("/public/t"));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r
}

#[tokio::test]
async fn a_valid_traceparent_keeps_its_trace_and_flags_with_the_gateway_as_parent() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    send(
        &gw,
        &[("traceparent", &tp), ("tracestate", "congo=t61rcWkgMzE")],
    )
    .await;
    let seen = up.last();
    assert_eq!(seen.header_all("traceparent").len(), 1);
    let (trace, parent, flags) = parse_tp(&seen.header("traceparent").unwrap());
    assert_eq!(trace, CLIENT_TRACE);
    assert_ne!(parent, CLIENT_SPAN, "the gateway's own span is the parent");
    assert_eq!(flags, "01");
    assert_eq!(
        seen.header("tracestate").as_deref(),
        Some("congo=t61rcWkgMzE")
    );
    // An unsampled trace stays unsampled.
    send(
        &gw,
        &[(
            "traceparent",
            &format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"),
        )],
    )
    .await;
    let (_, _, flags) = parse_tp(&up.last().header("traceparent").unwrap());
    assert_eq!(flags, "00");
}

#[tokio::test]
async fn without_a_traceparent_the_upstream_gets_a_new_valid_one() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    send(&gw, &[]).await;
    let (a, _, flags) = parse_tp(&up.last().header("traceparent").unwrap());
    assert_eq!(flags, "01", "sample_ratio defaults to 1.0");
    send(&gw, &[]).await;
    let (b, _, _) = parse_tp(&up.last().header("traceparent").unwrap());
    assert_ne!(a, b, "each request starts its own trace");
}

#[tokio::test]
async fn malformed_traceparents_are_replaced_never_forwarded_and_drop_tracestate() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let bad = [
        format!("00-{}-{CLIENT_SPAN}-01", CLIENT_TRACE.to_uppercase()),
        format!("00-{}-{CLIENT_SPAN}-01", "0".repeat(32)),
        format!("00-{CLIENT_TRACE}-{}-01", "0".repeat(16)),
        format!("00-{}-{CLIENT_SPAN}-01", &CLIENT_TRACE[1..]),
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-1"),
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-extra"),
        format!("ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
        "garbage".to_string(),
    ];
    for v in &bad {
        send(&gw, &[("traceparent", v), ("tracestate", "vendor=secret")]).await;
        let seen = up.last();
        let fwd = seen.header_all("traceparent");
        assert_eq!(fwd.len(), 1, "{v}");
        assert_ne!(&fwd[0], v, "forwarded as is: {v}");
        let (trace, _, _) = parse_tp(&fwd[0]);
        assert_ne!(trace, CLIENT_TRACE.to_lowercase(), "{v}");
        assert_eq!(seen.header("tracestate"), None, "{v}");
    }
    // Two headers, each valid alone: which one is meant is unknowable.
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let raw_req = format!(
        "GET /public/two HTTP/1.1\r\nHost: gw\r\ntraceparent: {tp}\r\ntraceparent: {tp}\r\ntracestate: a=b\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw(gw.addr, &raw_req).status, 200);
    let seen = up.last();
    let fwd = seen.header_all("traceparent");
    assert_eq!(fwd.len(), 1);
    assert_ne!(parse_tp(&fwd[0]).0, CLIENT_TRACE);
    assert_eq!(seen.header("tracestate"), None);
}

#[tokio::test]
async fn a_client_cannot_make_the_gateway_drop_its_traceparent_through_connection() {
    let up = Upstream::start();
    let gw = Gateway::start(&Cfg::new(up.addr));
    let raw_req = "GET /public/conn HTTP/1.1\r\nHost: gw\r\nConnection: close, traceparent\r\n\r\n";
    assert_eq!(raw(gw.addr, raw_req).status, 200);
    parse_tp(
        &up.last()
            .header("traceparent")
            .expect("no traceparent upstream"),
    );
}

#[tokio::test]
async fn the_access_log_line_carries_the_trace_id() {
    let up = Upstream::start();
    let gw = Gateway::start_env(&Cfg::new(up.addr), &[("AUTHGATE_LOG_FORMAT", "json")]);
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = send(&gw, &[("traceparent", &tp)]).await;
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(gw.wait_log(&rid, 1, Duration::from_secs(5)));
    let logs = gw.logs();
    let line = logs.lines().find(|l| l.contains(&rid)).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["trace_id"], CLIENT_TRACE);
    // A new trace is logged under the id the upstream received.
    let r = send(&gw, &[]).await;
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let (fwd_trace, _, _) = parse_tp(&up.last().header("traceparent").unwrap());
    assert!(gw.wait_log(&rid, 1, Duration::from_secs(5)));
    let logs = gw.logs();
    let line = logs.lines().find(|l| l.contains(&rid)).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["trace_id"], fwd_trace.as_str());
}

/// A small OTLP/HTTP receiver: every POST body to /v1/traces, decoded as JSON.
fn otlp_receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let addr = serve_loopback(move |stream| {
        let g = g.clone();
        async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let g = g.clone();
                    async move {
                        let ok = req.uri().path() == "/v1/traces"
                            && req.headers()["content-type"] == "application/json";
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        if ok {
                            g.lock()
                                .unwrap()
                                .push(serde_json::from_slice(&body).unwrap());
                        }
                        let status = if ok { 200 } else { 400 };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(bytes::Bytes::from_static(b"{}")))
                                .unwrap(),
                        )
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        }
    });
    (addr, got)
}

fn spans(got: &Arc<Mutex<Vec<serde_json::Value>>>) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for req in got.lock().unwrap().iter() {
        for rs in req["resourceSpans"].as_array().unwrap() {
            let attrs = &rs["resource"]["attributes"];
            assert!(attrs
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["key"] == "service.name" && a["value"]["stringValue"] == "authgate"));
            for ss in rs["scopeSpans"].as_array().unwrap() {
                out.extend(ss["spans"].as_array().unwrap().iter().cloned());
            }
        }
    }
    out
}

fn wait_spans(got: &Arc<Mutex<Vec<serde_json::Value>>>, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let s = spans(got);
        if s.len() >= n {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    spans(got)
}

fn attr<'a>(span: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    let a = span["attributes"].as_array().unwrap();
    &a.iter()
        .find(|a| a["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {span}"))["value"]
}

fn with_telemetry(up: std::net::SocketAddr, otlp: std::net::SocketAddr, ratio: &str) -> Cfg {
    let mut cfg = Cfg::new(up);
    cfg.rest.push_str(&format!(
        "\n[[route]]\npath = \"/status\"\nupstream = \"app\"\nauth = \"public\"\n\n[telemetry]\notlp_endpoint = \"http://{otlp}\"\nsample_ratio = {ratio}\n"
    ));
    cfg
}

#[tokio::test]
async fn each_request_of_a_sampled_trace_is_exported_as_one_server_span() {
    let up = Upstream::start();
    let (otlp, got) = otlp_receiver();
    let gw = Gateway::start(&with_telemetry(up.addr, otlp, "1.0"));
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    send(&gw, &[("traceparent", &tp)]).await;
    let (_, our_span, _) = parse_tp(&up.last().header("traceparent").unwrap());
    let r = client().get(gw.url("/status/503")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let s = wait_spans(&got, 2);
    assert_eq!(s.len(), 2, "{s:?}");
    let first = s.iter().find(|s| s["traceId"] == CLIENT_TRACE).unwrap();
    assert_eq!(first["spanId"], our_span.as_str());
    assert_eq!(first["parentSpanId"], CLIENT_SPAN);
    assert_eq!(first["kind"], 2);
    assert_eq!(first["name"], "GET /public");
    assert_eq!(attr(first, "http.request.method")["stringValue"], "GET");
    assert_eq!(attr(first, "http.route")["stringValue"], "/public");
    assert_eq!(attr(first, "url.path")["stringValue"], "/public/t");
    assert_eq!(attr(first, "http.response.status_code")["intValue"], "200");
    let start: u64 = first["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: u64 = first["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(start > 0 && start <= end);
    let failed = s.iter().find(|s| s["traceId"] != CLIENT_TRACE).unwrap();
    assert!(failed.get("parentSpanId").is_none());
    assert_eq!(failed["name"], "GET /status");
    assert_eq!(failed["status"]["code"], 2, "5xx is an error span");
}

#[tokio::test]
async fn sample_ratio_zero_exports_no_new_trace_but_honours_a_sampled_client() {
    let up = Upstream::start();
    let (otlp, got) = otlp_receiver();
    let gw = Gateway::start(&with_telemetry(up.addr, otlp, "0"));
    for _ in 0..5 {
        send(&gw, &[]).await;
        let (_, _, flags) = parse_tp(&up.last().header("traceparent").unwrap());
        assert_eq!(flags, "00");
    }
    send(
        &gw,
        &[(
            "traceparent",
            &format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"),
        )],
    )
    .await;
    send(
        &gw,
        &[(
            "traceparent",
            &format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
        )],
    )
    .await;
    let s = wait_spans(&got, 1);
    // Give a wrongly exported span its batch interval to show up.
    std::thread::sleep(Duration::from_millis(1500));
    let s2 = spans(&got);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s2.len(), 1, "{s2:?}");
    assert_eq!(s2[0]["traceId"], CLIENT_TRACE);
}

#[test]
fn check_refuses_a_sample_ratio_outside_zero_to_one_at_its_line() {
    let dir = TempDir::new("trace-check");
    let mut cfg = Cfg::new(dead_addr());
    cfg.rest
        .push_str("\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 2\n");
    let text = cfg.render();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("sample_ratio"))
        .unwrap()
        + 1;
    let out = run_cli(&path, &["check"], None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            ":{line}:1: telemetry.sample_ratio: expected a number from 0 to 1"
        )),
        "{}",
        out.stderr
    );
}
