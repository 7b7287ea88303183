#!/usr/bin/env bash
# Set everything up and run the main job on the embedded default: the local platform on 127.0.0.1 and
# the loopline pipeline (collect → label → train → register → deploy) on the demo data, through its Prefect deployment and the local
# worker, with the demo annotator answering in Label Studio.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export LOOPLINE_PROJECT_ROOT=$PWD
.venv/bin/loopline services up
eval "$(.venv/bin/loopline env)"
.venv/bin/loopline deploy
.venv/bin/loopline demo-data "$LOOPLINE_HOME/demo"
# The DEMO ANNOTATOR stands in for people: it answers the Label Studio tasks from the demo ground truth.
.venv/bin/loopline demo-annotate "$LOOPLINE_HOME/demo/ground_truth.json" --seconds 1800 \
  > "$LOOPLINE_HOME/logs/demo-annotator.log" 2>&1 &
annotator=$!
trap 'kill $annotator 2>/dev/null || true' EXIT
# auto_approve (labels and model) is for the demo only: without it the run waits for `loopline approve RUN_ID`.
# Training is dispatched to the train-model/local deployment (on a cluster: train-model/k8s-gpu).
# Round 1: a random first batch is labeled, trained on, registered and approved: the champion.
# Round 2: new images; the champion picks what to label (active learning) and pre-annotates it; the
# challenger trained on both rounds' labels is gated against the champion (default rules: a drop fails only
# when McNemar's paired test finds it significant; the report notes what the small test split cannot tell),
# then approved.
for round in 1 2; do
  echo "== round $round"
  params="{\"params\": {\"collect\": {\"source\": \"$LOOPLINE_HOME/demo/round-$round\"},
    \"label\": {\"labels\": [\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"], \"auto_approve\": true, \"budget\": 200},
    \"train\": {\"epochs\": 30, \"n_trials\": 4}, \"train_deployment\": \"train-model/local\",
    \"register\": {\"auto_approve\": true}}}"
  started=$(.venv/bin/prefect deployment run 'loopline-pipeline/local' --params "$params")
  run_id=$(grep -oE 'UUID: [0-9a-f-]{36}' <<<"$started" | cut -d' ' -f2)
  # one line per step; the whole log of the run goes to .loopline/logs/run-ID.log
  .venv/bin/loopline watch "$run_id"
done
echo
echo "== datasets"
.venv/bin/loopline datasets
echo
echo "== labeled manifests"
ls "$LOOPLINE_HOME"/data/labels/
echo
echo "== registry: loopline-classifier"
.venv/bin/python - <<'PY'
import mlflow
from loopline.settings import get_settings
client = mlflow.MlflowClient(get_settings().resolved_mlflow_tracking_uri)
for found in sorted(client.search_model_versions("name = 'loopline-classifier'"), key=lambda v: int(v.version)):
    v = client.get_model_version(found.name, found.version)  # (search results carry no aliases)
    print(f"v{v.version}: aliases {v.aliases}, decision {v.tags.get('review.decision')}, "
          f"test accuracy {v.tags.get('training.test_accuracy')}, dataset {v.tags.get('dataset_version')}")
PY
echo
echo "== deployments (local model servers)"
.venv/bin/loopline deployments || true
echo
echo "Prefect UI:    ${PREFECT_API_URL%/api}  (flow runs; artifacts collect-summary, label-agreement, label-review, label-selection, train-trials, model-evaluation, model-aliases)"
echo "MLflow UI:     $(.venv/bin/python -c 'from loopline.settings import get_settings; print(get_settings().resolved_mlflow_tracking_uri)')  (experiment loopline: the training run, its trials, the ONNX model)"
echo "Label Studio:  $(.venv/bin/python -c 'from loopline.settings import get_settings; print(get_settings().resolved_label_studio_url)')  (user admin@loopline.local, password in .loopline/secrets/)"
champion_url="$(.venv/bin/python -c 'from loopline.settings import get_settings; s = get_settings(); print(f"http://{s.host}:{s.serve_port_champion}")')"
echo "Model server:  $champion_url  (the champion: curl $champion_url/v2/health/ready; POST images to $champion_url/v1/predict)"
echo "Roll back the champion with: .venv/bin/loopline rollback"
echo "Stop the platform (and the model servers) with: .venv/bin/loopline services down"
