#!/usr/bin/env bash
# authgate benchmark: authgate vs an upstream alone, nginx and HAProxy (plain and with JWT
# validation), on one 2-core machine over loopback. Ratios to the nginx row, within one run.
#
#   bash bench/run.sh            full run: 3 x 10 s per case, medians (~12-17 min after the build)
#   QUICK=1 bash bench/run.sh    iteration mode: 1 x 3 s per case
#
# Env knobs: BENCH_PORT_BASE (default 18180; 13 ports from there), AUTHGATE_LOG (default info,
# what users run), BENCH_DISTINCT_TOKENS (tokens rotated in the f2/g2/h2 cases, default 40000),
# BENCH_BUDGET_S (soft time budget of the measurements, default 1100 s),
# BENCH_IDLE_MAX (wait until the machine is below this busy %, default 15), SKIP_INSTALL=1,
# SKIP_BUILD=1, AUTHGATE_BIN (a binary to bench instead of building target/release/authgate),
# BENCH_RATE (the fixed-rate column's requests/s, default 5000; 0 skips it).
# Writes bench/results/latest.{md,svg}; scratch files go to bench/run/.
# Exits 0 even when targets fail (it is a measurement); non-zero only when it could not run.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"   # nginx and haproxy live in sbin
export LC_ALL=C                        # decimal points and sort order that awk/printf expect

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
RUN=$BENCH/run
RES=$BENCH/results
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then DUR=3 REPS=1 WARM=1 IDLE_WAIT=5; else DUR=10 REPS=3 WARM=2 IDLE_WAIT=20; fi
CONNS=50
IDLE_CONNS=${IDLE_CONNS:-5000}
# authgate caches verified tokens (16,384 in src/auth/jwt.rs, cleared per shard when full): the
# f2/g2/h2 cases rotate through more than twice that many tokens, so every request is verified
DISTINCT=${BENCH_DISTINCT_TOKENS:-40000}
IDLE_MAX=${BENCH_IDLE_MAX:-15}
RATE=${BENCH_RATE:-5000}               # fixed-rate column: every case at this rate (oha -q, latency-corrected)
BUDGET=${BENCH_BUDGET_S:-1100}        # soft: later cases are skipped past it
HARD_LIMIT=1200                       # hard: the watchdog stops the run (20 min of measuring)
BASE=${BENCH_PORT_BASE:-18180}
P_UP=$BASE P_NGX=$((BASE + 1)) P_HAP=$((BASE + 2)) P_HS=$((BASE + 3)) P_RS=$((BASE + 4))
P_ES=$((BASE + 5)) P_AG_ED=$((BASE + 6)) P_AG_HS=$((BASE + 7)) P_AG_ES=$((BASE + 8))
P_NGX_ALL=$((BASE + 9)) P_AG_ALL=$((BASE + 10))
P_AG_IS=$((BASE + 11)) P_JWKS=$((BASE + 12))   # (i): authgate with an [[issuer]], its JWKS server
P_NGX_BK=$((BASE + 13)) P_NGX_AR=$((BASE + 14))  # (b2) nginx with bookkeeping, (j) nginx auth_request
export AUTHGATE_LOG=${AUTHGATE_LOG:-info}
AG=${AUTHGATE_BIN:-$REPO/target/release/authgate}   # AUTHGATE_BIN: bench another build (implies SKIP_BUILD=1)
[ -n "${AUTHGATE_BIN:-}" ] && SKIP_BUILD=1
T0=$SECONDS

log() { printf '[%4ds] %s\n' $((SECONDS - T0)) "$*"; }
die() { log "ERROR: $*"; exit 2; }

