#!/usr/bin/env python3
"""Small HTTP client for the benchmark's setup and sanity checks (stdlib only).

  http_check.py get URL STATUS [--token T] [--contains S]
      exit 0 when GET URL answers STATUS (and the body contains S), else one line + exit 1
  http_check.py token BASE_URL USER PASSWORD
      POST /register (201, or 409 when the user exists), then POST /login; prints access_token
"""
import json
import sys
import urllib.error
import urllib.request


def request(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:  # refused, reset: report, don't trace
        return 0, f"connection failed: {e}"


def main(argv):
    if len(argv) >= 3 and argv[0] == "get":
        url, want = argv[1], int(argv[2])
        opts = dict(zip(argv[3::2], argv[4::2]))
        status, body = request("GET", url, token=opts.get("--token"))
        if status != want or (opts.get("--contains") and opts["--contains"] not in body):
            print(f"GET {url}: got {status} {body[:200]!r}, expected {want}"
                  + (f" with {opts['--contains']!r} in the body" if opts.get("--contains") else ""))
            return 1
        return 0
    if len(argv) == 4 and argv[0] == "token":
        base, user, pw = argv[1].rstrip("/"), argv[2], argv[3]
        creds = {"username": user, "password": pw}
        status, body = request("POST", base + "/register", creds)
        if status not in (201, 409):
            print(f"POST /register: {status} {body[:200]!r}", file=sys.stderr)
            return 1
        status, body = request("POST", base + "/login", creds)
        if status != 200:
            print(f"POST /login: {status} {body[:200]!r}", file=sys.stderr)
            return 1
        try:
            print(json.loads(body)["access_token"])
        except (ValueError, KeyError):
            print(f"POST /login: no access_token in {body[:200]!r}", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
