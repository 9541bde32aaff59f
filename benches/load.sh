#!/usr/bin/env bash
# End-to-end load benchmark: weir vs nginx, configured the same way.
#
#   benches/load.sh [ROUNDS] [SECONDS]      (defaults: 5 rounds of 10 s)
#
# Two nginx upstreams serve a 128-byte body. Each contender proxies to them
# with a 90/10 split, keep-alive on both sides, no access log, one worker,
# pinned to core 1; wrk (-t1 -c64) is pinned to core 0 with the upstreams.
# Rounds are interleaved (A B, B A, ...) and medians reported. CPU µs per
# request = (utime + stime of the proxy's process tree) / requests served.
# Loopback only; every process started here is stopped by PID on exit.
# Needs: nginx, wrk (Debian packages), a release build of weir.
set -euo pipefail
ROUNDS=${1:-5}
SECS=${2:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WEIR=${WEIR:-$ROOT/target/release/weir}
command -v nginx >/dev/null && command -v wrk >/dev/null || { echo "needs nginx and wrk (apt-get install nginx-light wrk)"; exit 2; }
[ -x "$WEIR" ] || (cd "$ROOT" && cargo build --release -q -p weir-proxy)
NGINX=$(command -v nginx)
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_A=$(free_port); UP_B=$(free_port); P_NGINX=$(free_port); P_WEIR=$(free_port); P_ADMIN=$(free_port)
P_NOREC=$(free_port); P_ADMIN2=$(free_port)
HZ=$(getconf CLK_TCK)
BODY=$(head -c 128 /dev/zero | tr '\0' 'x')

# --- upstreams: one nginx, two ports, pinned to core 0 ---
mkdir -p "$WORK/up"
cat > "$WORK/up/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $WORK/up/nginx.pid; error_log $WORK/up/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP_A; location / { return 200 "$BODY"; } }
  server { listen 127.0.0.1:$UP_B; location / { return 200 "$BODY"; } }
}
CONF
taskset -c 0 "$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" & PIDS+=($!)

# --- nginx as the proxy under test ---
mkdir -p "$WORK/px"
cat > "$WORK/px/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $WORK/px/nginx.pid; error_log $WORK/px/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$UP_A weight=9; server 127.0.0.1:$UP_B weight=1; keepalive 128; }
  server { listen 127.0.0.1:$P_NGINX;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
taskset -c 1 "$NGINX" -p "$WORK/px" -c "$WORK/px/nginx.conf" & NGINX_PID=$!; PIDS+=($NGINX_PID)

# --- weir, same split (keyless exact sequence), one worker ---
cat > "$WORK/weir.toml" <<CONF
[listen]
addr = "127.0.0.1:$P_WEIR"
[admin]
addr = "127.0.0.1:$P_ADMIN"
[backends.stable]
addrs = ["127.0.0.1:$UP_A"]
[backends.canary]
addrs = ["127.0.0.1:$UP_B"]
[[routes]]
name = "bench"
stable = "stable"
canary = "canary"
weight = 10
CONF
RUST_LOG=warn taskset -c 1 "$WEIR" run -c "$WORK/weir.toml" --workers 1 & WEIR_PID=$!; PIDS+=($WEIR_PID)
# The same weir with recording switched off, to price the telemetry.
sed -e "s/:$P_WEIR\"/:$P_NOREC\"/; s/:$P_ADMIN\"/:$P_ADMIN2\"/" "$WORK/weir.toml" > "$WORK/norec.toml"
printf '[telemetry]\nrecord = false\n' >> "$WORK/norec.toml"
RUST_LOG=warn taskset -c 1 "$WEIR" run -c "$WORK/norec.toml" --workers 1 & NOREC_PID=$!; PIDS+=($NOREC_PID)

wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 not up"; exit 1; }
wait_port "$P_NGINX"; wait_port "$P_WEIR"; wait_port "$P_NOREC"

tree_ticks() { # utime+stime of a pid and its children
  local total=0
  for p in $1 $(pgrep -P "$1" || true); do
    read -r -a f < "/proc/$p/stat"; total=$((total + f[13] + f[14]))
  done
  echo $total
}

run_one() { # name port pid → "rps us_per_req p50 p99"
  local t0 t1 out reqs rps
  t0=$(tree_ticks "$3")
  out=$(taskset -c 0 wrk -t1 -c64 -d"${SECS}s" --latency "http://127.0.0.1:$2/")
  t1=$(tree_ticks "$3")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local p50 p99
  p50=$(echo "$out" | awk '$1=="50%" {print $2}'); p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  local us; us=$(python3 -c "print(round(($t1-$t0)/$HZ*1e6/$reqs, 2))")
  echo "$rps $us $p50 $p99"
}

# warm-up
taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$P_NGINX/" >/dev/null
taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$P_WEIR/" >/dev/null
taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$P_NOREC/" >/dev/null

echo "round contender req/s cpu_us_per_req p50 p99"
: > "$WORK/results"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="nginx weir weir-norec"; else order="weir-norec weir nginx"; fi
  for c in $order; do
    case $c in
      nginx) res=$(run_one nginx "$P_NGINX" "$NGINX_PID") ;;
      weir) res=$(run_one weir "$P_WEIR" "$WEIR_PID") ;;
      weir-norec) res=$(run_one weir-norec "$P_NOREC" "$NOREC_PID") ;;
    esac
    echo "$r $c $res" | tee -a "$WORK/results"
  done
done

# Split accuracy: weir's own counters, per backend, from /metrics.
curl -s "http://127.0.0.1:$P_ADMIN/metrics" | awk '/^weir_requests_total/ && /code_class="2xx"/ {
  if ($0 ~ /backend="canary"/) c += $2; else s += $2 }
  END { if (c + s > 0) printf "weir delivered canary share: %.4f%% of %d requests (configured 10%%)\n", 100*c/(c+s), c+s }'
python3 - "$WORK/results" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for c in ("nginx", "weir", "weir-norec"):
    rs = [r for r in rows if r[1] == c]
    med[c] = (statistics.median(float(r[2]) for r in rs), statistics.median(float(r[3]) for r in rs))
    print(f"median {c:6} {med[c][0]:>10.0f} req/s  {med[c][1]:6.2f} CPU us/req")
print(f"weir/nginx: throughput {med['weir'][0]/med['nginx'][0]:.2f}x, CPU per request {med['weir'][1]/med['nginx'][1]:.2f}x")
print(f"recording on/off: throughput {med['weir'][0]/med['weir-norec'][0]:.3f}x, CPU per request {med['weir'][1]/med['weir-norec'][1]:.3f}x")
PY
