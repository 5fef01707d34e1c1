//! Upstreams: round robin over targets, skipping those that refused a
//! connection within `unhealthy_cooldown`; connections come from the worker's
//! own pool (`pool.rs`) or are opened here.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;

use super::pool::{self, Key, Stream};
use crate::body::Body;
use crate::config::{HealthCheck, Upstream};

/// Tells one snapshot's upstream from another's in the per-worker pools.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Why a request could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, connect timeout, TLS): nothing was sent.
    Connect(String),
    /// The upstream closed or reset the connection before any byte of answer
    /// (typically a pooled connection its keep-alive timeout closed as it was reused).
    Closed(String),
    /// The upstream stopped reading the request for `timeout` (stall.rs): it did
    /// not answer in time either.
    Stalled(String),
    /// The request went out, or may have, and the exchange failed.
    Protocol(String),
}

pub struct Target {
    pub authority: String,
    /// The name its certificate must carry (https targets, SPEC §11).
    server_name: Option<rustls::pki_types::ServerName<'static>>,
    /// The same, parsed once: request URIs are assembled from parts.
    pub parsed: Option<http::uri::Authority>,
    /// Milliseconds since `epoch` until which the target is skipped (0: healthy).
    down_until: AtomicU64,
}

pub struct Balancer {
    pub name: String,
    pub targets: Vec<Target>,
    next: AtomicUsize,
    id: u64,
    connect_timeout: Duration,
    /// `https://` targets: the rustls client (system roots + `tls.ca`, client cert).
    tls: Option<tokio_rustls::TlsConnector>,
    pub timeout: Duration,
    pub retries: u32,
    cooldown: Duration,
    epoch: Instant,
    health_check: Option<HealthCheck>,
}

impl Balancer {
    /// Reads the TLS files the upstream names (again on every reload); the error
    /// names the key at fault, relative to the upstream (`tls.ca: …`).
    ///
    /// `old` is the same-named upstream of the snapshot a reload replaces: when it
    /// reaches the same plain-HTTP targets with the same `timeout` (which its
    /// connections carry), this one takes over its idle connections — a reload
    /// does not reconnect to every backend. TLS upstreams always start afresh, so a
    /// re-read CA or client certificate applies to every new request.
    pub fn new(u: &Upstream, old: Option<&Balancer>) -> Result<Balancer, String> {
        let tls = tls_client(u)?;
        let same_conns = old.filter(|o| {
            o.tls.is_none()
                && tls.is_none()
                && o.timeout == u.timeout
                && o.targets.iter().map(|t| &t.authority).eq(u.targets.iter())
        });
        let id = same_conns.map_or_else(|| NEXT_ID.fetch_add(1, Ordering::Relaxed), |o| o.id);
        let name_for = |authority: &str| {
            let host = match u.tls.as_ref().and_then(|t| t.server_name.as_deref()) {
                Some(n) => n.to_string(),
                None => authority
                    .parse::<http::uri::Authority>()
                    .map(|a| a.host().trim_matches(['[', ']']).to_string())
                    .unwrap_or_default(),
            };
            rustls::pki_types::ServerName::try_from(host).ok()
        };
        Ok(Balancer {
            name: u.name.clone(),
            targets: u
                .targets
                .iter()
                .map(|a| Target {
                    authority: a.clone(),
                    server_name: tls.as_ref().and_then(|_| name_for(a)),
                    parsed: a.parse().ok(),
                    down_until: AtomicU64::new(0),
                })
                .collect(),
            tls,
            next: AtomicUsize::new(0),
            id: pool::register(id),
            connect_timeout: u.connect_timeout,
            timeout: u.timeout,
            retries: u.retries,
            cooldown: u.unhealthy_cooldown,
            epoch: Instant::now(),
            health_check: u.health_check.clone(),
        })
    }

    pub fn key(&self, i: usize) -> Key {
        (self.id, i)
    }
}

impl Drop for Balancer {
    /// The snapshot that owned this upstream is gone (a reload replaced it and its
    /// last request finished): its idle connections are closed at the next sweep.
    fn drop(&mut self) {
        pool::retire(self.id);
    }
}

