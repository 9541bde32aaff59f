#!/usr/bin/env bash
# TLS benchmark: weir vs nginx terminating TLS with the same certificate.
#
#   benches/tls.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 5 s)
#   WEIR_B=path/to/other/weir benches/tls.sh ...   # A/B: another weir binary
#
# One ECDSA P-256 certificate (openssl), one plain nginx upstream on core 0
# with wrk; each proxy (one worker) on core 1 terminates TLS 1.3 and proxies
# to the upstream over keep-alive HTTP/1.1. Three measurements per round,
# interleaved (A B, B A, ...):
#   * handshake: 4 openssl s_time -new at once, each one connection at a
#     time: every connection a new TCP connection, a full TLS 1.3 handshake
#     (ECDHE, the certificate signed for) and one HTTP/1.0 request. Not wrk
#     with "Connection: close": wrk resumes its sessions when the server
#     keeps them, so it measured resumptions;
#   * resume: the same with s_time -reuse: every connection resumes the
#     client's first TLS 1.3 session (a PSK handshake with ECDHE);
#   an error is printed unless every connection was full (or resumed);
#   * keepalive: wrk -c64 on keep-alive TLS connections;
#   * h2: h2load -c16 -m10 over TLS with ALPN h2 (HTTP/1.1 to the upstream).
# Both proxies keep sessions the same way, in their own memory (nginx
# `ssl_session_cache shared`, tickets off; rustls's default cache), and send
# two TLS 1.3 session tickets after a full handshake (after a resumption
# rustls sends two again, OpenSSL one: a few % against weir there).
# Reports req/s and CPU µs per request (utime+stime of the proxy / requests),
# and the weir/nginx ratios (of the medians, and the median of same-round
# ratios: on a noisy machine the second is the one to read). Loopback only; processes stopped by PID on exit.
# Needs: nginx, wrk, openssl, h2load (Debian packages nginx-light, wrk,
# openssl, nghttp2-client), a release build of weir.
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WEIR=${WEIR:-$ROOT/target/release/weir}
for t in nginx wrk openssl h2load python3; do command -v $t >/dev/null || { echo "needs $t (apt-get install nginx-light wrk openssl nghttp2-client)"; exit 2; }; done
[ -x "$WEIR" ] || (cd "$ROOT" && cargo build --release -q -p weir-proxy)
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
UP=$(free_port); P_NGINX=$(free_port); P_WEIR=$(free_port); P_ADMIN=$(free_port)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

mkdir -p "$WORK/up" "$WORK/px"
cat > "$WORK/up/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $WORK/up/nginx.pid; error_log $WORK/up/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { return 200 "$BODY"; } } }
CONF
taskset -c 0 "$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" & PIDS+=($!)

