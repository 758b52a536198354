#!/usr/bin/env bash
# Prepares .gpu/ (ignored by git) for a GPU machine that has PyTorch 2.11.0+cu130 but no Rust
# toolchain: the release binary, the prebuilt test binary of tests/cuda.rs, and Fashion-MNIST.
# Then, on that machine, from the repository root:
#
#   D2L_BIN=.gpu/d2l-regularization D2L_TEST_BINS=.gpu/cuda-tests FASHION_MNIST_DIR=.gpu/data \
#     GPU_CHECK_OUT=$OUT/gpu-check scripts/gpu-check.sh --rounds 3
#
# (about 40 MB travels; scripts/gpu-check.sh's header says what it checks).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cargo build --release --quiet
tests=$(cargo test --release --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"name":"cuda".*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$tests" ] || { echo "error: could not find the tests/cuda.rs binary" >&2; exit 1; }
data=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
rm -rf .gpu && mkdir -p .gpu/data
cp target/release/d2l-regularization .gpu/
cp "$tests" .gpu/cuda-tests
cp "$data"/{train,t10k}-{images-idx3,labels-idx1}-ubyte* .gpu/data/
du -sh .gpu
