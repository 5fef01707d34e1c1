//! The machine's real PostgreSQL and Redis for tests: a database of the test's own
//! (created with a random name, dropped afterwards), a Redis key prefix of its own,
//! and a TCP relay between the gateway and a service that the test can cut and
//! restore to make an outage — the services themselves are never stopped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const PG_ADDR: &str = "127.0.0.1:5432";
pub const REDIS_ADDR: &str = "127.0.0.1:6379";

fn unique(tag: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("{tag}_{}_{nanos:x}_{n}", std::process::id())
}

/// Runs one statement on the `postgres` maintenance database (trust auth).
fn pg_admin(sql: &str) {
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs (PostgreSQL client on PATH)");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A database of this test's own; dropped (connections terminated) on drop.
pub struct PgDb {
    pub name: String,
}

impl PgDb {
    pub fn new(tag: &str) -> PgDb {
        let name = unique(&format!("authgate_{tag}")).to_lowercase();
        pg_admin(&format!("CREATE DATABASE \"{name}\""));
        PgDb { name }
    }

    /// `postgres://postgres@ADDR/NAME`, through `addr` (the server or a relay).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        format!("postgres://postgres@{addr}/{}", self.name)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@{PG_ADDR}/{}", self.name)
    }

    /// Runs SQL in this database and returns psql's unaligned output.
    pub fn query(&self, sql: &str) -> String {
        let out = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                &self.name,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// A Redis key prefix of this test's own (`authgate-test:<unique>:`); its keys
/// are deleted on drop.
pub struct RedisPrefix {
    pub prefix: String,
}

impl RedisPrefix {
    pub fn new(tag: &str) -> RedisPrefix {
        RedisPrefix {
            prefix: format!("authgate-test:{}:", unique(tag)),
        }
    }

    /// Keys under this prefix, with their TTL in seconds (-1: none, -2: gone).
    pub fn keys_with_ttl(&self) -> Vec<(String, i64)> {
        let keys = redis_cli(&["--scan", "--pattern", &format!("{}*", self.prefix)]);
        keys.lines()
            .filter(|k| !k.is_empty())
            .map(|k| {
                let ttl = redis_cli(&["TTL", k]).trim().parse().unwrap_or(-2);
                (k.to_string(), ttl)
            })
            .collect()
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        for (k, _) in self.keys_with_ttl() {
            let _ = redis_cli(&["DEL", &k]);
        }
    }
}

/// One redis-cli call against the machine's Redis.
pub fn redis_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379"])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A TCP relay on 127.0.0.1:0 to `target`. `cut()` closes every relayed
/// connection and refuses new ones (they are accepted and closed at once, like a
/// dead peer behind a load balancer); `restore()` relays again.
pub struct Relay {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// While cut: hold new connections open and silent instead of closing them
    /// (a black hole: the caller's own timeout must fire).
    hang: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(target: &str) -> Relay {
        let target: SocketAddr = target.parse().expect("relay target address");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let hang = Arc::new(AtomicBool::new(false));
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (u, l, s) = (up.clone(), live.clone(), stop.clone());
        let (h, hd) = (hang.clone(), held.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                if !u.load(Ordering::SeqCst) {
                    if h.load(Ordering::SeqCst) {
                        hd.lock().unwrap().push(client);
                    } else {
                        drop(client);
                    }
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut live = l.lock().unwrap();
                    live.push(client.try_clone().unwrap());
                    live.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay {
            addr,
            up,
            hang,
            held,
            live,
            stop,
        }
    }

    /// The outage: every relayed connection is shut down, new ones are closed on accept.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The other outage: relayed connections are shut down and new ones are
    /// accepted but never answered (a host that vanished, packets dropped).
    pub fn blackhole(&self) {
        self.hang.store(true, Ordering::SeqCst);
        self.cut();
    }

    pub fn restore(&self) {
        self.hang.store(false, Ordering::SeqCst);
        for s in self.held.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}
