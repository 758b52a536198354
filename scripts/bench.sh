#!/usr/bin/env bash
# One-command benchmark: Rust against PyTorch, interleaved, on one device and thread count.
#
#   scripts/bench.sh                         # CPU, all cores
#   scripts/bench.sh --device cuda           # GPU
#   scripts/bench.sh --threads 1 --rounds 5  # see scripts/bench.py --help
#   scripts/bench.sh --kernel-paths          # what --reproducible costs (Rust alone, CPU)
#   scripts/bench.sh --precision bf16-mixed  # the dropout epoch in bf16-mixed against f32 (CPU)
#
# The binary: $D2L_BIN, else target/release/d2l-regularization (built here when cargo exists).
# Python: $D2L_PYTHON, else the venv scripts/setup.sh made, else python3 (which must have torch).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${D2L_BIN:-$repo/target/release/d2l-regularization}
if command -v cargo >/dev/null && [ -z "${D2L_BIN:-}" ]; then
  (cd "$repo" && cargo build --release --quiet)
fi
[ -x "$bin" ] || { echo "error: no binary at $bin (run scripts/setup.sh, or set D2L_BIN)" >&2; exit 1; }
python=${D2L_PYTHON:-}
if [ -z "$python" ] && [ -f "$repo/.cargo/config.toml" ]; then
  python=$(sed -n 's/^D2L_PYTHON = "\(.*\)"$/\1/p' "$repo/.cargo/config.toml")
fi
[ -n "$python" ] || python=python3
exec "$python" "$repo/scripts/bench.py" --bin "$bin" "$@"
