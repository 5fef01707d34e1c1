#!/usr/bin/env bash
# Instruction counts per proxied request under callgrind: stable on a noisy machine,
# so a hot-path change can be measured before and after (issue: benchmark).
#
#   bash bench/profile.sh [public|required|session|apikey|distinct-hs256|issuer-rs256|limited-local|limited-redis]
#   (default: required, EdDSA; session: the same token in the session cookie)
#   OTHER_COOKIES="theme=dark" sends other cookies too: beside ours in the session case,
#   in a Cookie header of their own otherwise (so session and required compare alike).
#
# distinct-hs256: HS256, every request a token never seen before (no verified-token cache
# hit): what an uncached verification costs (issue 10). issuer-rs256: an [[issuer]] (SPEC §10)
# with a static JWKS on loopback and distinct RS256 tokens (bench row i). Both need pyjwt.
#   STORE=postgres bash bench/profile.sh      the same with the PostgreSQL store
# limited-local / limited-redis: the required route with a route rate limit (SPEC §17)
# per user, set high enough never to refuse; in process, or on the machine's Redis
# under a key prefix of its own. Compare with `required` for the limit's cost.
#
# Starts an nginx upstream and authgate (release build) under valgrind, zeroes the
# counters once ready, sends N keep-alive requests with wrk, dumps, and prints
# instructions per request plus the top functions. Needs nginx, wrk, valgrind.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" LC_ALL=C
CASE=${1:-required}
N_SECONDS=${PROFILE_SECONDS:-10}
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
AG=${AUTHGATE_BIN:-$REPO/target/release/authgate}
DIR=$(mktemp -d /tmp/authgate-profile.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; { type bench_store_cleanup >/dev/null 2>&1 && bench_store_cleanup; } || true; rm -rf "$DIR"; }
trap cleanup EXIT
for t in nginx wrk valgrind callgrind_control; do command -v "$t" >/dev/null || { echo "profile.sh: needs $t" >&2; exit 2; }; done
[ -x "$AG" ] || (cd "$REPO" && cargo build --release --quiet)

. "$BENCH/lib.sh"
start_upstream "$DIR"
STORE=${STORE:-sqlite}
# bench_store sets BENCH_PGDB for cleanup: call it in this shell, not in $( ).
bench_store "$STORE" > "$DIR/store-url"
write_gateway_config "$DIR/gateway.toml" "$UP" "$(cat "$DIR/store-url")"
# Under valgrind everything runs ~50x slower: a 2 s store_timeout would turn the
# PostgreSQL store's first connection and login into 503s.
sed -i 's/^\[identity\]$/[identity]\nstore_timeout = "60s"/' "$DIR/gateway.toml"
export AUTHGATE_JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
case $CASE in
    distinct-hs256)
        sed -i 's/^\[tokens\]$/[tokens]\nalgorithm = "HS256"\nsecret = "env:AUTHGATE_JWT_SECRET"/' "$DIR/gateway.toml" ;;
    issuer-rs256)
        JWKS_PORT=$(free_port)
        mkdir -p "$DIR/jwks"
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$DIR/rs256.key" 2>/dev/null
        "${PYJWT:-python3}" "$BENCH/issuer_tokens.py" "$DIR/rs256.key" https://idp.bench.test "${PROFILE_TOKENS:-20000}" "$DIR/tokens.txt" "$DIR/jwks/jwks.json"
        python3 -m http.server "$JWKS_PORT" --bind 127.0.0.1 --directory "$DIR/jwks" >/dev/null 2>&1 & PIDS+=($!)
        printf '\n[[issuer]]\nname = "bench-idp"\nissuer = "https://idp.bench.test"\njwks_uri = "http://127.0.0.1:%s/jwks.json"\naudiences = ["api"]\nalgorithms = ["RS256"]\n' "$JWKS_PORT" >>"$DIR/gateway.toml" ;;
    session)
        # SPEC §12/§14: the same token as `required`, carried by the session cookie.
        printf '\n[session]\ncookie = true\n' >>"$DIR/gateway.toml" ;;
    apikey)
        # SPEC §16: the required route taking keys too; a service account's key on every
        # request (compare with `required`: a key must cost no more than a cached token).
        sed -i 's/^path = "\/protected"$/path = "\/protected"\ncredentials = ["token", "api_key"]/' "$DIR/gateway.toml"
        printf '\n[api_keys]\nenabled = true\n' >>"$DIR/gateway.toml" ;;
    limited-local|limited-redis)
        sed -i 's/^path = "\/protected"$/path = "\/protected"\nrate_limit = { rate = "1000000\/sec", per = "user" }/' "$DIR/gateway.toml"
        if [ "$CASE" = limited-redis ]; then
            sed -i "s/^\[rate_limit\]$/[rate_limit]\nbackend = \"redis:\/\/127.0.0.1:6379\"\nkey_prefix = \"authgate-profile:$$:\"/" "$DIR/gateway.toml"
        fi ;;