# ---------------------------------------------------------------- processes we started
PIDS=()
children() { # direct children of $1 (nginx workers), from /proc so procps is not needed
    local f
    for f in /proc/[0-9]*/stat; do
        awk -v p="$1" '{ sub(/^.*\) /, ""); if ($2 == p) { split(FILENAME, a, "/"); print a[3] } }' "$f" 2>/dev/null || true
    done
}
stop_pid() { # TERM, wait up to 5 s, then KILL; also its children (an nginx master's workers)
    local pid=$1 kids i
    kill -0 "$pid" 2>/dev/null || return 0
    kids=$(children "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    for i in $kids; do kill -KILL "$i" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
start_bg() { # start_bg LOGFILE CMD... : run in the background, remember the PID
    local logf=$1; shift
    "$@" >>"$logf" 2>&1 </dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}
forget_pid() { local p keep=(); for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; PIDS=("${keep[@]}"); }
stop_and_forget() { stop_pid "$1"; forget_pid "$1"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # wait_port PORT PID SECONDS
    local i
    for i in $(seq $(($3 * 20))); do
        port_open "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
fill() { # fill TEMPLATE OUT KEY=VALUE... : replace @KEY@ placeholders
    local tpl=$1 out=$2 kv script=""; shift 2
    cp "$tpl" "$out"
    for kv in "$@"; do
        python3 - "$out" "${kv%%=*}" "${kv#*=}" <<'PY'
import sys
p, k, v = sys.argv[1:4]
s = open(p).read().replace("@" + k + "@", v)
open(p, "w").write(s)
PY
    done
}

# ---------------------------------------------------------------- 1. install what is missing
find_pyjwt() { # sets PYJWT to a python3 that has pyjwt + cryptography, or ""
    local p
    PYJWT=""
    for p in python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null && "$p" -c 'import jwt, cryptography' 2>/dev/null; then PYJWT=$p; return 0; fi
    done
}
install_deps() {
    local need=() installed_services=()
    # oha (fixed-rate, latency-corrected runs) is not packaged by Debian: crates.io.
    if ! command -v oha >/dev/null && [ "$RATE" != 0 ]; then
        if command -v cargo >/dev/null; then
            log "installing oha (cargo install oha --locked; a few minutes, once)"
            timeout 1800 cargo install oha --locked >"$RUN/oha-install.log" 2>&1 \
                || log "oha could not be installed (see bench/run/oha-install.log): no fixed-rate column"
            export PATH="$PATH:$HOME/.cargo/bin"
        fi
    fi
    command -v nginx >/dev/null || { need+=(nginx); installed_services+=(nginx); }
    command -v haproxy >/dev/null || { need+=(haproxy); installed_services+=(haproxy); }
    command -v wrk >/dev/null || need+=(wrk)
    command -v gnuplot >/dev/null || need+=(gnuplot-nox)
    command -v taskset >/dev/null || need+=(util-linux)
    command -v python3 >/dev/null || need+=(python3)
    if [ ${#need[@]} -gt 0 ]; then
        log "installing ${need[*]} (apt-get)"
        [ "$(id -u)" = 0 ] || die "need root to apt-get install ${need[*]}"
        timeout 300 apt-get update -qq >"$RUN/apt.log" 2>&1 || die "apt-get update failed (see $RUN/apt.log)"
        APT_UPDATED=1
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${need[@]}" >>"$RUN/apt.log" 2>&1 \
            || die "apt-get install ${need[*]} failed (see $RUN/apt.log)"
        # Debian starts the packaged services on install (nginx on :80). We run our own
        # instances from bench/run/ on our own ports; stop the system ones we just caused.
        if [ ${#installed_services[@]} -gt 0 ] && [ -d /run/systemd/system ]; then
            systemctl stop "${installed_services[@]}" 2>/dev/null || true
        fi
    fi
    # gen_tokens.py needs pyjwt + cryptography: Debian's packages first (PEP 668), pip last
    find_pyjwt
    if [ -z "$PYJWT" ]; then
        log "installing pyjwt + cryptography for gen_tokens.py"
        [ -n "${APT_UPDATED:-}" ] || timeout 300 apt-get update -qq >>"$RUN/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq python3-jwt python3-cryptography >>"$RUN/apt.log" 2>&1 || true
        if /usr/bin/python3 -c 'import jwt, cryptography' 2>/dev/null; then PYJWT=/usr/bin/python3
        else
            python3 -m pip install -q pyjwt cryptography >>"$RUN/apt.log" 2>&1 \
                || python3 -m pip install -q --break-system-packages pyjwt cryptography >>"$RUN/apt.log" 2>&1 \
                || die "could not install pyjwt + cryptography (see $RUN/apt.log)"
            PYJWT=python3
        fi
    fi
}

# ---------------------------------------------------------------- measuring helpers
cpu_ticks() { # summed utime+stime (clock ticks) of the given PIDs, all their threads included
    local p t=0 v
    for p in "$@"; do
        v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null) || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
machine_busy() { # busy % of all cores over 1 s, from /proc/stat
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    awk -v u1="${a[1]}" -v n1="${a[2]}" -v s1="${a[3]}" -v i1="${a[4]}" -v w1="${a[5]}" -v q1="${a[6]}" -v sq1="${a[7]}" -v st1="${a[8]:-0}" \
        -v u2="${b[1]}" -v n2="${b[2]}" -v s2="${b[3]}" -v i2="${b[4]}" -v w2="${b[5]}" -v q2="${b[6]}" -v sq2="${b[7]}" -v st2="${b[8]:-0}" \
        'BEGIN { busy = (u2-u1)+(n2-n1)+(s2-s1)+(q2-q1)+(sq2-sq1)+(st2-st1); tot = busy+(i2-i1)+(w2-w1);
                 printf "%.0f", (tot > 0 ? 100*busy/tot : 0) }'
}
wait_idle() { # wait (bounded) for the machine to calm down; sets BUSY to the last reading
    local waited=0
    BUSY=$(machine_busy)
    while [ "$BUSY" -gt "$IDLE_MAX" ] && [ $waited -lt $IDLE_WAIT ]; do
        [ $waited -eq 0 ] && log "  machine ${BUSY}% busy, waiting up to ${IDLE_WAIT}s for it to calm down"
        waited=$((waited + 1)); BUSY=$(machine_busy)
    done
    [ "$BUSY" -gt "$IDLE_MAX" ] && log "  still ${BUSY}% busy: measuring anyway (noted in the results)"
    return 0
}
# wrk_run SECONDS OUTFILE URL [TOKEN | @TOKEN_FILE] : wrk pinned to core 1, bounded by timeout.
# @TOKEN_FILE: rotate through the file's tokens, one per request (rotate_tokens.lua).
wrk_run() {
    local d=$1 out=$2 url=$3 tok=${4:-} opt=() rest=()
    case $tok in
        "") ;;
        @*) opt=(-s "$BENCH/rotate_tokens.lua"); rest=(-- "${tok#@}" "/${url#http://*/}") ;;
        *) opt=(-H "Authorization: Bearer $tok") ;;
    esac
    timeout -k 5 $((d + 20)) taskset -c "$CLIENT_CORES" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${d}s" --timeout 5s --latency "${opt[@]}" "$url" "${rest[@]}" >"$out" 2>&1
}
parse_wrk() { # prints: req/s p50_us p99_us requests non2xx socket_errors
    awk 'function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; if (v ~ /s$/) return (v+0)*1e6; return v+0 }
         /requests in/ { req = $1 }
         /^Requests\/sec:/ { rps = $2 }
         /^ +50%/ { p50 = us($2) }
         /^ +99%/ { p99 = us($2) }
         /Non-2xx or 3xx responses:/ { bad = $NF }
         /Socket errors:/ { gsub(/,/, ""); err = $4 + $6 + $8 + $10 }
         END { printf "%s %s %s %s %d %d\n", rps, p50, p99, req, bad, err }' "$1"
}

# oha_run SECONDS OUTFILE URL [TOKEN] : RATE requests/s for SECONDS, latency-corrected (a late
# request's wait counts in its latency, as wrk2 does), pinned like wrk; JSON to OUTFILE.
oha_run() {
    local d=$1 out=$2 url=$3 tok=${4:-} opt=()
    [ -n "$tok" ] && opt=(-H "Authorization: Bearer $tok")
    timeout -k 5 $((d + 20)) taskset -c "$CLIENT_CORES" oha --no-tui --output-format json -z "${d}s" \
        -q "$RATE" -c "$CONNS" --latency-correction "${opt[@]}" "$url" >"$out" 2>"$out.err"
}
parse_oha() { # prints: req/s p50_us p99_us requests non2xx
    python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
codes = d.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
total = sum(codes.values())
p = d.get("latencyPercentiles", {})
us = lambda k: (p.get(k) or 0) * 1e6
print("%.1f %.0f %.0f %d %d" % (d["summary"]["requestsPerSec"], us("p50"), us("p99"), total, total - ok))
PY
}
CLIENT_CORES=1 WRK_THREADS=1

CASES=$RUN/cases.tsv RUNS=$RUN/runs.tsv MEM=$RUN/mem.tsv FIXED=$RUN/fixed.tsv
case_status() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$CASES"; }
over_budget() { [ $((SECONDS - T_MEASURE)) -gt "$BUDGET" ]; }

# run_case ID LABEL GROUP URL TOKEN PID... : warm-up, REPS timed wrk runs, CPU of the PIDs
run_case() {
    local id=$1 label=$2 group=$3 url=$4 tok=$5; shift 5
    local pids=("$@") rep c0 c1 f r rps p50 p99 req bad err cpu_us
    if over_budget; then
        log "($id) $label: skipped, time budget of ${BUDGET}s used up"
        case_status "$id" "$label" "$group" "skipped: time budget used up"; return 0
    fi
    wait_idle
    log "($id) $label: warm-up ${WARM}s"
    wrk_run "$WARM" "$RUN/wrk-$id-warm.txt" "$url" "$tok" || true
    for rep in $(seq "$REPS"); do
        [ -n "${AG_LOGFILE:-}" ] && : >"$AG_LOGFILE"   # keep authgate's access log from filling the disk
        f=$RUN/wrk-$id-$rep.txt
        c0=$(cpu_ticks "${pids[@]}")
        if ! wrk_run "$DUR" "$f" "$url" "$tok"; then
            log "($id) $label: wrk failed: $(tail -1 "$f")"
            case_status "$id" "$label" "$group" "wrk failed: $(tail -1 "$f" | tr '\t' ' ')"; return 0
        fi
        c1=$(cpu_ticks "${pids[@]}")
        read -r rps p50 p99 req bad err <<<"$(parse_wrk "$f")"
        if [ -z "$req" ] || [ "$req" = 0 ]; then
            case_status "$id" "$label" "$group" "no requests completed (see bench/run/wrk-$id-$rep.txt)"; return 0
        fi
        if [ "$bad" -gt 0 ]; then
            log "($id) $label: $bad non-2xx responses: not counted"
            case_status "$id" "$label" "$group" "$bad of $req responses were not 2xx"; return 0
        fi
        cpu_us=$(awk -v d=$((c1 - c0)) -v hz="$HZ" -v n="$req" 'BEGIN { printf "%.3f", d * 1e6 / hz / n }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$rep" "$rps" "$p50" "$p99" "$req" "$cpu_us" "$BUSY" >>"$RUNS"
        log "($id) $label: run $rep/$REPS: $(printf '%.0f' "$rps") req/s, p50 $(printf '%.0f' "$p50") µs, p99 $(printf '%.0f' "$p99") µs, CPU $cpu_us µs/req$([ "${err:-0}" -gt 0 ] && echo ", $err socket errors")"
    done
    case_status "$id" "$label" "$group" ok
    fixed_rate "$id" "$label" "$url" "$tok" "${pids[@]}"
}

# fixed_rate ID LABEL URL TOKEN PID... : one oha run at RATE req/s (gateways in production run
# below saturation): latency-corrected p50/p99 and CPU per request at that rate
fixed_rate() {
    local id=$1 label=$2 url=$3 tok=$4; shift 4
    local f=$RUN/oha-$id.json c0 c1 rps p50 p99 req bad cpu_us
    [ "$RATE" != 0 ] && command -v oha >/dev/null || return 0
    case $tok in @*) printf '%s\t\t\t\t\t\t%s\n' "$id" "oha sends one token: no rotating-token run" >>"$FIXED"; return 0 ;; esac
    [ -n "${AG_LOGFILE:-}" ] && : >"$AG_LOGFILE"
    c0=$(cpu_ticks "$@")
    if ! oha_run "$DUR" "$f" "$url" "$tok"; then
        printf '%s\t\t\t\t\t\t%s\n' "$id" "oha failed: $(tail -1 "$f.err" | tr '\t' ' ')" >>"$FIXED"; return 0
    fi
    c1=$(cpu_ticks "$@")
    read -r rps p50 p99 req bad <<<"$(parse_oha "$f")" || true
    if [ -z "${req:-}" ] || [ "$req" = 0 ] || [ "${bad:-1}" -gt 0 ]; then
        printf '%s\t\t\t\t\t\t%s\n' "$id" "${bad:-?} of ${req:-0} responses not 2xx" >>"$FIXED"; return 0
    fi
    cpu_us=$(awk -v d=$((c1 - c0)) -v hz="$HZ" -v n="$req" 'BEGIN { printf "%.3f", d * 1e6 / hz / n }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$rps" "$p50" "$p99" "$req" "$cpu_us" >>"$FIXED"
    log "($id) $label: at $RATE req/s: $(printf '%.0f' "$rps") req/s, p50 $p50 µs, p99 $p99 µs, CPU $cpu_us µs/req"
}

# idle_mem ID PORT PATH PID... : RSS growth per idle keep-alive connection
idle_mem() {
    local id=$1 port=$2 path=$3; shift 3
    local pids out
    pids=$(IFS=,; echo "$*")
    if over_budget; then log "($id) memory: skipped, time budget used up"; return 0; fi
    log "($id) memory: $IDLE_CONNS idle keep-alive connections"
    out=$(timeout 120 python3 "$BENCH/idle_conns.py" --port "$port" --path "$path" --count "$IDLE_CONNS" --pids "$pids" 2>&1) || true
    echo "$out" >"$RUN/mem-$id.json"
    if python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d.get("per_conn_kib") is not None and d["failed"]==0 else 1)' "$out" 2>/dev/null; then
        python3 -c 'import json,sys; d=json.loads(sys.argv[2]); print("\t".join(str(x) for x in (sys.argv[1], d["before_kib"], d["after_kib"], d["conns"], d["per_conn_kib"])))' "$id" "$out" >>"$MEM"
        log "($id) memory: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%s KiB -> %s KiB: %.2f KiB per connection" % (d["before_kib"], d["after_kib"], d["per_conn_kib"]))' "$out")"
    else
        # a partial result is not a figure: record why, the table shows n/a
        printf '%s\t\t\t\t\t%s\n' "$id" "$(echo "$out" | tail -1 | tr '\t' ' ' | cut -c1-200)" >>"$MEM"
        log "($id) memory: failed: $(echo "$out" | tail -1)"
    fi
    sleep 1   # let the proxy close the 5,000 sockets before the next case
}

nginx_pids() { # master + workers; the master binds before it forks, so wait for a worker
    local i kids=""
    for i in $(seq 40); do kids=$(children "$1"); [ -n "$kids" ] && break; sleep 0.05; done
    echo "$1" $kids
}

start_nginx() { # start_nginx NAME TEMPLATE PORT [UPSTREAM] [WORKERS] [CORES] [AUTHGATE] : sets LAST_PID (master)
    local name=$1 tpl=$2 port=$3 up=${4:-} workers=${5:-1} cores=${6:-0} ag=${7:-}
    mkdir -p "$RUN/$name-tmp"
    fill "$tpl" "$RUN/$name.conf" NAME="$name" RUN="$RUN" PORT="$port" WORKERS="$workers" UPSTREAM="$up" AUTHGATE="$ag"
    start_bg "$RUN/$name.out" taskset -c "$cores" nginx -p "$RUN" -e "$RUN/$name-error.log" -c "$RUN/$name.conf" -g 'daemon off;'
    wait_port "$port" "$LAST_PID" 10 || { log "$name did not start: $(tail -2 "$RUN/$name.out" "$RUN/$name-error.log" 2>/dev/null | tr '\n' ' ')"; return 1; }
}
start_haproxy() { # start_haproxy NAME TEMPLATE PORT : foreground (-db), one thread, core 0
    local name=$1 tpl=$2 port=$3
    fill "$tpl" "$RUN/$name.cfg" PORT="$port" UPSTREAM="127.0.0.1:$P_UP" THREADS=1 KEYDIR="$RUN/keys" \
        HS256_SECRET="$(cat "$RUN/keys/hs256.secret")"
    start_bg "$RUN/$name.out" taskset -c 0 haproxy -db -f "$RUN/$name.cfg"
    wait_port "$port" "$LAST_PID" 10 || { log "$name did not start: $(tail -3 "$RUN/$name.out" | tr '\n' ' ')"; return 1; }
}
# start_authgate NAME PORT ALG [EXTRA_TOML] : one folder per instance under bench/run/, core 0;
# sets LAST_PID, AG_LOGFILE and AG_ERR (why it failed)
start_authgate() {
    local name=$1 port=$2 alg=$3 extra=${4:-} workers=${AG_WORKERS:-1} cores=${AG_CORES:-0} dir=$RUN/$1 keyline i
    mkdir -p "$dir/data"
    case $alg in
        HS256) keyline='secret = "env:AUTHGATE_JWT_SECRET"' ;;
        *) keyline='signing_key = "file:data/signing-key.pem"' ;;
    esac
    fill "$BENCH/authgate.toml.in" "$dir/gateway.toml" PORT="$port" UPSTREAM_PORT="$P_UP" ALG="$alg" KEY_LINE="$keyline" WORKERS="$workers"
    [ -z "$extra" ] || printf '\n%s\n' "$extra" >>"$dir/gateway.toml"
    if [ "$alg" = ES256 ] && [ ! -f "$dir/data/signing-key.pem" ]; then
        "$AG" keys generate --alg ES256 --out "$dir/data/signing-key.pem" >"$dir/keygen.log" 2>&1 \
            || { AG_ERR="authgate keys generate --alg ES256 failed: $(tail -1 "$dir/keygen.log")"; return 1; }
    fi
    AG_LOGFILE=$dir/authgate.log
    : >"$AG_LOGFILE"
    # one worker like the peers (server.workers, above); stderr appended so it can be truncated
    AUTHGATE_JWT_SECRET=$AG_HS_SECRET \
        start_bg "$AG_LOGFILE" taskset -c "$cores" "$AG" serve -c "$dir/gateway.toml"
    for i in $(seq 300); do   # up to 15 s for "listening on"
        grep -q 'listening on' "$AG_LOGFILE" && return 0
        kill -0 "$LAST_PID" 2>/dev/null || break
        sleep 0.05
    done
    local why="no 'listening on' line within 15 s" rc last
    if ! kill -0 "$LAST_PID" 2>/dev/null; then
        wait "$LAST_PID" && rc=0 || rc=$?
        why="exited with status $rc before printing 'listening on'"
    fi
    last=$(grep -v '^$' "$AG_LOGFILE" | tail -1 | cut -c1-200)
    AG_ERR="authgate serve ($alg): $why${last:+; last stderr line: $last}"
    stop_and_forget "$LAST_PID"
    return 1
}
# authgate_setup NAME PORT ALG [EXTRA_TOML] : start + token + sanity checks; sets AG_PID, AG_TOKEN or AG_ERR
authgate_setup() {
    local name=$1 port=$2 alg=$3 base="http://127.0.0.1:$2" msg
    AG_PID="" AG_TOKEN="" AG_ERR=""
    [ "$AG_BUILT" = 1 ] || { AG_ERR="$AG_BUILD_ERR"; return 1; }
    start_authgate "$name" "$port" "$alg" "${4:-}" || return 1
    AG_PID=$LAST_PID
    if ! AG_TOKEN=$(python3 "$BENCH/http_check.py" token "$base" alice benchpassword1 2>"$RUN/$name/token.err"); then
        AG_ERR="register/login failed: $(tail -1 "$RUN/$name/token.err")"; return 1
    fi
    msg=$(python3 "$BENCH/http_check.py" get "$base/public" 200) \
        && msg=$(python3 "$BENCH/http_check.py" get "$base/protected" 401) \
        && msg=$(python3 "$BENCH/http_check.py" get "$base/protected" 200 --token "$AG_TOKEN" --contains '"user":"alice"') \
        || { AG_ERR="sanity check failed: $msg"; return 1; }
    log "authgate $alg ready on :$port (pid $AG_PID), token for alice obtained, checks passed"
}

