#!/usr/bin/env bash
# The JavaScript client beside the Rust client, in one run against one release server:
# one publisher and one subscriber, open loop at --rate (fanout), then as fast as each can
# (throughput), alternating JS over WebSocket, Rust over QUIC and Rust over WebSocket, three
# rounds each. Prints one JSON line per run (rtm-load's and bench/load.mjs's reports).
#
#   clients/js/bench/compare.sh            # from the repository root or anywhere
#   RATE=1000 SECS=10 ROUNDS=3 clients/js/bench/compare.sh
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$repo"
RATE="${RATE:-1000}"; SECS="${SECS:-10}"; ROUNDS="${ROUNDS:-3}"

cargo build --release -q -p rtm-server -p rtm-benches --bin rtm-server --bin rtm-load
(cd clients/js && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && node scripts/build.mjs)

work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=='udp' else socket.SOCK_STREAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"; }
udp=$(port udp); tcp=$(port tcp)
cat > "$work/rtm.toml" <<TOML
listen = "127.0.0.1:$udp"
data_dir = "$work/data"
[websocket]
listen = "127.0.0.1:$tcp"
[limits]
publish_rate = 10000000
max_subscriptions = 10000
[connection]
max_connections_per_address = 100000
handshake_rate = 100000
TOML
RUST_LOG=warn target/release/rtm-server --config "$work/rtm.toml" & pid=$!
up=""
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$tcp/rtm/certificate-hash" >/dev/null && { up=1; break; }; sleep 0.1; done
[ -n "$up" ] || { echo "rtm-server did not come up" >&2; exit 1; }

load=(target/release/rtm-load --system rtm --addr "127.0.0.1:$udp" --cert "$work/data/cert.pem" --server-pid "$pid" --duration "$SECS")
js=(node clients/js/bench/load.mjs --url "ws://127.0.0.1:$tcp/rtm" --secs "$SECS")
for workload in fanout throughput; do
  for round in $(seq "$ROUNDS"); do
    echo "# $workload round $round" >&2
    "${js[@]}" --workload "$workload" --rate "$RATE"
    "${load[@]}" --workload "$workload" --rate "$RATE" --subs 1 --transport quic 2>/dev/null
    "${load[@]}" --workload "$workload" --rate "$RATE" --subs 1 --transport websocket --ws-addr "127.0.0.1:$tcp" 2>/dev/null
  done
done