esac
AUTHGATE_LOG=${AUTHGATE_LOG:-info} valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" \
    "$AG" serve -c "$DIR/gateway.toml" 2>"$DIR/ag.log" >/dev/null & PIDS+=($!)
# Our valgrind only: another profile running on the machine must not be zeroed or dumped.
VG=$!
wait_ready "$DIR/ag.log" 600
TOKEN=$(login_token "http://127.0.0.1:$PORT" '{"username":"profiler","password":"profile-password"}')
URL=/protected/x; HDR=(-H "Authorization: Bearer $TOKEN"); SCRIPT=()
case $CASE in
    public) URL=/public/x; HDR=() ;;
    session) HDR=(-H "Cookie: ${OTHER_COOKIES:+$OTHER_COOKIES; }__Host-authgate=$TOKEN") ;;
    apikey)
        "$AG" -c "$DIR/gateway.toml" users add profiler-svc --service >"$DIR/svc.log" 2>&1
        KEY=$("$AG" -c "$DIR/gateway.toml" apikeys create profiler-svc 2>>"$DIR/svc.log")
        HDR=(-H "Authorization: Bearer $KEY")
        # Created while the gateway runs: it knows the key within revocation_poll.
        for _ in $(seq 60); do
            [ "$(curl -s -o /dev/null -w '%{http_code}' "${HDR[@]}" "http://127.0.0.1:$PORT$URL")" = 200 ] && break
            sleep 0.5
        done ;;
    distinct-hs256)
        "${PYJWT:-python3}" "$BENCH/mint_tokens.py" "$TOKEN" HS256 env:AUTHGATE_JWT_SECRET "${PROFILE_TOKENS:-40000}" "$DIR/tokens.txt" ;;
esac
# Like for like: the session case with OTHER_COOKIES set (say "theme=dark") beside the
# required case with the same, which then sends them in a Cookie header of their own.
if [ -n "${OTHER_COOKIES:-}" ] && [ "$CASE" != session ]; then HDR+=(-H "Cookie: $OTHER_COOKIES"); fi
if [ -f "$DIR/tokens.txt" ]; then
    # Warm with the last token (pool, keys); the run then sends each other token once.
    HDR=(-H "Authorization: Bearer $(tail -1 "$DIR/tokens.txt")")
    SCRIPT=(-s "$BENCH/rotate_tokens.lua")
fi
code=$(curl -s -o /dev/null -w '%{http_code}' "${HDR[@]}" "http://127.0.0.1:$PORT$URL")   # warm: pool, token cache
[ "$code" = 200 ] || { echo "warm-up request got $code" >&2; cat "$DIR/ag.log" >&2; exit 1; }
callgrind_control -z "$VG" >/dev/null
if [ ${#SCRIPT[@]} -gt 0 ]; then
    OUT=$(wrk -t1 -c10 -d"${N_SECONDS}s" "${SCRIPT[@]}" "http://127.0.0.1:$PORT$URL" -- "$DIR/tokens.txt" "$URL")
else
    OUT=$(wrk -t1 -c10 -d"${N_SECONDS}s" "${HDR[@]}" "http://127.0.0.1:$PORT$URL")
fi
grep -q 'Non-2xx' <<<"$OUT" && { echo "non-2xx responses during the run:" >&2; echo "$OUT" >&2; exit 1; }
REQS=$(awk '/requests in/ {print $1}' <<<"$OUT")
callgrind_control -d "$VG" >/dev/null
sleep 1
F=$(ls -t "$DIR"/cg.out* | head -1)
# awk reads to the end: an early exit would SIGPIPE callgrind_annotate (pipefail).
TOTAL=$(callgrind_annotate "$F" 2>/dev/null | awk '/PROGRAM TOTALS/ && !d {gsub(",","",$1); print $1; d=1}')
echo "case=$CASE store=$STORE requests=$REQS instructions=$TOTAL per_request=$(( TOTAL / REQS ))"
if [ -f "$DIR/tokens.txt" ] && [ "$REQS" -ge "$(wc -l <"$DIR/tokens.txt")" ]; then
    echo "note: more requests than tokens: some were verified-token cache hits (raise PROFILE_TOKENS)"
fi
mkdir -p "$BENCH/run" && cp "$F" "$BENCH/run/callgrind-$CASE.out"
echo "full profile: callgrind_annotate bench/run/callgrind-$CASE.out"
callgrind_annotate "$F" 2>/dev/null | grep -E '^ *[0-9,]+ \(' | head -"${TOP:-30}"
