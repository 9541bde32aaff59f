#!/usr/bin/env bash
# Runs weir's fuzz targets (config, request, upstream) for SECONDS each (default 30)
# and fails if either finds a crash. Uses the nightly toolchain if present,
# else the default one with RUSTC_BOOTSTRAP=1; installs
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

# cargo-fuzz passes nightly-only flags. Use nightly when it is installed;
# otherwise the stable toolchain with RUSTC_BOOTSTRAP=1 (what CI has: no
# other toolchain can be fetched there).
if cargo +nightly --version >/dev/null 2>&1; then
    toolchain=+nightly
else
    toolchain=
    export RUSTC_BOOTSTRAP=1
    echo "fuzz/run.sh: no nightly toolchain; using the default one with RUSTC_BOOTSTRAP=1"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# sanitizer none: the code is forbid(unsafe), and it keeps the build fast.
build=(-s none ${FUZZ_BUILD_ARGS:-})
start=$(date +%s)
cargo ${toolchain:+"$toolchain"} fuzz build "${build[@]}"
echo "fuzz/run.sh: built in $(($(date +%s) - start)) s"

failed=()
for target in config request upstream; do
    mkdir -p "work/$target"
    extra=()
    [ -f "$target.dict" ] && extra+=("-dict=$target.dict")
    echo "fuzz/run.sh: $target for ${secs} s"
    # -timeout: one input taking longer than this (a hang) is a finding too.
    if ! cargo ${toolchain:+"$toolchain"} fuzz run "${build[@]}" "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$secs" -timeout=20 -print_final_stats=1 "${extra[@]}" ${FUZZ_ARGS:-}; then
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: crashes in: ${failed[*]} (see fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz/run.sh: no crash in ${secs} s per target"
