#!/usr/bin/env bash
# End-to-end load benchmark: weir vs nginx vs HAProxy vs a plain hyper proxy,
# configured the same way.
#
#   benches/load.sh [ROUNDS] [SECONDS] [IDLE_CONNS]   (defaults: 5 rounds of 5 s, 9000)
#   WORKERS=2 benches/load.sh ...   # weir --workers 2, nginx 2 workers, HAProxy 2 threads
#   WEIR_B=path/to/other/weir benches/load.sh ...   # A/B: another weir binary
#                                   # as one more contender (weir-b), paired
#
# Two nginx upstreams serve a 128-byte body. Each contender proxies to them
# with a 90/10 split, keep-alive on both sides, no access log, one worker,
# the same request to the upstream (the client's Host, X-Forwarded-For,
# -Proto and -Host; the plain hyper proxy adds none), pinned to core 1;
# wrk (-t1 -c64) is pinned to core 0 with the upstreams.
# While one contender is measured the others are stopped (SIGSTOP), so it is
# alone on its core.
# Rounds are interleaved (A B C D, D C B A, ...) and medians reported.
#   * CPU µs per request = (utime + stime of the proxy's process tree) /
#     requests served in the round; req/s and wrk's p50/p99/p99.9;
#   * RSS under load (after the last round);
#   * added latency at c=1: wrk -c1 p50 through the proxy minus p50 straight
#     to the upstream;
#   * memory per idle keep-alive connection: RSS growth while IDLE_CONNS
#     connections that each made one request are held open, / IDLE_CONNS;
#   * weir's delivered canary share (from its own counters) and weir with
#     recording off (the telemetry's price);
#   * with TRACE=1, where the time at c=1 goes (see the end).
# Loopback only; every process started here is stopped by PID on exit.
# Needs: nginx, haproxy, wrk (Debian packages); builds weir and the bench
# helpers in release mode if needed.
set -euo pipefail
ROUNDS=${1:-5}
SECS=${2:-5}
IDLE=${3:-9000}
WORKERS=${WORKERS:-1}
# One worker: the proxy alone on core 1. More: the proxies may use both cores
# (wrk and the upstreams share them); the plain hyper proxy stays at one.
if [ "$WORKERS" = 1 ]; then PX_CPUS=1; else PX_CPUS=0,1; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
WEIR=${WEIR:-$BIN/weir}
for t in nginx haproxy wrk; do command -v $t >/dev/null || { echo "needs $t (apt-get install nginx-light haproxy wrk)"; exit 2; }; done
(cd "$ROOT" && cargo build --release -q -p weir-proxy -p weir-benches --bin weir --bin plain-proxy --bin idle-conns --bin c1-paired)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
UP_A=$(free_port); UP_B=$(free_port)
declare -A PORT PID
for c in nginx haproxy plain weir weir-norec; do PORT[$c]=$(free_port); done
P_ADMIN=$(free_port); P_ADMIN2=$(free_port)
if [ -n "${WEIR_B:-}" ]; then PORT[weir-b]=$(free_port); P_ADMIN3=$(free_port); fi

# --- upstreams: one nginx, two ports, pinned to core 0 ---
mkdir -p "$WORK/up" "$WORK/px"
cat > "$WORK/up/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $WORK/up/nginx.pid; error_log $WORK/up/error.log;
worker_rlimit_nofile 20000;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP_A; location / { return 200 "$BODY"; } }
  server { listen 127.0.0.1:$UP_B; location / { return 200 "$BODY"; } }
}
CONF
taskset -c 0 "$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" & PIDS+=($!)

# --- nginx as a proxy ---
cat > "$WORK/px/nginx.conf" <<CONF
daemon off; worker_processes $WORKERS; pid $WORK/px/nginx.pid; error_log $WORK/px/error.log;
worker_rlimit_nofile 20000;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 600s;
  upstream app { server 127.0.0.1:$UP_A weight=9; server 127.0.0.1:$UP_B weight=1; keepalive 128; }
  server { listen 127.0.0.1:${PORT[nginx]};
    location / {
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      # The same request to the upstream as weir's: the client's Host and
      # X-Forwarded-For, -Proto and -Host.
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$http_host;
    } }
}
CONF
taskset -c $PX_CPUS "$NGINX" -p "$WORK/px" -c "$WORK/px/nginx.conf" & PID[nginx]=$!; PIDS+=(${PID[nginx]})