# distinct_case ID ALG PORT KEY : mint DISTINCT tokens like AG_TOKEN with the instance's key
# and run the required route rotating through them (no verified-token cache hits)
distinct_case() {
    local id=$1 alg=$2 port=$3 key=$4 label="authgate required, $2, $((DISTINCT / 1000))k tokens"
    local f=$RUN/tokens-$id.txt msg
    if over_budget; then
        log "($id) $label: skipped, time budget of ${BUDGET}s used up"
        case_status "$id" "$label" authgate "skipped: time budget used up"; return 0
    fi
    log "($id) minting $DISTINCT distinct $alg tokens (copies of alice's token, new jti each)"
    if ! AUTHGATE_JWT_SECRET=$AG_HS_SECRET "$PYJWT" "$BENCH/mint_tokens.py" "$AG_TOKEN" "$alg" "$key" "$DISTINCT" "$f" 2>"$f.err"; then
        case_status "$id" "$label" authgate "minting tokens failed: $(tail -1 "$f.err")"; return 0
    fi
    if ! msg=$(python3 "$BENCH/http_check.py" get "http://127.0.0.1:$port/protected" 200 --token "$(head -1 "$f")" --contains '"user":"alice"') \
        || ! msg=$(python3 "$BENCH/http_check.py" get "http://127.0.0.1:$port/protected" 200 --token "$(tail -1 "$f")" --contains '"user":"alice"'); then
        case_status "$id" "$label" authgate "minted tokens rejected: $msg"; return 0
    fi
    run_case "$id" "$label" authgate "http://127.0.0.1:$port/protected" "@$f" "$AG_PID"
}