cat > "$WORK/px/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $WORK/px/nginx.pid; error_log $WORK/px/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$UP; keepalive 128; }
  server { listen 127.0.0.1:$P_NGINX ssl http2;
    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_tickets off;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
taskset -c 1 "$NGINX" -p "$WORK/px" -c "$WORK/px/nginx.conf" & NGINX_PID=$!; PIDS+=($NGINX_PID)

cat > "$WORK/weir.toml" <<CONF
[listen]
addr = "127.0.0.1:$P_WEIR"
tls = { cert = "cert.pem", key = "key.pem" }
[admin]
addr = "127.0.0.1:$P_ADMIN"
[backends.app]
addrs = ["127.0.0.1:$UP"]
[[routes]]
name = "bench"
stable = "app"
CONF
RUST_LOG=warn taskset -c 1 "$WEIR" run -c "$WORK/weir.toml" --workers 1 & WEIR_PID=$!; PIDS+=($WEIR_PID)
CONTENDERS="nginx weir"
if [ -n "${WEIR_B:-}" ]; then
  P_WEIR_B=$(free_port); P_ADMIN_B=$(free_port)
  sed -e "s/:$P_WEIR\"/:$P_WEIR_B\"/; s/:$P_ADMIN\"/:$P_ADMIN_B\"/" "$WORK/weir.toml" > "$WORK/weir-b.toml"
  RUST_LOG=warn taskset -c 1 "$WEIR_B" run -c "$WORK/weir-b.toml" --workers 1 & WEIR_B_PID=$!; PIDS+=($WEIR_B_PID)
  CONTENDERS="nginx weir weir-b"
fi

wait_port() { for _ in $(seq 100); do curl -sk -o /dev/null "https://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 not up"; exit 1; }
wait_port "$P_NGINX"; wait_port "$P_WEIR"; [ -z "${WEIR_B:-}" ] || wait_port "$P_WEIR_B"


run_one() { # mode port pid → "rps us_per_req"
  local t0 t1 out reqs rps errs
  t0=$(tree_ticks "$3")
  if [ "$1" = handshake ] || [ "$1" = resume ]; then
    # s_time prints one "*" per full handshake and one "r" per resumed one.
    local clients=() flag=-new mark='*' marked
    [ "$1" = resume ] && flag=-reuse mark=r
    errs=
    local w0 w1
    w0=$(date +%s.%N)
    for i in 1 2 3 4; do
      taskset -c 0 openssl s_time -connect "127.0.0.1:$2" $flag -time "$SECS" -www / > "$WORK/stime.$i" 2>&1 &
      clients+=($!)
    done
    wait "${clients[@]}"
    t1=$(tree_ticks "$3")
    w1=$(date +%s.%N)
    reqs=$(cat "$WORK"/stime.? | awk '/connections in .*s;/ {n += $1} END {print n + 0}')
    # s_time runs on to a whole second: the rate is over the wall clock.
    rps=$(python3 -c "print(round($reqs / ($w1 - $w0), 1))")
    marked=$(grep -h '^[r*]*$' "$WORK"/stime.? | tr -cd "$mark" | wc -c)
    [ "$reqs" -gt 0 ] && [ "$marked" -eq "$reqs" ] ||
      errs="$marked of $reqs connections were '$mark': $(head -c 300 "$WORK/stime.1")"
  elif [ "$1" = h2 ]; then
    out=$(taskset -c 0 h2load -c16 -m10 -t1 -D "$SECS" "https://127.0.0.1:$2/" 2>&1)
    t1=$(tree_ticks "$3")
    # "requests: N total, N started, N done, N succeeded, N failed, ..."
    reqs=$(echo "$out" | awk '/^requests:/ {print $8}')
    rps=$(echo "$out" | awk '/^finished in/ {print $4}')
    errs=$(echo "$out" | awk '/^requests:/ && $10 != 0 {print}')
    echo "$out" | grep -q "^Application protocol: h2" || errs="$errs (not h2)"
  else
    out=$(taskset -c 0 wrk -t1 -c64 -d"${SECS}s" "https://127.0.0.1:$2/")
    t1=$(tree_ticks "$3")
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    errs=$(echo "$out" | awk '/Socket errors|Non-2xx/ {print}')
  fi
  [ -z "$errs" ] || echo "  ($1 $2: $errs)" >&2
  [ "${reqs:-0}" -gt 0 ] || { echo "  ($1 $2: no request completed)" >&2; exit 1; }
  echo "$rps $(python3 -c "print(round(($t1-$t0)/$HZ*1e6/$reqs, 2))")"
}

taskset -c 0 wrk -t1 -c16 -d1s "https://127.0.0.1:$P_NGINX/" >/dev/null
taskset -c 0 wrk -t1 -c16 -d1s "https://127.0.0.1:$P_WEIR/" >/dev/null
[ -z "${WEIR_B:-}" ] || taskset -c 0 wrk -t1 -c16 -d1s "https://127.0.0.1:$P_WEIR_B/" >/dev/null

echo "round mode contender req/s cpu_us_per_req"
: > "$WORK/results"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="$CONTENDERS"; else order=$(echo "$CONTENDERS" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for mode in handshake resume keepalive h2; do
    for c in $order; do
      case $c in
        nginx) res=$(run_one $mode "$P_NGINX" "$NGINX_PID") ;;
        weir) res=$(run_one $mode "$P_WEIR" "$WEIR_PID") ;;
        weir-b) res=$(run_one $mode "$P_WEIR_B" "$WEIR_B_PID") ;;
      esac
      echo "$r $mode $c $res" | tee -a "$WORK/results"
    done
  done
done
python3 - "$WORK/results" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
contenders = sorted({r[2] for r in rows}, key=["nginx", "weir", "weir-b"].index)
for mode in ("handshake", "resume", "keepalive", "h2"):
    med = {}
    for c in contenders:
        rs = [r for r in rows if r[1] == mode and r[2] == c]
        med[c] = (statistics.median(float(r[3]) for r in rs), statistics.median(float(r[4]) for r in rs))
        print(f"median {mode:9} {c:6} {med[c][0]:>9.0f} req/s  {med[c][1]:8.2f} CPU us/req")
    def same_round(a, b):
        cpu = {(r[0], r[2]): float(r[4]) for r in rows if r[1] == mode}
        ratios = [cpu[(k, a)] / cpu[(k, b)] for k in sorted({r[0] for r in rows}) if (k, a) in cpu and (k, b) in cpu]
        return statistics.median(ratios), " ".join(f"{x:.2f}" for x in ratios)
    for a, b in [("weir", "nginx"), ("weir-b", "nginx"), ("weir", "weir-b")]:
        if a in med and b in med:
            m, each = same_round(a, b)
            print(f"{mode}: {a}/{b} throughput {med[a][0]/med[b][0]:.2f}x, CPU per request {med[a][1]/med[b][1]:.2f}x (same-round median {m:.2f}x; rounds {each})")
PY
