#!/usr/bin/env bash
# Coverage-guided fuzzing of the IDX reader (src/data/idx.rs) with libFuzzer through
# cargo-fuzz, on the stable toolchain (no sanitizer; Rust's own checks, overflow included,
# are on). Usage: scripts/fuzz.sh [SECONDS]   (default 600)
#
# Seeds: fuzz/seeds (small valid files, raw and gzip) and tests/fuzz-crashes/idx (every crash
# found so far, also replayed by `cargo test`). New interesting inputs go to fuzz/corpus/idx
# (ignored by git); a crash is written to fuzz/artifacts/idx/ — copy it into
# tests/fuzz-crashes/idx/ once it is fixed, so the tests keep it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p fuzz/corpus/idx
# RUSTC_BOOTSTRAP lets the stable compiler accept the flags cargo-fuzz passes for nightly.
export RUSTC_BOOTSTRAP=1
exec cargo fuzz run --sanitizer none idx fuzz/corpus/idx fuzz/seeds tests/fuzz-crashes/idx -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
