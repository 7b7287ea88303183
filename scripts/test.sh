#!/usr/bin/env bash
# Set everything up and run the whole test suite: lint, format, types, unit, integration, e2e.
# With arguments, one pytest run of those (e.g. `bash scripts/test.sh tests/unit -k agreement`). Without,
# four pytest processes side by side (most of the suite's time is spent waiting on servers, Label Studio
# and Prefect's scheduling, not computing); each prints its own report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
# mypy's cache lives outside the clone (like the venvs): a fresh clone re-checks only what changed (about
# 10 s instead of 1-3 min); the cache checks each file's hash, so a stale entry is never used.
echo "== mypy"; .venv/bin/mypy --cache-dir "${LOOPLINE_MYPY_CACHE:-$HOME/.cache/loopline/mypy}"
pytest=(.venv/bin/pytest -p no:cacheprovider -o console_output_style=classic -rfEs --durations=25)
if (($#)); then
  echo "== pytest"; exec "${pytest[@]}" "$@"
fi
mkdir -p .loopline
shopt -s nullglob
# One thread per torch/OpenMP pool: four processes share the cores, and idle OpenMP threads spin.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# Four groups side by side: the team-tier e2e (object detection on PostgreSQL + S3) with test_services; the
# laptop e2e (classification) with the other integration modules that start whole platforms; the others
# test_a..p; the unit tests with the other integration modules test_q..z. The two cores are busy throughout:
# the last two groups run at a lower priority (nice 10), so the two e2e tests, each one long chain of steps,
# get the CPU when they need it and the others fill the gaps.
platforms=(tests/integration/test_doctor.py tests/integration/test_migrate.py tests/integration/test_label_studio_pat.py
      tests/integration/test_automations.py)
after_team=(tests/integration/test_services.py)
first_half=()
for module in tests/integration/test_[a-p]*.py; do
  [[ " ${platforms[*]} ${after_team[*]} " == *" $module "* ]] || first_half+=("$module")
done
second_half=()
for module in tests/integration/test_[q-z]*.py; do
  [[ " ${platforms[*]} ${after_team[*]} " == *" $module "* ]] || second_half+=("$module")
done
echo "== pytest: the e2e tests and integration test_a..p in the background (logs in .loopline/test-*.log)"
"${pytest[@]}" tests/e2e/test_pipeline.py "${platforms[@]}" >.loopline/test-e2e.log 2>&1 &
e2e=$!
"${pytest[@]}" -rP tests/e2e/test_pipeline_team.py "${after_team[@]}" >.loopline/test-team.log 2>&1 &
team_tier=$!
nice -n 10 "${pytest[@]}" "${first_half[@]}" >.loopline/test-integration.log 2>&1 &
integration=$!
trap 'kill $e2e $team_tier $integration 2>/dev/null || true' EXIT
status=0
nice -n 10 "${pytest[@]}" tests/unit "${second_half[@]}" || status=$?
echo "== pytest integration test_a..p"
wait $integration || status=$?
cat .loopline/test-integration.log
echo "== pytest tests/e2e/test_pipeline_team.py and test_services"
wait $team_tier || status=$?
cat .loopline/test-team.log
echo "== pytest tests/e2e/test_pipeline.py and the modules that start whole platforms"
wait $e2e || status=$?
cat .loopline/test-e2e.log
exit $status
