#!/usr/bin/env bash
# Instruction counts per proxied request under callgrind: stable on a noisy machine,
# so a hot-path change can be measured before and after (issue: benchmark).
#
#   bash bench/profile.sh [public|required]   (default: required, EdDSA)
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
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
for t in nginx wrk valgrind callgrind_control; do command -v "$t" >/dev/null || { echo "profile.sh: needs $t" >&2; exit 2; }; done
[ -x "$AG" ] || (cd "$REPO" && cargo build --release --quiet)

. "$BENCH/lib.sh"
start_upstream "$DIR"
write_gateway_config "$DIR/gateway.toml" "$UP"
AUTHGATE_LOG=${AUTHGATE_LOG:-info} valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" \
    "$AG" serve -c "$DIR/gateway.toml" 2>"$DIR/ag.log" >/dev/null & PIDS+=($!)
wait_ready "$DIR/ag.log" 600
TOKEN=$(login_token "http://127.0.0.1:$PORT" '{"username":"profiler","password":"profile-password"}')
if [ "$CASE" = public ]; then URL=/public/x; HDR=(); else URL=/protected/x; HDR=(-H "Authorization: Bearer $TOKEN"); fi
curl -s -o /dev/null "${HDR[@]}" "http://127.0.0.1:$PORT$URL"   # warm: pool, token cache
callgrind_control -z >/dev/null
OUT=$(wrk -t1 -c10 -d"${N_SECONDS}s" "${HDR[@]}" "http://127.0.0.1:$PORT$URL")
REQS=$(awk '/requests in/ {print $1}' <<<"$OUT")
callgrind_control -d >/dev/null
sleep 1
F=$(ls -t "$DIR"/cg.out* | head -1)
TOTAL=$(callgrind_annotate "$F" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
echo "case=$CASE requests=$REQS instructions=$TOTAL per_request=$(( TOTAL / REQS ))"
mkdir -p "$BENCH/run" && cp "$F" "$BENCH/run/callgrind-$CASE.out"
echo "full profile: callgrind_annotate bench/run/callgrind-$CASE.out"
callgrind_annotate "$F" 2>/dev/null | grep -E '^ *[0-9,]+ \(' | head -"${TOP:-30}"
