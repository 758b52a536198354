#!/usr/bin/env bash
# Sets up everything d2l-regularization needs, idempotently, then runs the command given after
# it (if any) with the toolchain on PATH:
#
#   scripts/setup.sh                          # set up only
#   scripts/setup.sh cargo run --release      # set up, then run every experiment
#   scripts/setup.sh cargo test --release     # set up, then run the test suite
#
# What it does, each step skipped when already done:
#   1. a Rust toolchain (rustup) when cargo is missing, and a C++ compiler (torch-sys builds C++);
#   2. a Python venv OUTSIDE the checkout with torch==2.11.0 (what tch 0.24 expects),
#      torchvision==0.26.0 (the book's loader, for the benchmark) and nvidia-cuda-crt (headers
#      for the CUDA-graph shim) and tensorboard==2.21.0 (to open and test the event files):
#      $D2L_VENV, else an active venv that already has torch 2.11.0, else
#      ${XDG_CACHE_HOME:-~/.cache}/d2l-regularization/venv;
#   3. Fashion-MNIST from Debian's package dataset-fashion-mnist where apt is available;
#   4. .cargo/config.toml (not committed) so plain `cargo build/run/test` find libtorch:
#      LIBTORCH points into the venv's torch package unless LIBTORCH is already set.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TORCH_VERSION=2.11.0
TORCHVISION_VERSION=0.26.0
CUDA_CRT_VERSION=13.0.88
TENSORBOARD_VERSION=2.21.0
say() { printf '[setup] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
apt_updated=
apt_install() {
  command -v apt-get >/dev/null || return 1
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq || return 1; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# 1. toolchains ------------------------------------------------------------------------------
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
if ! command -v cargo >/dev/null; then
  say "cargo not found: installing Rust with rustup"
  command -v curl >/dev/null || apt_install curl ca-certificates
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  . "$HOME/.cargo/env"
fi
if ! command -v c++ >/dev/null; then
  say "no C++ compiler: installing g++"
  apt_install g++ make || { say "install a C++ compiler (g++) and re-run"; exit 1; }
fi

# 2. Python venv with PyTorch ----------------------------------------------------------------
has_torch() { "$1" -c "import torch,sys; sys.exit(0 if torch.__version__.split('+')[0]=='$TORCH_VERSION' else 1)" 2>/dev/null; }
if [ -n "${D2L_VENV:-}" ]; then
  venv=$D2L_VENV
elif [ -n "${VIRTUAL_ENV:-}" ] && has_torch "$VIRTUAL_ENV/bin/python"; then
  venv=$VIRTUAL_ENV
else
  venv=${XDG_CACHE_HOME:-$HOME/.cache}/d2l-regularization/venv
fi
case "$venv" in "$repo"|"$repo"/*) say "the venv must live outside the checkout (D2L_VENV=$venv)"; exit 1;; esac
python="$venv/bin/python"
if ! has_torch "$python" || ! "$python" -c "import torchvision" 2>/dev/null; then
  if [ ! -x "$python" ]; then
    say "creating the venv $venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
  fi
  say "installing torch==$TORCH_VERSION and torchvision==$TORCHVISION_VERSION into $venv (about 4.6 GB)"
  "$python" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi
has_torch "$python" || { say "torch $TORCH_VERSION is not importable from $python"; exit 1; }
# The CUDA crt/ headers (about 134 KB) that ATen/cuda/CUDAGraph.h needs and the torch wheel lacks:
# build.rs compiles the CUDA-graph shim (src/cuda/shim.cpp) with them.
if ! "$python" -c "import importlib.metadata as m; m.version('nvidia-cuda-crt')" >/dev/null 2>&1; then
  say "installing nvidia-cuda-crt==$CUDA_CRT_VERSION (CUDA headers for the CUDA-graph shim)"
  "$python" -m pip install -q --disable-pip-version-check "nvidia-cuda-crt==$CUDA_CRT_VERSION"
fi
# TensorBoard: to open the event files the runs write, its reader for the tests, and
# torch.utils.tensorboard for the PyTorch counterpart.
if ! "$python" -c "import importlib.metadata as m, sys; sys.exit(m.version('tensorboard') != '$TENSORBOARD_VERSION')" >/dev/null 2>&1; then
  say "installing tensorboard==$TENSORBOARD_VERSION into $venv"
  "$python" -m pip install -q --disable-pip-version-check "tensorboard==$TENSORBOARD_VERSION"
fi
torch_dir=$("$python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
say "PyTorch: $("$python" -c 'import torch; print(torch.__version__)') in $venv"

# 3. Fashion-MNIST -----------------------------------------------------------------------------
debian_data=/usr/share/datasets/fashion-mnist
if [ ! -f "$debian_data/t10k-labels-idx1-ubyte.gz" ]; then
  if apt_install dataset-fashion-mnist; then
    say "Fashion-MNIST installed in $debian_data"
  else
    say "could not install Debian's dataset-fashion-mnist; the dropout experiment will download"
    say "Fashion-MNIST into ${XDG_CACHE_HOME:-~/.cache}/d2l-regularization/fashion-mnist on first use,"
    say "or put the four files in a directory and pass --data-dir DIR (or set FASHION_MNIST_DIR)"
  fi
fi

# 4. cargo configuration -------------------------------------------------------------------------
libtorch=${LIBTORCH:-$torch_dir}
mkdir -p "$repo/.cargo"
config="$repo/.cargo/config.toml"
new_config=$(cat <<EOT
# Written by scripts/setup.sh for this machine; not committed. Variables already set in the
# environment take precedence over these.
[env]
LIBTORCH = "$libtorch"
D2L_PYTHON = "$python"
EOT
)
if [ ! -f "$config" ] || [ "$(cat "$config")" != "$new_config" ]; then
  printf '%s\n' "$new_config" > "$config.tmp" && mv "$config.tmp" "$config"
  say "wrote $config (LIBTORCH=$libtorch)"
fi

if [ $# -gt 0 ]; then
  cd "$repo"
  exec "$@"
fi
