# bench/scripts/lib.sh: what the scripts that start servers share (sourced,
# not run): a free loopback port, and the servers started in the
# background, stopped on exit.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Background servers to stop on exit: `pids+=($!)` after starting one.
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap stop_servers EXIT
