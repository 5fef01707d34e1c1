//! Test harness: the real `authgate` binary on 127.0.0.1:0, a recording upstream
//! (a small hyper server on its own thread), and clients. Waits have deadlines;
//! nothing listens on a fixed port.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};

pub mod browser;
pub mod cluster;
pub mod idp;
pub mod oidc;
pub mod services;
pub mod webdriver;

pub const BIN: &str = env!("CARGO_BIN_EXE_authgate");

// ---------------------------------------------------------------- temp dirs

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "authgate-test-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- upstream

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query exactly as received.
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body, when the client sent any that got through.
    pub trailers: Option<http::HeaderMap>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
}

/// A recording upstream. Paths it understands:
/// `/slow?ms=N` waits N ms (default 5000) before answering; `/big?bytes=N` streams
/// N bytes of `x`; `/status/NNN` answers NNN; `/ws` accepts a WebSocket upgrade and
/// echoes; anything else answers 200 `{"path": ...}`. Every request is recorded
/// (body included) before it is answered.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    closed: Arc<std::sync::atomic::AtomicUsize>,
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn query_num(uri: &http::Uri, key: &str, default: u64) -> u64 {
    uri.query()
        .and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn upstream_handle(
    seen: Arc<Mutex<Vec<Recorded>>>,
    mut req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    let uri = req.uri().clone();
    let method = req.method().to_string();
    let headers = req.headers().clone();
    let path = uri.path().to_string();
    if path == "/ws" || path.starts_with("/public/ws") || path.starts_with("/protected/ws") {
        let upgrade = hyper::upgrade::on(&mut req);
        seen.lock().unwrap().push(Recorded {
            method,
            uri: uri.to_string(),
            headers,
            body: vec![],
            trailers: None,
        });
        tokio::spawn(async move {
            if let Ok(up) = upgrade.await {
                let mut io = hyper_util::rt::TokioIo::new(up);
                let mut buf = [0u8; 1024];
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()).boxed());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        r.headers_mut()
            .insert("connection", "Upgrade".parse().unwrap());
        return Ok(r);
    }
    let (body, trailers) = match req.into_body().collect().await {
        Ok(c) => {
            let trailers = c.trailers().cloned();
            (c.to_bytes().to_vec(), trailers)
        }
        Err(_) => (Vec::new(), None),
    };
    seen.lock().unwrap().push(Recorded {
        method,
        uri: uri.to_string(),
        headers,
        body,
        trailers,
    });
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_millis(query_num(&uri, "ms", 5000))).await;
    }
    if path.ends_with("/big") {
        let n = query_num(&uri, "bytes", 5 << 20) as usize;
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut chunks = Vec::new();
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            chunks.push(Ok::<_, Infallible>(Frame::data(chunk.slice(..k))));
            left -= k;
        }
        let stream = futures_util::stream::iter(chunks);
        return Ok(Response::new(StreamBody::new(stream).boxed()));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let mut r = Response::new(Full::new(Bytes::from("status")).boxed());
        *r.status_mut() = StatusCode::from_u16(code.parse().unwrap_or(500))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(r);
    }
    let body = serde_json::json!({ "path": uri.to_string() }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(r)
}

/// A server on 127.0.0.1:0 on a thread of its own (a current-thread runtime):
/// `on_conn` runs as a task for every accepted connection. Returns the address.
pub fn serve_loopback<F, Fut>(on_conn: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                let Ok((stream, _)) = l.accept().await else {
                    continue;
                };
                tokio::task::spawn_local(on_conn(stream));
            }
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("loopback server did not start")
}

