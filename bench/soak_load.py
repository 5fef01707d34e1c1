#!/usr/bin/env python3
"""Fixed-rate HTTP/1.1 load for bench/soak.sh (standard library only).

soak_load.py HOST PORT RATE SECONDS TOKEN OUT.json

CONNS keep-alive connections share RATE requests/s on a fixed schedule (open
loop: a request is due at t0 + k/rate, whatever the answers before it; one that
goes out more than 100 ms late is counted as late, so a stalled gateway shows).
Requests alternate /public/soak and /protected/soak (Bearer TOKEN). Any answer
other than 200, a reset, a timeout (5 s) or a malformed response is a failure;
the connection is then reopened. Writes the counts to OUT.json.
"""
import asyncio
import json
import sys
import time

CONNS = 16


async def one(reader, writer, path, host, token):
    auth = f"Authorization: Bearer {token}\r\n" if path.startswith("/protected") else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status


async def worker(i, host, port, rate, seconds, token, stats, t0):
    per = rate / CONNS
    k = 0
    conn = None
    while True:
        due = t0 + (k + i / CONNS) / per
        if due - t0 >= seconds:
            return
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 0.1:
            stats["late"] += 1
        path = "/public/soak" if (k + i) % 2 == 0 else "/protected/soak"
        k += 1
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
                stats["connections"] += 1
            status = await asyncio.wait_for(one(*conn, path, host, token), 5)
            stats["sent"] += 1
            if status == 200:
                stats["ok"] += 1
            else:
                stats["failed"] += 1
                stats["statuses"][str(status)] = stats["statuses"].get(str(status), 0) + 1
        except Exception as e:  # noqa: BLE001 - every kind of failure is counted
            stats["sent"] += 1
            stats["failed"] += 1
            name = type(e).__name__
            stats["errors"][name] = stats["errors"].get(name, 0) + 1
            if conn is not None:
                conn[1].close()
            conn = None


async def main():
    host, port, rate, seconds, token, out = sys.argv[1:7]
    rate, seconds = float(rate), float(seconds)
    stats = {"sent": 0, "ok": 0, "failed": 0, "late": 0, "connections": 0, "statuses": {}, "errors": {}}
    t0 = time.monotonic()
    await asyncio.gather(*(worker(i, host, int(port), rate, seconds, token, stats, t0) for i in range(CONNS)))
    stats["seconds"] = round(time.monotonic() - t0, 1)
    stats["rate"] = round(stats["sent"] / stats["seconds"], 1)
    with open(out, "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats))


asyncio.run(main())
