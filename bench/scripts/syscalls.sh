#!/usr/bin/env bash
# bench/scripts/syscalls.sh: how many system calls the server makes per
# delivery under the fan-out, for Kraken (polled and pushed) and Redis.
#
#   bench/scripts/syscalls.sh [SECONDS]
#   SYSCALLS_NODE=path/to/kraken bench/scripts/syscalls.sh ...  # another build
#
# Counts are steadier than CPU time on a noisy machine: most of a fan-out's
# server CPU is the kernel's TCP work per write, so deliveries per write is
# what decides CPU per delivery. Needs `perf` (Debian's linux-perf) with the
# syscalls tracepoints, and redis-server (apt-get install -y redis-server).
# Each server is fresh, on loopback; the count covers SECONDS in the middle
# of a run of SECONDS + 3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
secs=${1:-4}
command -v perf >/dev/null || { echo "perf not found: apt-get install -y linux-perf" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server not found" >&2; exit 1; }
cargo build --release --quiet -p kraken -p kraken-bench
out=target/syscalls
mkdir -p "$out"
BENCH=target/release/kraken-bench
NODE=${SYSCALLS_NODE:-target/release/kraken}

# shellcheck source=bench/scripts/lib.sh
source bench/scripts/lib.sh

events=syscalls:sys_enter_epoll_wait,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom
events+=,syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_writev

run() { # NAME SERVER(kraken|redis) SCENARIO(fanout|redis-fanout)
  local name=$1 server=$2 scenario=$3 port rport pid addr
  port=$(free_port)
  rport=$(free_port)
  if [[ $server == redis ]]; then
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
      --daemonize no >"$out/$name.server.log" 2>&1 &
    pid=$!
    addr=127.0.0.1:$port
  else
    "$NODE" run -kraken listen_ip 127.0.0.1 -kraken tcp_server_port "$port" \
      -kraken resp_port "$rport" -kraken control_socket "/tmp/kraken-syscalls-$port.sock" \
      >"$out/$name.server.log" 2>&1 &
    pid=$!
    addr=127.0.0.1:$port
    [[ $scenario == redis-fanout ]] && addr=127.0.0.1:$rport
  fi
  sleep 1
  "$BENCH" "$scenario" --addr "$addr" --server-pid "$pid" --duration $((secs + 3)) --json \
    >"$out/$name.json" &
  local bench=$!
  sleep 2
  perf stat -x, -e "$events" -p "$pid" -- sleep "$secs" 2>"$out/$name.perf" >/dev/null
  wait "$bench"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  python3 - "$name" "$out/$name.json" "$out/$name.perf" "$secs" <<'PY'
import json, sys
name, report, counts, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
r = json.load(open(report))
c = {}
for line in open(counts):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].isdigit():
        c[f[2].rsplit("sys_enter_", 1)[-1]] = int(f[0])
d = r["deliveries_per_s"] * secs
writes = c.get("sendto", 0) + c.get("write", 0) + c.get("writev", 0)
reads = c.get("recvfrom", 0) + c.get("read", 0)
print(f"  {name:12} {r['deliveries_per_s']:>9.0f}/s  {r['server_cpu_us_per_delivery']:.3f} us"
      f"  deliveries/write {d / max(writes, 1):5.1f}  reads/delivery {reads / max(d, 1):.4f}"
      f"  epoll_waits/delivery {c.get('epoll_wait', 0) / max(d, 1):.4f}")
PY
}

echo "  (perf stat over $secs s of each fan-out; CPU per delivery is the whole run's)"
run "kraken poll" kraken fanout
run "kraken push" kraken redis-fanout
run "redis push" redis redis-fanout