impl Balancer {
    /// A new connection to target `i`, TCP connect (and TLS handshake) bounded
    /// by `connect_timeout`.
    async fn open(&self, i: usize) -> Result<SendRequest<Body>, SendError> {
        let t = &self.targets[i];
        let fail = |e: String| SendError::Connect(format!("{}: {e}", t.authority));
        let connect = async {
            let tcp = TcpStream::connect(t.authority.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            let ka = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&ka);
            let Some(tls) = &self.tls else {
                return Ok(Stream::Plain(tcp));
            };
            // SPEC §11: verified against the roots for the target's name; a
            // failure is a connect failure (502), never a fall back to plain text.
            let name = t
                .server_name
                .clone()
                .ok_or_else(|| "no server name to verify the certificate against".to_string())?;
            let s = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Ok::<_, String>(Stream::Tls(Box::new(s)))
        };
        let stream = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| fail(format!("no connection within {:?}", self.connect_timeout)))?
            .map_err(fail)?;
        pool::handshake(stream, self.timeout)
            .await
            .map_err(|e| SendError::Connect(format!("{}: {e}", t.authority)))
    }

    /// Sends `req` to target `i` on an idle connection of this worker (unless
    /// `fresh`), else on a new one. An idle connection found closed as the request
    /// goes out hands the request back unsent, and it goes out on the next one (or
    /// a new one).
    pub async fn send(
        &self,
        i: usize,
        mut req: Request<Body>,
        fresh: bool,
    ) -> Result<(Response<Incoming>, SendRequest<Body>), SendError> {
        let key = self.key(i);
        if !req.headers().contains_key(header::HOST) {
            if let Ok(h) = HeaderValue::from_str(&self.targets[i].authority) {
                req.headers_mut().insert(header::HOST, h);
            }
        }
        while let Some(mut s) = pool::checkout(key).filter(|_| !fresh) {
            if s.ready().await.is_err() {
                continue;
            }
            match s.try_send_request(req).await {
                Ok(resp) => return Ok((resp, s)),
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(self.fault(i, e.error())),
                },
            }
        }
        // Boxed: connecting (and a TLS handshake) is the rare path, and its future
        // would otherwise size every request's future.
        let mut s = Box::pin(self.open(i)).await?;
        match s.try_send_request(req).await {
            Ok(resp) => Ok((resp, s)),
            Err(e) => Err(self.fault(i, e.error())),
        }
    }

    fn fault(&self, i: usize, e: &hyper::Error) -> SendError {
        let msg = format!("{}: {}", self.targets[i].authority, super::source_chain(e));
        if closed_unanswered(e) {
            SendError::Closed(msg)
        } else if send_stalled(e) {
            SendError::Stalled(msg)
        } else {
            SendError::Protocol(msg)
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The next healthy target in round-robin order, avoiding `exclude` when there
    /// is another; when every target is down, the next one anyway.
    pub fn pick(&self, exclude: Option<usize>) -> usize {
        let n = self.targets.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        for k in 0..n {
            let i = (start + k) % n;
            if Some(i) == exclude && n > 1 {
                continue;
            }
            if self.targets[i].down_until.load(Ordering::Relaxed) <= now {
                return i;
            }
        }
        match exclude {
            Some(e) if n > 1 => (e + 1) % n,
            _ => start % n,
        }
    }

    pub fn mark_down(&self, i: usize) {
        let until = self.now_ms() + self.cooldown.as_millis() as u64;
        self.targets[i]
            .down_until
            .store(until.max(1), Ordering::Relaxed);
    }

    pub fn mark_up(&self, i: usize) {
        if self.targets[i].down_until.load(Ordering::Relaxed) != 0 {
            self.targets[i].down_until.store(0, Ordering::Relaxed);
        }
    }
}

/// The upstream closed or reset the connection before any response head: the
/// request can have had no answer (hyper: incomplete message; or a reset).
fn send_stalled(e: &hyper::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = c.source();
    }
    false
}

