#!/usr/bin/env bash
# Route-table scaling: what ten thousand routes cost weir, against one.
#
#   benches/routes.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 5 s)
#
# One nginx upstream (core 0, with wrk); every weir on core 1, one worker:
#   * one:   1 route ("/");
#   * many:  10 000 routes: 5 000 with a host (h0.bench … h4999.bench, "/"),
#            4 999 host-less prefixes (/svc0/ … /svc4998/) and "/";
#   * m1000: 1 000 routes (/m0/ …), each split between 2 backends.
# Per round, interleaved, wrk -t1 -c64 for SECONDS on each of:
#   one        GET /                     (the baseline)
#   host       GET / with Host h2500.bench   (many: a host's route)
#   prefix     GET /svc2500/x               (many: a host-less prefix)
#   fallback   GET /zzz, Host nope.bench     (many: no host, no prefix but "/")
# and prints CPU µs per request (utime+stime of weir / requests) and the
# ratio to `one` in the same round; then the median ratio over rounds.
# Then:
#   * reload: 5 reloads of `many` (a route added each time) while wrk -c8
#     runs against it: each reload's time from weir's "config reloaded"
#     line (took_ms: read, check, build, swap), and wrk's errors, non-2xx
#     answers and max latency over the whole run (a stall shows there);
#   * /metrics of m1000 after 3 s of traffic to every route: the median
#     of 20 renders (curl time_total, so the round trip is in it) and its
#     size; RSS of one, many and m1000 after start (what the routes'
#     tables and telemetry hold) and of m1000 after its traffic.
# Loopback only; processes stopped by PID on exit. Needs: nginx, wrk, curl,
# python3 (Debian packages); builds weir (release).
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
WEIR=${WEIR:-$BIN/weir}
for t in nginx wrk curl python3; do command -v $t >/dev/null || { echo "needs $t (apt-get install nginx-light wrk curl python3)"; exit 2; }; done
[ -n "${WEIR_SET:-}" ] || (cd "$ROOT" && cargo build --release -q -p weir-proxy --bin weir)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
UP=$(free_port)

mkdir -p "$WORK/up"
cat > "$WORK/up/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $WORK/up/nginx.pid; error_log $WORK/up/error.log;
worker_rlimit_nofile 20000;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { return 200 "$BODY"; } } }
CONF
taskset -c 0 "$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" & PIDS+=($!)

# gen KIND PORT ADMIN FILE: writes weir's config.
gen() {
  python3 - "$@" <<'PY'
import sys
kind, port, admin, up, path = sys.argv[1:6]
out = [f'[listen]\naddr = "127.0.0.1:{port}"\n[admin]\naddr = "127.0.0.1:{admin}"\n[log]\naccess = "off"\n',
       f'[backends.app]\naddrs = ["127.0.0.1:{up}"]\nversion = "v1"\n',
       f'[backends.next]\naddrs = ["127.0.0.1:{up}"]\nversion = "v2"\n']
def route(name, prefix="/", host=None, canary=False):
    m = f'path_prefix = "{prefix}"' + (f', host = "{host}"' if host else "")
    r = f'[[routes]]\nname = "{name}"\nstable = "app"\nmatch = {{ {m} }}\n'
    if canary:
        r += 'canary = "next"\nweight = 10\n'
    return r
if kind == "one":
    out.append(route("web"))
elif kind == "many":
    out += [route(f"h{i}", host=f"h{i}.bench") for i in range(5000)]
    out += [route(f"svc{i}", prefix=f"/svc{i}/") for i in range(4999)]
    out.append(route("web"))
elif kind == "m1000":
    out += [route(f"m{i}", prefix=f"/m{i}/", canary=True) for i in range(1000)]
open(path, "w").write("\n".join(out))
PY
}

declare -A PORT ADMIN PID
for k in one many m1000; do
  PORT[$k]=$(free_port); ADMIN[$k]=$(free_port)
  gen $k "${PORT[$k]}" "${ADMIN[$k]}" "$UP" "$WORK/$k.toml"
  RUST_LOG=info taskset -c 1 "$WEIR" run -c "$WORK/$k.toml" --workers 1 2> "$WORK/$k.log" & PID[$k]=$!; PIDS+=(${PID[$k]})
done
for k in one many m1000; do
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:${ADMIN[$k]}/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:${ADMIN[$k]}/readyz" >/dev/null || { echo "weir ($k) did not start:"; tail -5 "$WORK/$k.log"; exit 1; }
done
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
declare -A RSS
for k in one many m1000; do RSS[$k]=$(rss "${PID[$k]}"); done

