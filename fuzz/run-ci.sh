#!/usr/bin/env bash
# The fuzz targets, as CI runs them: build each, then run it for FUZZ_SECONDS (15 by default)
# from its seed corpus, with libFuzzer's memory limits. Skipped (exit 0) when there is no
# nightly toolchain, or cargo-fuzz is missing and cannot be installed from crates.io.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-15}"

skip() {
    echo "fuzz/run-ci.sh: skipped: $1"
    exit 0
}

cargo +nightly --version >/dev/null 2>&1 || skip "no nightly toolchain (cargo +nightly)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run-ci.sh: installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked >/dev/null 2>&1 || skip "cargo-fuzz is not installed and cannot be"
fi

# Its own target directory: a CARGO_TARGET_DIR meant for the main crate is left alone.
export CARGO_TARGET_DIR="$PWD/target"
targets=(token challenge status token_file layer agent_verify)
cargo +nightly fuzz build

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    # New inputs go to the scratch corpus (the first); the seeds in corpus/ are only read.
    # -rss_limit_mb, -malloc_limit_mb: a run or a single allocation far beyond any input's need
    # is a finding; each target also bounds what it calls with its counting allocator.
    if ! cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=1024 -malloc_limit_mb=64 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 80 "$log"
        echo "fuzz/run-ci.sh: $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::peak_rss_mb)' "$log" | sed "s/^/$target: /" || true
done
echo "fuzz/run-ci.sh: ${#targets[@]} targets ran ${seconds} s each without a finding"
