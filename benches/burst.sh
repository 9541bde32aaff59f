#!/usr/bin/env bash
# Connection burst: N connections (default 10 000) opened and held, one
# request each, then closed at once (half FIN, half RST), ROUNDS times
# (default 3), against the release binary; prints weir's fds and RSS and
# fails if the fds are not back at the baseline within 5 s or RSS grows from
# burst to burst. See benches/src/bin/burst.rs.
#
#   benches/burst.sh [N] [ROUNDS]      WEIR=path/to/weir tests another binary
#
# Loopback only; weir and the upstream are stopped when it ends.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# Both this process and weir hold one descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ -z "${WEIR:-}" ]; then
    cargo build --release -q -p weir-proxy --bin weir
fi
cargo build --release -q -p weir-benches --features soak --bin burst
exec "${CARGO_TARGET_DIR:-target}/release/burst" "$@"
