#!/usr/bin/env python3
"""Start-to-ready time of a server (stdlib only).

Spawns the command RUNS times; each time measures from just before spawn until its stderr
prints a line containing "listening on" (or, failing that, until PORT accepts a TCP
connection), then stops it with SIGTERM and waits for it to exit before the next start.
Prints one JSON line: {"runs_ms": [...], "median_ms": m, "how": "stderr"|"port"}.

usage: ready_time.py --port P [--runs 5] [--env K=V ...] -- CMD ARGS...
"""
import argparse
import json
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time


def port_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.05):
            return True
    except OSError:
        return False


def one_start(cmd, env, port, deadline_s=10.0):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env)
    os.set_blocking(p.stderr.fileno(), False)
    sel = selectors.DefaultSelector()
    sel.register(p.stderr, selectors.EVENT_READ)
    buf, how, ms = b"", None, None
    try:
        while time.monotonic() - t0 < deadline_s:
            for _key, _ev in sel.select(timeout=0.002):
                chunk = p.stderr.read() or b""
                buf += chunk
                if b"listening on" in buf:
                    how = "stderr"
                    break
            if how:
                break
            if p.poll() is not None:
                tail = buf.decode(errors="replace").strip().splitlines()[-1:] or ["(no stderr)"]
                raise RuntimeError(f"exited with {p.returncode} before ready: {tail[0]}")
            # fallback: a build that binds but prints no such line
            if time.monotonic() - t0 > 0.5 and port_accepts(port):
                how = "port"
                break
        else:
            raise RuntimeError(f"not ready within {deadline_s}s")
        ms = (time.monotonic() - t0) * 1000.0
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        sel.close()
    # the next start needs the port free again
    end = time.monotonic() + 5
    while port_accepts(port) and time.monotonic() < end:
        time.sleep(0.01)
    return ms, how


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--env", action="append", default=[], help="K=V added to the environment")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    env = dict(os.environ)
    for kv in a.env:
        k, v = kv.split("=", 1)
        env[k] = v
    runs, hows = [], set()
    try:
        for _ in range(a.runs):
            ms, how = one_start(cmd, env, a.port)
            runs.append(round(ms, 1))
            hows.add(how)
    except Exception as e:  # noqa: BLE001 - one clear line for the caller
        print(json.dumps({"error": str(e), "runs_ms": runs}))
        return 1
    print(json.dumps({"runs_ms": runs, "median_ms": round(statistics.median(runs), 1),
                      "how": "/".join(sorted(hows))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
