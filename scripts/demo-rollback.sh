#!/usr/bin/env bash
# An automatic rollback, on the platform `bash scripts/demo.sh` left running (run it once, after the demo):
# the champion before the current one is deployed again as a challenger (smoke-tested, deploy-model/local),
# the A/B test starts (ab-test/local) with the DEMO TRAFFIC CLIENT sending users through the router, and then
# the challenger's server is killed (a deliberately broken challenger). Its users are answered by the
# champion, the error-rate guardrail trips, and the flow rolls the challenger back at once: weight 0, the
# version tagged with the reasons, a loopline.rollout.rolled-back event, the rollout-report artifact.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LOOPLINE_PROJECT_ROOT=$PWD
eval "$(.venv/bin/loopline env)"
registered=$(.venv/bin/python - <<'PY'
import json
import mlflow
from loopline.settings import get_settings
client = mlflow.MlflowClient(get_settings().resolved_mlflow_tracking_uri)
name = "loopline-classifier"
champion = client.get_model_version_by_alias(name, "champion")
older = [v for v in client.search_model_versions(f"name = '{name}'") if int(v.version) < int(champion.version)]
if not older:
    raise SystemExit("no earlier version to deploy as a challenger: run bash scripts/demo.sh first")
previous = max(older, key=lambda v: int(v.version))
print(json.dumps({"name": name, "version": previous.version, "run_id": previous.run_id,
                  "decision": "approved", "champion_version": champion.version}))
PY
)
echo "== deploying $(grep -oE '"version": "[0-9]+"' <<<"$registered") as the challenger"
.venv/bin/prefect deployment run 'deploy-model/local' --watch \
  --params "{\"registered\": $registered, \"params\": {\"promote_directly\": false}}" >/dev/null
.venv/bin/loopline demo-traffic --rate 60 --seconds 300 > "$LOOPLINE_HOME/logs/demo-traffic-rollback.log" 2>&1 &
traffic=$!
trap 'kill $traffic 2>/dev/null || true' EXIT
rollout='{"params": {"interval_seconds": 3, "ramp": {"min_step_seconds": 30, "min_step_requests": 100},
  "statistics": {"min_requests_per_arm": 100, "min_feedback_per_arm": 100}}}'
started=$(.venv/bin/prefect deployment run 'ab-test/local' --params "$rollout")
run_id=$(grep -oE 'UUID: [0-9a-f-]{36}' <<<"$started" | cut -d' ' -f2)
sleep 25
echo "== breaking the challenger: its server is killed (pid $(cat "$LOOPLINE_HOME/run/serve-challenger.pid" | head -1))"
kill "$(head -1 "$LOOPLINE_HOME/run/serve-challenger.pid")"
.venv/bin/loopline watch "$run_id"
.venv/bin/python - <<'PY'
import mlflow
from loopline.rollout.service import open_store
from loopline.settings import get_settings
settings = get_settings()
store = open_store(settings)
found = store.latest_experiment("loopline-classifier")
print(f"{found.name}: {found.status}, challenger weight {found.weight:.0%}")
print("why:", "; ".join(store.list_decisions(found.name)[-1].reasons)[:400])
client = mlflow.MlflowClient(settings.resolved_mlflow_tracking_uri)
version = client.get_model_version("loopline-classifier", found.challenger_version)
print(f"v{version.version} tags: rollout.verdict={version.tags.get('rollout.verdict')}")
PY
echo "demo traffic so far: $(tail -1 "$LOOPLINE_HOME/logs/demo-traffic-rollback.log" || true)"