# api_key_case ID PORT CONFIG : SPEC §16 — the same instance and run as (f), a route taking
# API keys, one key of a service account on every request: its CPU per request beside (f)'s
# cached EdDSA token (a key must cost no more)
api_key_case() {
    local id=$1 port=$2 cfg=$3 label="authgate API key" key msg
    if over_budget; then case_status "$id" "$label" authgate "skipped: time budget used up"; return 0; fi
    if ! "$AG" -c "$cfg" users add bench-svc --service >"$RUN/$id-svc.log" 2>&1 \
        || ! key=$("$AG" -c "$cfg" apikeys create bench-svc 2>>"$RUN/$id-svc.log"); then
        case_status "$id" "$label" authgate "creating the key failed: $(tail -1 "$RUN/$id-svc.log")"; return 0
    fi
    # created while the gateway runs: known within revocation_poll (1s)
    local i; for i in 1 2 3 4 5 6 7 8 9 10; do
        msg=$(python3 "$BENCH/http_check.py" get "http://127.0.0.1:$port/keys" 200 --token "$key" --contains '"user":"bench-svc"') && break
        sleep 0.5
    done
    [ "$i" -lt 10 ] || { case_status "$id" "$label" authgate "key refused: $msg"; return 0; }
    run_case "$id" "$label" authgate "http://127.0.0.1:$port/keys" "$key" "$AG_PID"
}

