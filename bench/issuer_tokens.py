#!/usr/bin/env python3
"""Tokens and a JWKS for the external-issuer case (SPEC §10; needs pyjwt + cryptography).

Plays an identity provider: publishes the public half of RSA key KEY (HAProxy's RS256 key,
from gen_tokens.py) as a JWKS, and signs COUNT distinct RS256 tokens (iss ISSUER, aud "api",
sub "alice", a new jti each) with it, so that authgate, configured with an [[issuer]] whose
jwks_uri serves that JWKS, verifies a signature on (nearly) every request — as HAProxy's
jwt_verify RS256 row always does.

usage: issuer_tokens.py KEY ISSUER COUNT TOKENS_OUT JWKS_OUT
"""
import base64
import json
import sys
import time
import uuid

import jwt  # pyjwt
from cryptography.hazmat.primitives import serialization

KID = "bench-rs256"


def b64(n):
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def main(key_path, issuer, count, tokens_out, jwks_out):
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    pub = key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "RSA", "kid": KID, "alg": "RS256", "use": "sig",
                      "n": b64(pub.n), "e": b64(pub.e)}]}
    with open(jwks_out, "w") as f:
        json.dump(jwks, f)
    now = int(time.time())
    claims = {"sub": "alice", "iss": issuer, "aud": "api", "iat": now, "exp": now + 6 * 3600}
    with open(tokens_out, "w") as f:
        for _ in range(int(count)):
            claims["jti"] = str(uuid.uuid4())
            f.write(jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID}) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    main(*sys.argv[1:6])
