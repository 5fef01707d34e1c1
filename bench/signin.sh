#!/usr/bin/env bash
# Sign-in round trip through an OpenID provider, start → callback → landed, in ms
# (issue 19; SPEC §14).
#
#   bash bench/signin.sh            N=30 sign-ins of each kind by default
#
# Starts panva's oidc-provider (tests/idp/op.mjs, installed from its lockfile if
# missing) over HTTPS with a CA made here, and authgate (release build, one worker) with
# that provider as a sign-in issuer, then runs bench/signin.py: a browser over plain
# sockets that fills in the provider's own login and consent pages. Everything runs on
# this machine, so the provider's legs are what a provider next door costs; the
# gateway's share (start + callback + landed) is what authgate adds. Needs node, npm,
# openssl, python3.
set -euo pipefail
export LC_ALL=C
N=${N:-30}
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
AG=${AUTHGATE_BIN:-$REPO/target/release/authgate}
DIR=$(mktemp -d /tmp/authgate-signin.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
for t in node npm openssl python3 curl; do command -v "$t" >/dev/null || { echo "signin.sh: needs $t" >&2; exit 2; }; done
[ -x "$AG" ] || (cd "$REPO" && cargo build --release --quiet)
[ -d "$REPO/tests/idp/node_modules/oidc-provider" ] || (cd "$REPO/tests/idp" && npm ci --silent --no-audit --no-fund)

# A CA and a certificate for localhost signed by it (the provider's issuer is
# https://localhost:PORT; the gateway trusts the CA through the issuer's `ca`).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout "$DIR/ca.key" -out "$DIR/ca.pem" -subj "/CN=authgate bench CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$DIR/key.pem" -out "$DIR/req.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >"$DIR/ext.cnf"
openssl x509 -req -in "$DIR/req.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
    -days 1 -out "$DIR/cert.pem" -extfile "$DIR/ext.cnf" 2>/dev/null

. "$BENCH/lib.sh"
start_upstream "$DIR"
PORT=$(free_port)
SECRET=$(openssl rand -hex 32)
printf '%s' "$SECRET" >"$DIR/client-secret"
cat >"$DIR/op.json" <<JSON
{ "key": "$DIR/key.pem", "cert": "$DIR/cert.pem", "port": 0,
  "clients": [{ "client_id": "authgate", "client_secret": "$SECRET",
                "redirect_uris": ["http://127.0.0.1:$PORT/oauth2/callback"],
                "token_endpoint_auth_method": "client_secret_basic" }],
  "accounts": { "alice": { "email": "alice@example.com", "email_verified": true, "groups": ["staff"] } } }
JSON
node "$REPO/tests/idp/op.mjs" "$DIR/op.json" >"$DIR/op.out" 2>"$DIR/op.log" & PIDS+=($!)
for _ in $(seq 100); do grep -q issuer "$DIR/op.out" 2>/dev/null && break; sleep 0.1; done
ISSUER=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["issuer"])' "$DIR/op.out") \
    || { cat "$DIR/op.log" >&2; echo "the provider did not start" >&2; exit 1; }

write_gateway_config "$DIR/gateway.toml" "$UP"
sed -i "s/^listen = .*/listen = [\"127.0.0.1:$PORT\"]/" "$DIR/gateway.toml"
cat >>"$DIR/gateway.toml" <<TOML

[session]
cookie = true
login_page = true

[[issuer]]
name = "corp"
issuer = "$ISSUER"
discovery = true
audiences = ["api"]
algorithms = ["RS256"]
identity_claim = "email"
ca = "file:$DIR/ca.pem"
[issuer.login]
client_id = "authgate"
client_secret = "file:$DIR/client-secret"
redirect_uri = "http://127.0.0.1:$PORT/oauth2/callback"
scopes = ["openid", "email", "profile"]
display_name = "Corp SSO"
TOML
"$AG" check -c "$DIR/gateway.toml" >/dev/null
AUTHGATE_LOG=${AUTHGATE_LOG:-info} "$AG" serve -c "$DIR/gateway.toml" 2>"$DIR/ag.log" >/dev/null & PIDS+=($!)
wait_ready "$DIR/ag.log" 100
echo "authgate $("$AG" --version | awk '{print $2}'), oidc-provider $(node -p "require('$REPO/tests/idp/node_modules/oidc-provider/package.json').version"), node $(node --version), $N sign-ins of each kind"
python3 "$BENCH/signin.py" --gateway "http://127.0.0.1:$PORT" --ca "$DIR/ca.pem" -n "$N" \
    || { tail -20 "$DIR/ag.log" >&2; tail -20 "$DIR/op.log" >&2; exit 1; }
