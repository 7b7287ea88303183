"""The team tier: the same two-round pipeline, through deploy and the A/B test, with every service on
PostgreSQL and an S3 API server (`loopline services up --tier team`), changed by configuration alone. It
runs the object-detection loop (`task_type="detection"`; the laptop-tier e2e runs classification): scenes
of digits boxed by three DEMO ANNOTATORS, consensus boxes, a torchvision detector scored by COCO mAP and
exported to ONNX, its boxes as round 2's pre-annotations, a mAP gate with a paired bootstrap, and an A/B
test judged on the box F1 of the DEMO TRAFFIC CLIENT's feedback.

Prefect's server, MLflow's backend store, Label Studio, the Optuna studies and the A/B event store each
use their own PostgreSQL database; the data root, MLflow's artifacts and Prefect's results live in one
bucket. Nothing lands in a SQLite file or a local data folder. PostgreSQL is restarted while round 1 waits
for its labels, and the round goes on without duplicating a project, a task or a model version. While
round 1 waits for a person's review, two more runs started at once on the same source queue one behind the
other (the deployment's concurrency limit) and each stops before collecting: nothing labeled or trained
twice. Round 2's A/B test is decided within a minute (the demo's auto-approval when undecided)."""

import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from loopline.data.labeled import read_labeled_manifest
from loopline.data.s3 import make_s3_client
from loopline.data.store import S3Store
from loopline.labeling.studio import LabelStudio
from loopline.rollout.store import EventStore
from loopline.services import process
from loopline.services.credentials import label_studio_credentials
from loopline.services.process import free_port
from loopline.services.team import team_specs
from loopline.settings import TEAM_BUCKET, Settings
from tests.e2e.test_pipeline import DIGITS, start_demo_annotator, start_pipeline, wait_for_state
from tests.platform import BIN, ROOT, run, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]  # a guard against a hang (a loaded run took 1013 s)
MODEL = "loopline-detector"
# one trial a round (HPO has its own tests): SSDlite resizing to 128 px, AdamW, batches of 4, 20 epochs (it
# learns the demo's digits from scratch in a minute or two of CPU)
DETECTOR_SPACE = {
    "optimizers": ["adamw"],
    "lr": {"low": 0.012, "high": 0.014, "log": True},
    "detector_batch_sizes": [4],
    "detector_image_sizes": [128],
}


def box_labels(budget: int, **more: object) -> dict[str, object]:
    """The label stage's parameters for boxes: three annotators an image, consensus by majority."""
    return {
        "task_type": "detection",
        "labels": DIGITS,
        "budget": budget,
        "annotators_per_task": 3,
        "max_annotators_per_task": 3,
        "min_box_f1": 0.5,
        "poll_seconds": 1,
        **more,
    }


def restart_postgres(settings: Settings) -> None:
    """Stop the tier's PostgreSQL (fast shutdown: every connection is cut) and start it again."""
    spec = next(s for s in team_specs(settings) if s.name == "postgres")
    assert process.stop(spec)
    time.sleep(3)  # the services see it gone for a few seconds
    process.start(spec)


def wait_for_artifact(api: str, key: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.post(
            f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}}, timeout=30
        ).json():
            return
        time.sleep(1)
    raise AssertionError(f"no artifact {key!r} after {timeout:.0f} s")


def state_names(api: str, run_id: str) -> list[str]:
    states = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30).json()
    return [s["name"] for s in states]


