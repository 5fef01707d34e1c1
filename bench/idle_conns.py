#!/usr/bin/env python3
"""Memory per idle keep-alive connection (stdlib only).

Opens N keep-alive connections to a proxy; on each, sends one complete GET and reads the
whole response, then leaves the connection idle. The proxy's RSS (sum of VmRSS over the
given PIDs, e.g. nginx master + worker) is read before and after; prints one JSON line:
{"before_kib", "after_kib", "conns", "failed", "per_conn_kib"}.

usage: idle_conns.py --port P [--path /public] [--count 5000] --pids 123,456
"""
import argparse
import asyncio
import json
import resource
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


async def open_one(host, port, req, sem, conns, errors):
    async with sem:  # bounded concurrency while connecting: stays under the listen backlog
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            writer.write(req)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length = 0
            for ln in lines[1:]:
                if ln.lower().startswith("content-length:"):
                    length = int(ln.split(":", 1)[1])
                elif ln.lower().startswith("transfer-encoding:") and "chunked" in ln.lower():
                    raise RuntimeError("chunked response: not expected from this upstream")
            if length:
                await asyncio.wait_for(reader.readexactly(length), 10)
            if status != 200:
                raise RuntimeError(f"status {status}")
            conns.append(writer)
        except Exception as e:  # noqa: BLE001 - counted and reported, one line
            errors.append(repr(e))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/public")
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--pids", required=True, help="comma-separated PIDs whose VmRSS is summed")
    ap.add_argument("--settle", type=float, default=1.5, help="seconds to wait before each RSS read")
    a = ap.parse_args()
    pids = [int(p) for p in a.pids.split(",") if p]

    # each connection is one fd here: raise the soft limit to the hard one
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    time.sleep(a.settle)
    before = rss_kib(pids)
    req = (f"GET {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n"
           "User-Agent: authgate-bench-idle\r\nAccept: */*\r\n\r\n").encode()
    conns, errors = [], []
    sem = asyncio.Semaphore(200)
    await asyncio.gather(*(open_one(a.host, a.port, req, sem, conns, errors)
                           for _ in range(a.count)))
    await asyncio.sleep(a.settle)
    after = rss_kib(pids)
    n = len(conns)
    out = {"before_kib": before, "after_kib": after, "conns": n, "failed": len(errors),
           "per_conn_kib": round((after - before) / n, 3) if n else None}
    if errors:
        out["first_error"] = errors[0]
    print(json.dumps(out))
    for w in conns:
        w.close()
    return 0 if n == a.count else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
