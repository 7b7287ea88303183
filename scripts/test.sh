#!/usr/bin/env bash
# Set everything up and run the whole test suite: lint, format, types, unit, integration, e2e.
# With arguments, one pytest run of those (e.g. `bash scripts/test.sh tests/unit -k agreement`). Without,
# two pytest processes side by side: the end-to-end pipelines (most of their time is spent waiting on
# servers, Label Studio and Prefect's scheduling) and everything else; each prints its own report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
pytest=(.venv/bin/pytest -p no:cacheprovider -o console_output_style=classic -rfEs --durations=10)
if (($#)); then
  echo "== pytest"; exec "${pytest[@]}" "$@"
fi
mkdir -p .loopline
e2e_log=.loopline/test-e2e.log
echo "== pytest (tests/e2e in the background, output in $e2e_log until it ends)"
"${pytest[@]}" tests/e2e >"$e2e_log" 2>&1 &
e2e=$!
trap 'kill $e2e 2>/dev/null || true' EXIT
status=0
"${pytest[@]}" --ignore=tests/e2e || status=$?
echo "== pytest tests/e2e"
wait $e2e || status=$?
cat "$e2e_log"
exit $status
