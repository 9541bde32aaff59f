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
