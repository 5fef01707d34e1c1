#!/usr/bin/env bash
# Login throughput and proxy latency under a login flood (issue: identity benchmark).
#
#   bash bench/login.sh                 (~1 min after the build)
#   STORE=postgres bash bench/login.sh  the same on a PostgreSQL store (a database of
#                                        its own on 127.0.0.1:5432; bench/store.sh compares)
#
# 1. single-login time t1: the median of 15 sequential logins (one Argon2id verify at
#    the default parameters each) → the limit = cores / t1 logins per second;
# 2. logins/s under a flood (wrk, 8 connections, 10 s) → ratio to the limit (target ≥ 0.85);
# 3. GET /protected p99 without the flood, then while the flood runs (target ≤ 2×).
# Default Argon2 parameters and hash pool (hash_concurrency = cores); rate limits off.
# Writes bench/results/login.md. Needs nginx and wrk (installs them if missing).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" LC_ALL=C
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
AG=${AUTHGATE_BIN:-$REPO/target/release/authgate}
DIR=$(mktemp -d /tmp/authgate-login.XXXXXX)
PIDS=()
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; { type bench_store_cleanup >/dev/null 2>&1 && bench_store_cleanup; } || true; rm -rf "$DIR"; }
trap cleanup EXIT
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    log "installing nginx and wrk"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
fi
[ -n "${AUTHGATE_BIN:-}" ] || { log "building authgate (release)"; (cd "$REPO" && cargo build --release --quiet); }

. "$BENCH/lib.sh"
start_upstream "$DIR"
STORE=${STORE:-sqlite}
# bench_store sets BENCH_PGDB for cleanup: call it in this shell, not in $( ).
bench_store "$STORE" > "$DIR/store-url"
write_gateway_config "$DIR/gateway.toml" "$UP" "$(cat "$DIR/store-url")"
AUTHGATE_LOG=warn "$AG" serve -c "$DIR/gateway.toml" 2>"$DIR/ag.log" >/dev/null & PIDS+=($!)
wait_ready "$DIR/ag.log"
URL="http://127.0.0.1:$PORT"
BODY='{"username":"flood","password":"flood-password-1"}'
TOKEN=$(login_token "$URL" "$BODY")
CORES=$(nproc)

log "1/3 single-login time (15 sequential logins)"
T1_MS=$(python3 - "$URL" "$BODY" <<'PY'
import sys, time, urllib.request, statistics
url, body = sys.argv[1], sys.argv[2].encode()
times = []
for _ in range(15):
    req = urllib.request.Request(url + "/login", data=body, headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    urllib.request.urlopen(req).read()
    times.append((time.perf_counter() - t) * 1000)
print(f"{statistics.median(times):.2f}")
PY
)
LIMIT=$(awk -v c="$CORES" -v t="$T1_MS" 'BEGIN { printf "%.1f", c * 1000 / t }')
log "   t1 = $T1_MS ms → limit = $CORES / t1 = $LIMIT logins/s"

cat > "$DIR/login.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
LUA
flood() { wrk -t1 -c8 -d"$1"s -s "$DIR/login.lua" "$URL/login"; }
protected() { wrk -t1 -c10 -d"$1"s --latency -H "Authorization: Bearer $TOKEN" "$URL/protected/x"; }
p99_ms() { awk '/ 99%/ { v=$2; if (v ~ /us$/) { sub(/us/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms/,"",v) } else if (v ~ /s$/) { sub(/s/,"",v); v*=1000 } printf "%.3f", v }'; }

log "2/3 login flood (10 s, 8 connections)"
OUT=$(flood 10)
TOTAL=$(awk '/requests in/ {print $1}' <<<"$OUT")
BAD=$(awk '/Non-2xx/ {print $NF}' <<<"$OUT"); BAD=${BAD:-0}
RATE=$(awk -v n="$TOTAL" -v b="$BAD" 'BEGIN { printf "%.1f", (n - b) / 10 }')
RATIO=$(awk -v r="$RATE" -v l="$LIMIT" 'BEGIN { printf "%.2f", r / l }')
log "   $RATE successful logins/s ($BAD non-2xx) = ${RATIO}× the limit"

log "3/3 GET /protected p99, alone then during a flood (10 s each)"
BASE=$(protected 10 | p99_ms)
flood 12 >/dev/null & FLOOD=$!
sleep 1
LOADED=$(protected 10 | p99_ms)
wait $FLOOD || true
PRATIO=$(awk -v a="$LOADED" -v b="$BASE" 'BEGIN { printf "%.2f", a / b }')
log "   p99 alone $BASE ms, during the flood $LOADED ms = ${PRATIO}×"

verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? v >= t : v <= t; print ok ? "PASS" : "FAIL" }'; }
mkdir -p "$BENCH/results"
OUTF=login.md; [ "$STORE" = sqlite ] || OUTF=login-$STORE.md
cat > "$BENCH/results/$OUTF" <<MD
# authgate login benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')

- machine: $CORES cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r)
- store: $STORE; default Argon2id (m=19456 KiB, t=2, p=1), hash_concurrency = $CORES, rate limits off, access log off
- method: bench/login.sh — t1 = median of 15 sequential logins; flood = wrk 1 thread, 8 connections, 10 s;
  p99 = wrk 1 thread, 10 connections, 10 s on GET /protected (cached token), alone and during a flood

| figure | value | target | |
|---|--:|--:|---|
| single login (one hash) | $T1_MS ms | | |
| limit = cores ÷ t1 | $LIMIT logins/s | | |
| logins/s under flood | $RATE | ≥ 0.85 × limit | $(verdict "$RATIO" ">=" 0.85) (${RATIO}×) |
| GET /protected p99 alone | $BASE ms | | |
| GET /protected p99 during flood | $LOADED ms | ≤ 2 × alone | $(verdict "$PRATIO" "<=" 2) (${PRATIO}×) |
MD
cat "$BENCH/results/$OUTF"
