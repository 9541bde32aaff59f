#!/usr/bin/env bash
# Runs weir's fuzz targets (config, request) for SECONDS each (default 30)
# and fails if either finds a crash. Needs the nightly toolchain; installs
# cargo-fuzz when missing.
#
#   fuzz/run.sh [SECONDS]
#
# Seeds are read from fuzz/corpus/TARGET (kept in git); what the fuzzer
# learns goes to fuzz/work/TARGET (ignored), crashes to fuzz/artifacts/TARGET.
# Reproduce one with: cargo +nightly fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...
# FUZZ_BUILD_ARGS adds cargo-fuzz build flags (e.g. "--codegen-units 16" for
# a faster build); FUZZ_ARGS adds libFuzzer flags (e.g. "-jobs=2").
set -euo pipefail

secs="${1:-30}"
cd "$(dirname "$0")"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# sanitizer none: the code is forbid(unsafe), and it keeps the build fast.
build=(-s none ${FUZZ_BUILD_ARGS:-})
start=$(date +%s)
cargo +nightly fuzz build "${build[@]}"
echo "fuzz/run.sh: built in $(($(date +%s) - start)) s"

failed=()
for target in config request; do
    mkdir -p "work/$target"
    extra=()
    [ -f "$target.dict" ] && extra+=("-dict=$target.dict")
    echo "fuzz/run.sh: $target for ${secs} s"
    # -timeout: one input taking longer than this (a hang) is a finding too.
    if ! cargo +nightly fuzz run "${build[@]}" "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$secs" -timeout=20 -print_final_stats=1 "${extra[@]}" ${FUZZ_ARGS:-}; then
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: crashes in: ${failed[*]} (see fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz/run.sh: no crash in ${secs} s per target"