# ================================================================= main
mkdir -p "$RES"
rm -rf "$RUN"; mkdir -p "$RUN"
log "authgate benchmark$([ "$QUICK" = 1 ] && echo ' (QUICK: 1 x 3 s per case)') — scratch dir $RUN"
[ "$(nproc)" -ge 2 ] || die "needs at least 2 cores (proxy on core 0, wrk on core 1)"

if [ "${SKIP_INSTALL:-0}" != 1 ]; then install_deps; else find_pyjwt; fi
[ -n "$PYJWT" ] || die "no python3 with pyjwt + cryptography (for gen_tokens.py)"
for t in nginx haproxy wrk gnuplot taskset python3; do command -v "$t" >/dev/null || die "$t not found"; done
HZ=$(getconf CLK_TCK)

# Raise the fd limit for the proxies and the 5,000-connection client (inherited by children).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((IDLE_CONNS + 1000)) ] \
    || { IDLE_CONNS=$(( $(ulimit -n) - 1000 )); log "fd limit $(ulimit -n): idle-connection test reduced to $IDLE_CONNS"; }

for p in $P_UP $P_NGX $P_HAP $P_HS $P_RS $P_ES $P_AG_ED $P_AG_HS $P_AG_ES $P_NGX_ALL $P_AG_ALL $P_AG_IS $P_JWKS $P_NGX_BK $P_NGX_AR; do
    port_open "$p" && die "port $p is in use (set BENCH_PORT_BASE to another free range of 15 ports)"
done

# ---------------------------------------------------------------- 2. build authgate
AG_BUILT=0 AG_BUILD_ERR=""
if [ "${SKIP_BUILD:-0}" = 1 ]; then
    [ -x "$AG" ] && AG_BUILT=1 || AG_BUILD_ERR="SKIP_BUILD=1 and no $AG"
