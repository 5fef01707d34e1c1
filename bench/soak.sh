#!/usr/bin/env bash
# Soak: a fixed request rate for a long time with a reload every 10 s; the
# gateway's RSS and open file descriptors must stay flat (±10 %) and no request
# may fail. Outside CI (it takes as long as it is told to).
#
#   bash bench/soak.sh                       (10 min at 800 req/s)
#   SOAK_SECONDS=600 SOAK_RATE=500 bash bench/soak.sh
#   AUTHGATE_BIN=target/debug/authgate bash bench/soak.sh   (skip the release build)
#
# Load: bench/soak_load.py, 16 keep-alive connections, requests on a fixed schedule
# alternating /public/soak and /protected/soak (a real bearer token), upstream
# nginx. Every 10 s the config is rewritten (a route added or removed in turn) and
# SIGHUP sent; every 5 s VmRSS and the count of /proc/PID/fd are sampled.
# Flatness is judged from the third minute on, against the median of its samples
# (before that is warm-up: allocator arenas fill, and each reload starts a new
# snapshot whose upstream pool fills while the old one's idle connections live out
# their 90 s idle timeout, so descriptors plateau after ~100 s). Writes
# bench/results/soak.md; exits 1 when a criterion fails.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" LC_ALL=C
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
AG=${AUTHGATE_BIN:-$REPO/target/release/authgate}
SECONDS_TOTAL=${SOAK_SECONDS:-600}
RATE=${SOAK_RATE:-800}
DIR=$(mktemp -d /tmp/authgate-soak.XXXXXX)
PIDS=()
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
if ! command -v nginx >/dev/null; then
    log "installing nginx"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
fi
[ -n "${AUTHGATE_BIN:-}" ] || { log "building authgate (release)"; (cd "$REPO" && cargo build --release --quiet --bin authgate); }

. "$BENCH/lib.sh"
start_upstream "$DIR"
write_gateway_config "$DIR/gateway.toml" "$UP"
cp "$DIR/gateway.toml" "$DIR/base.toml"
# Access lines off (600,000 of them say nothing here); reload outcomes stay.
AUTHGATE_LOG="info,authgate::access=off" "$AG" serve -c "$DIR/gateway.toml" 2>"$DIR/ag.log" >/dev/null & PIDS+=($!)
AGPID=$!
wait_ready "$DIR/ag.log"
URL="http://127.0.0.1:$PORT"
TOKEN=$(login_token "$URL" '{"username":"soak","password":"soak-password-1"}')
[ -n "$TOKEN" ] || { echo "no token" >&2; exit 1; }

log "soak: ${SECONDS_TOTAL}s at ${RATE} req/s, reload every 10 s, pid $AGPID ($AG)"
python3 "$BENCH/soak_load.py" 127.0.0.1 "$PORT" "$RATE" "$SECONDS_TOTAL" "$TOKEN" "$DIR/load.json" \
    >"$DIR/load.out" 2>&1 & LOADPID=$!
PIDS+=($LOADPID)

echo "t,rss_kib,fds" > "$DIR/samples.csv"
start=$(date +%s)
reloads=0
while kill -0 "$LOADPID" 2>/dev/null; do
    sleep 5
    # A sample taken after the load ended measures an idle gateway (its client
    # connections gone): not part of the soak.
    kill -0 "$LOADPID" 2>/dev/null || break
    t=$(( $(date +%s) - start ))
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$AGPID/status" 2>/dev/null || echo 0)
    fds=$(ls "/proc/$AGPID/fd" 2>/dev/null | wc -l)
    echo "$t,$rss,$fds" >> "$DIR/samples.csv"
    if [ $(( t / 5 % 2 )) -eq 0 ] && kill -0 "$LOADPID" 2>/dev/null; then
        # Alternate two valid configs so every reload really swaps a new snapshot.
        if [ $(( reloads % 2 )) -eq 0 ]; then
            { cat "$DIR/base.toml"; printf '[[route]]\npath = "/extra"\nupstream = "app"\nauth = "public"\n'; } > "$DIR/gateway.toml"
        else
            cp "$DIR/base.toml" "$DIR/gateway.toml"
        fi
        kill -HUP "$AGPID"
        reloads=$((reloads + 1))
    fi
done
wait "$LOADPID" || true
sleep 1
ok_reloads=$(grep -c "configuration reloaded" "$DIR/ag.log" || true)
bad_reloads=$(grep -c "reload refused" "$DIR/ag.log" || true)
alive=yes; kill -0 "$AGPID" 2>/dev/null || alive=no

mkdir -p "$BENCH/results"
status=0
python3 - "$DIR/samples.csv" "$DIR/load.json" "$reloads" "$ok_reloads" "$bad_reloads" "$alive" \
    "$RATE" "$SECONDS_TOTAL" "$AG" > "$BENCH/results/soak.md" <<'PY' || status=$?
import csv, json, statistics, sys, subprocess
samples, load, sent_reloads, ok_reloads, bad_reloads, alive, rate, secs, binary = sys.argv[1:10]
rows = [(int(r["t"]), int(r["rss_kib"]), int(r["fds"])) for r in csv.DictReader(open(samples))]
stats = json.load(open(load))
base = [r for r in rows if 120 <= r[0] < 180] or rows[: max(1, len(rows) // 5)]
after = [r for r in rows if r[0] >= (base[0][0] if base else 0)]
def judge(i, name):
    b = statistics.median(r[i] for r in base)
    lo, hi = min(r[i] for r in after), max(r[i] for r in after)
    dev = max(abs(lo - b), abs(hi - b)) / b * 100 if b else 0.0
    return b, lo, hi, dev
rss = judge(1, "rss"); fds = judge(2, "fds")
ok = (stats["failed"] == 0 and int(bad_reloads) == 0 and int(ok_reloads) >= int(sent_reloads)
      and alive == "yes" and rss[3] <= 10 and fds[3] <= 10)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(f"# Soak ({'PASS' if ok else 'FAIL'})\n")
print(f"Commit {commit}, binary `{binary}`; {secs} s at a fixed {rate} req/s "
      f"(16 keep-alive connections, /public and /protected alternating), a reload every 10 s.\n")
print("| what | figure |\n| --- | --- |")
print(f"| requests sent / ok / failed | {stats['sent']} / {stats['ok']} / {stats['failed']} |")
print(f"| achieved rate | {stats['rate']} req/s over {stats['seconds']} s ({stats['late']} sent >100 ms late) |")
print(f"| failures by status / error | {stats['statuses'] or '-'} / {stats['errors'] or '-'} |")
print(f"| client connections opened | {stats['connections']} |")
print(f"| reloads sent / reloaded / refused | {sent_reloads} / {ok_reloads} / {bad_reloads} |")
print(f"| RSS KiB: baseline (median 120–180 s) / min / max / deviation | {rss[0]:.0f} / {rss[1]} / {rss[2]} / {rss[3]:.1f} % |")
print(f"| open fds: baseline / min / max / deviation | {fds[0]:.0f} / {fds[1]} / {fds[2]} / {fds[3]:.1f} % |")
print(f"| gateway alive at the end | {alive} |")
print("\nSamples (every 5 s; t, RSS KiB, fds), one line per minute:\n")
print("```")
for r in rows:
    if r[0] % 60 < 5:
        print(f"{r[0]:>5} s  {r[1]:>8} KiB  {r[2]:>4} fds")
print(f"{rows[-1][0]:>5} s  {rows[-1][1]:>8} KiB  {rows[-1][2]:>4} fds  (last)")
print("```")
sys.exit(0 if ok else 1)
PY

cat "$BENCH/results/soak.md"
exit $status
