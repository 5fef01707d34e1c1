#!/usr/bin/env bash
# What a route rate limit on Redis adds to a request's latency at a fixed rate
# (issue 22: "the Redis case's added latency at 5,000 req/s").
#
#   bash bench/limit_latency.sh            RATE=5000 SECONDS_EACH=10 ROUNDS=3 by default
#
# One authgate (release build, one worker, pinned to core 0) in front of an nginx
# upstream, with the same required EdDSA route twice: /protected unlimited and
# /limited with `rate_limit = { rate = "1000000/sec", per = "user" }` on the machine's
# Redis (key prefix of its own; set never to refuse). oha on core 1 sends RATE requests/s
# over 50 keep-alive connections with latency correction (as bench/run.sh's fixed-rate
# column), the same token on every request, alternating the two routes ROUNDS times.
# Prints p50/p90/p99 per run and route, the medians, and their difference. Needs nginx,
# oha (cargo install oha --locked), Redis on 127.0.0.1:6379.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin" LC_ALL=C
RATE=${RATE:-5000}
SECONDS_EACH=${SECONDS_EACH:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=50
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
AG=${AUTHGATE_BIN:-$REPO/target/release/authgate}
DIR=$(mktemp -d /tmp/authgate-limit-latency.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
for t in nginx oha taskset; do command -v "$t" >/dev/null || { echo "limit_latency.sh: needs $t (oha: cargo install oha --locked)" >&2; exit 2; }; done
[ -x "$AG" ] || (cd "$REPO" && cargo build --release --quiet)

. "$BENCH/lib.sh"
start_upstream "$DIR"
write_gateway_config "$DIR/gateway.toml" "$UP"
sed -i "s/^\[rate_limit\]$/[rate_limit]\nbackend = \"redis:\/\/127.0.0.1:6379\"\nkey_prefix = \"authgate-latency:$$:\"/" "$DIR/gateway.toml"
printf '\n[[route]]\npath = "/limited"\nupstream = "app"\nrate_limit = { rate = "1000000/sec", per = "user" }\n' >>"$DIR/gateway.toml"
AUTHGATE_LOG=${AUTHGATE_LOG:-info} taskset -c 0 "$AG" serve -c "$DIR/gateway.toml" 2>"$DIR/ag.log" >/dev/null & PIDS+=($!)
wait_ready "$DIR/ag.log" 100
TOKEN=$(login_token "http://127.0.0.1:$PORT" '{"username":"latency","password":"latency-password"}')
for path in /protected/x /limited/x; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT$path")
    [ "$code" = 200 ] || { echo "warm-up $path got $code" >&2; cat "$DIR/ag.log" >&2; exit 1; }
done
curl -s -D - -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/limited/x" | grep -qi '^ratelimit-policy' \
    || { echo "/limited carries no RateLimit-Policy: the limit is not on" >&2; exit 1; }

run() { # $1 name, $2 path, $3 round: oha at RATE req/s, latency-corrected, JSON
    taskset -c 1 oha --no-tui --output-format json -z "${SECONDS_EACH}s" -q "$RATE" -c "$CLIENTS" \
        --latency-correction -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT$2" >"$DIR/$1.$3.json"
}
echo "authgate $("$AG" --version 2>/dev/null | awk '{print $2}'), $(oha --version | head -1), $RATE req/s, $CLIENTS connections, $ROUNDS x ${SECONDS_EACH}s per route, alternating"
for r in $(seq "$ROUNDS"); do
    run unlimited /protected/x "$r"
    run redis /limited/x "$r"
done
python3 - "$DIR" "$ROUNDS" <<'PY'
import json, os, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
def one(name, r):
    j = json.load(open(os.path.join(d, f"{name}.{r}.json")))
    codes = j.get("statusCodeDistribution", {})
    bad = sum(v for k, v in codes.items() if not k.startswith("2"))
    p = j["latencyPercentiles"]
    return [p["p50"] * 1e3, p["p90"] * 1e3, p["p99"] * 1e3, j["summary"]["requestsPerSec"], bad]
res = {n: [one(n, r) for r in range(1, rounds + 1)] for n in ("unlimited", "redis")}
print(f"{'route':<10} {'round':>5} {'req/s':>8} {'non-2xx':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
for n, runs in res.items():
    for i, (p50, p90, p99, rps, bad) in enumerate(runs, 1):
        print(f"{n:<10} {i:>5} {rps:>8.0f} {bad:>7} {p50:>8.3f} {p90:>8.3f} {p99:>8.3f}")
med = {n: [statistics.median(r[i] for r in runs) for i in range(3)] for n, runs in res.items()}
for n, (p50, p90, p99) in med.items():
    print(f"{n:<10} median p50 {p50:.3f}  p90 {p90:.3f}  p99 {p99:.3f} ms")
u, r = med["unlimited"], med["redis"]
print("added by the Redis limit (medians): " + ", ".join(f"p{q} {b - a:+.3f} ms" for q, a, b in zip((50, 90, 99), u, r)))
PY
