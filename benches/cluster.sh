#!/usr/bin/env bash
# Fan-out across a cluster against one node, in one run: rtm-server alone with the memory
# engine, then three rtm-server nodes sharing a redis-server (subscribers spread over nodes 1
# and 2, the publisher on node 3), the same rtm-load workloads on each, alternating.
#
#   benches/cluster.sh                      # fanout 1, 100 (x 1000 msg/s) and 1000 (x 100 msg/s)
#   ROUNDS=3 DURATION=5 benches/cluster.sh
#   WORKLOADS="100:250 100:500" benches/cluster.sh   # subscribers:messages per second
#
# It installs redis-server with apt-get if missing, starts every server on free loopback ports
# (Redis on a Unix socket in a temporary directory), stops exactly the processes it started,
# and prints one table per workload. Raw results (one JSON line per run, with the label saying
# which setup) go to $OUT (default target/cluster.jsonl). Server CPU is each process's own
# (utime + stime from /proc) over the whole run, warm-up included.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
fi
cargo build --release -p rtm-server -p rtm-benches --bin rtm-server --bin rtm-load

rounds=${ROUNDS:-3}
duration=${DURATION:-5}
out=${OUT:-target/cluster.jsonl}
: > "$out"
work=$(mktemp -d)
pids=()
cleanup() {
    # The nodes first, then Redis (started first), so that no node logs a lost Redis.
    for (( i=${#pids[@]}-1; i>=0; i-- )); do
        kill "${pids[$i]}" 2>/dev/null || true; wait "${pids[$i]}" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"
}
cpu_ticks() { # $1: pid -> utime + stime in clock ticks
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# One certificate for every node, so that one --cert trusts them all.
redis-server --port 0 --unixsocket "$work/redis.sock" --unixsocketperm 700 --dir "$work" \
    --save "" --appendonly no --logfile "$work/redis.log" & redis_pid=$!; pids+=("$redis_pid")
for _ in $(seq 100); do [ -S "$work/redis.sock" ] && break; sleep 0.1; done

start_node() { # $1: name, $2: engine (memory or redis) -> sets node_port and node_pid
    local name=$1 engine=$2
    node_port=$(free_port)
    mkdir -p "$work/$name"
    local cert=""
    if [ -f "$work/cert.pem" ]; then
        cert="cert_file = \"$work/cert.pem\"
key_file = \"$work/key.pem\""
    fi
    local engine_section=""
    if [ "$engine" = redis ]; then
        engine_section="[engine]
kind = \"redis\"
urls = [\"redis+unix://$work/redis.sock\"]
node_name = \"$name\""
    fi
    cat > "$work/$name/rtm.toml" <<TOML
listen = "127.0.0.1:$node_port"
data_dir = "$work/$name/data"
$cert
[limits]
publish_rate = 10000000
max_subscriptions = 10000
[connection]
max_connections_per_address = 100000
handshake_rate = 100000
$engine_section
TOML
    RUST_LOG=warn target/release/rtm-server --http-listen 127.0.0.1:0 --config "$work/$name/rtm.toml" & node_pid=$!
    pids+=("$node_pid")
    for _ in $(seq 100); do [ -f "$work/$name/data/cert.pem" ] || [ -n "$cert" ] && break; sleep 0.1; done
    if [ ! -f "$work/cert.pem" ]; then
        cp "$work/$name/data/cert.pem" "$work/$name/data/key.pem" "$work/"
    fi
    sleep 0.5
}

start_node single memory; single_port=$node_port; single_pid=$node_pid
start_node node1 redis; n1_port=$node_port; n1_pid=$node_pid
start_node node2 redis; n2_port=$node_port; n2_pid=$node_pid
start_node node3 redis; n3_port=$node_port; n3_pid=$node_pid

run() { # $1: label, $2: setup (single or cluster); rest: rtm-load arguments
    local label=$1 setup=$2; shift 2
    local target watched
    if [ "$setup" = single ]; then
        target=(--addr "127.0.0.1:$single_port" --server-pid "$single_pid")
        watched=("$single_pid")
    else
        target=(--sub-addr "127.0.0.1:$n1_port" --sub-addr "127.0.0.1:$n2_port"
            --pub-addr "127.0.0.1:$n3_port")
        watched=("$n1_pid" "$n2_pid" "$n3_pid" "$redis_pid")
    fi
    local before=() after=()
    for pid in "${watched[@]}"; do before+=("$(cpu_ticks "$pid")"); done
    local start=$(date +%s.%N)
    target/release/rtm-load "${target[@]}" --cert "$work/cert.pem" --label "$label/$setup" "$@" \
        > "$work/run.json" || echo "{\"label\":\"$label/$setup\",\"error\":\"run failed\"}" > "$work/run.json"
    local end=$(date +%s.%N)
    for pid in "${watched[@]}"; do after+=("$(cpu_ticks "$pid")"); done
    local cpus=""
    for i in "${!watched[@]}"; do
        cpus+="$(( ${after[$i]} - ${before[$i]} )),"
    done
    python3 - "$work/run.json" "$cpus" "$start" "$end" "$(getconf CLK_TCK)" "$setup" >> "$out" <<'PY'
import json, sys
row = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
ticks = [int(t) for t in sys.argv[2].strip(",").split(",")]
wall = float(sys.argv[4]) - float(sys.argv[3])
hz = int(sys.argv[5])
names = ["rtm"] if sys.argv[6] == "single" else ["node1", "node2", "node3", "redis"]
row["process_cpu_pct"] = {n: round(100 * t / hz / wall, 1) for n, t in zip(names, ticks)}
print(json.dumps(row))
PY
}

# WORKLOADS: "subscribers:rate" pairs (messages per second from the one publisher).
workloads=${WORKLOADS:-"1:1000 100:1000 1000:100"}
for round in $(seq "$rounds"); do
    for setup in single cluster; do
        for w in $workloads; do
            subs=${w%%:*} rate=${w##*:}
            run "fanout-$subs-x$rate" "$setup" --workload fanout --subs "$subs" --rate "$rate" \
                --duration "$duration"
        done
    done
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r.get("label", "?"), []).append(r)
print("| run | delivered / expected | p50 µs (runs) | p99 µs (runs) | process CPU % (last run) |")
print("|---|--:|--:|--:|---|")
for label, runs in by.items():
    ok = [r for r in runs if "p50_us" in r]
    if not ok:
        print(f"| {label} | failed | | | |")
        continue
    p50 = " / ".join(str(r["p50_us"]) for r in ok)
    p99 = " / ".join(str(r["p99_us"]) for r in ok)
    delivered = f'{sum(r["delivered"] for r in ok)} / {sum(r["expected"] for r in ok)}'
    cpu = ", ".join(f"{k} {v}" for k, v in ok[-1]["process_cpu_pct"].items())
    print(f"| {label} | {delivered} | {p50} (median {statistics.median(r['p50_us'] for r in ok)}) "
          f"| {p99} (median {statistics.median(r['p99_us'] for r in ok)}) | {cpu} |")
PY
