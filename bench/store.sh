#!/usr/bin/env bash
# The PostgreSQL store against SQLite (issue 9, SPEC §7: "nothing on the hot path"):
#
#   bash bench/store.sh          (~4 min after the build)
#
# 1. logins/s under a flood (wrk, 8 connections): one gateway on SQLite and one on
#    PostgreSQL run side by side; the flood alternates between them, ROUNDS rounds of
#    SECONDS each, so both see the same machine load. Median per store, and the ratio
#    postgres/sqlite (target ≥ 0.9).
# 2. CPU per GET /protected: callgrind instructions per request (bench/profile.sh) with
#    each store — independent of the machine's load (target: equal within noise).
# Writes bench/results/store.md. Needs nginx, wrk, valgrind, psql and the machine's
# PostgreSQL on 127.0.0.1:5432 (trust, user postgres).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" LC_ALL=C
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-8}
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
AG=${AUTHGATE_BIN:-$REPO/target/release/authgate}
DIR=$(mktemp -d /tmp/authgate-store.XXXXXX)
PIDS=()
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; { type bench_store_cleanup >/dev/null 2>&1 && bench_store_cleanup; } || true; rm -rf "$DIR"; }
trap cleanup EXIT
for t in nginx wrk valgrind psql; do command -v "$t" >/dev/null || { echo "store.sh: needs $t" >&2; exit 2; }; done
[ -n "${AUTHGATE_BIN:-}" ] || { log "building authgate (release)"; (cd "$REPO" && cargo build --release --quiet); }

. "$BENCH/lib.sh"
start_upstream "$DIR"
bench_store postgres > "$DIR/pg-url"
declare -A URL
for s in sqlite postgres; do
    mkdir -p "$DIR/$s"
    if [ "$s" = sqlite ]; then store="sqlite:data/users.db"; else store=$(cat "$DIR/pg-url"); fi
    write_gateway_config "$DIR/$s/gateway.toml" "$UP" "$store"
    AUTHGATE_LOG=warn "$AG" serve -c "$DIR/$s/gateway.toml" 2>"$DIR/$s/ag.log" >/dev/null & PIDS+=($!)
    wait_ready "$DIR/$s/ag.log"
    URL[$s]="http://127.0.0.1:$PORT"
done
BODY='{"username":"flood","password":"flood-password-1"}'
for s in sqlite postgres; do login_token "${URL[$s]}" "$BODY" >/dev/null; done
cat > "$DIR/login.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
LUA
rate() {
    local out total bad
    out=$(wrk -t1 -c8 -d"${SECONDS_EACH}s" -s "$DIR/login.lua" "$1/login")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    bad=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); bad=${bad:-0}
    awk -v n="$total" -v b="$bad" -v d="$SECONDS_EACH" 'BEGIN { printf "%.1f", (n - b) / d }'
}
median() { tr ' ' '\n' | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

log "1/2 login floods, alternating, $ROUNDS × ${SECONDS_EACH}s per store"
declare -A RATES
for r in $(seq "$ROUNDS"); do
    for s in sqlite postgres; do
        v=$(rate "${URL[$s]}")
        RATES[$s]="${RATES[$s]:-} $v"
        log "   round $r $s: $v logins/s"
    done
done
SQ=$(echo ${RATES[sqlite]} | median)
PG=$(echo ${RATES[postgres]} | median)
LRATIO=$(awk -v a="$PG" -v b="$SQ" 'BEGIN { printf "%.2f", a / b }')
log "   median sqlite $SQ, postgres $PG logins/s = ${LRATIO}×"
for p in "${PIDS[@]:1}"; do kill -TERM "$p" 2>/dev/null || true; done

log "2/2 callgrind instructions per GET /protected (bench/profile.sh, each store)"
declare -A IR
for s in sqlite postgres; do
    # profile.sh's own listing may end in SIGPIPE (head): only its count line matters.
    out=$(STORE=$s AUTHGATE_BIN="$AG" TOP=5 bash "$BENCH/profile.sh" required 2>/dev/null || true)
    line=$(grep '^case=' <<<"$out" || echo "case=required store=$s per_request=0 (profile.sh failed; run it alone: STORE=$s bash bench/profile.sh)")
    IR[$s]=$(sed 's/.*per_request=//' <<<"$line")
    log "   $line"
done
CRATIO=$(awk -v a="${IR[postgres]}" -v b="${IR[sqlite]}" 'BEGIN { printf "%.3f", a / b }')

verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=") ? v >= t : v <= t; print ok ? "PASS" : "FAIL" }'; }
mkdir -p "$BENCH/results"
cat > "$BENCH/results/store.md" <<MD
# authgate store benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')

- machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)
- PostgreSQL $(psql -h 127.0.0.1 -U postgres -At -c 'SHOW server_version') on the same machine (loopback), store_pool 16, revocation_poll 1s
- method: bench/store.sh — a gateway on each store side by side; login floods (wrk 1 thread,
  8 connections, ${SECONDS_EACH} s) alternate between them, $ROUNDS rounds, median per store;
  instructions per GET /protected from bench/profile.sh (callgrind, wrk 10 s, cached token)

| figure | sqlite | postgres | ratio | target | |
|---|--:|--:|--:|--:|---|
| logins/s under flood (median; rounds: sqlite${RATES[sqlite]}, postgres${RATES[postgres]}) | $SQ | $PG | ${LRATIO}× | ≥ 0.9 | $(verdict "$LRATIO" ">=" 0.9) |
| instructions per GET /protected | ${IR[sqlite]} | ${IR[postgres]} | ${CRATIO}× | ≈ 1 (within 5 %) | $(verdict "$(awk -v r="$CRATIO" 'BEGIN { d = r - 1; if (d < 0) d = -d; print d }')" "<=" 0.05) |
MD
cat "$BENCH/results/store.md"
