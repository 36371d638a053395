#!/usr/bin/env bash
# Delivered messages per second and their cost with 1, 2 and 3 nodes on one Redis, and 3 nodes
# on two Redis shards: the "channels" workload of rtm-load (publisher/subscriber pairs, each on
# its own channel; subscribers spread over every node, publishers on the last), at each rate of
# $RATES (messages per second in total), each setup in turn, $ROUNDS times.
#
#   benches/cluster_scale.sh
#   ROUNDS=2 RATES="20000 40000" PAIRS=100 DURATION=5 benches/cluster_scale.sh
#
# It installs redis-server with apt-get if missing, starts each setup's redis-servers (Unix
# sockets in a temporary directory) and nodes on free loopback ports, stops exactly the
# processes it started, and prints a table. Raw results (one JSON line per run) go to $OUT
# (default target/cluster_scale.jsonl). CPU is each process's own (utime + stime from /proc)
# over the run, warm-up and connecting included.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
fi
cargo build --release -p rtm-server -p rtm-benches --bin rtm-server --bin rtm-load

rounds=${ROUNDS:-2}
rates=${RATES:-"20000 40000"}
pairs=${PAIRS:-100}
duration=${DURATION:-5}
out=${OUT:-target/cluster_scale.jsonl}
: > "$out"
work=$(mktemp -d)
pids=()
stop_all() {
    # Nodes first, then Redis (started first), so that no node logs a lost Redis.
    for (( i=${#pids[@]}-1; i>=0; i-- )); do
        kill "${pids[$i]}" 2>/dev/null || true; wait "${pids[$i]}" 2>/dev/null || true
    done
    pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

free_port() {
    python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# Starts a setup: $1 nodes on $2 Redis shards. Sets node_ports, watched (pids) and names.
start_setup() {
    local nodes=$1 shards=$2 dir="$work/setup-$1-$2"
    mkdir -p "$dir"
    node_ports=(); watched=(); names=()
    local urls=""
    for s in $(seq "$shards"); do
        redis-server --port 0 --unixsocket "$dir/redis$s.sock" --unixsocketperm 700 \
            --dir "$dir" --save "" --appendonly no --logfile "$dir/redis$s.log" &
        pids+=("$!"); watched+=("$!"); names+=("redis$s")
        for _ in $(seq 100); do [ -S "$dir/redis$s.sock" ] && break; sleep 0.1; done
        urls+="\"redis+unix://$dir/redis$s.sock\","
    done
    for n in $(seq "$nodes"); do
        local port; port=$(free_port)
        mkdir -p "$dir/node$n"
        local cert=""
        if [ -f "$work/cert.pem" ]; then
            cert="cert_file = \"$work/cert.pem\"
key_file = \"$work/key.pem\""
        fi
        cat > "$dir/node$n/rtm.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$dir/node$n/data"
$cert
[limits]
publish_rate = 10000000
max_subscriptions = 10000
[connection]
max_connections_per_address = 100000
handshake_rate = 100000
[engine]
kind = "redis"
urls = [${urls%,}]
node_name = "node$n"
TOML
        RUST_LOG=warn target/release/rtm-server --http-listen 127.0.0.1:0 --config "$dir/node$n/rtm.toml" &
        pids+=("$!"); watched+=("$!"); names+=("node$n"); node_ports+=("$port")
        for _ in $(seq 100); do [ -f "$dir/node$n/data/cert.pem" ] || [ -n "$cert" ] && break; sleep 0.1; done
        if [ ! -f "$work/cert.pem" ]; then
            cp "$dir/node$n/data/cert.pem" "$dir/node$n/data/key.pem" "$work/"
        fi
    done
    sleep 0.5
}

run() { # $1: label, $2: rate
    local label=$1 rate=$2
    local target=()
    for port in "${node_ports[@]}"; do target+=(--sub-addr "127.0.0.1:$port"); done
    target+=(--pub-addr "127.0.0.1:${node_ports[-1]}")
    local before=() after=()
    for pid in "${watched[@]}"; do before+=("$(cpu_ticks "$pid")"); done
    local start; start=$(date +%s.%N)
    target/release/rtm-load "${target[@]}" --cert "$work/cert.pem" --label "$label" \
        --workload channels --pairs "$pairs" --rate "$rate" --duration "$duration" \
        > "$work/run.json" || echo "{\"label\":\"$label\",\"error\":\"run failed\"}" > "$work/run.json"
    local end; end=$(date +%s.%N)
    for pid in "${watched[@]}"; do after+=("$(cpu_ticks "$pid")"); done
    local ticks=""
    for i in "${!watched[@]}"; do ticks+="$(( ${after[$i]} - ${before[$i]} )),"; done
    python3 - "$work/run.json" "$ticks" "$start" "$end" "$(getconf CLK_TCK)" "${names[*]}" >> "$out" <<'PY'
import json, sys
row = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
ticks = [int(t) for t in sys.argv[2].strip(",").split(",")]
wall = float(sys.argv[4]) - float(sys.argv[3])
hz = int(sys.argv[5])
row["process_cpu_pct"] = {n: round(100 * t / hz / wall, 1) for n, t in zip(sys.argv[6].split(), ticks)}
row["wall_s"] = round(wall, 2)
print(json.dumps(row))
PY
}

for round in $(seq "$rounds"); do
    for setup in "1 1" "2 1" "3 1" "3 2"; do
        set -- $setup
        start_setup "$1" "$2"
        for rate in $rates; do
            run "$1 node(s), $2 shard(s), $rate/s" "$rate"
        done
        stop_all
    done
done

python3 - "$out" "$duration" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r.get("label", "?"), []).append(r)
print("| setup, offered | delivered/s (runs) | p50 µs (median) | p99 µs (median) | CPU % of a core, median: nodes + Redis | Redis CPU % |")
print("|---|--:|--:|--:|--:|--:|")
for label, runs in by.items():
    ok = [r for r in runs if "p50_us" in r]
    if not ok:
        print(f"| {label} | failed | | | | |")
        continue
    rate = " / ".join(str(round(r["delivered"] / float(sys.argv[2]))) for r in ok)
    nodes = statistics.median(sum(v for k, v in r["process_cpu_pct"].items() if k.startswith("node")) for r in ok)
    redis = statistics.median(sum(v for k, v in r["process_cpu_pct"].items() if k.startswith("redis")) for r in ok)
    print(f"| {label} | {rate} | {statistics.median(r['p50_us'] for r in ok)} "
          f"| {statistics.median(r['p99_us'] for r in ok)} | {round(nodes, 1)} + {round(redis, 1)} | {round(redis, 1)} |")
PY
