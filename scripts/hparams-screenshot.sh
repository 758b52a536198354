#!/usr/bin/env bash
# Takes the screenshot results/sweep/weight-decay/hparams.png: TensorBoard (from the venv of
# scripts/setup.sh) serves a sweep's event files on a free localhost port, headless Chromium
# (Debian's `chromium`) opens the HParams dashboard through playwright-core (npm, installed
# once under ~/.cache/d2l-regularization/node), and the page is saved as PNG.
#
#   scripts/hparams-screenshot.sh [<sweep's tensorboard dir>] [<out.png>]
#
# Defaults: results/sweep/weight-decay/tensorboard and results/sweep/weight-decay/hparams.png.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
logdir=${1:-$repo/results/sweep/weight-decay/tensorboard}
out=${2:-$repo/results/sweep/weight-decay/hparams.png}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/d2l-regularization
python=${D2L_VENV:-$cache/venv}/bin/python
[ -d "$logdir" ] || { echo "error: no event files at $logdir (run the sweep first)" >&2; exit 1; }
[ -x "$python" ] || { echo "error: no venv at ${python%/bin/python} (run scripts/setup.sh)" >&2; exit 1; }
command -v chromium >/dev/null || { echo "error: no chromium (apt-get install chromium)" >&2; exit 1; }
if [ ! -d "$cache/node/node_modules/playwright-core" ]; then
  npm install --silent --prefix "$cache/node" playwright-core@1
fi
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$python" -m tensorboard.main --logdir "$logdir" --host 127.0.0.1 --port "$port" >/dev/null 2>&1 &
tb=$!
trap 'kill $tb 2>/dev/null' EXIT
for _ in $(seq 60); do
  curl -sf "http://127.0.0.1:$port/data/runs" >/dev/null && break
  sleep 1
done
NODE_PATH=$cache/node/node_modules node "$repo/scripts/hparams-screenshot.js" \
  "http://127.0.0.1:$port/#hparams" "$out"
echo "wrote $out"
