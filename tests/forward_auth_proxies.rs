//! Forward-auth with real proxies in front (SPEC §15): nginx `auth_request` and
//! Caddy `forward_auth`, configured as the README shows, before the recording
//! upstream, with authgate beside them. The upstream must see nothing unless
//! authgate allowed it, and then authgate's `X-User`, never the client's.
//! Under `CI=true` a missing nginx or caddy fails the test; elsewhere it is skipped
//! with the reason printed.
mod common;
use common::*;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        // nginx lives in /usr/sbin, often not on a user's PATH.
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn tool(name: &str) -> Option<PathBuf> {
    let found = which(name);
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "CI=true but {name} is missing: .ci/run installs it; this test must not pass unrun"
        );
        eprintln!("SKIPPED: {name} not installed (apt-get install -y {name})");
    }
    found
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A proxy we started; killed (this child only) when dropped.
struct Front {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Front {
    fn start(mut cmd: Command, addr: SocketAddr, dir: TempDir) -> Front {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("front proxy exited {status}: {err}");
            }
            assert!(Instant::now() < deadline, "front proxy did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Front {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The README's nginx configuration, with this test's addresses.
fn nginx_conf(listen: SocketAddr, authgate: SocketAddr, app: SocketAddr, dir: &str) -> String {
    format!(
        r#"worker_processes 1;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  server {{
    listen {listen};
    location = /authz/nginx {{
      internal;
      proxy_pass http://{authgate};
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
    # authgate's sign-in page and form (SPEC §12), on this origin.
    location = /login {{
      proxy_pass http://{authgate};
      proxy_set_header Host $host;
    }}
    location @signin {{
      if ($signin = "") {{ return 401; }}
      return 302 $signin;
    }}
    location / {{
      auth_request /authz/nginx;
      auth_request_set $user $upstream_http_x_user;
      auth_request_set $roles $upstream_http_x_user_roles;
      auth_request_set $signin $upstream_http_location;
      error_page 401 = @signin;
      # Set from authgate's answer, replacing whatever the client sent (empty: removed).
      proxy_set_header X-User $user;
      proxy_set_header X-User-Roles $roles;
      proxy_pass http://{app};
    }}
  }}
}}
"#
    )
}

fn start_nginx(authgate: SocketAddr, app: SocketAddr) -> Option<Front> {
    let nginx = tool("nginx")?;
    let dir = TempDir::new("nginx");
    let d = dir.path().display().to_string();
    let addr = free_port();
    std::fs::write(
        dir.path().join("nginx.conf"),
        nginx_conf(addr, authgate, app, &d),
    )
    .unwrap();
    let mut cmd = Command::new(nginx);
    cmd.args(["-p", &d, "-c", &format!("{d}/nginx.conf"), "-g"])
        .arg(format!("daemon off; pid {d}/nginx.pid; error_log stderr;"));
    Some(Front::start(cmd, addr, dir))
}

fn start_caddy(authgate: SocketAddr, app: SocketAddr) -> Option<Front> {
    let caddy = tool("caddy")?;
    let dir = TempDir::new("caddy");
    let addr = free_port();
    let port = addr.port();
    let caddyfile = format!(
        r#"{{
  admin off
  auto_https off
}}
http://:{port} {{
  bind 127.0.0.1
  handle /login {{
    reverse_proxy {authgate}
  }}
  # `route` keeps this order (Caddy would otherwise sort request_header after
  # forward_auth): the client's identity headers go first, since an older Caddy
  # leaves them when authgate's answer has none (anonymous, public routes).
  route {{
    request_header -X-User
    request_header -X-User-Roles
    forward_auth {authgate} {{
      uri /authz/forward
      copy_headers X-User X-User-Roles
    }}
    # Caddy 2.6 copies a header authgate did not send as its placeholder's text.
    @unset_user header_regexp X-User ^\{{http\.
    request_header @unset_user -X-User
    @unset_roles header_regexp X-User-Roles ^\{{http\.
    request_header @unset_roles -X-User-Roles
    reverse_proxy {app}
  }}
}}
"#
    );
    std::fs::write(dir.path().join("Caddyfile"), caddyfile).unwrap();
    let mut cmd = Command::new(caddy);
    let d = dir.path();
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(d.join("Caddyfile"))
        .env("HOME", d)
        .env("XDG_DATA_HOME", d.join("data"))
        .env("XDG_CONFIG_HOME", d.join("config"));
    Some(Front::start(cmd, addr, dir))
}

fn gateway(up: &Upstream) -> Gateway {
    let mut cfg = Cfg::new(up.addr);
    cfg.rest
        .push_str("\n[session]\ncookie = true\nlogin_page = true\n\n[forward_auth]\n");
    Gateway::start(&cfg)
}

/// alice with roles `user`: her access token.
async fn alice(gw: &Gateway) -> String {
    token_for(gw, "alice").await;
    let out = gw.cli(&["users", "set-roles", "alice", "user"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    token_for(gw, "alice").await.0
}

/// The same story through whichever front proxy: refused requests never reach the
/// app, allowed ones carry authgate's identity only.
async fn through(front: &Front, gw: &Gateway, up: &Upstream, redirect_status: u16) {
    let token = alice(gw).await;
    let auth = format!("Authorization: Bearer {token}");
    let addr = front.addr;
    // No token: 401, nothing forwarded.
    let r = get(addr, "/protected/x", &["X-User: admin"]);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(up.count(), 0);
    // A valid token: the app sees alice, never the client's X-User.
    let r = get(
        addr,
        "/protected/x?q=1",
        &[&auth, "X-User: admin", "X-User-Roles: admin"],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = up.last();
    assert_eq!(seen.header_all("x-user"), vec!["alice"]);
    assert_eq!(seen.header_all("x-user-roles"), vec!["user"]);
    // Public: passes, and the client's X-User is gone.
    up.clear();
    let r = get(addr, "/public/x", &["X-User: admin"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(up.last().header_all("x-user").is_empty());
    // A claim requirement: 403, nothing forwarded.
    up.clear();
    let r = get(addr, "/admin", &[&auth]);
    assert_eq!(r.status, 403, "{r:?}");
    // Path tricks through the front proxy are decided on the canonical path.
    for p in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "//admin",
        "/public/..%2fadmin",
    ] {
        let r = get(addr, p, &[]);
        assert!(
            r.status == 401 || r.status == 403 || r.status == 400,
            "{p}: {r:?}"
        );
    }
    assert_eq!(up.count(), 0, "a refused request reached the app");
    // A browser navigation reaches the sign-in page...
    let html = "Accept: text/html";
    let r = get(addr, "/protected/page?a=1", &[html]);
    assert_eq!(r.status, redirect_status, "{r:?}");
    let location = r.header("location").unwrap().to_string();
    // nginx makes the redirect absolute (on the Host it was sent), Caddy does not.
    let path = location
        .find("/login?")
        .map(|i| &location[i..])
        .unwrap_or(&location);
    assert_eq!(
        path, "/login?return_to=/protected/page%3Fa%3D1",
        "{location}"
    );
    let r = get(addr, path, &[html]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(String::from_utf8_lossy(&r.body).contains("<form"));
    // ...and, signed in (the session cookie from authgate), the app.
    let cookie = format!("Cookie: __Host-authgate={token}");
    let r = get(addr, "/protected/page?a=1", &[html, &cookie]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.last().header_all("x-user"), vec!["alice"]);
}

#[tokio::test]
async fn nginx_auth_request_lets_through_only_what_authgate_allows_with_its_identity() {
    let up = Upstream::start();
    let gw = gateway(&up);
    let Some(front) = start_nginx(gw.addr, up.addr) else {
        return;
    };
    // nginx's error_page turns the 401 with a Location into the browser's 302.
    through(&front, &gw, &up, 302).await;
}

#[tokio::test]
async fn caddy_forward_auth_lets_through_only_what_authgate_allows_with_its_identity() {
    let up = Upstream::start();
    let gw = gateway(&up);
    let Some(front) = start_caddy(gw.addr, up.addr) else {
        return;
    };
    through(&front, &gw, &up, 302).await;
}
