#!/usr/bin/env bash
# Set everything up and run the main job on the embedded default: the local platform on 127.0.0.1 and
# the loopline pipeline (collect → label → train → register → deploy → A/B test) on the demo data, through
# its Prefect deployment and the local worker, with the demo annotator answering in Label Studio and the
# demo traffic client standing in for users in round 2's A/B test.
#   bash scripts/demo.sh             digits, one label per image (classification)
#   bash scripts/demo.sh detection   scenes of digits, boxes drawn in Label Studio (object detection)
set -euo pipefail
task=${1:-classification}
case $task in
  classification) model=loopline-classifier; epochs=30; trials=4; traffic_rate=60; traffic_seconds=900; space="" ;;
  # SSDlite resizing to 160 px (the demo's canvases are 96-128 px): it learns the digits from scratch in
  # about 30 epochs on a CPU
  detection) model=loopline-detector; epochs=30; trials=2; traffic_rate=30; traffic_seconds=3600
    space=", \"search_space\": {\"detector_image_sizes\": [160], \"optimizers\": [\"adamw\"],
      \"lr\": {\"low\": 0.005, \"high\": 0.012, \"log\": true}}" ;;
  *) echo "usage: bash scripts/demo.sh [classification|detection]" >&2; exit 2 ;;
esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export LOOPLINE_PROJECT_ROOT=$PWD
# the router keeps 10 % of the images it serves (DATA_ROOT/production/): the monitor measures input drift on
# them, and a later round can label them (collect.production_sample)
export LOOPLINE_ROUTER_SAMPLE_RATE=${LOOPLINE_ROUTER_SAMPLE_RATE:-0.1}
.venv/bin/loopline services up
eval "$(.venv/bin/loopline env)"
.venv/bin/loopline deploy
demo="$LOOPLINE_HOME/demo"  # the detection demo's scenes in a folder of their own
[[ $task == detection ]] && demo="$LOOPLINE_HOME/demo-detection"
.venv/bin/loopline demo-data "$demo" --task-type "$task"
# The DEMO ANNOTATOR stands in for people: it answers the Label Studio tasks from the demo ground truth.
.venv/bin/loopline demo-annotate "$demo/ground_truth.json" --seconds 1800 \
  > "$LOOPLINE_HOME/logs/demo-annotator.log" 2>&1 &
annotator=$!
trap 'kill $annotator 2>/dev/null || true' EXIT
# auto_approve (labels and model) is for the demo only: without it the run waits for `loopline approve RUN_ID`.
# Training is dispatched to the train-model/local deployment (on a cluster: train-model/k8s-gpu).
# Round 1: a random first batch is labeled, trained on, registered and approved: the champion.
# Round 2: new images; the champion picks what to label (active learning) and pre-annotates it; the
# challenger trained on both rounds' labels is gated against the champion (default rules: a drop fails only
# when McNemar's paired test finds it significant; the report notes what the small test split cannot tell),
# approved, and deployed beside the champion. The A/B stage then ramps its share of live traffic (10 → 50 →
# 80 %; the DEMO TRAFFIC CLIENT sends fresh digit images through the router and the true label as feedback
# for 60 % of them), judged with always-valid statistics, and promotes it (auto_approve: demo only).
traffic=""
for round in 1 2; do
  echo "== round $round"
  extra=""
  if [[ $round == 2 ]]; then
    extra=", \"deploy\": {\"promote_directly\": false}, \"rollout\": {\"auto_approve\": true,
      \"ramp\": {\"min_step_seconds\": 10, \"min_step_requests\": 100}, \"interval_seconds\": 5,
      \"grace_seconds\": 10, \"statistics\": {\"margin\": 0.05, \"step_up_on\": \"no_harm\",
      \"min_feedback_per_arm\": 150, \"min_requests_per_arm\": 150, \"latency_quantile\": 0.95,
      \"tune_feedback\": 2000, \"tune_requests\": 4000}}"
    .venv/bin/loopline demo-traffic --task-type "$task" --rate "$traffic_rate" --seconds "$traffic_seconds" \
      > "$LOOPLINE_HOME/logs/demo-traffic.log" 2>&1 &
    traffic=$!
    trap 'kill $annotator $traffic 2>/dev/null || true' EXIT
  fi
  params="{\"params\": {\"collect\": {\"source\": \"$demo/round-$round\"},
    \"label\": {\"task_type\": \"$task\", \"labels\": [\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"], \"auto_approve\": true, \"budget\": 200},
    \"train\": {\"epochs\": $epochs, \"n_trials\": $trials$space}, \"train_deployment\": \"train-model/local\",
    \"register\": {\"model_name\": \"$model\", \"auto_approve\": true}$extra}}"
  started=$(.venv/bin/prefect deployment run 'loopline-pipeline/local' --params "$params")
  run_id=$(grep -oE 'UUID: [0-9a-f-]{36}' <<<"$started" | cut -d' ' -f2)
  # one line per step; the whole log of the run goes to .loopline/logs/run-ID.log
  .venv/bin/loopline watch "$run_id"
