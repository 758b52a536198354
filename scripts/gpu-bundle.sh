#!/usr/bin/env bash
# Prepares the bundle a GPU machine without Rust needs (default .gpu/, ignored by git; about
# 40 MB): the release binary and the prebuilt test binary of tests/cuda.rs under bin/, a
# launcher beside each that finds libtorch in that machine's torch package, and Fashion-MNIST:
#
#   scripts/gpu-bundle.sh [DIR]
#
# There, `.gpu/d2l-regularization --device cuda …` runs directly, and `scripts/gpu-check.sh
# --out "$OUT"` runs the whole check (its header says what it checks and writes).
# D2L_BIN and D2L_CUDA_TESTS name binaries already built (nothing is built then).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
dir=${1:-.gpu}
bin=${D2L_BIN:-}
tests=${D2L_CUDA_TESTS:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=target/release/d2l-regularization
fi
if [ -z "$tests" ]; then
  tests=$(cargo test --release --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"name":"cuda".*"executable":"\([^"]*\)".*/\1/p' | tail -1)
fi
[ -x "$bin" ] || { echo "error: no binary at '$bin'" >&2; exit 1; }
[ -x "$tests" ] || { echo "error: could not find the tests/cuda.rs binary ('$tests')" >&2; exit 1; }
data=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
case "$(cd "$(dirname "$dir")" 2>/dev/null && pwd)/$(basename "$dir")" in
  "$repo"|"$repo/src"*|"$repo/scripts"*|"$repo/tests"*|"$repo/results"*) echo "error: '$dir' is part of the repository" >&2; exit 1 ;;
esac
rm -rf "$dir" && mkdir -p "$dir/bin" "$dir/data"
cp "$bin" "$dir/bin/d2l-regularization"
cp "$tests" "$dir/bin/cuda-tests"
cp "$data"/{train,t10k}-{images-idx3,labels-idx1}-ubyte* "$dir/data/"
# The launcher: the binaries' RUNPATH names this machine's venv, so libtorch (and the CUDA
# runtime the shim links) are taken from the torch package of the python3 there.
for name in d2l-regularization cuda-tests; do
  cat > "$dir/$name" <<'LAUNCHER'
#!/bin/sh
# Written by scripts/gpu-bundle.sh: runs bin/<this name> with libtorch from this machine's torch
# package (python3's, or $D2L_PYTHON's), found without importing torch.
here=$(cd "$(dirname "$0")" && pwd)
python=${D2L_PYTHON:-python3}
torch_dir=$("$python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("torch").origin))') || {
  echo "error: no torch package for $python (set D2L_PYTHON to a python with torch 2.11.0)" >&2; exit 1; }
LD_LIBRARY_PATH="$torch_dir/lib:$(dirname "$(dirname "$torch_dir")")/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "$here/bin/$(basename "$0")" "$@"
LAUNCHER
  chmod +x "$dir/$name"
done
du -sh "$dir"
