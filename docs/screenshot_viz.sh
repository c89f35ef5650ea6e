#!/usr/bin/env bash
# Screenshot of Kedro-Viz for docs/pipelines.md: builds the static Kedro-Viz site, serves it on a
# free local port and photographs it with headless Chromium (apt-get install chromium).
#   docs/screenshot_viz.sh docs/images/kedro_viz.png
set -euo pipefail
out=${1:-docs/images/kedro_viz.png}
bin=$(dirname "${PYTHON:-.venv/bin/python}")
export KEDRO_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
site=$(mktemp -d)
"$bin/kedro" viz build >/dev/null 2>&1
cp -r build/. "$site"
port=$("$bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
setsid "$bin/python" -m http.server "$port" --bind 127.0.0.1 --directory "$site" >/dev/null 2>&1 &
server=$!
trap 'kill -- -$server 2>/dev/null || true' EXIT
sleep 2
mkdir -p "$(dirname "$out")"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --hide-scrollbars \
  --window-size=1600,1000 --virtual-time-budget=15000 --screenshot="$out" "http://127.0.0.1:$port/" 2>/dev/null
echo "wrote $out"
