# Shared by benches/load.sh and benches/tls.sh (sourced, not run).
# Sets NGINX, WORK (a temporary directory), PIDS (stopped on exit), HZ and
# BODY (the 128-byte upstream answer), and defines the helpers below.

NGINX=$(command -v nginx)
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -CONT $(tree_pids "$p") 2>/dev/null || true; kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
HZ=$(getconf CLK_TCK)
BODY=$(head -c 128 /dev/zero | tr '\0' 'x')

# A free loopback port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

tree_pids() { echo "$1" $(pgrep -P "$1" || true); }

# utime+stime (clock ticks) of a pid and its children (nginx's workers).
tree_ticks() {
  local total=0
  for p in $(tree_pids "$1"); do read -r -a f < "/proc/$p/stat"; total=$((total + f[13] + f[14])); done
  echo $total
}

# c1_trace LABEL CMD...: every system call on all CPUs recorded while CMD
# (a c=1 load) runs; prints benches/c1trace.py's turnaround and legs for
# the proxy on CPU 1 (TRACE=1 in load.sh and grpc.sh; needs perf, root).
c1_trace() {
  local label=$1 traces rec
  shift
  command -v perf >/dev/null || { echo "TRACE=1 needs perf (apt-get install linux-perf)"; return 2; }
  traces=$(mktemp -d) # not in $WORK: weir watches its config file's directory
  taskset -c 0 perf record -q -e raw_syscalls:sys_enter,raw_syscalls:sys_exit --exclude-perf -a \
    -o "$traces/trace.data" -- sleep 3 2>/dev/null &
  rec=$!
  sleep 0.3
  "$@" >/dev/null
  wait $rec || { echo "perf record failed (TRACE=1 needs root)"; rm -rf "$traces"; return 2; }
  echo "c=1 trace, $label:"
  perf script --ns -i "$traces/trace.data" -F comm,tid,cpu,time,event,trace 2>/dev/null | python3 "$ROOT/benches/c1trace.py" 1
  rm -rf "$traces"
}
