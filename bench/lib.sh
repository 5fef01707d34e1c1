# Shared by bench/login.sh and bench/profile.sh (sourced; not run on its own).
# Expects BENCH (this folder) and a PIDS array in the caller; everything started
# here is appended to PIDS so the caller's EXIT trap stops it.

# A TCP port free on 127.0.0.1 right now (for a config that must name its port).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# An nginx upstream answering every request itself (nginx-upstream.conf.in) in DIR;
# sets UP to its port.
start_upstream() {
    local dir=$1
    UP=$(free_port)
    sed -e "s#@NAME@#up#g; s#@RUN@#$dir#g; s#@PORT@#$UP#g; s#@WORKERS@#1#g" \
        "$BENCH/nginx-upstream.conf.in" > "$dir/up.conf"
    mkdir -p "$dir/up-tmp"
    nginx -c "$dir/up.conf" -g 'daemon off;' >"$dir/up.log" 2>&1 & PIDS+=($!)
}

# gateway.toml for upstream port $2: an ephemeral port, rate limits off, long
# keep-alive like the peers' configs, /public (public) and /protected (required).
# $3: the store (default sqlite:data/users.db; see bench_store).
write_gateway_config() {
    cat > "$1" <<TOML
[server]
listen = ["127.0.0.1:0"]
workers = 1
header_read_timeout = "300s"
idle_timeout = "300s"
[identity]
store = "${3:-sqlite:data/users.db}"
[rate_limit]
login_per_ip = "off"
login_per_user = "off"
register_per_ip = "off"
[tokens]
access_ttl = "1h"
[[upstream]]
name = "app"
targets = ["http://127.0.0.1:$2"]
[[route]]
path = "/public"
upstream = "app"
auth = "public"
[[route]]
path = "/protected"
upstream = "app"
TOML
}

# Waits (up to $2 tenths of a second) for authgate's ready line in log $1; sets PORT.
wait_ready() {
    local _
    for _ in $(seq "${2:-100}"); do grep -q "listening on" "$1" 2>/dev/null && break; sleep 0.1; done
    PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$1" | head -1 | sed 's/.*://')
    [ -n "$PORT" ] || { cat "$1" >&2; echo "authgate did not get ready" >&2; return 1; }
}

# Registers the user in JSON body $2 at base URL $1, logs in, prints the access token.
login_token() {
    curl -s -o /dev/null -X POST "$1/register" -H 'Content-Type: application/json' -d "$2"
    curl -sf -X POST "$1/login" -H 'Content-Type: application/json' -d "$2" \
        | sed 's/.*"access_token":"\([^"]*\)".*/\1/'
}

# The store for STORE=sqlite|postgres: prints its URL. For postgres, a database of
# its own on the machine's PostgreSQL (127.0.0.1:5432, trust, user postgres), dropped
# by bench_store_cleanup; PGBENCH_URL overrides it (an existing database).
bench_store() {
    case "${1:-sqlite}" in
        sqlite) echo "sqlite:data/users.db" ;;
        postgres)
            if [ -n "${PGBENCH_URL:-}" ]; then echo "$PGBENCH_URL"; return; fi
            BENCH_PGDB="authgate_bench_$$_$RANDOM"
            psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $BENCH_PGDB" >/dev/null
            echo "postgres://postgres@127.0.0.1:5432/$BENCH_PGDB" ;;
        *) echo "STORE must be sqlite or postgres" >&2; return 2 ;;
    esac
}

bench_store_cleanup() {
    [ -n "${BENCH_PGDB:-}" ] || return 0
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $BENCH_PGDB WITH (FORCE)" >/dev/null 2>&1 || true
}