elif ! command -v cargo >/dev/null; then
    AG_BUILD_ERR="cargo not found (install Rust >= 1.85 with rustup)"
else
    log "building authgate: cargo build --release (log: bench/run/cargo-build.log)"
    if (cd "$REPO" && timeout 1800 cargo build --release) >"$RUN/cargo-build.log" 2>&1 && [ -x "$AG" ]; then
        AG_BUILT=1
    else
        AG_BUILD_ERR="cargo build --release failed: $(grep -m1 -E '^error' "$RUN/cargo-build.log" | cut -c1-160)"
    fi
fi
[ "$AG_BUILT" = 1 ] && log "authgate built: $AG" || log "authgate NOT available: $AG_BUILD_ERR — its cases will show n/a"

# ---------------------------------------------------------------- 3. keys, tokens, secrets
"$PYJWT" "$BENCH/gen_tokens.py" "$RUN/keys" >"$RUN/gen_tokens.log" 2>&1 || die "gen_tokens.py failed: $(tail -1 "$RUN/gen_tokens.log")"
TOK_HS=$(cat "$RUN/keys/tok_hs256.jwt") TOK_RS=$(cat "$RUN/keys/tok_rs256.jwt") TOK_ES=$(cat "$RUN/keys/tok_es256.jwt")
AG_HS_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')   # 64 bytes >= 32
log "keys and tokens for the HAProxy JWT cases written to bench/run/keys"

# The measurements proper run under a hard watchdog; the install and build above do not count.
T_MEASURE=$SECONDS
# (its own TERM trap ends its sleep too, so stopping it by PID leaves nothing behind)
( trap 'kill "$sp" 2>/dev/null; exit 0' TERM
  sleep "$HARD_LIMIT" & sp=$!; wait "$sp"
  echo "[watchdog] ${HARD_LIMIT}s of measuring: stopping the run" >&2; kill -TERM $$ ) &
WATCHDOG=$!; PIDS+=("$WATCHDOG")

# ---------------------------------------------------------------- 4. upstream
# One nginx answering 200 itself. It sits on core 1 with wrk during the proxy cases, so that
# core 0 is the proxy's alone; for case (a), where it is the system under test, it moves to core 0.
start_nginx upstream "$BENCH/nginx-upstream.conf.in" "$P_UP" || die "upstream nginx did not start"
UP_PID=$LAST_PID
UP_PIDS=($(nginx_pids "$UP_PID"))
pin_upstream() { local p; for p in "${UP_PIDS[@]}"; do taskset -a -p -c "$1" "$p" >/dev/null; done; }
pin_upstream 1
python3 "$BENCH/http_check.py" get "http://127.0.0.1:$P_UP/x" 200 --contains '"ok":true' || die "upstream check failed"
log "upstream nginx on :$P_UP (pids ${UP_PIDS[*]})"

# ---------------------------------------------------------------- 5. cases
pin_upstream 0
run_case a "upstream direct (nginx return 200)" upstream "http://127.0.0.1:$P_UP/public" "" "${UP_PIDS[@]}"
pin_upstream 1

if start_nginx proxy "$BENCH/nginx-proxy.conf.in" "$P_NGX" "127.0.0.1:$P_UP"; then
    NGX_PID=$LAST_PID; NGX_PIDS=($(nginx_pids "$NGX_PID"))
    log "nginx proxy on :$P_NGX (pids ${NGX_PIDS[*]})"
    run_case b "nginx reverse proxy" peer "http://127.0.0.1:$P_NGX/public" "" "${NGX_PIDS[@]}"
    idle_mem b "$P_NGX" /public "${NGX_PIDS[@]}"
    stop_and_forget "$NGX_PID"
else
    case_status b "nginx reverse proxy" peer "nginx did not start (see bench/run/proxy-error.log)"
fi

# (b2): nginx doing authgate's bookkeeping (access log with request id, X-Forwarded-*,
# X-Request-Id), so the authgate rows can also be read against like work.
if start_nginx proxy-bk "$BENCH/nginx-bookkeeping.conf.in" "$P_NGX_BK" "127.0.0.1:$P_UP"; then
    NGX_PID=$LAST_PID; NGX_PIDS=($(nginx_pids "$NGX_PID"))
    run_case b2 "nginx reverse proxy + bookkeeping" peer "http://127.0.0.1:$P_NGX_BK/public" "" "${NGX_PIDS[@]}"
    stop_and_forget "$NGX_PID"
else
    case_status b2 "nginx reverse proxy + bookkeeping" peer "nginx did not start (see bench/run/proxy-bk-error.log)"
fi

if start_haproxy haproxy-plain "$BENCH/haproxy-plain.cfg.in" "$P_HAP"; then
    HAP_PID=$LAST_PID; log "HAProxy on :$P_HAP (pid $HAP_PID)"
    run_case c "HAProxy reverse proxy" peer "http://127.0.0.1:$P_HAP/public" "" "$HAP_PID"
    idle_mem c "$P_HAP" /public "$HAP_PID"
    stop_and_forget "$HAP_PID"
else
    case_status c "HAProxy reverse proxy" peer "haproxy did not start (see bench/run/haproxy-plain.out)"
fi

for spec in "d1 hs256 HS256 $P_HS $TOK_HS" "d2 rs256 RS256 $P_RS $TOK_RS" "d3 es256 ES256 $P_ES $TOK_ES"; do
    read -r id low alg port tok <<<"$spec"
    label="HAProxy jwt_verify $alg"
    if ! start_haproxy "haproxy-jwt-$low" "$BENCH/haproxy-jwt-$low.cfg.in" "$port"; then
        case_status "$id" "$label" peer "haproxy did not start (see bench/run/haproxy-jwt-$low.out)"; continue
    fi
    pid=$LAST_PID
    # the config must really check: no token -> 401, valid token -> 200 with X-User=alice
    if msg=$(python3 "$BENCH/http_check.py" get "http://127.0.0.1:$port/protected" 401) \
        && msg=$(python3 "$BENCH/http_check.py" get "http://127.0.0.1:$port/protected" 200 --token "$tok" --contains '"user":"alice"'); then
        log "HAProxy $alg on :$port (pid $pid), checks passed"
        run_case "$id" "$label" peer "http://127.0.0.1:$port/protected" "$tok" "$pid"
    else
        log "($id) $label: sanity check failed: $msg"
        case_status "$id" "$label" peer "sanity check failed: $msg"
    fi
    stop_and_forget "$pid"