def test_two_rounds_on_postgresql_and_s3(tmp_path: Path) -> None:
    import mlflow

    home = tmp_path / "home"
    router_port = free_port()
    tier = {
        "LOOPLINE_TIER": "team",
        "LOOPLINE_POSTGRES_PORT": str(free_port()),
        "LOOPLINE_S3_PORT": str(free_port()),
        "LOOPLINE_SERVE_PORT_CHAMPION": str(free_port()),
        "LOOPLINE_SERVE_PORT_CHALLENGER": str(free_port()),
        "LOOPLINE_ROUTER_PORT": str(router_port),
    }
    started = time.monotonic()
    with running_platform(home, tier) as env:
        print(f"services up: {time.monotonic() - started:.0f} s")
        settings = Settings(
            home=home,
            tier="team",
            postgres_port=int(tier["LOOPLINE_POSTGRES_PORT"]),
            s3_port=int(tier["LOOPLINE_S3_PORT"]),
        )
        statuses = run(["loopline", "services", "status"], env)
        assert re.search(r"postgres +healthy", statuses.stdout) and re.search(r"s3 +healthy", statuses.stdout)
        assert run(["loopline", "deploy"], env).returncode == 0
        made = run(["loopline", "demo-data", str(home / "demo"), "--task-type", "detection"], env)
        assert made.returncode == 0, made.stdout + made.stderr
        api = env["PREFECT_API_URL"]
        round_one = {
            "collect": {"source": str(home / "demo" / "round-1")},
            "label": box_labels(60),  # a person approves the labels
            "train": {"epochs": 20, "n_trials": 1, "experiment": "team", "search_space": DETECTOR_SPACE},
            "train_deployment": "train-model/local",
            "register": {
                "model_name": MODEL,
                "auto_approve": True,
                "detection_gate": {"resamples": 100, "min_gain": -0.5},
            },
        }
        first = start_pipeline(round_one, env)
        wait_for_artifact(api, "label-progress")  # round 1 waits for its labels: restart PostgreSQL then
        print(f"labeling: {time.monotonic() - started:.0f} s")
        annotator = start_demo_annotator(home, env)
        try:
            restart_postgres(settings)
            wait_for_state(api, first, {"PAUSED"}, timeout=600)  # labeled, waiting for a person
        finally:
            annotator.terminate()
            annotator.wait(timeout=30)
        # Two more pipelines at once on the same source while round 1 waits for its review: the deployment
        # runs one at a time (the other waits for the slot) and each stops before collecting.
        overlapping = [start_pipeline(round_one, env), start_pipeline(round_one, env)]
        for flow_run in (wait_for_state(api, r, {"COMPLETED"}) for r in overlapping):
            assert (
                "waits for a person" in flow_run["state"]["message"] and first in flow_run["state"]["message"]
            )
        assert any("AwaitingConcurrencySlot" in state_names(api, r) for r in overlapping)
        approved = run(
            ["loopline", "approve", first, "--comment", "labels look right", "--reviewer", "ada"], env
        )
        assert approved.returncode == 0, approved.stderr
        wait_for_state(api, first, {"COMPLETED"}, timeout=600)

        print(f"round 1 done: {time.monotonic() - started:.0f} s")
        # Round 2: active learning with the champion, a challenger, the A/B test through the router with
        # the demo client's traffic, decided without a person (demo only).
        annotator = start_demo_annotator(home, env)
        traffic = None
        try:
            round_two = {
                **round_one,
                "collect": {"source": str(home / "demo" / "round-2")},
                "label": box_labels(25, auto_approve=True, preannotation_min_score=0.05),
                "deploy": {"promote_directly": False},
                "rollout": {
                    "ramp": {"min_step_seconds": 2, "min_step_requests": 20, "max_duration_seconds": 60},
                    "statistics": {"margin": 0.5, "min_feedback_per_arm": 30, "min_requests_per_arm": 30,
                                   "latency_quantile": 0.9,
                                   # four suites at once in CI: latency is noise
                                   "latency_ratio": 3.0, "latency_slack_ms": 100, "step_up_on": "no_harm",
                                   "tune_feedback": 400,
                                   "tune_requests": 1000},
                    "interval_seconds": 2,
                    "grace_seconds": 2,
                    "auto_approve": True,
                },
            }  # fmt: skip
            third = start_pipeline(round_two, env)
            traffic = subprocess.Popen(
                [str(BIN / "loopline"), "demo-traffic", "--task-type", "detection", "--rate", "15",
                 "--seconds", "900", "--feedback-delay", "0.5"],
                env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            wait_for_state(api, third, {"COMPLETED"}, timeout=900)
        finally:
            annotator.terminate()
            annotator.wait(timeout=30)
            if traffic is not None:
                traffic.terminate()
                print("demo traffic:", traffic.communicate(timeout=30)[0][-2000:])

        print(f"round 2 done: {time.monotonic() - started:.0f} s")
        # Nothing went to a SQLite file or a local folder.
        assert not (home / "data").exists() and not (home / "events.db").exists()
        assert not (home / "mlflow" / "mlflow.db").exists() and not (home / "optuna.db").exists()
        assert not list(home.glob("label-studio/data/*.sqlite3")) and not list(home.glob("prefect/*.db"))

        s3 = make_s3_client(settings)
        store = S3Store(f"s3://{TEAM_BUCKET}/data", s3)
        assert len(store.list_keys("manifests/")) == 2  # two rounds, the concurrent start added none
        labeled = sorted(k for k in store.list_keys("labels/") if k.endswith(".jsonl"))
        assert len(labeled) == 2
        coco = json.loads(store.get_bytes(labeled[0].replace(".jsonl", ".coco.json")))  # consensus boxes
        assert coco["images"] and {c["name"] for c in coco["categories"]} == set(DIGITS)
        rows = [read_labeled_manifest(store, Path(key).stem) for key in labeled]
        assert sorted(len(r) for r in rows) == [pytest.approx(60, abs=6), pytest.approx(85, abs=9)]
        truth = json.loads((home / "demo" / "ground_truth.json").read_text())
        latest = max(rows, key=len)
        assert all(r.boxes is not None for r in latest) and any(not r.boxes for r in latest)  # negatives
        found = sum(len(r.boxes or ()) for r in latest)
        true = sum(len(truth[r.content_hash]["boxes"]) for r in latest)
        assert 0.85 * true <= found <= 1.1 * true  # consensus of three annotators who miss and jitter
        objects = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=TEAM_BUCKET)
                   for o in page.get("Contents", [])}  # fmt: skip
        assert any(k.startswith("mlflow/") and k.endswith("model.onnx") for k in objects)  # MLflow artifacts
        assert any(k.startswith("results/") for k in objects)  # the training run's result, across runs

        client = mlflow.MlflowClient(f"http://127.0.0.1:{env['LOOPLINE_MLFLOW_PORT']}")
        versions = client.search_model_versions(f"name = '{MODEL}'")
        assert sorted(v.version for v in versions) == ["1", "2"]  # the restart duplicated nothing
        champion = client.get_model_version_by_alias(MODEL, "champion")
        assert champion.version in {"1", "2"}
        for version in ("1", "2"):  # COCO mAP on the test split, ONNX parity
            trained = client.get_run(client.get_model_version(MODEL, version).run_id).data.metrics
            print(f"v{version}: test mAP {trained['test_map']:.3f}, mAP@.5 {trained['test_map50']:.3f}")
            assert trained["test_map50"] > 0.02 and trained["onnx_parity_ok"] == 1.0
        assert "training.test_map" in client.get_model_version(MODEL, "2").tags

        token = label_studio_credentials(settings).token.get_secret_value()
        assert token.count(".") == 2  # a personal access token (JWT): the server has legacy tokens off
        with LabelStudio(f"http://127.0.0.1:{env['LOOPLINE_LABEL_STUDIO_PORT']}", token) as studio:
            projects = studio.request("GET", "/api/projects")["results"]
            assert len(projects) == 2 and sorted(p["task_number"] for p in projects) == [25, 60]
            tasks = studio.tasks_with_annotations(max(p["id"] for p in projects))
        predicted = [t for t in tasks if t.get("predictions")]  # round 2: the champion's boxes
        assert predicted and all(t["predictions"][0]["model_version"] == f"{MODEL} v1" for t in predicted)
        assert all(r["type"] == "rectanglelabels" for t in predicted for r in t["predictions"][0]["result"])

        events = EventStore(settings.resolved_event_store_url)
        experiment = events.get_experiment(f"{MODEL}-v2")
        assert experiment is not None and experiment.state.status in {"stopped", "rolled_back"}
        weights = [d.weight_after for d in events.list_decisions(experiment.state.name)]
        assert weights[0] == 0.1 and weights[-1] == 0.0, weights
        promoted = experiment.state.status == "stopped"  # else rolled back: v1 stays the champion
        assert promoted == (champion.version == "2"), (experiment.state, weights)
        arms = events.arm_summaries(experiment.state.name)
        assert arms["challenger"].requests > 20 and arms["champion"].requests > 20
        assert 0 < arms["champion"].correct <= arms["champion"].feedback  # box F1 per request, summed

        with psycopg.connect(settings.team_database_url("optuna").replace("+psycopg", "")) as conn:
            studies = conn.execute("SELECT count(*) FROM studies").fetchone()
        assert studies is not None and studies[0] == 2  # one study per round, on PostgreSQL
        picture = next((home / "demo" / "round-2").glob("img-*.png")).read_bytes()
        routed = httpx.post(f"http://127.0.0.1:{router_port}/v1/predict", content=picture,
                            headers={"Content-Type": "image/png", "X-User-Id": "team"})  # fmt: skip
        assert routed.status_code == 200
        time.sleep(2)  # the router writes its events in batches, every half second
        traced = run(["loopline", "lineage", routed.headers["X-Request-Id"], "--json"], env)
        assert traced.returncode == 0, traced.stdout + traced.stderr
        chain = json.loads(traced.stdout)
        assert chain["complete"] and chain["model"]["version"] == champion.version
        loop = run(["loopline", "status", "--model", MODEL], env)
        assert loop.returncode == 0 and "postgres" in loop.stdout, loop.stdout + loop.stderr
        # the whole configuration checks out
        doctor = run(["loopline", "doctor", "--json", "--model", MODEL], env)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        checks = json.loads(doctor.stdout)
        print(checks)