# --- HAProxy, one thread ---
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread $WORKERS
  maxconn 9900
defaults
  mode http
  timeout connect 1s
  timeout client 600s
  timeout server 60s
  timeout http-keep-alive 600s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:${PORT[haproxy]}
  # The same request to the upstream as weir's (the Host is passed as is).
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend be
backend be
  balance roundrobin
  server a 127.0.0.1:$UP_A weight 9
  server b 127.0.0.1:$UP_B weight 1
CONF
taskset -c $PX_CPUS haproxy -db -f "$WORK/haproxy.cfg" & PID[haproxy]=$!; PIDS+=(${PID[haproxy]})

# --- the plain hyper proxy (reference) ---
taskset -c 1 "$BIN/plain-proxy" "127.0.0.1:${PORT[plain]}" "127.0.0.1:$UP_A" "127.0.0.1:$UP_B" & PID[plain]=$!; PIDS+=(${PID[plain]})

# --- weir, same split (keyless exact sequence), one worker ---
cat > "$WORK/weir.toml" <<CONF
[listen]
addr = "127.0.0.1:${PORT[weir]}"
[admin]
addr = "127.0.0.1:$P_ADMIN"
[timeouts]
idle = "600s"
[limits]
max_connections = 30000
max_requests_in_flight = 30000
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
RUST_LOG=warn taskset -c $PX_CPUS "$WEIR" run -c "$WORK/weir.toml" --workers "$WORKERS" & PID[weir]=$!; PIDS+=(${PID[weir]})
# The same weir with recording switched off, to price the telemetry.
sed -e "s/:${PORT[weir]}\"/:${PORT[weir-norec]}\"/; s/:$P_ADMIN\"/:$P_ADMIN2\"/" "$WORK/weir.toml" > "$WORK/norec.toml"
printf '[telemetry]\nrecord = false\n' >> "$WORK/norec.toml"
RUST_LOG=warn taskset -c $PX_CPUS "$WEIR" run -c "$WORK/norec.toml" --workers "$WORKERS" & PID[weir-norec]=$!; PIDS+=(${PID[weir-norec]})
# A/B: another weir binary, the same config.
if [ -n "${WEIR_B:-}" ]; then
  sed -e "s/:${PORT[weir]}\"/:${PORT[weir-b]}\"/; s/:$P_ADMIN\"/:$P_ADMIN3\"/" "$WORK/weir.toml" > "$WORK/weir-b.toml"
  RUST_LOG=warn taskset -c $PX_CPUS "$WEIR_B" run -c "$WORK/weir-b.toml" --workers "$WORKERS" & PID[weir-b]=$!; PIDS+=(${PID[weir-b]})
fi

wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 not up"; exit 1; }
for c in "${!PORT[@]}"; do wait_port "${PORT[$c]}"; done

tree_rss_kib() {
  local total=0
  for p in $(tree_pids "$1"); do total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done
  echo $total
}
to_us() { # wrk latency ("123.45us", "1.20ms", "2s") → µs
  python3 -c "import re,sys; v,u=re.match(r'([\d.]+)(\w+)','$1').groups(); print(float(v)*{'us':1,'ms':1e3,'s':1e6}[u])"
}

# The measured contender alone on its core (see the top): an idle proxy
# still wakes for its timers, on the same core as the measured one.
CONTENDERS=(nginx haproxy plain weir weir-norec)
if [ -n "${WEIR_B:-}" ]; then CONTENDERS+=(weir-b); fi
alone() { # contender → the others stopped
  for o in "${CONTENDERS[@]}"; do [ "$o" = "$1" ] || kill -STOP $(tree_pids "${PID[$o]}"); done
}
together() {
  for o in "${CONTENDERS[@]}"; do kill -CONT $(tree_pids "${PID[$o]}"); done
}

