#!/usr/bin/env bash
# Screenshot of MLflow's run comparison page for docs/comparing-runs.md.
#   docs/screenshot_mlflow.sh sqlite:///mlflow.db docs/images/mlflow_compare.png
# Needs Debian's chromium (apt-get install chromium). Starts `mlflow ui` on a free local port,
# opens the comparison of the two newest runs of experiment face_pipeline, and stops the server.
set -euo pipefail
store=${1:-sqlite:///mlflow.db}
out=${2:-docs/images/mlflow_compare.png}
python=${PYTHON:-.venv/bin/python}
port=$($python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
read -r experiment runs < <($python - "$store" <<'PY'
import json, sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
runs = mlflow.search_runs(experiment_names=["face_pipeline"], order_by=["start_time DESC"], max_results=2,
                          filter_string="attributes.status = 'FINISHED'", output_format="list")
print(runs[0].info.experiment_id, json.dumps([r.info.run_id for r in runs], separators=(",", ":")))
PY
)
setsid $python -m mlflow ui --backend-store-uri "$store" --host 127.0.0.1 --port "$port" >/tmp/mlflow_ui.log 2>&1 &
server=$!
trap 'kill -- -$server 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
mkdir -p "$(dirname "$out")"
url="http://127.0.0.1:$port/#/compare-runs?runs=$runs&experiments=[\"$experiment\"]"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --hide-scrollbars \
  --window-size=1400,2400 --virtual-time-budget=15000 --screenshot="$out" "$url" 2>/dev/null
echo "wrote $out ($url)"
