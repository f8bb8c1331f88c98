#!/usr/bin/env bash
# bench/scripts/perf.sh: the runs behind docs/PERFORMANCE.md.
#
#   bench/scripts/perf.sh [RUN...]      # default: every run below
#   RUNS: fanout fanout-rate churn idle idle19k mixed subs size shards conns
#
# Each run starts a fresh release node on 127.0.0.1 (loopback only), points
# kraken-bench at it with --server-pid, stores the JSON report under
# target/perf/<run>.json and prints a one-line summary. Run it on a quiet
# machine: the report's other_cores_busy should be near 0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release --quiet -p kraken -p kraken-bench
ulimit -n "$(ulimit -Hn)"
out=target/perf
mkdir -p "$out"
port=23455
BENCH=target/release/kraken-bench

start_node() { # extra -kraken pairs...
  port=$((port + 1))
  sock="/tmp/kraken-perf-$port.sock"
  target/release/kraken run -kraken listen_ip 127.0.0.1 -kraken tcp_server_port "$port" \
    -kraken control_socket "$sock" -kraken max_tcp_clients 19900 "$@" \
    >"$out/node-$port.log" 2>&1 &
  NODE=$!
  for _ in $(seq 100); do
    grep -q "accepting connections" "$out/node-$port.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "node did not start; see $out/node-$port.log" >&2
  exit 1
}

stop_node() {
  kill "$NODE" 2>/dev/null || true
  wait "$NODE" 2>/dev/null || true
  sleep 1
}

# bench NAME SCENARIO [kraken-bench flags...] [-- node pairs...]
bench() {
  local name=$1 scenario=$2; shift 2
  local flags=() pairs=()
  while [[ $# -gt 0 && $1 != -- ]]; do flags+=("$1"); shift; done
  [[ ${1:-} == -- ]] && { shift; pairs=("$@"); }
  start_node "${pairs[@]}"
  echo "== $name: kraken-bench $scenario ${flags[*]} (node: ${pairs[*]:-defaults})"
  "$BENCH" "$scenario" --addr "127.0.0.1:$port" --server-pid "$NODE" --json "${flags[@]}" \
    >"$out/$name.json"
  python3 - "$out/$name.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
keys = ["deliveries_per_s", "publishes_per_s", "topics_per_s", "lost", "duplicates",
        "ordering_violations", "latency_p50_us", "latency_p99_us", "latency_p999_us",
        "poll_latency_p50_us", "poll_latency_p99_us", "server_cores_busy",
        "server_cpu_us_per_delivery", "client_cores_busy", "other_cores_busy",
        "server_rss_per_conn_bytes", "server_rss_per_conn_settled_bytes", "server_rss_retained_kib", "server_rss_start_kib",
        "server_rss_end_kib", "request_latency_p99_us", "connections_ok"]
print("   " + ", ".join(f"{k}={r[k]}" for k in keys if k in r))
for w in r.get("warnings", []):
    print("   warning:", w)
PY
  stop_node
}

runs=("$@")
[[ ${#runs[@]} -eq 0 ]] && runs=(fanout fanout-rate churn idle idle19k mixed subs size shards conns)
for run in "${runs[@]}"; do
  case $run in
    fanout) bench fanout fanout --duration 10 ;;
    fanout-rate) bench fanout-rate-2500 fanout --duration 10 --rate 2500 ;;
    churn) bench churn churn --duration 10 ;;
    idle) bench idle-5000 idle --connections 5000 --duration 10 ;;
    idle19k) bench idle-19000 idle --connections 19000 --source-ips 4 --duration 10 ;;
    mixed) bench mixed mixed --duration 30 ;;
    subs) for n in 10 100 1000 10000; do
            bench "subs-$n" fanout --subscribers "$n" --duration 5 --source-ips 4 -- -kraken max_queue_messages 1000000
          done ;;
    size) for s in 64 1024; do bench "size-$s" fanout --size "$s" --duration 5; done
          # Unpaced, 64 KiB messages ask 200 subscribers for far more than
          # loopback carries; pace them to about 0.8 GB/s of deliveries.
          bench size-65536 fanout --size 65536 --rate 60 --duration 5 ;;
    shards) for k in 1 2 4 8; do
              bench "shards-$k" fanout --topics 64 --subscribe-all --duration 5 -- -kraken num_router_shards "$k"
            done ;;
    conns) for n in 1000 5000 19000; do bench "conns-$n" idle --connections "$n" --source-ips 4 --duration 5; done ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
done
