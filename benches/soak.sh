#!/usr/bin/env bash
# Soak test: the release binary under load for SECONDS (default 600) while
# the config reloads every second (file rename and SIGHUP), one stable
# address flaps and slowloris clients hang on; fails on unexpected errors,
# RSS or fd growth. See benches/src/bin/soak.rs for the rules.
#
#   benches/soak.sh [SECONDS] [--clients N] [--slowloris N] [--allow-flap-errors] [--crash-flaps]
#
# WEIR=path/to/weir tests another binary (default release/weir in
# $CARGO_TARGET_DIR, or target/).
# Loopback only; weir and the upstreams are stopped when it ends.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECS=600
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then SECS=$1; shift; fi
# Two cargo commands: the soak links the tests crate, whose dependencies
# turn on more features (tokio's "process" among them); built in one
# command with the soak, weir would get them too and not be the release
# binary (scripts/build-release.sh's).
if [ -z "${WEIR:-}" ]; then
    cargo build --release -q -p weir-proxy --bin weir
fi
cargo build --release -q -p weir-benches --features soak --bin soak
exec "${CARGO_TARGET_DIR:-target}/release/soak" "$SECS" "$@"