run_one() { # port pid → "rps us_per_req p50 p99 p999"
  local t0 t1 out reqs rps
  t0=$(tree_ticks "$2")
  out=$(taskset -c 0 wrk -t1 -c64 -d"${SECS}s" --latency "http://127.0.0.1:$1/")
  t1=$(tree_ticks "$2")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then echo "  errors on port $1: $(echo "$out" | grep 'Non-2xx\|Socket errors')" >&2; fi
  local p50 p99
  p50=$(to_us "$(echo "$out" | awk '$1=="50%" {print $2}')"); p99=$(to_us "$(echo "$out" | awk '$1=="99%" {print $2}')")
  echo "$rps $(python3 -c "print(round(($t1-$t0)/$HZ*1e6/$reqs, 2))") $p50 $p99"
}

for c in "${CONTENDERS[@]}"; do taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:${PORT[$c]}/" >/dev/null; done

echo "round contender req/s cpu_us_per_req p50_us p99_us"
: > "$WORK/results"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="${CONTENDERS[*]}"; else order=$(printf '%s\n' "${CONTENDERS[@]}" | tac | xargs); fi
  for c in $order; do
    alone "$c"
    echo "$r $c $(run_one "${PORT[$c]}" "${PID[$c]}")" | tee -a "$WORK/results"
    together
  done
done
: > "$WORK/rss"
for c in "${CONTENDERS[@]}"; do echo "$c $(tree_rss_kib "${PID[$c]}")" >> "$WORK/rss"; done

