#!/usr/bin/env bash
# bench/scripts/alternate.sh: one fan-out run after another against a
# fresh Redis and one or two Kraken nodes, round after round, so that two
# builds (or two option sets) are compared in the same minutes of a noisy
# machine.
#
#   bench/scripts/alternate.sh ROUNDS SECONDS [kraken-bench flags...]
#   ALT_A=path/to/kraken ALT_A_ARGS="-kraken router_threads 0" \
#   ALT_B=path/to/other/kraken ALT_B_ARGS="" bench/scripts/alternate.sh 5 8
#   ALT_SCENARIO=fanout bench/scripts/alternate.sh ...   # polling (no Redis)
#
# Node A is target/release/kraken unless ALT_A says otherwise; node B runs
# only if ALT_B or ALT_B_ARGS is set. Each round runs `kraken-bench
# redis-fanout` (default) against Redis and against node A's and node B's
# resp_port, each round starting one server later than the last (so no
# server always runs first); with ALT_SCENARIO=fanout, `kraken-bench
# fanout` against the nodes' memcached port only. One line per run:
# deliveries/s, server (and client) CPU per delivery, mean, p50, p99 and
# p99.9 latency, lost; then, for each node, in how many rounds it beat the
# first server (Redis, or node A) on rate, on CPU per delivery, on p99,
# and on all three. Loopback only; every server is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rounds=${1:-3}
secs=${2:-8}
shift 2 || true
scenario=${ALT_SCENARIO:-redis-fanout}
cargo build --release --quiet -p kraken -p kraken-bench
BENCH=target/release/kraken-bench
NODE_A=${ALT_A:-target/release/kraken}
NODE_B=${ALT_B:-}
if [[ -z $NODE_B && -n ${ALT_B_ARGS+x} ]]; then
  NODE_B=target/release/kraken
fi
out=target/alternate
mkdir -p "$out"
: >"$out/rounds.tsv"
ulimit -n "$(ulimit -Hn)"

# shellcheck source=bench/scripts/lib.sh
source bench/scripts/lib.sh

names=()
addrs=()
spids=()
if [[ $scenario == redis-fanout ]]; then
  command -v redis-server >/dev/null || {
    echo "redis-server not found: apt-get install -y redis-server" >&2
    exit 1
  }
  port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --daemonize no >"$out/redis.log" 2>&1 &
  pids+=($!)
  names+=(redis)
  addrs+=("127.0.0.1:$port")
  spids+=($!)
fi

start_node() { # NAME BINARY ARGS
  local port rport
  port=$(free_port)
  rport=$(free_port)
  # shellcheck disable=SC2086
  "$2" run -kraken listen_ip 127.0.0.1 -kraken tcp_server_port "$port" \
    -kraken resp_port "$rport" -kraken control_socket "/tmp/kraken-alternate-$port.sock" \
    -kraken max_tcp_clients 19900 $3 >"$out/$1.log" 2>&1 &
  pids+=($!)
  spids+=($!)
  names+=("$1")
  if [[ $scenario == redis-fanout ]]; then
    addrs+=("127.0.0.1:$rport")
  else
    addrs+=("127.0.0.1:$port")
  fi
}
start_node A "$NODE_A" "${ALT_A_ARGS:-}"
if [[ -n $NODE_B ]]; then
  start_node B "$NODE_B" "${ALT_B_ARGS:-}"
fi
sleep 1.5

for round in $(seq "$rounds"); do
  for k in "${!names[@]}"; do
    i=$(((k + round - 1) % ${#names[@]}))
    "$BENCH" "$scenario" --addr "${addrs[$i]}" --server-pid "${spids[$i]}" \
      --duration "$secs" --json "$@" >"$out/run.json"
    python3 - "$round" "${names[$i]}" "$out/run.json" "$out/rounds.tsv" <<'PY'
import json, sys
d = json.load(open(sys.argv[3]))
with open(sys.argv[4], "a") as f:
    f.write("%s\t%s\t%s\t%s\t%s\n" % (sys.argv[1], sys.argv[2], d["deliveries_per_s"],
            d["server_cpu_us_per_delivery"], d.get("latency_p99_us") or 0))
ms = lambda k: (d.get(k) or 0) / 1000
client = d["client_cpu_s"] * 1e6 / max(d["deliveries"], 1)
print("round %s  %-6s %10.0f deliveries/s  %.3f us/delivery (client %.3f)  mean %5.2f p50 %5.2f p99 %5.2f p99.9 %5.2f ms  lost %d" % (
    sys.argv[1], sys.argv[2], d["deliveries_per_s"], d["server_cpu_us_per_delivery"],
    client, ms("latency_mean_us"), ms("latency_p50_us"), ms("latency_p99_us"), ms("latency_p999_us"), d["lost"]))
PY
    sleep 0.5
  done
done

python3 - "$out/rounds.tsv" "${names[0]}" <<'PY'
import sys
runs = {}
for line in open(sys.argv[1]):
    r, name, rate, cpu, p99 = line.split("\t")
    runs.setdefault(name, {})[r] = (float(rate), float(cpu), float(p99))
ref = sys.argv[2]
for name in [n for n in runs if n != ref]:
    n = rate = cpu = p99 = all3 = 0
    for r, (a, c, p) in runs[name].items():
        if r not in runs[ref]:
            continue
        ra, rc, rp = runs[ref][r]
        n += 1
        w = (a >= ra, c <= rc, p <= rp)
        rate += w[0]; cpu += w[1]; p99 += w[2]; all3 += all(w)
    print("%-6s against %s, %d rounds: more deliveries/s in %d, less CPU per delivery in %d, "
          "p99 no higher in %d, all three in %d" % (name, ref, n, rate, cpu, p99, all3))
PY
