"""collect → label → train through `prefect deployment run` and a worker, with the demo annotator
answering in a real Label Studio, the reviews sent by `loopline approve` (one rejection, then an
approval), and training dispatched to the `train-model/local` deployment with `run_deployment`."""

import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from loopline.data.store import LocalStore
from loopline.labeling.labeled import read_labeled_manifest
from tests.platform import BIN, ROOT, run, running_platform

pytestmark = pytest.mark.e2e


def wait_for_state(api: str, run_id: str, states: set[str], timeout: float = 420) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{api}/flow_runs/{run_id}")
        if response.status_code != 200:  # a busy SQLite-backed server may answer 5xx: ask again
            time.sleep(2)
            continue
        flow_run = response.json()
        if flow_run["state_type"] in states:
            return flow_run
        assert flow_run["state_type"] not in {"FAILED", "CRASHED", "CANCELLED"}, flow_run["state"]
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} did not reach {states}: {flow_run['state']}")


def test_pipeline_labels_with_review_and_trains_on_a_deployment(tmp_path: Path) -> None:
    import mlflow

    home = tmp_path / "home"
    with running_platform(home) as env:
        assert run(["loopline", "deploy"], env).returncode == 0
        assert run(["loopline", "demo-data", str(home / "demo")], env).returncode == 0
        annotator = subprocess.Popen(
            [
                str(BIN / "loopline"),
                "demo-annotate",
                str(home / "demo" / "ground_truth.json"),
                "--seconds",
                "600",
                "--interval",
                "1",
                "--error-rate",
                "0.05",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            params = {
                "collect": {"source": str(home / "demo" / "round-1")},
                "label": {"budget": 150, "poll_seconds": 1},
                "train": {"epochs": 30, "n_trials": 2, "experiment": "e2e"},
                "train_deployment": "train-model/local",
            }
            started = run(
                [
                    "prefect",
                    "deployment",
                    "run",
                    "loopline-pipeline/local",
                    "--params",
                    json.dumps({"params": params}),
                ],
                env,
            )
            assert started.returncode == 0, started.stdout + started.stderr
            run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)  # type: ignore[union-attr]
            api = env["PREFECT_API_URL"]

            wait_for_state(api, run_id, {"PAUSED"})
            # input that does not fit the schema is refused and the run stays suspended
            bad = httpx.post(
                f"{api}/flow_runs/{run_id}/resume", json={"run_input": {"decision": "maybe"}}
            ).json()
            assert bad["status"] != "ACCEPT"
            assert httpx.get(f"{api}/flow_runs/{run_id}").json()["state_type"] == "PAUSED"

            sent_back = run(
                ["loopline", "approve", run_id, "--reject", "--comment", "one more pair of eyes"], env
            )
            assert sent_back.returncode == 0, sent_back.stderr
            time.sleep(3)
            wait_for_state(api, run_id, {"PAUSED"})  # resumed, re-ran from the top, waits at round 2
            approved = run(
                ["loopline", "approve", run_id, "--comment", "looks right", "--reviewer", "ada"], env
            )
            assert approved.returncode == 0, approved.stderr
            wait_for_state(api, run_id, {"COMPLETED"}, timeout=900)
        finally:
            annotator.terminate()
            annotator.wait(timeout=30)

        late = run(["loopline", "approve", run_id], env)
        assert late.returncode == 1 and "not waiting for approval" in late.stderr

        labels = sorted((home / "data" / "labels").glob("*.jsonl"))
        assert len(labels) == 1
        rows = read_labeled_manifest(LocalStore(home / "data"), labels[0].stem)
        truth = json.loads((home / "demo" / "ground_truth.json").read_text())
        assert 140 <= len(rows) <= 150  # ties go back for review; the rest are labeled
        assert sum(str(truth[r.content_hash]) == r.label for r in rows) >= 0.9 * len(rows)
        assert all(len(r.annotations) == 3 for r in rows)  # the rejection asked for a third annotator
        assert {r.split for r in rows} == {"train", "val", "test"}

        token = (home / "secrets" / "label-studio-token").read_text().strip()
        ls = f"http://127.0.0.1:{env['LOOPLINE_LABEL_STUDIO_PORT']}"
        projects = httpx.get(f"{ls}/api/projects", headers={"Authorization": f"Token {token}"}).json()[
            "results"
        ]
        assert len(projects) == 1 and projects[0]["task_number"] == 150  # reruns duplicated nothing

        artifacts = {a["key"]: a for a in httpx.post(f"{api}/artifacts/latest/filter", json={}).json()}
        assert {"label-agreement", "label-counts", "label-review", "label-progress"} <= set(artifacts)
        assert "ada" in artifacts["label-review"]["data"] and "approve" in artifacts["label-review"]["data"]

        # Training ran once, as a run of the train-model/local deployment linked to the pipeline run.
        children = httpx.post(
            f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": ["train-model"]}}}
        ).json()
        assert len(children) == 1, [c["name"] for c in children]
        child = children[0]
        deployment = httpx.get(f"{api}/deployments/name/train-model/local").json()
        assert child["deployment_id"] == deployment["id"] and child["state_type"] == "COMPLETED"
        assert child["parent_task_run_id"] is not None  # shown inside the pipeline run
        assert list((home / "results").iterdir())  # its result, read back by the pipeline from there

        client = mlflow.MlflowClient(f"http://127.0.0.1:{env['LOOPLINE_MLFLOW_PORT']}")
        experiment = client.get_experiment_by_name("e2e")
        parents = client.search_runs([experiment.experiment_id], "tags.`optuna.study` != ''")
        assert len(parents) == 1
        parent = parents[0]
        assert parent.data.params["labeled_version"] == labels[0].stem
        assert parent.data.tags["prefect.flow_run_id"] == child["id"]
        assert parent.data.tags["label_studio.project_id"] == str(projects[0]["id"])
        assert parent.data.metrics["test_accuracy"] > 0.3 and parent.data.metrics["onnx_parity_ok"] == 1.0
        artifacts = {a["key"] for a in httpx.post(f"{api}/artifacts/filter", json={}).json()}
        assert {"train-trials", "train-best-trial", "train-mlflow-run"} <= artifacts
