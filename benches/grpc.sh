#!/usr/bin/env bash
# gRPC benchmark: weir vs nginx's grpc_pass, unary calls over h2c.
#
#   benches/grpc.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 5 s)
#
# One tonic upstream (benches/src/bin/grpc-peer.rs: weir.test.Echo) on core
# 0 with the load; each proxy (one worker) on core 1 takes h2c from the
# client and speaks h2c to the upstream on kept-alive connections. Per
# round, interleaved (A B, B A, ...):
#   * throughput: h2load -c8 -m16 POSTing one gRPC unary call each
#     (weir.test.Echo/Unary, a 5-byte message), counting calls answered;
#   * CPU µs per call: utime+stime of the proxy / calls;
#   * added latency: p50 and p99 of 2000 sequential calls from tonic's
#     client (grpc-peer latency), through each proxy and direct, one set
#     per round (interleaved); the median over rounds.
#   * with TRACE=1 (needs perf and root), where the time of a call at c=1
#     goes: every system call on both cores is recorded during one more
#     run of sequential calls per proxy, and benches/c1trace.py prints the
#     proxy's turnaround (its epoll wait returning to its next send
#     starting: its own part of the critical path, per direction) and the
#     legs between processes. Tracing slows every system call: compare the
#     proxies with each other, not with the figures above.
# Reports each and the weir/nginx ratios. Loopback only; processes stopped
# by PID on exit. Needs: nginx (Debian nginx-light has grpc_pass), h2load
# (Debian nghttp2-client), release builds of weir and grpc-peer.
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
WEIR=${WEIR:-$BIN/weir}
for t in nginx h2load; do command -v $t >/dev/null || { echo "needs $t (apt-get install nginx-light nghttp2-client)"; exit 2; }; done
[ -x "$WEIR" ] || (cd "$ROOT" && cargo build --release -q -p weir-proxy)
[ -x "$BIN/grpc-peer" ] || (cd "$ROOT" && cargo build --release -q -p weir-benches --features soak --bin grpc-peer)
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
P_NGINX=$(free_port); P_WEIR=$(free_port); P_ADMIN=$(free_port)

coproc PEER { exec taskset -c 0 "$BIN/grpc-peer" server; }
PIDS+=($PEER_PID)
read -r UP <&"${PEER[0]}"

mkdir -p "$WORK/px"
cat > "$WORK/px/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $WORK/px/nginx.pid; error_log $WORK/px/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream grpc_up { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$P_NGINX http2;
    location / { grpc_pass grpc://grpc_up; } } }
CONF
taskset -c 1 "$NGINX" -p "$WORK/px" -c "$WORK/px/nginx.conf" & NGINX_PID=$!; PIDS+=($NGINX_PID)

cat > "$WORK/weir.toml" <<CONF
[listen]
addr = "127.0.0.1:$P_WEIR"
[admin]
addr = "127.0.0.1:$P_ADMIN"
[backends.app]
addrs = ["127.0.0.1:$UP"]
http2 = true
[[routes]]
name = "grpc"
stable = "app"
CONF
RUST_LOG=warn taskset -c 1 "$WEIR" run -c "$WORK/weir.toml" --workers 1 & WEIR_PID=$!; PIDS+=($WEIR_PID)

# One gRPC message frame: uncompressed, length 5, "hello".
printf '\x00\x00\x00\x00\x05hello' > "$WORK/call.bin"
for p in $P_NGINX $P_WEIR; do
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done

# h2load against port $1 for $SECS s: prints "calls".
load() {
  taskset -c 0 h2load -c8 -m16 -t1 -D "$SECS" -d "$WORK/call.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$1/weir.test.Echo/Unary" 2>/dev/null | awk '/^requests:/ {print $8}'
}

declare -A PORT=([nginx]=$P_NGINX [weir]=$P_WEIR) PID=([nginx]=$NGINX_PID [weir]=$WEIR_PID)
declare -A CALLS TICKS
for c in nginx weir; do load "${PORT[$c]}" >/dev/null; CALLS[$c]=0; TICKS[$c]=0; done # warm-up
for r in $(seq "$ROUNDS"); do
  order=(nginx weir); [ $((r % 2)) = 0 ] && order=(weir nginx)
  for c in "${order[@]}"; do
    t0=$(tree_ticks "${PID[$c]}")
    n=$(load "${PORT[$c]}")
    t1=$(tree_ticks "${PID[$c]}")
    CALLS[$c]=$((CALLS[$c] + n)); TICKS[$c]=$((TICKS[$c] + t1 - t0))
    printf 'round %d %-5s %8d calls  %6.2f µs CPU/call\n' "$r" "$c" "$n" "$(echo "($t1 - $t0) * 1000000 / $HZ / $n" | bc -l)"
  done
done

# Added latency: sequential calls, ROUNDS rounds interleaved with the
# direct path; the median of the rounds' p50 (and p99).
declare -A L50 L99
for r in $(seq "$ROUNDS"); do
  order=(direct nginx weir); [ $((r % 2)) = 0 ] && order=(weir nginx direct)
  for c in "${order[@]}"; do
    port=$UP; [ "$c" != direct ] && port=${PORT[$c]}
    read -r p50 p99 < <(taskset -c 0 "$BIN/grpc-peer" latency "127.0.0.1:$port" 2000)
    L50[$c]="${L50[$c]:-} $p50"; L99[$c]="${L99[$c]:-} $p99"
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo
printf '%-6s %12s %14s %10s %10s\n' proxy "calls/s" "µs CPU/call" "p50 µs" "p99 µs"
d50=$(echo "${L50[direct]}" | median)
printf '%-6s %12s %14s %10s %10s\n' direct - - "$d50" "$(echo "${L99[direct]}" | median)"
declare -A CPU P50
for c in nginx weir; do
  p50=$(echo "${L50[$c]}" | median)
  CPU[$c]=$(echo "${TICKS[$c]} * 1000000 / $HZ / ${CALLS[$c]}" | bc -l)
  P50[$c]=$((p50 - d50))
  printf '%-6s %12.0f %14.2f %10s %10s\n' "$c" "$(echo "${CALLS[$c]} / ($ROUNDS * $SECS)" | bc -l)" "${CPU[$c]}" "$p50" "$(echo "${L99[$c]}" | median)"
done
echo
printf 'weir/nginx: CPU per call %.2fx, calls/s %.2fx, added p50 %d vs %d µs\n' \
  "$(echo "${CPU[weir]} / ${CPU[nginx]}" | bc -l)" "$(echo "${CALLS[weir]} / ${CALLS[nginx]}" | bc -l)" \
  "${P50[weir]}" "${P50[nginx]}"

if [ "${TRACE:-0}" = 1 ]; then
  for c in nginx weir; do
    c1_trace "$c" taskset -c 0 "$BIN/grpc-peer" latency "127.0.0.1:${PORT[$c]}" 1500
  done
fi
