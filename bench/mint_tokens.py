#!/usr/bin/env python3
"""Mint many distinct access tokens that authgate accepts (needs pyjwt + cryptography).

authgate caches verified tokens by their full string, so wrk repeating one token measures
cache hits, not signature checks. This copies the header (alg, kid, typ) and claims of a real
token from POST /login and re-signs COUNT copies that differ only in `jti`, with the instance's
own key, so that a run rotating through them (bench/rotate_tokens.lua) pays a verification on
(nearly) every request. Writes one token per line to OUT.

usage: mint_tokens.py TEMPLATE_TOKEN ALG KEY COUNT OUT
  KEY: a PKCS#8 PEM file (EdDSA, ES256), or env:NAME holding the HS256 secret
"""
import base64
import json
import os
import sys
import uuid

import jwt  # pyjwt
from cryptography.hazmat.primitives import serialization


def b64json(part):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def main(template, alg, key, count, out):
    head_b64, payload_b64, _sig = template.split(".")
    header, claims = b64json(head_b64), b64json(payload_b64)
    if header.get("alg") != alg:
        sys.exit(f"template token has alg {header.get('alg')!r}, expected {alg}")
    if key.startswith("env:"):
        signing_key = os.environ[key[4:]].rstrip("\n").encode()  # SPEC §8: trailing newline trimmed
    else:
        with open(key, "rb") as f:
            signing_key = serialization.load_pem_private_key(f.read(), password=None)
    extra = {k: v for k, v in header.items() if k != "alg"}   # kid, typ as authgate wrote them
    with open(out, "w") as f:
        for _ in range(int(count)):
            claims["jti"] = str(uuid.uuid4())
            f.write(jwt.encode(claims, signing_key, algorithm=alg, headers=extra) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    main(*sys.argv[1:6])