done

# authgate EdDSA instance: public route (e), memory, required route (f), then start-to-ready
if authgate_setup ag-eddsa "$P_AG_ED" EdDSA; then
    run_case e "authgate public route" authgate "http://127.0.0.1:$P_AG_ED/public" "" "$AG_PID"
    : >"$AG_LOGFILE"
    idle_mem e "$P_AG_ED" /public "$AG_PID"
    run_case f "authgate required, EdDSA" authgate "http://127.0.0.1:$P_AG_ED/protected" "$AG_TOKEN" "$AG_PID"
    api_key_case k "$P_AG_ED" "$RUN/ag-eddsa/gateway.toml"
    # (j): nginx auth_request to this instance's /authz/nginx (SPEC §15), both on core 0;
    # the CPU per request is nginx's and authgate's together, beside (f).
    if start_nginx proxy-ar "$BENCH/nginx-authreq.conf.in" "$P_NGX_AR" "127.0.0.1:$P_UP" 1 0 "127.0.0.1:$P_AG_ED"; then
        AR_PID=$LAST_PID; AR_PIDS=($(nginx_pids "$AR_PID"))
        run_case j "nginx auth_request + authgate, EdDSA" authgate "http://127.0.0.1:$P_NGX_AR/protected" "$AG_TOKEN" "${AR_PIDS[@]}" "$AG_PID"
        stop_and_forget "$AR_PID"
    else
        case_status j "nginx auth_request + authgate, EdDSA" authgate "nginx did not start (see bench/run/proxy-ar-error.log)"
    fi
    distinct_case f2 EdDSA "$P_AG_ED" "$RUN/ag-eddsa/data/signing-key.pem"
    stop_and_forget "$AG_PID"; AG_LOGFILE=""
    if over_budget; then echo '{"error": "skipped: time budget used up"}' >"$RUN/ready.json"
    else
        log "authgate start-to-ready: 5 starts"
        python3 "$BENCH/ready_time.py" --port "$P_AG_ED" --runs 5 -- \
            taskset -c 0 "$AG" serve -c "$RUN/ag-eddsa/gateway.toml" >"$RUN/ready.json" || true
        log "authgate start-to-ready: $(cat "$RUN/ready.json")"
    fi
else
    log "(e)(f) authgate EdDSA: n/a — $AG_ERR"
    [ -n "$AG_PID" ] && stop_and_forget "$AG_PID"; AG_LOGFILE=""
    case_status e "authgate public route" authgate "$AG_ERR"
    case_status f "authgate required, EdDSA" authgate "$AG_ERR"
    case_status k "authgate API key" authgate "$AG_ERR"
    case_status f2 "authgate required, EdDSA, $((DISTINCT / 1000))k tokens" authgate "$AG_ERR"
    echo "{\"error\": $(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$AG_ERR")}" >"$RUN/ready.json"
fi

for spec in "g ag-hs256 HS256 $P_AG_HS env:AUTHGATE_JWT_SECRET" "h ag-es256 ES256 $P_AG_ES $RUN/ag-es256/data/signing-key.pem"; do
    read -r id name alg port key <<<"$spec"
    label="authgate required, $alg"
    if authgate_setup "$name" "$port" "$alg"; then
        run_case "$id" "$label" authgate "http://127.0.0.1:$port/protected" "$AG_TOKEN" "$AG_PID"
        distinct_case "${id}2" "$alg" "$port" "$key"
    else
        log "($id) $label: n/a — $AG_ERR"
        case_status "$id" "$label" authgate "$AG_ERR"
        case_status "${id}2" "$label, $((DISTINCT / 1000))k tokens" authgate "$AG_ERR"
    fi
    [ -n "$AG_PID" ] && stop_and_forget "$AG_PID"; AG_LOGFILE=""
done

# (i) authgate verifying an external RS256 issuer's tokens ([[issuer]], SPEC §10), beside (d2):
# the IdP's JWKS is a static file on loopback (python3 http.server, core 1); DISTINCT tokens
# signed with HAProxy's RS256 key, so every request is a signature check, as in HAProxy's row.
issuer_case() {
    local id=i label="authgate, external RS256 issuer, distinct tokens" dir=$RUN/ag-issuer
    local f=$RUN/tokens-i.txt iss="https://idp.bench.test" msg jwks_pid
    if over_budget; then case_status "$id" "$label" authgate "skipped: time budget used up"; return 0; fi
    mkdir -p "$dir/jwks"
    log "($id) signing $DISTINCT distinct RS256 tokens as issuer $iss, JWKS in $dir/jwks"
    if ! "$PYJWT" "$BENCH/issuer_tokens.py" "$RUN/keys/rs256.key" "$iss" "$DISTINCT" "$f" "$dir/jwks/jwks.json" 2>"$f.err"; then
        case_status "$id" "$label" authgate "issuer_tokens.py failed: $(tail -1 "$f.err")"; return 0
    fi
    start_bg "$dir/jwks.log" taskset -c 1 python3 -m http.server "$P_JWKS" --bind 127.0.0.1 --directory "$dir/jwks"
    jwks_pid=$LAST_PID
    if ! wait_port "$P_JWKS" "$jwks_pid" 10; then
        case_status "$id" "$label" authgate "the JWKS server did not start"; stop_and_forget "$jwks_pid"; return 0
    fi
    local issuer_toml
    issuer_toml=$(printf '[[issuer]]\nname = "bench-idp"\nissuer = "%s"\njwks_uri = "http://127.0.0.1:%s/jwks.json"\naudiences = ["api"]\nalgorithms = ["RS256"]\n' "$iss" "$P_JWKS")
    if authgate_setup ag-issuer "$P_AG_IS" EdDSA "$issuer_toml"; then
        if msg=$(python3 "$BENCH/http_check.py" get "http://127.0.0.1:$P_AG_IS/protected" 200 --token "$(head -1 "$f")" --contains '"user":"alice"') \
            && msg=$(python3 "$BENCH/http_check.py" get "http://127.0.0.1:$P_AG_IS/protected" 200 --token "$(tail -1 "$f")" --contains '"user":"alice"'); then
            run_case "$id" "$label" authgate "http://127.0.0.1:$P_AG_IS/protected" "@$f" "$AG_PID"
        else
            case_status "$id" "$label" authgate "issuer tokens rejected: $msg"
        fi
    else
        case_status "$id" "$label" authgate "$AG_ERR"
    fi
    [ -n "$AG_PID" ] && stop_and_forget "$AG_PID"; AG_LOGFILE=""
    stop_and_forget "$jwks_pid"
}
issuer_case

