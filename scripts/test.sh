#!/usr/bin/env bash
# Set everything up and run the whole test suite: lint, format, types, unit, integration, e2e.
# With arguments, one pytest run of those (e.g. `bash scripts/test.sh tests/unit -k agreement`). Without,
# four pytest processes side by side (most of the suite's time is spent waiting on servers, Label Studio
# and Prefect's scheduling, not computing); each prints its own report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$(date +%s)
bash scripts/setup.sh
set_up=$(date +%s)
echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
# mypy's cache lives outside the clone (like the venvs): a fresh clone re-checks only what changed (about
# 10 s instead of 1-3 min); the cache checks each file's hash, so a stale entry is never used.
echo "== mypy"; .venv/bin/mypy --cache-dir "${LOOPLINE_MYPY_CACHE:-$HOME/.cache/loopline/mypy}"
pytest=(.venv/bin/pytest -p no:cacheprovider -o console_output_style=classic -rfEs --durations=25)
if (($#)); then
  echo "== pytest"; exec "${pytest[@]}" "$@"
fi
checked=$(date +%s)
mkdir -p .loopline
shopt -s nullglob
# One thread per torch/OpenMP pool: four processes share the cores, and idle OpenMP threads spin.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# Four groups side by side, each e2e printing its timeline (-rP): the team-tier e2e (object detection on
# PostgreSQL + S3) with test_services; the laptop e2e (classification) with doctor, migrate and PAT, which
# start whole platforms; the others test_a..p (test_automations among them: that group ended first); the
# unit tests with the other integration modules test_q..z. The two cores are busy throughout: the last two groups run at a lower priority (nice 5), so the
# two e2e tests, each one long chain of steps, get more of the CPU when they need it. Not nice 10: at a
# tenth of a core a test waiting for its own server with a deadline fails for no fault of the code.
platforms=(tests/integration/test_doctor.py tests/integration/test_migrate.py tests/integration/test_label_studio_pat.py)
after_team=(tests/integration/test_services.py)
first_half=()
for module in tests/integration/test_[a-p]*.py; do
  [[ " ${platforms[*]} ${after_team[*]} " == *" $module "* ]] || first_half+=("$module")
done
second_half=()
for module in tests/integration/test_[q-z]*.py; do
  [[ " ${platforms[*]} ${after_team[*]} " == *" $module "* ]] || second_half+=("$module")
done
# timed NAME COMMAND...: run the command, then write its wall seconds to .loopline/seconds-NAME.
timed() {
  local name=$1 began rc=0
  shift
  began=$(date +%s)
  "$@" || rc=$?
  echo $(($(date +%s) - began)) >".loopline/seconds-$name"
  return $rc
}
rm -f .loopline/seconds-*
echo "== pytest: the e2e tests and integration test_a..p in the background (logs in .loopline/test-*.log)"
timed laptop-e2e "${pytest[@]}" -rP tests/e2e/test_pipeline.py "${platforms[@]}" >.loopline/test-e2e.log 2>&1 &
e2e=$!
timed team-e2e "${pytest[@]}" -rP tests/e2e/test_pipeline_team.py "${after_team[@]}" >.loopline/test-team.log 2>&1 &
team_tier=$!
timed a..p nice -n 5 "${pytest[@]}" "${first_half[@]}" >.loopline/test-integration.log 2>&1 &
integration=$!
trap 'for job in $e2e $team_tier $integration; do pkill -P $job; kill $job; done 2>/dev/null || true' EXIT
status=0
timed unit+q..z nice -n 5 "${pytest[@]}" tests/unit "${second_half[@]}" || status=$?
echo "== pytest integration test_a..p"
wait $integration || status=$?
cat .loopline/test-integration.log
echo "== pytest tests/e2e/test_pipeline_team.py and test_services"
wait $team_tier || status=$?
cat .loopline/test-team.log
echo "== pytest tests/e2e/test_pipeline.py and the modules that start whole platforms"
wait $e2e || status=$?
cat .loopline/test-e2e.log
# Last, so that the tail of a CI log shows where the time went.
echo "== timings (s): before setup $((started - ${LOOPLINE_CI_STARTED:-$started})), setup $((set_up - started)),\
 lint and types $((checked - set_up)); pytest groups (side by side):\
$(for f in .loopline/seconds-*; do printf ' %s %s' "${f#.loopline/seconds-}" "$(cat "$f")"; done);\
 in all $(($(date +%s) - ${LOOPLINE_CI_STARTED:-$started}))"
exit $status