# run NAME WEIR-KIND PATH [HOST]: prints "requests cpu_us_per_req".
run() {
  local kind=$2 url="http://127.0.0.1:${PORT[$2]}$3" hdr=()
  [ -n "${4:-}" ] && hdr=(-H "Host: $4")
  local t0 t1 out n
  t0=$(tree_ticks "${PID[$kind]}")
  out=$(taskset -c 0 wrk -t1 -c64 -d"${SECS}s" "${hdr[@]}" "$url")
  t1=$(tree_ticks "${PID[$kind]}")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  # Failed requests are not counted in n: they would inflate CPU per request.
  if echo "$out" | grep -qE "Non-2xx|Socket errors"; then echo "$1: failed requests: $out" >&2; exit 1; fi
  echo "$n $(python3 -c "print(f'{($t1-$t0)*1e6/$HZ/$n:.2f}')")"
}
CASES=("one one /" "host many / h2500.bench" "prefix many /svc2500/x" "fallback many /zzz nope.bench")
# Warm-up.
for c in "${CASES[@]}"; do read -r -a a <<<"$c"; SECS=1 run "${a[@]}" >/dev/null; done
echo "round case requests cpu_us_per_req ratio_to_one"
declare -A RATIOS
for r in $(seq 1 "$ROUNDS"); do
  order=("${CASES[@]}")
  [ $((r % 2)) -eq 0 ] && order=("${CASES[3]}" "${CASES[2]}" "${CASES[1]}" "${CASES[0]}")
  declare -A CPU=()
  for c in "${order[@]}"; do
    read -r -a a <<<"$c"
    read -r n cpu < <(run "${a[@]}")
    CPU[${a[0]}]=$cpu
    echo "$r ${a[0]} $n $cpu"
  done
  for k in host prefix fallback; do
    RATIOS[$k]="${RATIOS[$k]:-} $(python3 -c "print(f'{${CPU[$k]}/${CPU[one]}:.3f}')")"
  done
done
median() { python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f'{statistics.median(v):.3f} (rounds: {\" \".join(sys.argv[1:])})')" "$@"; }
echo
for k in host prefix fallback; do
  # shellcheck disable=SC2086
  echo "10 000 routes, $k: CPU per request vs 1 route $(median ${RATIOS[$k]})x"
done

# --- reloads under load ---
# wrk runs for 60 s at most and is stopped (SIGINT: it prints its figures)
# right after the last reload, so every reload happens under load.
taskset -c 0 wrk -t1 -c8 -d60s --latency "http://127.0.0.1:${PORT[many]}/svc100/x" > "$WORK/reload-wrk.txt" &
WRK=$!
sleep 1
before=$(grep -c "config reloaded" "$WORK/many.log" || true)
for k in $(seq 1 5); do
  printf '\n[[routes]]\nname = "extra%s"\nstable = "app"\nmatch = { path_prefix = "/extra%s/" }\n' "$k" "$k" >> "$WORK/many.toml"
  for _ in $(seq 1 200); do
    [ "$(grep -c "config reloaded" "$WORK/many.log" || true)" -ge $((before + k)) ] && break; sleep 0.05
  done
  sleep 0.5
done
kill -INT $WRK 2>/dev/null || { echo "wrk ended before the last reload: its figures do not cover them all"; exit 1; }
wait $WRK || true
took=$(sed "s/\x1b\[[0-9;]*m//g" "$WORK/many.log" | grep "config reloaded" | tail -n +$((before + 1)) | sed -n 's/.*took_ms=\([0-9]*\).*/\1/p' | tr '\n' ' ')
echo "reload of 10 000 routes (5 reloads): took_ms $took"
echo "during them (wrk -c8): $(awk '/requests in/ {print $1, "requests"}' "$WORK/reload-wrk.txt"), $(grep -E "Non-2xx|Socket errors" "$WORK/reload-wrk.txt" || echo "no errors"), max latency $(awk '$1=="Latency" {print $4}' "$WORK/reload-wrk.txt")"
if [ "$(echo "$took" | wc -w)" -lt 5 ]; then echo "not every reload was seen:"; grep -iE "reload|error" "$WORK/many.log" | tail -5; exit 1; fi

# --- /metrics with 1 000 routes x 2 backends ---
# Traffic to every route first (about 100 requests each, 10 % to the
# canary): every series a scrape would show in production is there.
cat > "$WORK/cycle.lua" <<'LUA'
local i = 0
request = function()
  i = (i + 1) % 1000
  return wrk.format("GET", "/m" .. i .. "/")
end
LUA
taskset -c 0 wrk -t1 -c8 -d3s -s "$WORK/cycle.lua" "http://127.0.0.1:${PORT[m1000]}/" >/dev/null
sleep 1.1 # folded by the ticker
times=()
for _ in $(seq 1 20); do times+=("$(curl -s -o "$WORK/metrics.txt" -w '%{time_total}' "http://127.0.0.1:${ADMIN[m1000]}/metrics")"); done
echo "/metrics, 1 000 routes x 2 backends: median $(python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:])*1000:.1f} ms')" "${times[@]}"), $(wc -c < "$WORK/metrics.txt") bytes, $(grep -c '^[^#]' "$WORK/metrics.txt") samples"
echo "RSS after start: 1 route ${RSS[one]} KiB, 10 000 routes ${RSS[many]} KiB, 1 000 routes x 2 backends ${RSS[m1000]} KiB ($(rss "${PID[m1000]}") KiB after traffic to every route)"
