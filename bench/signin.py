#!/usr/bin/env python3
"""Sign-in round trips through an OpenID provider (SPEC §14), timed per leg.

Driven by bench/signin.sh, which starts the provider (oidc-provider, tests/idp/op.mjs)
and the gateway. Acts as a browser over plain sockets (http.client, keep-alive like a
browser): GET /oauth2/start on the gateway, then the provider's own pages (its login and
consent forms are filled in and posted), then the gateway's /oauth2/callback, then the
page the sign-in landed on. Two kinds of sign-in:

- first: a new browser, so the provider asks for login and consent;
- again: the same browser signs in again after logging out of the gateway, and the
  provider, which still has its own session, sends it straight back.

Prints per-leg medians and p90 in ms; the gateway's share is start + callback + landed.
"""
import argparse
import http.client
import re
import ssl
import statistics
import time
import urllib.parse


class Browser:
    def __init__(self, ca):
        self.ctx = ssl.create_default_context(cafile=ca)
        self.conns = {}
        self.jars = {}

    def request(self, method, url, body=None, headers=None):
        u = urllib.parse.urlsplit(url)
        key = (u.scheme, u.netloc)
        conn = self.conns.get(key)
        if conn is None:
            if u.scheme == "https":
                conn = http.client.HTTPSConnection(u.netloc, context=self.ctx)
            else:
                conn = http.client.HTTPConnection(u.netloc)
            self.conns[key] = conn
        jar = self.jars.setdefault(u.netloc, {})
        headers = {"Accept": "text/html", **(headers or {})}
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        path = u.path + ("?" + u.query if u.query else "")
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        for h in r.headers.get_all("Set-Cookie") or []:
            name, _, rest = h.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in h.lower() or "expires=thu, 01 jan 1970" in h.lower():
                jar.pop(name.strip(), None)
            else:
                jar[name.strip()] = value
        loc = r.getheader("Location")
        if loc:
            loc = urllib.parse.urljoin(url, loc)
        return r.status, loc, data


def provider_leg(b, url, gateway, user):
    """Follows the provider's redirects and posts its forms until it sends the browser
    back to the gateway; returns the callback URL."""
    for _ in range(20):
        status, loc, data = b.request("GET", url)
        while status in (302, 303) and not loc.startswith(gateway):
            status, loc, data = b.request("GET", loc)
        if status in (302, 303):
            return loc
        if status != 200:
            raise SystemExit(f"provider answered {status} at {url}: {data[:300]!r}")
        html = data.decode("utf-8", "replace")
        form = re.search(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', html, re.S)
        if not form:
            raise SystemExit(f"no form on the provider's page {url}: {html[:300]}")
        fields = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', form.group(2)))
        if 'name="login"' in form.group(2):
            fields.update(login=user, password="any password")
        action = urllib.parse.urljoin(url, form.group(1).replace("&amp;", "&"))
        status, loc, data = b.request("POST", action, urllib.parse.urlencode(fields))
        if status not in (302, 303):
            raise SystemExit(f"provider answered {status} to the form at {action}: {data[:300]!r}")
        if loc.startswith(gateway):
            return loc
        url = loc
    raise SystemExit("the provider never sent the browser back")


def sign_in(b, gateway, issuer, user):
    t0 = time.perf_counter()
    status, loc, _ = b.request("GET", f"{gateway}/oauth2/start?issuer={issuer}&return_to=/protected/page")
    if status != 302:
        raise SystemExit(f"/oauth2/start answered {status}")
    t1 = time.perf_counter()
    callback = provider_leg(b, loc, gateway, user)
    t2 = time.perf_counter()
    status, loc, data = b.request("GET", callback)
    if status != 303 or not loc.endswith("/protected/page"):
        raise SystemExit(f"/oauth2/callback answered {status} {loc}: {data[:300]!r}")
    t3 = time.perf_counter()
    status, _, data = b.request("GET", loc)
    if status != 200:
        raise SystemExit(f"the landing page answered {status}: {data[:300]!r}")
    t4 = time.perf_counter()
    ms = lambda a, z: (z - a) * 1000
    return {"start": ms(t0, t1), "provider": ms(t1, t2), "callback": ms(t2, t3),
            "landed": ms(t3, t4), "gateway": ms(t0, t1) + ms(t2, t4), "total": ms(t0, t4)}


def logout(b, gateway):
    # SPEC §12: POST /logout without a body logs out by cookie (the refresh cookie's
    # family is revoked); the provider is not visited (no logout_at_provider here).
    status, _, _ = b.request("POST", f"{gateway}/logout", body="", headers={"Origin": gateway})
    if status not in (200, 204, 303):
        raise SystemExit(f"/logout answered {status}")
    # The cookies are cleared by the response; drop any the gateway kept.
    b.jars.get(urllib.parse.urlsplit(gateway).netloc, {}).clear()


def report(name, rows):
    legs = ["start", "provider", "callback", "landed", "gateway", "total"]
    print(f"{name} ({len(rows)} sign-ins), ms")
    print(f"  {'':<7}" + "".join(f"{l:>10}" for l in legs))
    for label, f in (("median", statistics.median),
                     ("p90", lambda v: sorted(v)[min(len(v) - 1, int(len(v) * 0.9))]),
                     ("min", min)):
        print(f"  {label:<7}" + "".join(f"{f([r[l] for r in rows]):>10.2f}" for l in legs))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gateway", required=True)
    p.add_argument("--issuer", default="corp")
    p.add_argument("--ca", required=True)
    p.add_argument("--user", default="alice")
    p.add_argument("-n", type=int, default=30)
    a = p.parse_args()
    # Warm-up: the gateway's first sign-in fetches discovery and the provider's keys.
    sign_in(Browser(a.ca), a.gateway, a.issuer, a.user)
    first = [sign_in(Browser(a.ca), a.gateway, a.issuer, a.user) for _ in range(a.n)]
    b = Browser(a.ca)
    sign_in(b, a.gateway, a.issuer, a.user)
    again = []
    for _ in range(a.n):
        logout(b, a.gateway)
        again.append(sign_in(b, a.gateway, a.issuer, a.user))
    report("first sign-in of a new browser (provider login and consent)", first)
    report("sign-in again (the provider's session still open)", again)


if __name__ == "__main__":
    main()
