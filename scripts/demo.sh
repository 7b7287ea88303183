#!/usr/bin/env bash
# Set everything up and run the main job on the embedded default: the local platform on 127.0.0.1 and
# the loopline pipeline on the demo data, through its Prefect deployment and the local worker.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export LOOPLINE_PROJECT_ROOT=$PWD
.venv/bin/loopline services up
eval "$(.venv/bin/loopline env)"
.venv/bin/loopline deploy
.venv/bin/loopline demo-data "$LOOPLINE_HOME/demo"
.venv/bin/prefect deployment run 'loopline-pipeline/local' --watch
echo
echo "== datasets"
.venv/bin/loopline datasets
echo
echo "Prefect UI:  ${PREFECT_API_URL%/api}  (flow runs, the collect-summary and collect-counts artifacts)"
echo "Stop the platform with: .venv/bin/loopline services down"
