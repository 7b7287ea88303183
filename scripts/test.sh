#!/usr/bin/env bash
# Set everything up and run the whole test suite: lint, format, types, unit, integration, e2e.
# With arguments, one pytest run of those (e.g. `bash scripts/test.sh tests/unit -k agreement`). Without,
# three pytest processes side by side (most of the suite's time is spent waiting on servers, Label Studio
# and Prefect's scheduling, not computing): the end-to-end pipelines, the integration modules test_a*..p*,
# and the unit tests with the integration modules test_q*..z*; each prints its own report.
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
shopt -s nullglob
first_half=(tests/integration/test_[a-p]*.py)
second_half=(tests/integration/test_[q-z]*.py)
echo "== pytest: tests/e2e and integration test_a..p in the background (logs in .loopline/test-*.log)"
"${pytest[@]}" tests/e2e >.loopline/test-e2e.log 2>&1 &
e2e=$!
"${pytest[@]}" "${first_half[@]}" >.loopline/test-integration.log 2>&1 &
integration=$!
trap 'kill $e2e $integration 2>/dev/null || true' EXIT
status=0
"${pytest[@]}" tests/unit "${second_half[@]}" || status=$?
echo "== pytest integration test_a..p"
wait $integration || status=$?
cat .loopline/test-integration.log
echo "== pytest tests/e2e"
wait $e2e || status=$?
cat .loopline/test-e2e.log
exit $status
