#!/usr/bin/env python3
"""Login cost with the Redis rate-limit backend vs in process (SPEC §9), and a check
that proxied requests never touch Redis.

    python3 bench/login_redis.py [BINARY] [N]

Starts one gateway with `backend = "local"` and one with `backend = "redis://127.0.0.1:6379"`, each with its own SQLite store
and all three limits on (high rates, so nothing is refused). Then, alternating
between the two so machine noise hits both alike, N successful and N failed
sequential logins each over one keep-alive connection; prints median and p90 per
login and the difference. Cheap Argon2 parameters (1 MiB, 1 pass) keep the hash
from drowning the difference. Finally 2,000 GETs of /protected through a third
gateway whose Redis sits behind a byte-counting relay: Redis must see no byte.
"""
import http.client, json, os, shutil, socket, statistics, subprocess, sys, tempfile
import threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/authgate"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 400
PW = "correct horse battery"


class Relay:
    """127.0.0.1:0 → 127.0.0.1:6379, counting bytes sent to Redis."""

    def __init__(self):
        self.sent = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            c, _ = self.sock.accept()
            s = socket.create_connection(("127.0.0.1", 6379))
            for a, b, count in ((c, s, True), (s, c, False)):
                threading.Thread(target=self.pipe, args=(a, b, count), daemon=True).start()

    def pipe(self, a, b, count):
        while True:
            d = a.recv(65536)
            if not d:
                b.close()
                return
            if count:
                with self.lock:
                    self.sent += len(d)
            b.sendall(d)


class Up(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


def start(dirname, backend, up_port):
    os.makedirs(dirname, exist_ok=True)
    cfg = f"""[server]
listen = ["127.0.0.1:0"]
[identity]
store = "sqlite:data/users.db"
password_hash = {{ memory_kib = 1024, iterations = 1, parallelism = 1 }}
[rate_limit]
login_per_ip = "1000000/sec"
login_per_user = "1000000/sec"
register_per_ip = "1000000/sec"
backend = "{backend}"
key_prefix = "authgate-bench:{os.getpid()}:"
[[upstream]]
name = "app"
targets = ["http://127.0.0.1:{up_port}"]
[[route]]
path = "/protected"
upstream = "app"
"""
    path = os.path.join(dirname, "gateway.toml")
    open(path, "w").write(cfg)
    log = open(os.path.join(dirname, "log"), "w+")
    p = subprocess.Popen([BIN, "serve", "-c", path], stderr=log, stdout=subprocess.DEVNULL,
                         env={**os.environ, "AUTHGATE_LOG": "info"})
    deadline = time.time() + 30
    while time.time() < deadline:
        text = open(log.name).read()
        if "listening on" in text and (backend == "local" or "limits are shared" in text):
            port = int(text.split("listening on 127.0.0.1:")[1].split()[0])
            return p, port
        time.sleep(0.05)
    sys.exit("gateway not ready:\n" + open(log.name).read())


def post(conn, path, body):
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    return r.status, data


def timed_logins(port, user, pw, want, n):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        status, _ = post(conn, "/login", {"username": user, "password": pw})
        times.append((time.perf_counter() - t) * 1e6)
        assert status == want, status
    conn.close()
    return times


def stats(ts):
    ts = sorted(ts)
    return statistics.median(ts), ts[int(len(ts) * 0.9)]


def main():
    tmp = tempfile.mkdtemp(prefix="authgate-login-redis-")
    up = ThreadingHTTPServer(("127.0.0.1", 0), Up)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    relay = Relay()
    procs = []
    try:
        local, lport = start(os.path.join(tmp, "local"), "local", up.server_port)
        procs.append(local)
        # Timed against Redis directly: a relay in this (GIL-bound) process would
        # add its own latency; the relay serves only the byte count below.
        shared, rport = start(os.path.join(tmp, "redis"), "redis://127.0.0.1:6379", up.server_port)
        procs.append(shared)
        counted, cport = start(os.path.join(tmp, "relayed"), f"redis://127.0.0.1:{relay.port}",
                               up.server_port)
        procs.append(counted)
        for port in (lport, rport, cport):
            c = http.client.HTTPConnection("127.0.0.1", port)
            assert post(c, "/register", {"username": "alice", "password": PW})[0] == 201
        res = {k: [] for k in ("local ok", "redis ok", "local fail", "redis fail")}
        for _ in range(10):  # alternate in rounds: noise hits both alike
            res["local ok"] += timed_logins(lport, "alice", PW, 200, N // 10)
            res["redis ok"] += timed_logins(rport, "alice", PW, 200, N // 10)
            res["local fail"] += timed_logins(lport, "alice", "wrong password", 401, N // 10)
            res["redis fail"] += timed_logins(rport, "alice", "wrong password", 401, N // 10)
        print(f"{N} logins each, sequential, one keep-alive connection, µs per login")
        for k, v in res.items():
            m, p90 = stats(v)
            print(f"  {k:<11} median {m:8.0f}   p90 {p90:8.0f}")
        for kind in ("ok", "fail"):
            d = stats(res[f"redis {kind}"])[0] - stats(res[f"local {kind}"])[0]
            print(f"  added by Redis ({kind}): {d:+.0f} µs median")
        # The proxied path: a token, then GETs through the Redis gateway.
        c = http.client.HTTPConnection("127.0.0.1", cport)
        token = json.loads(post(c, "/login", {"username": "alice", "password": PW})[1])["access_token"]
        time.sleep(0.5)  # the login's refund runs off the response path
        before = relay.sent
        for _ in range(2000):
            c.request("GET", "/protected/x", headers={"Authorization": f"Bearer {token}"})
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
        time.sleep(0.2)
        print(f"bytes sent to Redis during 2000 proxied requests: {relay.sent - before}")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        up.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
