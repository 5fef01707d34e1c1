//! Fetching an issuer's discovery document and JWKS (SPEC §10): hyper-util's pooled
//! client over hyper-rustls with the TLS config from `net::https` (system roots plus
//! the issuer's `ca`), on a runtime of its own so that no fetch ever runs on, or
//! waits for, an event-loop worker (SPEC §13).

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::jwks::{JwksError, MAX_JWKS_BYTES};
use crate::config::issuer::check_fetch_url;
use crate::net::https::{client_config, ClientTlsOptions, HttpsError};

/// Everything one fetch may take, connect to last byte: a stalling IdP is a failed
/// fetch, and requests waiting for first keys give up after `jwks_wait` anyway.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Url(String),
    #[error("cannot reach {url}: {why}")]
    Connect { url: String, why: String },
    #[error("{url} did not answer within {FETCH_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: {err}")]
    Jwks { url: String, err: JwksError },
    #[error("discovery: {0}")]
    Discovery(String),
}

impl FetchError {
    /// The `outcome` label of `authgate_jwks_fetches_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            FetchError::Url(_) => "bad_url",
            FetchError::Connect { .. } => "unreachable",
            FetchError::Timeout { .. } => "timeout",
            FetchError::Status { .. } => "http_error",
            FetchError::Jwks { err, .. } => err.outcome(),
            FetchError::Discovery(_) => "discovery_failed",
        }
    }
}

/// The runtime every key fetch runs on: one thread, started on first use, for the
/// whole process (fetch tasks of a replaced config snapshot stop by themselves).
/// `None` only when no thread could be started: fetches then never run, and
/// requests get 503 issuer_unavailable instead of a crash.
pub fn runtime() -> Option<&'static tokio::runtime::Handle> {
    static RT: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    RT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("authgate-jwks".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let _ = tx.send(Some(rt.handle().clone()));
                        // Drives the fetch tasks spawned onto it, for the process's life.
                        rt.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the key-fetch runtime");
                        let _ = tx.send(None);
                    }
                }
            });
        spawned.ok().and_then(|_| rx.recv().ok().flatten())
    })
    .as_ref()
}

/// `Full` bodies: empty for the GETs of keys and discovery, a form for the token
/// request of a sign-in (SPEC §14), over the same pooled connections.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One pooled client per issuer, trusting the system roots plus its `ca`.
pub fn client(ca_pem: Option<&[u8]>) -> Result<HttpsClient, HttpsError> {
    let tls = client_config(&ClientTlsOptions {
        extra_ca_pem: ca_pem,
        client_identity: None,
        // Empty: hyper-rustls panics on a config with ALPN already set ("ALPN
        // protocols should not be pre-defined"); enable_http1 below decides it.
        alpn: &[],
    })?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(FETCH_TIMEOUT));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build(https))
}

/// GET `url`: status 200, body at most 1 MiB, all within [`FETCH_TIMEOUT`].
pub async fn get(client: &HttpsClient, url: &str) -> Result<(HeaderMap, Bytes), FetchError> {
    // SPEC §10: https, or plain http only to loopback — checked again here because a
    // discovery document may name any URL.
    check_fetch_url(url).map_err(FetchError::Url)?;
    let uri: Uri = url
        .parse()
        .map_err(|_| FetchError::Url(format!("{url:?} is not a URL")))?;
    let req = Request::get(uri)
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("authgate/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::new()))
        .map_err(|e| FetchError::Url(e.to_string()))?;
    let work = async {
        let resp = client.request(req).await.map_err(|e| FetchError::Connect {
            url: url.to_string(),
            why: error_chain(&e),
        })?;
        if resp.status() != StatusCode::OK {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: resp.status(),
            });
        }
        let (parts, body) = resp.into_parts();
        let too_large = || FetchError::Jwks {
            url: url.to_string(),
            err: JwksError::TooLarge,
        };
        if parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(too_large());
        }
        let body = Limited::new(body, MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_large()
                } else {
                    FetchError::Connect {
                        url: url.to_string(),
                        why: e.to_string(),
                    }
                }
            })?
            .to_bytes();
        Ok((parts.headers, body))
    };
    tokio::time::timeout(FETCH_TIMEOUT, work)
        .await
        .map_err(|_| FetchError::Timeout {
            url: url.to_string(),
        })?
}

/// What an OpenID provider's discovery document says, as far as authgate uses it:
/// the keys (SPEC §10) and, for sign-in (SPEC §14), the endpoints and RFC 9207.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub jwks_uri: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    /// RFC 9207 §3: the provider sends `iss` with every authorization response.
    pub iss_parameter_supported: bool,
}

/// The discovery document of an OpenID provider. OIDC Discovery §4.3: the document's
/// `issuer` must equal the configured one, or the document is not this issuer's.
/// Every endpoint named must pass the same https-or-loopback rule as the keys.
pub async fn discover(client: &HttpsClient, issuer: &str) -> Result<Discovery, FetchError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let (_, body) = get(client, &url).await.map_err(|e| match e {
        FetchError::Jwks { .. } => {
            FetchError::Discovery(format!("{url}: document larger than 1 MiB"))
        }
        other => FetchError::Discovery(other.to_string()),
    })?;
    let doc: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| FetchError::Discovery(format!("{url}: not JSON: {e}")))?;
    if doc.get("issuer").and_then(|v| v.as_str()) != Some(issuer) {
        return Err(FetchError::Discovery(format!(
            "{url}: its issuer is not {issuer:?}"
        )));
    }
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(|v| v.as_str())
        .ok_or_else(|| FetchError::Discovery(format!("{url}: no jwks_uri")))?;
    check_fetch_url(jwks_uri).map_err(|e| FetchError::Discovery(format!("jwks_uri {e}")))?;
    let endpoint = |name: &str| -> Result<Option<String>, FetchError> {
        match doc.get(name).and_then(|v| v.as_str()) {
            None => Ok(None),
            Some(u) => check_fetch_url(u)
                .map(|()| Some(u.to_string()))
                .map_err(|e| FetchError::Discovery(format!("{name} {e}"))),
        }
    };
    Ok(Discovery {
        jwks_uri: jwks_uri.to_string(),
        authorization_endpoint: endpoint("authorization_endpoint")?,
        token_endpoint: endpoint("token_endpoint")?,
        end_session_endpoint: endpoint("end_session_endpoint")?,
        iss_parameter_supported: doc
            .get("authorization_response_iss_parameter_supported")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
    })
}

/// An error with its sources, for one log line (TLS failures hide in the chain).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
