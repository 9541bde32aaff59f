#!/usr/bin/env bash
# The release build, shared by the Dockerfile and CI (which has no Docker
# engine): a locked, stripped `weir` binary at target/release/weir, with
# fleet mode (feature `fleet`: needs protoc, Debian protobuf-compiler).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p weir-proxy --bin weir --features fleet
strip target/release/weir
ls -l target/release/weir
