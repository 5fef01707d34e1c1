//! Forwarding a request to its route's upstream and streaming the answer back.

pub mod headers;
pub mod pool;
pub mod stall;
pub mod upstream;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};

use crate::body::{empty, Body, BoxError};
use crate::error::ApiError;
use crate::verify::verified::Verified;
use headers::{clean_response, ClientInfo, HeaderRules};
use upstream::{Balancer, SendError};

#[derive(Debug)]
pub enum ProxyError {
    Connect(String),
    Timeout,
    Protocol(String),
}

impl From<ProxyError> for ApiError {
    fn from(e: ProxyError) -> ApiError {
        match e {
            ProxyError::Timeout => ApiError::UpstreamTimeout,
            // An upstream's fault is never a 500 (SPEC §5).
            ProxyError::Connect(_) | ProxyError::Protocol(_) => ApiError::UpstreamUnavailable,
        }
    }
}

impl ProxyError {
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::Connect(_) => "connect",
            ProxyError::Timeout => "timeout",
            ProxyError::Protocol(_) => "protocol",
        }
    }
}

/// The client's body without trailers: trailers could otherwise carry a header
/// (say `X-User`) past the strip-then-set rule.
struct NoTrailers(Incoming);

impl hyper::body::Body for NoTrailers {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match Pin::new(&mut self.0).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) if f.is_trailers() => continue,
                Poll::Ready(Some(Ok(f))) => return Poll::Ready(Some(Ok(f))),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// A client's WebSocket handshake: GET with `Upgrade: websocket` and `Connection: upgrade`.
pub fn is_websocket(req: &Request<Incoming>) -> bool {
    req.method() == http::Method::GET
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
            })
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

pub struct Outgoing<'a> {
    pub upstream: &'a Balancer,
    pub rules: &'a HeaderRules,
    /// Origin form: canonical path (after strip_prefix) plus `?query`.
    pub uri: Uri,
    pub identity: Option<&'a Verified>,
    pub client: ClientInfo<'a>,
}

/// Forwards `req`; returns the upstream's response and the target (index) that served it.
pub async fn forward(
    o: Outgoing<'_>,
    mut req: Request<Incoming>,
) -> Result<(Response<Body>, usize), ProxyError> {
    let websocket = is_websocket(&req);
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    // Room for what is added below (X-Forwarded-*, Forwarded, X-Request-Id, the
    // identity headers): one growth of the map instead of one per doubling.
    headers.reserve(6 + o.identity.map_or(0, |v| v.headers.len()));
    o.rules.clean(&mut headers, websocket);
    o.rules.set_forwarded(&mut headers, &o.client);
    if let Some(v) = o.identity {
        for (name, value) in &v.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
    // The upstream gets the host the request was routed by: the client's Host, or
    // the authority of an absolute-form target (RFC 9112 §3.2.2: a proxy replaces
    // Host with it) or of an HTTP/2 request (:authority; upstreams speak HTTP/1.1).
    // Usually that is the Host header already there: then nothing to do.
    if let Some(h) = o.client.host {
        if headers.get(header::HOST) != Some(h) {
            headers.insert(header::HOST, h.clone());
        }
    }
    let bodiless = body.is_end_stream();
    let mut body = if bodiless {
        Some(empty())
    } else {
        Some(NoTrailers(body).boxed())
    };
    // Upstreams get the origin form (RFC 9112 §3.2.1); Host is set above.
    let mut uri = o.uri;
    let mut tried: Option<usize> = None;
    let mut attempts_left = 1 + o.upstream.retries;
    // RFC 9110 §9.2.2: an idempotent request without a body may be replayed when the
    // upstream closed the connection without a byte of answer (typically a pooled
    // connection its keep-alive timeout closed as we reused it) — once, on a fresh
    // connection to the same target, unless `retries = 0`.
    let mut replay = bodiless && o.upstream.retries > 0 && parts.method.is_idempotent();
    let mut replaying: Option<usize> = None;
    loop {
        attempts_left -= 1;
        let i = replaying.unwrap_or_else(|| o.upstream.pick(tried));
        // Retrying is only safe when nothing could have been sent: no body, and
        // another target to try.
        let can_retry = bodiless && attempts_left > 0 && o.upstream.targets.len() > 1;
        let mut out = Request::new(body.take().unwrap_or_else(empty));
        *out.method_mut() = parts.method.clone();
        *out.version_mut() = Version::HTTP_11;
        // Copies only when another attempt may need them.
        if can_retry || replay {
            *out.uri_mut() = uri.clone();
            *out.headers_mut() = headers.clone();
        } else {
            *out.uri_mut() = std::mem::take(&mut uri);
            *out.headers_mut() = std::mem::take(&mut headers);
        }
        let fresh = replaying.is_some();
        match tokio::time::timeout(o.upstream.timeout, o.upstream.send(i, out, fresh)).await {
            Err(_) => return Err(ProxyError::Timeout),
            Ok(Err(SendError::Connect(e))) => {
                o.upstream.mark_down(i);
                if can_retry {
                    tried = Some(i);
                    body = Some(empty());
                    continue;
                }
                return Err(ProxyError::Connect(e));
            }
            Ok(Err(SendError::Closed(e))) if replay => {
                tracing::debug!(error = %e, "upstream closed unanswered; replaying on a fresh connection");
                replay = false;
                replaying = Some(i);
                attempts_left += 1;
                body = Some(empty());
                continue;
            }
            // An upstream that stopped reading the request did not answer in time.
            Ok(Err(SendError::Stalled(_))) => return Err(ProxyError::Timeout),
            Ok(Err(SendError::Closed(e) | SendError::Protocol(e))) => {
                return Err(ProxyError::Protocol(e))
            }
            Ok(Ok((mut resp, sender))) => {
                o.upstream.mark_up(i);
                let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                if upgraded && !websocket {
                    // Never answer 101 to anything but a WebSocket handshake (SPEC §8).
                    return Err(ProxyError::Protocol(
                        "upstream switched protocols unasked".into(),
                    ));
                }
                clean_response(resp.headers_mut(), upgraded);
                if upgraded {
                    // The connection becomes the tunnel; it never goes back to the pool.
                    drop(sender);
                    if let Some(client_upgrade) = client_upgrade {
                        let upstream_upgrade = hyper::upgrade::on(&mut resp);
                        tokio::spawn(async move {
                            if let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) {
                                let mut c = hyper_util::rt::TokioIo::new(c);
                                let mut u = hyper_util::rt::TokioIo::new(u);
                                let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                            }
                        });
                    }
                    let resp = resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed());
                    return Ok((resp, i));
                }
                let key = o.upstream.key(i);
                // After the headers, `timeout` bounds each silence of the body (stall.rs).
                let gap = o.upstream.timeout;
                let resp = resp.map(|b| {
                    stall::ReadGap::new(pool::Pooled::new(b, key, sender).boxed(), gap).boxed()
                });
                return Ok((resp, i));
            }
        }
    }
}

pub(crate) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
