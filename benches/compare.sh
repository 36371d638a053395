#!/usr/bin/env bash
# Side-by-side load test of rtm, NATS and Redis pub/sub on this machine, with one load
# generator (rtm-load) and one measurement code for all three.
#
#   benches/compare.sh                 # the full set (about 10 minutes)
#   QUICK=1 benches/compare.sh         # shorter runs, fewer connections
#   ONLY="fanout-1 throughput" benches/compare.sh
#   PIN=1 benches/compare.sh           # servers on CPU 0, the load generator on CPU 1
#
# It installs nats-server and redis-server with apt-get if they are missing, starts the three
# servers on free loopback ports, stops exactly the processes it started, and prints one table
# per workload. Raw results (one JSON line per run) go to $OUT (default target/compare.jsonl).
#
# Client settings: async-nats and redis-rs as their maintainers ship them; both speak plain TCP
# on loopback without TLS, while rtm always runs QUIC with TLS 1.3 (encryption is part of rtm's
# numbers). Redis runs with persistence off (--save "" --appendonly no); NATS with its defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
cargo build --release -p rtm-server -p rtm-benches --bin rtm-server --bin rtm-load

quick=${QUICK:-0}
duration=5; conns=10000
if [ "$quick" = 1 ]; then duration=2; conns=2000; fi
out=${OUT:-target/compare.jsonl}
# With PIN=1 each server runs alone on CPU 0 and the load generator on CPU 1, so the servers
# do not compete with the clients (whose QUIC or TCP work is the load generator's).
server_cpu=(); client_cpu=()
if [ "${PIN:-0}" = 1 ]; then server_cpu=(taskset -c 0); client_cpu=(taskset -c 1); fi
: > "$out"
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { # $1: tcp or udp
    python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_STREAM if sys.argv[1]=='tcp' else socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"
}
wait_tcp() { # $1: port
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1" >&2; return 1
}

start_servers() {
    rtm_port=$(free_port udp); nats_port=$(free_port tcp); redis_port=$(free_port tcp)
    rm -rf "$work/rtm-data"
    cat > "$work/rtm.toml" <<TOML
listen = "127.0.0.1:$rtm_port"
data_dir = "$work/rtm-data"
[limits]
publish_rate = 10000000
topic_publish_rate = 10000000
max_subscriptions = 10000
[connection]
max_connections_per_address = 100000
handshake_rate = 100000
TOML
    RUST_LOG=warn "${server_cpu[@]}" target/release/rtm-server --http-listen 127.0.0.1:0 --config "$work/rtm.toml" & rtm_pid=$!; pids+=("$rtm_pid")
    "${server_cpu[@]}" nats-server -a 127.0.0.1 -p "$nats_port" >"$work/nats.log" 2>&1 & nats_pid=$!; pids+=("$nats_pid")
    "${server_cpu[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        --protected-mode no --logfile "$work/redis.log" & redis_pid=$!; pids+=("$redis_pid")
    for _ in $(seq 100); do [ -f "$work/rtm-data/cert.pem" ] && break; sleep 0.1; done
    wait_tcp "$nats_port"; wait_tcp "$redis_port"
    sleep 0.5
}

stop_servers() {
    for pid in "$rtm_pid" "$nats_pid" "$redis_pid"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    pids=()
}

run() { # $1: name; rest: rtm-load arguments
    local name=$1; shift
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
    for system in rtm nats redis; do
        case $system in
            rtm) target=(--addr "127.0.0.1:$rtm_port" --cert "$work/rtm-data/cert.pem" --server-pid "$rtm_pid");;
            nats) target=(--addr "127.0.0.1:$nats_port" --server-pid "$nats_pid");;
            redis) target=(--addr "127.0.0.1:$redis_port" --server-pid "$redis_pid");;
        esac
        "${client_cpu[@]}" target/release/rtm-load --system "$system" "${target[@]}" --label "$name" "$@" >> "$out" \
            || echo "{\"system\":\"$system\",\"label\":\"$name\",\"error\":\"run failed\"}" >> "$out"
    done
}

start_servers
run fanout-1 --workload fanout --subs 1 --rate 1000 --duration "$duration"
run fanout-100 --workload fanout --subs 100 --rate 1000 --duration "$duration"
run fanout-1000x100 --workload fanout --subs 1000 --rate 100 --duration "$duration"
run fanout-1000x1000 --workload fanout --subs 1000 --rate 1000 --duration "$duration"
run channels-100 --workload channels --pairs 100 --rate 1000 --duration "$duration"
run throughput --workload throughput --duration "$duration"
stop_servers
# Fresh servers for the memory measurement.
start_servers
run conns --workload conns --conns "$conns"
stop_servers

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r.get("label", "?"), {})[r["system"]] = r
cols = {
    "rate": ["subs", "rate", "delivered", "expected", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "server_cpu_pct", "client_cpu_pct", "server_us_per_delivery", "client_us_per_delivery"],
    "throughput": ["msgs_per_s", "p50_us", "p99_us", "server_cpu_pct", "client_cpu_pct", "server_us_per_delivery", "client_us_per_delivery"],
    "conns": ["conns", "server_kib_per_conn", "server_rss_after_kib", "server_idle_cpu_pct", "connect_s"],
}
for label, systems in by.items():
    any_row = next(iter(systems.values()))
    kind = {"throughput": "throughput", "conns": "conns"}.get(any_row.get("workload"), "rate")
    print(f"\n## {label}\n")
    print("| metric | rtm | nats | redis |")
    print("|---|--:|--:|--:|")
    for c in cols[kind]:
        vals = [systems.get(s, {}).get(c, systems.get(s, {}).get("error", "-")) for s in ("rtm", "nats", "redis")]
        print(f"| {c} | " + " | ".join(str(v) for v in vals) + " |")
PY