# Added latency at c=1: proxied p50 minus direct p50 (5 interleaved tries;
# on a VM most of it is the cross-core wake-ups, which vary from try to try).
: > "$WORK/c1"
for i in 1 2 3 4 5; do
  direct=$(to_us "$(taskset -c 0 wrk -t1 -c1 -d2s --latency "http://127.0.0.1:$UP_A/" | awk '$1=="50%" {print $2}')")
  # Interleaved like the rounds (A B C D, D C B A, ...): no contender is
  # always the one measured right after the direct run.
  if [ $((i % 2)) = 1 ]; then order="nginx haproxy plain weir"; else order="weir plain haproxy nginx"; fi
  for c in $order; do
    alone "$c"
    p=$(to_us "$(taskset -c 0 wrk -t1 -c1 -d2s --latency "http://127.0.0.1:${PORT[$c]}/" | awk '$1=="50%" {print $2}')")
    together
    echo "$c $(python3 -c "print(round($p - $direct, 1))")" >> "$WORK/c1"
  done
done

# The same, paired (benches/src/bin/c1-paired.rs): one keep-alive connection
# to each contender and one straight to the upstream, a request to each in a
# shuffled order per cycle, for C1SECS seconds. The tries above measure one
# proxy at a time, and the machine drifts between tries by more than the
# proxies differ; here they share every moment. weir-norec is stopped.
kill -STOP $(tree_pids "${PID[weir-norec]}")
taskset -c 0 "$BIN/c1-paired" "${C1SECS:-10}" 5 "direct=127.0.0.1:$UP_A" \
  "weir=127.0.0.1:${PORT[weir]}" "nginx=127.0.0.1:${PORT[nginx]}" \
  "haproxy=127.0.0.1:${PORT[haproxy]}" "plain=127.0.0.1:${PORT[plain]}" \
  ${WEIR_B:+"weir-b=127.0.0.1:${PORT[weir-b]:-0}"} > "$WORK/c1paired"
together

# Memory per idle keep-alive connection.
: > "$WORK/idle"
for c in nginx haproxy plain weir; do
  before=$(tree_rss_kib "${PID[$c]}")
  coproc HOLD { taskset -c 0 "$BIN/idle-conns" "127.0.0.1:${PORT[$c]}" "$IDLE"; }
  read -r ready <&"${HOLD[0]}" || true
  sleep 1
  after=$(tree_rss_kib "${PID[$c]}")
  echo "$c $(python3 -c "print(round(($after - $before) / $IDLE, 2))") ${ready:-failed}" >> "$WORK/idle"
  eval "exec ${HOLD[1]}>&-"; wait "$HOLD_PID" 2>/dev/null || true
  sleep 1
done

# Split accuracy: weir's own counters, per backend, from /metrics.
curl -s "http://127.0.0.1:$P_ADMIN/metrics" | awk '/^weir_requests_total/ && /code_class="2xx"/ {
  if ($0 ~ /backend="canary"/) c += $2; else s += $2 }
  END { if (c + s > 0) printf "weir delivered canary share: %.4f%% of %d requests (configured 10%%)\n", 100*c/(c+s), c+s }'
python3 - "$WORK/results" "$WORK/rss" "$WORK/c1" "$WORK/idle" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
rss = dict(l.split()[:2] for l in open(sys.argv[2]))
c1 = {}
for l in open(sys.argv[3]):
    c, v = l.split(); c1.setdefault(c, []).append(float(v))
idle = {l.split()[0]: l.split()[1] for l in open(sys.argv[4])}
med = {}
print(f"{'median':12} {'req/s':>9} {'CPU us/req':>10} {'p50 us':>8} {'p99 us':>8} {'RSS MiB':>8} {'+lat c=1 us':>11} {'KiB/idle conn':>13}")
present = {r[1] for r in rows}
for c in [c for c in ("nginx", "haproxy", "plain", "weir", "weir-norec", "weir-b") if c in present]:
    rs = [r for r in rows if r[1] == c]
    m = [statistics.median(float(r[i]) for r in rs) for i in (2, 3, 4, 5)]
    med[c] = m
    lat = f"{statistics.median(c1[c]):.1f}" if c in c1 else "-"
    print(f"{c:12} {m[0]:>9.0f} {m[1]:>10.2f} {m[2]:>8.0f} {m[3]:>8.0f} {int(rss[c])/1024:>8.1f} {lat:>11} {idle.get(c, '-'):>13}")
w = med["weir"]
by_round = {(r[0], r[1]): r for r in rows}
for peer in [p for p in ("nginx", "haproxy", "plain", "weir-b") if p in med]:
    p = med[peer]
    # The same-round ratio (both measured minutes apart at most), then its median.
    same = statistics.median(float(by_round[(k, "weir")][3]) / float(by_round[(k, peer)][3])
                             for k in sorted({r[0] for r in rows}))
    print(f"weir/{peer}: CPU per request {w[1]/p[1]:.2f}x (median of same-round ratios {same:.2f}x), "
          f"throughput {w[0]/p[0]:.2f}x, p99 {w[3]/p[3]:.2f}x")
n = med["weir-norec"]
print(f"recording on/off: CPU per request {w[1]/n[1]:.3f}x, throughput {w[0]/n[0]:.3f}x")
# c=1 tries one by one: each try's contenders share one direct measurement
# and run back to back, so the per-try difference is the paired comparison.
for c in ("nginx", "haproxy", "plain", "weir"):
    print(f"c=1 added latency per try, {c}: " + " ".join(f"{v:.0f}" for v in c1[c]) + " us")
for peer in ("nginx", "haproxy"):
    d = [a - b for a, b in zip(c1["weir"], c1[peer])]
    print(f"c=1 weir minus {peer} per try: " + " ".join(f"{v:+.0f}" for v in d) + f" us (median {statistics.median(d):+.1f})")
PY
cat "$WORK/c1paired"

# Optional (TRACE=1; one worker; needs perf and root): where the time at
# c=1 goes. Every system call on both cores is recorded during one more
# c=1 run per proxy, and benches/c1trace.py prints the proxy's turnaround
# (its epoll wait returning to its next send starting: its own part of the
# critical path, per direction) and the legs between processes (a send
# starting to the receiver's wait returning: the kernel's delivery and the
# cross-core wake-up). Tracing slows every system call, so compare the
# proxies with each other, not with the figures above.
if [ "${TRACE:-0}" = 1 ] && [ "$WORKERS" = 1 ]; then
  for c in nginx haproxy weir; do
    alone "$c"
    c1_trace "$c" taskset -c 0 wrk -t1 -c1 -d2s "http://127.0.0.1:${PORT[$c]}/"
    together
  done
fi
