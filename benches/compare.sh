#!/usr/bin/env bash
# Side-by-side load test of rtm, NATS and Redis pub/sub on this machine, with one load
# generator (rtm-load) and one measurement code for all of them.
#
#   benches/compare.sh                 # the full set (about 20 minutes)
#   QUICK=1 benches/compare.sh         # shorter runs, fewer connections
#   ONLY="fanout-1 throughput" benches/compare.sh
#   SYSTEMS="rtm nats-tls" benches/compare.sh
#   PIN=1 benches/compare.sh           # servers on CPU 0, the load generator on CPU 1
#   NICE=1 benches/compare.sh          # servers on both CPUs, the load generator at nice 19
#
# Systems (each its own server process, so that CPU per delivery is each one's own):
#   rtm        QUIC with TLS 1.3, as rtm always runs
#   rtm-ws     rtm over WebSocket, plain TCP on loopback (TCP against TCP)
#   nats       nats-server, plain TCP          nats-tls   nats-server --tls
#   redis      redis-server, plain TCP         redis-tls  redis-server --tls-port
# The TLS peers use rtm's self-signed certificate and key (ECDSA P-256), and the clients
# verify it as rtm's do. Client libraries: async-nats and redis-rs as their maintainers ship
# them (redis-rs with rustls). Redis runs with persistence off (--save "" --appendonly no);
# NATS with its defaults.
#
# It installs nats-server and redis-server with apt-get if they are missing, starts the
# servers on free loopback ports, stops exactly the processes it started, and prints one table
# per workload. Raw results (one JSON line per run) go to $OUT (default target/compare.jsonl);
# each fan-out run's latency distribution is drawn to $PLOTS/<workload>.svg (default
# target/compare/).
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

systems=(${SYSTEMS:-rtm rtm-ws nats nats-tls redis redis-tls})
quick=${QUICK:-0}
duration=5; conns=10000
if [ "$quick" = 1 ]; then duration=2; conns=2000; fi
out=${OUT:-target/compare.jsonl}
plots=${PLOTS:-target/compare}
# With PIN=1 each server runs alone on CPU 0 and the load generator on CPU 1, so the servers
# do not compete with the clients (whose QUIC or TCP work is the load generator's).
server_cpu=(); client_cpu=()
if [ "${PIN:-0}" = 1 ]; then server_cpu=(taskset -c 0); client_cpu=(taskset -c 1); fi
# With NICE=1 the servers may use both CPUs and the load generator yields to them.
if [ "${NICE:-0}" = 1 ]; then client_cpu=(nice -n 19); fi
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
    rtm_port=$(free_port udp); ws_port=$(free_port tcp)
    nats_port=$(free_port tcp); nats_tls_port=$(free_port tcp)
    redis_port=$(free_port tcp); redis_tls_port=$(free_port tcp)
    rm -rf "$work/rtm-data"
    cat > "$work/rtm.toml" <<TOML
listen = "127.0.0.1:$rtm_port"
data_dir = "$work/rtm-data"
[websocket]
listen = "127.0.0.1:$ws_port"
[limits]
publish_rate = 10000000
topic_publish_rate = 10000000
max_subscriptions = 10000
[connection]
max_connections_per_address = 100000
handshake_rate = 100000
TOML
    RUST_LOG=warn "${server_cpu[@]}" target/release/rtm-server --http-listen 127.0.0.1:0 --config "$work/rtm.toml" & rtm_pid=$!; pids+=("$rtm_pid")
    # rtm listens once its certificate and key are written: the TLS peers then read them whole.
    wait_tcp "$ws_port"
    cert=$work/rtm-data/cert.pem; key=$work/rtm-data/key.pem
    [ -s "$key" ] || { echo "rtm wrote no key to $key" >&2; exit 1; }
    "${server_cpu[@]}" nats-server -a 127.0.0.1 -p "$nats_port" >"$work/nats.log" 2>&1 & nats_pid=$!; pids+=("$nats_pid")
    "${server_cpu[@]}" nats-server -a 127.0.0.1 -p "$nats_tls_port" --tls --tlscert "$cert" --tlskey "$key" \
        >"$work/nats-tls.log" 2>&1 & nats_tls_pid=$!; pids+=("$nats_tls_pid")
    local redis_common=(--bind 127.0.0.1 --save "" --appendonly no --protected-mode no)
    "${server_cpu[@]}" redis-server --port "$redis_port" "${redis_common[@]}" --logfile "$work/redis.log" \
        & redis_pid=$!; pids+=("$redis_pid")
    "${server_cpu[@]}" redis-server --port 0 --tls-port "$redis_tls_port" --tls-cert-file "$cert" \
        --tls-key-file "$key" --tls-ca-cert-file "$cert" --tls-auth-clients no "${redis_common[@]}" \
        --logfile "$work/redis-tls.log" & redis_tls_pid=$!; pids+=("$redis_tls_pid")
    for port in "$ws_port" "$nats_port" "$nats_tls_port" "$redis_port" "$redis_tls_port"; do wait_tcp "$port"; done
    sleep 0.5
}

stop_servers() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    pids=()
}

run() { # $1: name; rest: rtm-load arguments
    local name=$1; shift
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
    for system in "${systems[@]}"; do
        case $system in
            rtm) target=(--system rtm --addr "127.0.0.1:$rtm_port" --cert "$cert" --server-pid "$rtm_pid");;
            rtm-ws) target=(--system rtm --transport websocket --addr "127.0.0.1:$rtm_port" \
                --ws-addr "127.0.0.1:$ws_port" --cert "$cert" --server-pid "$rtm_pid");;
            nats) target=(--system nats --addr "127.0.0.1:$nats_port" --server-pid "$nats_pid");;
            nats-tls) target=(--system nats --tls --cert "$cert" --addr "127.0.0.1:$nats_tls_port" --server-pid "$nats_tls_pid");;
            redis) target=(--system redis --addr "127.0.0.1:$redis_port" --server-pid "$redis_pid");;
            redis-tls) target=(--system redis --tls --cert "$cert" --addr "127.0.0.1:$redis_tls_port" --server-pid "$redis_tls_pid");;
            *) echo "unknown system $system" >&2; exit 1;;
        esac
        "${client_cpu[@]}" target/release/rtm-load "${target[@]}" --label "$name" "$@" \
            | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); r["name"]=sys.argv[1]; print(json.dumps(r))' "$system" >> "$out" \
            || echo "{\"name\":\"$system\",\"system\":\"$system\",\"label\":\"$name\",\"error\":\"run failed\"}" >> "$out"
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
# Memory per connection: fresh servers for each system (rtm and rtm-ws share a process, and
# memory freed by one run would be reused by the next).
if [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" conns "* ]]; then
    all_systems=("${systems[@]}")
    for system in "${all_systems[@]}"; do
        systems=("$system")
        start_servers
        run conns --workload conns --conns "$conns"
        stop_servers
    done
    systems=("${all_systems[@]}")
fi

python3 benches/compare_report.py "$out" "$plots"