fn closed_unanswered(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe) {
                return true;
            }
        }
        cur = c.source();
    }
    false
}

/// SPEC §11: the rustls client of an `https://` upstream: system roots plus
/// `tls.ca`, optional client certificate (mTLS), HTTP/1.1 by ALPN.
fn tls_client(u: &Upstream) -> Result<Option<tokio_rustls::TlsConnector>, String> {
    use crate::net::https::{client_config, ClientIdentity, ClientTlsOptions};
    let Some(t) = &u.tls else { return Ok(None) };
    let read = |key: &str, s: &Option<crate::config::SecretRef>| {
        s.as_ref()
            .map(|s| s.read().map_err(|e| format!("tls.{key}: {e}")))
            .transpose()
    };
    let ca = read("ca", &t.ca)?;
    let cert = read("client_cert", &t.client_cert)?;
    let key = read("client_key", &t.client_key)?;
    let client_identity = match (&cert, &key) {
        (Some(c), Some(k)) => Some(ClientIdentity {
            cert_chain_pem: c,
            key_pem: k,
        }),
        _ => None,
    };
    let cfg = client_config(&ClientTlsOptions {
        extra_ca_pem: ca.as_deref(),
        client_identity,
        alpn: &[b"http/1.1"],
    })
    .map_err(|e| format!("tls.{e}"))?;
    Ok(Some(tokio_rustls::TlsConnector::from(cfg)))
}

/// Active health checks (`health_check = { path, interval }`): GET the path on
/// every target each interval; a 2xx/3xx marks it healthy, anything else skips it
/// for `unhealthy_cooldown`. The task ends when its config snapshot is dropped.
pub fn spawn_health_checks(balancer: &Arc<Balancer>) {
    let Some(hc) = balancer.health_check.clone() else {
        return;
    };
    let weak: Weak<Balancer> = Arc::downgrade(balancer);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(hc.interval.max(Duration::from_millis(100)));
        loop {
            tick.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            for (i, t) in pool.targets.iter().enumerate() {
                let Ok(uri) = hc.path.parse::<http::Uri>() else {
                    continue;
                };
                let mut req = http::Request::new(crate::body::empty());
                *req.uri_mut() = uri;
                let timeout = pool.timeout.min(hc.interval.max(Duration::from_secs(1)));
                let check = async {
                    let (resp, sender) = pool.send(i, req, false).await.ok()?;
                    let status = resp.status();
                    // Read to the end so the connection goes back to the pool.
                    let body = pool::Pooled::new(resp.into_body(), pool.key(i), sender);
                    http_body_util::BodyExt::collect(body).await.ok()?;
                    Some(status)
                };
                let ok = matches!(
                    tokio::time::timeout(timeout, check).await,
                    Ok(Some(s)) if s.is_success() || s.is_redirection()
                );
                if ok {
                    pool.mark_up(i);
                } else {
                    if pool.targets[i].down_until.load(Ordering::Relaxed) == 0 {
                        tracing::warn!(upstream = %pool.name, target = %t.authority, path = %hc.path, "health check failed");
                    }
                    pool.mark_down(i);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Balancer {
        let u = Upstream {
            name: "u".into(),
            targets: (0..n).map(|i| format!("127.0.0.1:{}", 1000 + i)).collect(),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_cooldown: Duration::from_secs(10),
            retries: 1,
            health_check: None,
            tls: None,
        };
        Balancer::new(&u, None).unwrap()
    }

    #[tokio::test]
    async fn round_robin_skips_unhealthy_targets() {
        let p = pool(3);
        let picks: Vec<usize> = (0..6).map(|_| p.pick(None)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        p.mark_down(1);
        let picks: Vec<usize> = (0..4).map(|_| p.pick(None)).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert_ne!(p.pick(Some(0)), 0);
        p.mark_up(1);
    }

    #[tokio::test]
    async fn all_down_still_picks_one() {
        let p = pool(2);
        p.mark_down(0);
        p.mark_down(1);
        let i = p.pick(None);
        assert!(i < 2);
    }
}
