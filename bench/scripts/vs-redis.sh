#!/usr/bin/env bash
# bench/scripts/vs-redis.sh: Kraken's polling fanout next to Redis's pushed
# pub/sub, in one run, on this machine.
#
#   bench/scripts/vs-redis.sh [SECONDS] [kraken-bench flags...]
#       e.g. bench/scripts/vs-redis.sh 10 --subscribers 500 --size 256
#   VS_REDIS_KRAKEN_RESP=1 bench/scripts/vs-redis.sh ...   # also redis-fanout
#       against the Kraken node's resp_port
#   VS_REDIS_NODE_ARGS="-kraken worker_threads 1 -kraken router_threads 0" ...
#       # options for the Kraken node
#
# Starts a fresh redis-server (Debian's package: apt-get install
# redis-server) on a free loopback port with persistence off, and a fresh
# release kraken node on another; runs `kraken-bench fanout` (memcached
# dialect, polling) against the node and `kraken-bench redis-fanout`
# (SUBSCRIBE, pushed messages) against redis, one after the other, each
# with --server-pid; prints the two reports side by side (server CPU per
# delivery included). JSON reports: target/vs-redis/*.json. Both servers are
# stopped on exit. Loopback only. Run it on a quiet machine for figures:
# other_cores_busy should be near 0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
secs=${1:-10}
shift || true
command -v redis-server >/dev/null || {
  echo "redis-server not found: apt-get install -y redis-server" >&2
  exit 1
}
command -v python3 >/dev/null || { echo "python3 is needed for the table" >&2; exit 1; }
cargo build --release --quiet -p kraken -p kraken-bench
ulimit -n "$(ulimit -Hn)"
out=target/vs-redis
mkdir -p "$out"
BENCH=target/release/kraken-bench

# shellcheck source=bench/scripts/lib.sh
source bench/scripts/lib.sh

wait_for() { # LOGFILE PATTERN WHAT
  for _ in $(seq 100); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$3 did not start; see $1" >&2
  exit 1
}

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
  --daemonize no --protected-mode yes --logfile "$PWD/$out/redis.log" \
  --dir "$PWD/$out" >/dev/null 2>&1 &
REDIS=$!
pids+=("$REDIS")
wait_for "$out/redis.log" "Ready to accept connections" redis-server

kraken_port=$(free_port)
node_pairs=(-kraken listen_ip 127.0.0.1 -kraken tcp_server_port "$kraken_port"
  -kraken control_socket "/tmp/kraken-vs-redis-$kraken_port.sock" -kraken max_tcp_clients 19900)
resp_port=
if [[ ${VS_REDIS_KRAKEN_RESP:-0} == 1 ]]; then
  resp_port=$(free_port)
  node_pairs+=(-kraken resp_port "$resp_port")
fi
# More node options, as "-kraken NAME VALUE ..." (word-split).
# shellcheck disable=SC2206
node_pairs+=(${VS_REDIS_NODE_ARGS:-})
target/release/kraken run "${node_pairs[@]}" >"$out/kraken.log" 2>&1 &
NODE=$!
pids+=("$NODE")
wait_for "$out/kraken.log" "accepting connections" "kraken node"

echo "== kraken (memcached dialect, polling): kraken-bench fanout --duration $secs $*"
"$BENCH" fanout --addr "127.0.0.1:$kraken_port" --server-pid "$NODE" --duration "$secs" --json "$@" \
  >"$out/kraken-fanout.json"
sleep 1
echo "== redis $(redis-server --version | grep -o 'v=[0-9.]*') (pushed): kraken-bench redis-fanout --duration $secs $*"
"$BENCH" redis-fanout --addr "127.0.0.1:$redis_port" --server-pid "$REDIS" --duration "$secs" --json "$@" \
  >"$out/redis-fanout.json"
reports=("$out/kraken-fanout.json" "$out/redis-fanout.json")
names=("kraken poll" "redis push")
if [[ -n $resp_port ]]; then
  sleep 1
  echo "== kraken resp_port (pushed): kraken-bench redis-fanout --duration $secs $*"
  "$BENCH" redis-fanout --addr "127.0.0.1:$resp_port" --server-pid "$NODE" --duration "$secs" --json "$@" \
    >"$out/kraken-resp-fanout.json"
  reports+=("$out/kraken-resp-fanout.json")
  names+=("kraken push")
fi

python3 - "${#reports[@]}" "${reports[@]}" "${names[@]}" <<'PY'
import json, sys
n = int(sys.argv[1])
reports = [json.load(open(p)) for p in sys.argv[2:2 + n]]
names = sys.argv[2 + n:2 + 2 * n]
keys = ["subscribers_connected", "publishers_connected", "run_s", "publishes_per_s",
        "deliveries_per_s", "messages_accepted", "expected_deliveries", "unique_deliveries",
        "lost", "loss_ratio", "duplicates", "ordering_violations", "bad_payloads",
        "latency_p50_us", "latency_p99_us", "latency_p999_us", "latency_max_us",
        "server_cpu_s", "server_cores_busy", "server_cpu_us_per_delivery",
        "client_cores_busy", "other_cores_busy", "server_rss_connected_kib",
        "server_rss_end_kib"]

def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        if abs(v) >= 0.1:
            return f"{v:.3f}"
        return f"{v:.5f}"
    return str(v)

width = max(len(k) for k in keys)
print()
print(f"  {'':{width}}  " + "  ".join(f"{name:>14}" for name in names))
for k in keys:
    print(f"  {k:{width}}  " + "  ".join(f"{fmt(r.get(k)):>14}" for r in reports))
for name, r in zip(names, reports):
    print(f"  {name}: {r['title']}")
    for w in r.get("warnings", []):
        print(f"    warning: {w}")
PY