# ---------------------------------------------------------------- 5b. every core
# nginx `worker_processes auto` against authgate `workers = "auto"`: proxy, wrk (2 threads) and
# the upstream share both cores, as on a machine where the gateway has every core.
pin_upstream 0,1
CLIENT_CORES=0,1 WRK_THREADS=2
if start_nginx proxy-all "$BENCH/nginx-proxy.conf.in" "$P_NGX_ALL" "127.0.0.1:$P_UP" auto 0,1; then
    NGX_PID=$LAST_PID; NGX_PIDS=($(nginx_pids "$NGX_PID"))
    run_case b8 "nginx reverse proxy, worker_processes auto" peer "http://127.0.0.1:$P_NGX_ALL/public" "" "${NGX_PIDS[@]}"
    stop_and_forget "$NGX_PID"
else
    case_status b8 "nginx reverse proxy, worker_processes auto" peer "nginx did not start"
fi
if AG_WORKERS='"auto"' AG_CORES=0,1 authgate_setup ag-all "$P_AG_ALL" EdDSA; then
    run_case e8 "authgate public route, workers = auto" authgate "http://127.0.0.1:$P_AG_ALL/public" "" "$AG_PID"
else
    case_status e8 "authgate public route, workers = auto" authgate "$AG_ERR"
fi
[ -n "$AG_PID" ] && stop_and_forget "$AG_PID"; AG_LOGFILE=""
CLIENT_CORES=1 WRK_THREADS=1

stop_and_forget "$UP_PID"
stop_and_forget "$WATCHDOG"

# ---------------------------------------------------------------- 6. report
ag_version="n/a"
[ "$AG_BUILT" = 1 ] && ag_version=$("$AG" --version 2>/dev/null | head -1 || true)
[ -n "$ag_version" ] || ag_version="authgate $(awk -F'"' '/^version/ { print $2; exit }' "$REPO/Cargo.toml")"
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "none yet")
{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'machine\t%s cores (nproc), %s, Linux %s\n' "$(nproc)" \
        "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" "$(uname -r)"
    printf 'versions\t%s; %s; wrk %s; %s (commit %s%s)\n' \
        "$(nginx -v 2>&1 | sed 's/.*: //')" "$(haproxy -v | head -1 | awk '{ print "HAProxy " $3 }')" \
        "$(wrk -v 2>&1 | head -1 | awk '{ print $2 }')" "$ag_version" "$commit" \
        "$(git -C "$REPO" --no-optional-locks diff --quiet HEAD 2>/dev/null || echo ', uncommitted changes')"
    printf 'method\twrk 1 thread, %s connections, %s s per run after a %s s warm-up, %s run(s) per case, medians; proxy (1 worker/thread) pinned to core 0, wrk and the upstream nginx to core 1 (the upstream on core 0 for case a); CPU from /proc/PID/stat at CLK_TCK=%s; memory: %s idle keep-alive connections, VmRSS after-before\n' \
        "$CONNS" "$DUR" "$WARM" "$REPS" "$HZ" "$IDLE_CONNS"
    printf 'authgate_settings\tAUTHGATE_LOG=%s, access log to a file (nginx and HAProxy run with access logs off), workers = 1 (b8/e8: every core)\n' "$AUTHGATE_LOG"
    printf 'fixed_rate\t%s\n' "$([ "$RATE" != 0 ] && command -v oha >/dev/null && echo "$RATE req/s per case for $DUR s with $(oha --version 2>/dev/null | head -1) (-q $RATE, --latency-correction, $CONNS connections)" || echo "not measured (oha missing or BENCH_RATE=0)")"
    printf 'idle_max\t%s\n' "$IDLE_MAX"
    printf 'mode\t%s\n' "$([ "$QUICK" = 1 ] && echo 'QUICK=1 (1 x 3 s: indicative only)' || echo full)"
} >"$RUN/meta.tsv"

python3 "$BENCH/report.py" "$RUN" "$RES/latest.md" "$RUN/chart.dat" || die "report.py failed"
read -r cpuref p99ref <"$RUN/chart.dat.ref"
if gnuplot -e "dat='$RUN/chart.dat'; out='$RES/latest.svg'; cpuref=$cpuref; p99ref=$p99ref; subtitle='$(date -u +%Y-%m-%d)$([ "$QUICK" = 1 ] && echo ', QUICK')'" \
    "$BENCH/chart.gp" 2>"$RUN/gnuplot.log"; then
    log "wrote bench/results/latest.md and bench/results/latest.svg"
else
    log "gnuplot failed ($(tail -1 "$RUN/gnuplot.log")); wrote bench/results/latest.md only"
fi
log "done in $((SECONDS - T0)) s"
exit 0
