#!/usr/bin/env bash
# Fleet mode's figures: apply lag, leader failover, and detection time of a
# fleet of three against one weir on a third of the traffic, on a real
# 3-member etcd (Debian etcd-server) and real weir replicas on loopback.
# See benches/src/bin/fleet-bench.rs for what each figure is.
#
#   benches/fleet.sh [--quick]      # --quick: the short version CI runs
#
# Needs etcd and protoc (Debian etcd-server, protobuf-compiler).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# Two cargo commands, as in soak.sh: weir is built alone (the release
# binary, with fleet mode), the bench with the tests crate's helpers.
cargo build --release -q -p weir-proxy --bin weir --features fleet
cargo build --release -q -p weir-benches --features fleet --bin fleet-bench
exec "${CARGO_TARGET_DIR:-target}/release/fleet-bench" "$@"