done
echo
if [[ $task == classification ]]; then  # (drift monitoring knows classifiers only, so far)
  echo "== monitor: the champion's traffic of the last 10 minutes (flow monitor-model)"
  .venv/bin/prefect deployment run 'monitor-model/local' --watch \
    --params '{"params": {"model_name": "loopline-classifier", "window_minutes": 10}}' | tail -n 2 \
    || echo "(the monitor run did not complete: see the Prefect UI)"
fi
[[ -n $traffic ]] && kill "$traffic" 2>/dev/null || true
echo
echo "== datasets"
.venv/bin/loopline datasets
echo
echo "== labeled manifests"
ls "$LOOPLINE_HOME"/data/labels/
echo
echo "== registry: $model"
MODEL=$model .venv/bin/python - <<'PY'
import os
import mlflow
from loopline.settings import get_settings
client = mlflow.MlflowClient(get_settings().resolved_mlflow_tracking_uri)
name = os.environ["MODEL"]
for found in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)):
    v = client.get_model_version(found.name, found.version)  # (search results carry no aliases)
    score = (f"test mAP {v.tags['training.test_map']}" if "training.test_map" in v.tags
             else f"test accuracy {v.tags.get('training.test_accuracy')}")
    print(f"v{v.version}: aliases {v.aliases}, decision {v.tags.get('review.decision')}, "
          f"{score}, dataset {v.tags.get('dataset_version')}")
PY
echo
echo "== A/B test (event store: .loopline/events.db)"
MODEL=$model .venv/bin/python - <<'PY'
import os
from loopline.rollout.service import open_store
from loopline.settings import get_settings
store = open_store(get_settings())
found = store.latest_experiment(os.environ["MODEL"])
if found is None:
    print("no experiment")
else:
    decisions = store.list_decisions(found.name)
    steps = [d.weight_after for i, d in enumerate(decisions) if i == 0 or d.weight_after != decisions[i - 1].weight_after]
    arms = store.arm_summaries(found.name)
    print(f"{found.name}: {found.status}; challenger weight over time {[f'{w:.0%}' for w in steps]}")
    for arm, a in arms.items():
        accuracy = f"{a.correct / a.feedback:.1%}" if a.feedback else "-"  # a detector: mean box F1
        print(f"  {arm:<10} requests {a.requests}, errors {a.errors}, feedback {a.feedback}, accuracy {accuracy}")
    print("  last decision:", decisions[-1].verdict, "-", "; ".join(decisions[-1].reasons)[:300])
PY
echo
echo "== the loop (loopline status)"
.venv/bin/loopline status || true
echo
echo "== lineage of the model serving traffic (loopline lineage $model@champion)"
.venv/bin/loopline lineage "$model@champion" --images 3 || true
echo
echo "Prefect UI:    ${PREFECT_API_URL%/api}  (flow runs; artifacts collect-summary, label-agreement, label-review, label-selection, train-trials, model-evaluation, model-aliases, model-deployment, rollout-report, rollout-review, model-monitor)"
echo "MLflow UI:     $(.venv/bin/python -c 'from loopline.settings import get_settings; print(get_settings().resolved_mlflow_tracking_uri)')  (experiment loopline: the training run, its trials, the ONNX model)"
echo "Label Studio:  $(.venv/bin/python -c 'from loopline.settings import get_settings; print(get_settings().resolved_label_studio_url)')  (user admin@loopline.local, password in .loopline/secrets/)"
champion_url="$(.venv/bin/python -c 'from loopline.settings import get_settings; s = get_settings(); print(f"http://{s.host}:{s.serve_port_champion}")')"
echo "Model server:  $champion_url  (the champion: curl $champion_url/v2/health/ready; POST images to $champion_url/v1/predict)"
echo "A/B router:    http://127.0.0.1:$(.venv/bin/python -c 'from loopline.settings import get_settings; print(get_settings().router_port)')  (POST images to /v1/predict with X-User-Id; feedback to /v1/feedback)"
echo "See an automatic rollback: bash scripts/demo-rollback.sh"
echo "Roll back the champion with: .venv/bin/loopline rollback"
echo "Stop the platform (and the model servers) with: .venv/bin/loopline services down"