impl Upstream {
    pub fn start() -> Upstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, a, c) = (seen.clone(), accepted.clone(), closed.clone());
        let addr = serve_loopback(move |stream| {
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (s, c) = (s.clone(), c.clone());
            async move {
                let svc = hyper::service::service_fn(move |req| upstream_handle(s.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Upstream {
            addr,
            seen,
            accepted,
            closed,
        }
    }

    /// Connections accepted and not yet closed (by either side).
    pub fn open_connections(&self) -> usize {
        let closed = self.closed.load(std::sync::atomic::Ordering::SeqCst);
        self.connections() - closed
    }

    /// TCP connections accepted so far (to see whether the gateway pools them).
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    pub fn last(&self) -> Recorded {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }
    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// An address nothing listens on (bound, then closed).
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------- config

/// gateway.toml for tests, section by section (each field is the section's body).
/// Defaults: ephemeral port, cheap Argon2 parameters, rate limits off, and
/// routes /public (public), /optional (optional), /protected (required) and
/// /admin (required, roles ∋ admin) on upstream "app".
#[derive(Clone)]
pub struct Cfg {
    pub server: String,
    pub admin: Option<String>,
    pub identity: String,
    pub rate_limit: String,
    pub tokens: String,
    pub forward: String,
    /// `[[upstream]]` and `[[route]]` tables.
    pub rest: String,
}

impl Cfg {
    pub fn new(upstream: SocketAddr) -> Cfg {
        Cfg {
            server: "listen = [\"127.0.0.1:0\"]\n".into(),
            admin: None,
            identity: "store = \"sqlite:data/users.db\"\npassword_hash = { memory_kib = 1024, iterations = 1, parallelism = 1 }\n".into(),
            rate_limit: "login_per_ip = \"off\"\nlogin_per_user = \"off\"\nregister_per_ip = \"off\"\n".into(),
            tokens: "algorithm = \"EdDSA\"\nsigning_key = \"file:data/signing-key.pem\"\n".into(),
            forward: "identity_header = \"X-User\"\nclaim_headers = { \"X-User-Roles\" = \"roles\" }\n".into(),
            rest: format!(
                "[[upstream]]\nname = \"app\"\ntargets = [\"http://{upstream}\"]\ntimeout = \"2s\"\n\n\
                 [[route]]\npath = \"/public\"\nupstream = \"app\"\nauth = \"public\"\n\n\
                 [[route]]\npath = \"/optional\"\nupstream = \"app\"\nauth = \"optional\"\n\n\
                 [[route]]\npath = \"/protected\"\nupstream = \"app\"\n\n\
                 [[route]]\npath = \"/admin\"\nupstream = \"app\"\nrequire = {{ roles = [\"admin\"] }}\n"
            ),
        }
    }

    pub fn render(&self) -> String {
        let mut s = format!("[server]\n{}\n", self.server);
        if let Some(a) = &self.admin {
            s.push_str(&format!("[admin]\n{a}\n"));
        }
        s.push_str(&format!(
            "[identity]\n{}\n[rate_limit]\n{}\n[tokens]\n{}\n[forward]\n{}\n{}",
            self.identity, self.rate_limit, self.tokens, self.forward, self.rest
        ));
        s
    }
}

// ---------------------------------------------------------------- gateway

pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub dir: TempDir,
    pub config_path: PathBuf,
    child: Option<Child>,
    logs: Arc<Mutex<String>>,
    /// How it was started, so that `restart` starts the same thing again.
    env: Vec<(String, String)>,
    cmd: String,
}

/// A started `authgate` process, ready (its listening lines read back).
struct Spawned {
    child: Child,
    logs: Arc<Mutex<String>>,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
}

fn parse_addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Writes `config` to `config_path`, runs `authgate <cmd> -c config_path` and waits
/// (with a deadline) for its listening lines.
fn spawn(
    config_path: &Path,
    config: &str,
    env: &[(String, String)],
    cmd: &str,
) -> Result<Spawned, String> {
    std::fs::write(config_path, config).unwrap();
    let mut c = Command::new(BIN);
    c.arg(cmd)
        .arg("-c")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c.env("AUTHGATE_LOG", "info");
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("spawn authgate");
    let stderr = child.stderr.take().unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel::<(bool, SocketAddr)>();
    let l = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(a) = parse_addr_after(&line, "admin listening on ") {
                let _ = tx.send((true, a));
            } else if let Some(a) = parse_addr_after(&line, "listening on ") {
                if !line.contains("demo backend") {
                    let _ = tx.send((false, a));
                }
            }
            let mut g = l.lock().unwrap();
            g.push_str(&line);
            g.push('\n');
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut addr = None;
    let mut admin = None;
    let want_admin = config.lines().any(|l| l.trim() == "[admin]");
    while Instant::now() < deadline && (addr.is_none() || (want_admin && admin.is_none())) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((true, a)) => admin = Some(a),
            Ok((false, a)) => {
                if addr.is_none() {
                    addr = Some(a)
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = child.try_wait() {
                    std::thread::sleep(Duration::from_millis(100));
                    return Err(format!(
                        "authgate exited ({status}) before ready:\n{}",
                        logs.lock().unwrap()
                    ));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "authgate never printed 'listening on':\n{}",
            logs.lock().unwrap()
        ));
    };
    Ok(Spawned {
        child,
        logs,
        addr,
        admin,
    })
}

impl Gateway {
    pub fn start(cfg: &Cfg) -> Gateway {
        Self::start_text(&cfg.render(), &[])
    }

    pub fn start_env(cfg: &Cfg, env: &[(&str, &str)]) -> Gateway {
        Self::start_text(&cfg.render(), env)
    }

    pub fn start_text(config: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = TempDir::new("gw");
        Self::start_in(dir, config, env, "serve").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `authgate <cmd>` in `dir` with `config`; Err with the logs if it never gets ready.
    pub fn start_in(
        dir: TempDir,
        config: &str,
        env: &[(&str, &str)],
        cmd: &str,
    ) -> Result<Gateway, String> {
        let config_path = dir.path().join("gateway.toml");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let s = spawn(&config_path, config, &env, cmd)?;
        Ok(Gateway {
            addr: s.addr,
            admin: s.admin,
            dir,
            config_path,
            child: Some(s.child),
            logs: s.logs,
            env,
            cmd: cmd.to_string(),
        })
    }

    /// Stops this gateway (SIGTERM, unless it already exited) and starts a new one in
    /// the same folder with `config`: the store and key files are what the old one left.
    /// The new process listens on a new port; `logs()` then shows only its lines.
    pub fn restart(&mut self, config: &str) {
        if self.child.as_mut().unwrap().try_wait().unwrap().is_none() {
            self.stop();
        }
        let s = spawn(&self.config_path, config, &self.env, &self.cmd)
            .unwrap_or_else(|e| panic!("{e}"));
        self.addr = s.addr;
        self.admin = s.admin;
        self.child = Some(s.child);
        self.logs = s.logs;
    }

    /// SIGKILL (no chance to flush or clean up) and wait for the process to be gone.
    pub fn kill9(&mut self) -> ExitStatus {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(10))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.expect("no admin listener"), path)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits until the logs contain `needle` `count` times in all.
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Rewrites the config file and sends SIGHUP; waits for the outcome line.
    pub fn reload(&self, config: &str) -> bool {
        let before_ok = self.logs().matches("configuration reloaded").count();
        let before_bad = self.logs().matches("reload refused").count();
        std::fs::write(&self.config_path, config).unwrap();
        self.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let l = self.logs();
            if l.matches("configuration reloaded").count() > before_ok {
                return true;
            }
            if l.matches("reload refused").count() > before_bad {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no reload outcome logged:\n{}", self.logs());
    }

    /// SIGTERM and wait (with a deadline) for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(40))
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("authgate did not exit in {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs another authgate command against this gateway's config.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        run_cli(&self.config_path, args, stdin)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------- CLI

pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_cli(config: &Path, args: &[&str], stdin: Option<&str>) -> CliOutput {
    let mut c = Command::new(BIN);
    c.arg("-c")
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        // A command that exits without reading (a usage error) closes the pipe: not our failure.
        let _ = child.stdin.take().unwrap().write_all(s.as_bytes());
    }
    let out = child.wait_with_output().unwrap();
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------- clients

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

// The body as text, so that a failed assertion shows the JSON error.
impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raw")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends raw bytes (the request exactly as written: no client normalises the path)
/// on a fresh connection and reads one response, `Connection: close` style.
pub fn raw(addr: SocketAddr, request: &str) -> Raw {
    raw_bytes(addr, request.as_bytes())
}

pub fn raw_bytes(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> Raw {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Raw {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(i) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
}

/// A GET with `Connection: close` and the given extra header lines.
pub fn get(addr: SocketAddr, path: &str, extra: &[&str]) -> Raw {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n");
    for h in extra {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    raw(addr, &r)
}

// ---------------------------------------------------------------- identity helpers

pub async fn register(gw: &Gateway, user: &str, password: &str) -> reqwest::Response {
    client()
        .post(gw.url("/register"))
        .json(&serde_json::json!({ "username": user, "password": password }))
        .send()
        .await
        .unwrap()
}

pub async fn login(gw: &Gateway, user: &str, password: &str) -> reqwest::Response {
    client()
        .post(gw.url("/login"))
        .json(&serde_json::json!({ "username": user, "password": password }))
        .send()
        .await
        .unwrap()
}

/// The status of a GET of `path` with `Authorization: Bearer token`.
pub async fn bearer_status(gw: &Gateway, path: &str, token: &str) -> u16 {
    client()
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Registers (if needed) and logs in; returns (access_token, refresh_token).
pub async fn token_for(gw: &Gateway, user: &str) -> (String, String) {
    let pw = "correct horse battery";
    let r = register(gw, user, pw).await;
    assert!(
        r.status() == 201 || r.status() == 409,
        "register: {}",
        r.status()
    );
    let r = login(gw, user, pw).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    (
        v["access_token"].as_str().unwrap().to_string(),
        v["refresh_token"].as_str().unwrap().to_string(),
    )
}

// ---------------------------------------------------------------- forging tokens

/// base64url without padding, as JWS uses.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims the test config accepts: `sub`, `iss = "authgate"`, `aud = "api"`, a
/// current `iat`/`nbf`, `exp` ten minutes ahead, `jti`, and `roles`.
pub fn good_claims(sub: &str, roles: &[&str]) -> serde_json::Value {
    let t = now();
    serde_json::json!({
        "sub": sub, "iss": "authgate", "aud": "api",
        "iat": t, "nbf": t, "exp": t + 600, "jti": format!("test-{t}"), "roles": roles,
    })
}

/// Signs JWS compact tokens with a key, as the gateway (or an attacker) would.
pub struct Signer {
    pub alg: jsonwebtoken::Algorithm,
    pub key: jsonwebtoken::EncodingKey,
    /// RFC 7638 thumbprint of the public key (HS256: of the secret's JWK).
    pub kid: String,
}

impl Signer {
    /// The key the gateway created on first start (`data/signing-key.pem`).
    pub fn of_gateway(gw: &Gateway, alg: jsonwebtoken::Algorithm) -> Signer {
        let pem = std::fs::read(gw.dir.path().join("data/signing-key.pem"))
            .expect("the gateway's signing key");
        Signer::from_pem(&pem, alg)
    }

    pub fn from_pem(pem: &[u8], alg: jsonwebtoken::Algorithm) -> Signer {
        use jsonwebtoken::{Algorithm as A, EncodingKey};
        authgate::install_crypto();
        let key = match alg {
            A::EdDSA => EncodingKey::from_ed_pem(pem),
            A::ES256 => EncodingKey::from_ec_pem(pem),
            A::RS256 => EncodingKey::from_rsa_pem(pem),
            other => panic!("no PEM for {other:?}"),
        }
        .expect("a private key PEM");
        Signer::from_key(key, alg)
    }

    pub fn from_key(key: jsonwebtoken::EncodingKey, alg: jsonwebtoken::Algorithm) -> Signer {
        use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
        authgate::install_crypto();
        let kid = Jwk::from_encoding_key(&key, alg)
            .expect("jwk")
            .thumbprint(ThumbprintHash::SHA256)
            .expect("thumbprint");
        Signer { alg, key, kid }
    }

    /// The usual header: `{"alg": <ours>, "typ": "JWT", "kid": <ours>}`.
    pub fn header(&self) -> serde_json::Value {
        serde_json::json!({ "alg": format!("{:?}", self.alg), "typ": "JWT", "kid": self.kid })
    }

    /// Signs exactly these header and payload bytes (for malformed or odd JSON).
    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        let msg = format!("{}.{}", b64(header), b64(payload));
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &self.key, self.alg).expect("sign");
        format!("{msg}.{sig}")
    }

    pub fn sign(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    /// Our usual header over `claims`.
    pub fn token(&self, claims: &serde_json::Value) -> String {
        self.sign(&self.header(), claims)
    }
}
