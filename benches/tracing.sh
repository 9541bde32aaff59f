#!/usr/bin/env bash
# What tracing costs: CPU per request of weir with [tracing] off, on at
# sample_ratio 0 (trace context only: ids drawn, traceparent sent), 1 % and
# 100 %, the same config otherwise, in the same run.
#
#   benches/tracing.sh [ROUNDS] [SECONDS]     (defaults: 5 rounds of 5 s)
#   WEIR_BEFORE=path/to/weir benches/tracing.sh ...   # and a build without
#                     # the tracing code ("before"), to show "off" did not move
#   ONLY="off ratio1" benches/tracing.sh 15 2     # two of them, alternated
#
# As benches/load.sh: two nginx upstreams (128-byte body) and wrk -t1 -c64
# on core 0, each weir (one worker, 90/10 split, keep-alive) alone on core 1
# while measured (the others SIGSTOPped), rounds interleaved, medians and
# the median of same-round ratios against "off". The spans go over OTLP/HTTP
# to a sink on core 0 (an nginx server answering 200 to /v1/traces), so
# weir's whole export path (the SDK's batch thread, protobuf encoding, the
# HTTP client on the daemon runtime) is in weir's CPU time; the sink's is
# not. With perf (linux-perf), instructions per request too (user and
# kernel, the whole process): steadier than CPU time on a shared machine.
# Loopback only; every process started here is stopped by PID on exit.
set -euo pipefail
ROUNDS=${1:-5}
SECS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WEIR=${WEIR:-$ROOT/target/release/weir}
for t in nginx wrk; do command -v $t >/dev/null || { echo "needs $t (apt-get install nginx-light wrk)"; exit 2; }; done
(cd "$ROOT" && cargo build --release -q -p weir-proxy --bin weir)
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
UP_A=$(free_port); UP_B=$(free_port); SINK=$(free_port)
mkdir -p "$WORK/up"
cat > "$WORK/up/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $WORK/up/nginx.pid; error_log $WORK/up/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; client_max_body_size 64m;
  server { listen 127.0.0.1:$UP_A; location / { return 200 "$BODY"; } }
  server { listen 127.0.0.1:$UP_B; location / { return 200 "$BODY"; } }
  server { listen 127.0.0.1:$SINK; location /v1/traces { return 200 ""; } }
}
CONF
taskset -c 0 "$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" & PIDS+=($!)

declare -A PORT PID
CONTENDERS=(off ratio0 ratio1 ratio100)
if [ -n "${WEIR_BEFORE:-}" ]; then CONTENDERS=(before "${CONTENDERS[@]}"); fi
# ONLY="off ratio1": just those, alternated (pairs measured seconds apart
# cancel the machine's drift better than five contenders in turn).
if [ -n "${ONLY:-}" ]; then read -r -a CONTENDERS <<< "$ONLY"; fi
declare -A RATIO=([ratio0]=0.0 [ratio1]=0.01 [ratio100]=1.0)
for c in "${CONTENDERS[@]}"; do
  PORT[$c]=$(free_port)
  cat > "$WORK/$c.toml" <<CONF
[listen]
addr = "127.0.0.1:${PORT[$c]}"
[admin]
addr = "127.0.0.1:$(free_port)"
[timeouts]
idle = "600s"
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
  if [ -n "${RATIO[$c]:-}" ]; then
    printf '[tracing]\nendpoint = "http://127.0.0.1:%s"\nsample_ratio = %s\n' "$SINK" "${RATIO[$c]}" >> "$WORK/$c.toml"
  fi
  bin=$WEIR; if [ "$c" = before ]; then bin=$WEIR_BEFORE; fi
  RUST_LOG=warn taskset -c 1 "$bin" run -c "$WORK/$c.toml" --workers 1 & PID[$c]=$!; PIDS+=(${PID[$c]})
done
for c in "${CONTENDERS[@]}"; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:${PORT[$c]}/" && break; sleep 0.1; done
done
alone() { for o in "${CONTENDERS[@]}"; do [ "$o" = "$1" ] || kill -STOP "${PID[$o]}"; done; }
together() { for o in "${CONTENDERS[@]}"; do kill -CONT "${PID[$o]}"; done; }
PERF=$(command -v perf || true)
run_one() { # port pid → "rps us_per_req instructions_per_req"
  local t0 t1 out reqs rps perfpid=
  t0=$(tree_ticks "$2")
  if [ -n "$PERF" ]; then
    taskset -c 0 "$PERF" stat -x, -e instructions -p "$2" -o "$WORK/perf" -- sleep "$SECS" 2>/dev/null & perfpid=$!
  fi
  out=$(taskset -c 0 wrk -t1 -c64 -d"${SECS}s" "http://127.0.0.1:$1/")
  t1=$(tree_ticks "$2")
  local ins=0
  if [ -n "$perfpid" ]; then wait "$perfpid" || true; ins=$(awk -F, '/instructions/ {print $1}' "$WORK/perf" | head -1); fi
  case "$ins" in ''|*[!0-9]*) ins=0 ;; esac  # "<not supported>" in a VM without PMU access
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then echo "  errors on port $1" >&2; fi
  echo "$rps $(python3 -c "print(round(($t1-$t0)/$HZ*1e6/$reqs, 3), round(float('${ins:-0}' or 0)/$reqs))")"
}
for c in "${CONTENDERS[@]}"; do taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:${PORT[$c]}/" >/dev/null; done
echo "round contender req/s cpu_us_per_req instructions_per_req"
: > "$WORK/results"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="${CONTENDERS[*]}"; else order=$(printf '%s\n' "${CONTENDERS[@]}" | tac | xargs); fi
  for c in $order; do
    alone "$c"
    echo "$r $c $(run_one "${PORT[$c]}" "${PID[$c]}")" | tee -a "$WORK/results"
    together
  done
done
python3 - "$WORK/results" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
by = {(r[0], r[1]): r for r in rows}
rounds = sorted({r[0] for r in rows})
names = [c for c in ("before", "off", "ratio0", "ratio1", "ratio100") if any(r[1] == c for r in rows)]
for c in names:
    cpu = [float(r[3]) for r in rows if r[1] == c]
    rps = statistics.median(float(r[2]) for r in rows if r[1] == c)
    if "off" not in names:
        continue
    same = [float(by[(k, c)][3]) / float(by[(k, "off")][3]) for k in rounds]
    line = (f"{c:9} {rps:>8.0f} req/s  CPU {statistics.median(cpu):.3f} us/req "
            f"(range {min(cpu):.3f}-{max(cpu):.3f}); vs off: {statistics.median(same):.3f}x "
            f"(same-round ratios {min(same):.3f}-{max(same):.3f})")
    ins = [float(r[4]) for r in rows if r[1] == c]
    if all(i > 0 for i in ins):
        isame = [float(by[(k, c)][4]) / float(by[(k, "off")][4]) for k in rounds]
        line += (f"; instructions {statistics.median(ins):.0f}/req, vs off {statistics.median(isame):.3f}x "
                 f"({min(isame):.3f}-{max(isame):.3f})")
    print(line)
PY
