"""The whole pipeline, collect → label → train → register → deploy → A/B test, through `prefect deployment
run` and a worker: the demo annotator answers in a real Label Studio, the label reviews are sent by
`loopline approve` (one rejection, then an approval), training is dispatched to the `train-model/local`
deployment with `run_deployment`, the model review is approved with `loopline approve`, version 1 is
deployed to the local champion server; in round 2 version 2 is deployed beside it as challenger, A/B tested
through the router on the demo traffic client's requests (a short ramp), promoted after `loopline approve`,
and served by the champion's server; `loopline services down` stops everything."""

import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from loopline.data.collect import collect
from loopline.data.labeled import read_labeled_manifest
from loopline.data.manifest import read_manifest
from loopline.data.sources import LocalFolderSource
from loopline.data.store import LocalStore
from loopline.labeling.studio import LabelStudio
from loopline.rollout.store import EventStore
from loopline.services.process import free_port, port_in_use
from tests.platform import BIN, ROOT, run, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]  # a guard against a hang (a loaded run took 1013 s)
DIGITS = [str(d) for d in range(10)]  # the demo data's label set
# One trial per round (HPO has its own tests): a space where any sample trains a usable model in time
ONE_TRIAL_SPACE = {"optimizers": ["adamw"], "lr": {"low": 0.002, "high": 0.01, "log": True}}


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


def start_demo_annotator(home: Path, env: dict[str, str]) -> subprocess.Popen:  # type: ignore[type-arg]
    """The DEMO ANNOTATOR: answers every open Label Studio task from the demo ground truth."""
    truth = str(home / "demo" / "ground_truth.json")
    return subprocess.Popen(
        [
            str(BIN / "loopline"),
            "demo-annotate",
            truth,
            "--seconds",
            "900",
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


def start_pipeline(params: dict, env: dict[str, str]) -> str:  # type: ignore[type-arg]
    """`prefect deployment run loopline-pipeline/local` with ``params``; returns the flow run id."""
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
    return re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)  # type: ignore[union-attr]


def wait_for_pause(api: str, run_id: str, key_prefix: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flow_run = wait_for_state(api, run_id, {"PAUSED"}, timeout)
        if (flow_run["state"]["state_details"].get("pause_key") or "").startswith(key_prefix):
            return
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} did not pause at {key_prefix}*")


def test_two_rounds_of_the_loop(tmp_path: Path) -> None:
    import mlflow

    home = tmp_path / "home"
    serve_port = free_port()
    served = f"http://127.0.0.1:{serve_port}/v2/models/loopline-classifier"
    router_port = free_port()
    ports = {
        "LOOPLINE_SERVE_PORT_CHAMPION": str(serve_port),
        "LOOPLINE_SERVE_PORT_CHALLENGER": str(free_port()),
        "LOOPLINE_ROUTER_PORT": str(router_port),
    }
    with running_platform(home, ports) as env:
        assert run(["loopline", "deploy"], env).returncode == 0
        assert run(["loopline", "demo-data", str(home / "demo")], env).returncode == 0
        annotator = start_demo_annotator(home, env)
        try:
            params = {
                "collect": {"source": str(home / "demo" / "round-1")},
                "label": {"labels": DIGITS, "budget": 150, "poll_seconds": 1},
                "train": {
                    "epochs": 15,
                    "n_trials": 1,
                    "experiment": "e2e",
                    "search_space": ONE_TRIAL_SPACE,
                },
                "train_deployment": "train-model/local",
            }
            run_id = start_pipeline(params, env)
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
            wait_for_pause(api, run_id, "model-review-")  # trained, registered, gated: waits for a person
            shipped = run(["loopline", "approve", run_id, "--comment", "ship it", "--reviewer", "grace"], env)
            assert shipped.returncode == 0, shipped.stderr
            wait_for_state(api, run_id, {"COMPLETED"}, timeout=600)
        finally:
            annotator.terminate()
            annotator.wait(timeout=30)

        late = run(["loopline", "approve", run_id], env)
        assert late.returncode == 1 and "not waiting for approval" in late.stderr

        # Collect: only the real digits, versioned; the same collection done directly changes nothing.
        data = LocalStore(home / "data")
        manifests = sorted((home / "data" / "manifests").glob("*.jsonl"))
        assert len(manifests) == 1
        collected = read_manifest(data, manifests[0].stem)
        truth = json.loads((home / "demo" / "ground_truth.json").read_text())
        assert {r.content_hash for r in collected} <= set(truth)  # no corrupt file got in
        assert all(r.source_label is None for r in collected)  # the pipeline never sees the labels
        names = {Path(r.source_uri).name for r in collected}
        assert not names & {"empty.png", "truncated.png", "notes.png", "tiny.png", "banner.png"}
        assert not any(n.startswith("scan-") for n in names)  # near duplicates left out
        direct = collect(LocalFolderSource(home / "demo" / "round-1"), data)
        assert direct.version == manifests[0].stem and not direct.manifest_written
        assert direct.images_written == 0
        assert direct.quarantined == {
            "extreme_aspect_ratio": 1,
            "not_an_image": 1,
            "too_small": 1,
            "truncated": 1,
            "zero_byte": 1,
        }

        labels = sorted((home / "data" / "labels").glob("*.jsonl"))
        assert len(labels) == 1
        rows = read_labeled_manifest(data, labels[0].stem)
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
        links = httpx.post(
            f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": ["train-mlflow-run"]}}}
        ).json()
        assert links and all(
            f"/experiments/{experiment.experiment_id}/runs/{parent.info.run_id}" in a["data"] for a in links
        )

        # Registered once, with lineage; approved by grace through `loopline approve`: the champion.
        versions = client.search_model_versions("name = 'loopline-classifier'")
        assert len(versions) == 1  # the reruns after each resume registered nothing twice
        version = versions[0]
        assert version.run_id == parent.info.run_id
        assert version.tags["dataset_version"] == parent.data.tags["dataset_version"]
        assert version.tags["label_studio.export_id"] == parent.data.tags["label_studio.export_id"]
        assert version.tags["prefect.flow_run_id"] == run_id and len(version.tags["git.commit"]) == 40
        assert version.tags["onnx.parity_ok"] == "True" and version.description.startswith(
            "# loopline-classifier"
        )
        assert version.tags["review.decision"] == "approved" and version.tags["review.reviewer"] == "grace"
        assert client.get_model_version_by_alias("loopline-classifier", "champion").version == version.version
        assert client.get_model_version("loopline-classifier", version.version).aliases == ["champion"]
        audit = json.loads(version.tags["audit.champion"])
        assert audit["who"] == "grace" and audit["why"] == "ship it" and audit["from_version"] is None
        assert {"model-evaluation", "model-review", "model-aliases", "model-deployment"} <= artifacts
        # Deployed after its smoke test: the champion's server answers as version 1, recorded on it.
        assert httpx.get(served).headers["X-Model-Version"] == f"loopline-classifier/{version.version}"
        assert version.tags["deploy.champion.url"] == f"http://127.0.0.1:{serve_port}"
        assert version.tags["deploy.champion.state"] == "serving"
        assert {"collect-counts", "collect-summary", "collect-progress"} <= artifacts

        # Round 2: more images; the champion chooses what to label (active learning) and pre-annotates it;
        # the challenger is gated against the champion (default rules) and approved; it is deployed beside
        # the champion and A/B tested on the demo client's traffic through the router (a short ramp), and
        # a person approves the promotion.
        annotator = start_demo_annotator(home, env)
        traffic = None
        try:
            round_two = {
                "collect": {"source": str(home / "demo" / "round-2")},
                "label": {"labels": DIGITS, "budget": 100, "poll_seconds": 1, "auto_approve": True},
                "train": {"epochs": 15, "n_trials": 1, "experiment": "e2e", "search_space": ONE_TRIAL_SPACE},
                "train_deployment": "train-model/local",
                "deploy": {"promote_directly": False},
                "rollout": {
                    "ramp": {"min_step_seconds": 3, "min_step_requests": 30},
                    "statistics": {"margin": 0.1, "min_feedback_per_arm": 40, "min_requests_per_arm": 40,
                                   "latency_quantile": 0.9,
                                   # four suites at once in CI: latency is noise
                                   "latency_ratio": 3.0, "latency_slack_ms": 100, "step_up_on": "no_harm",
                                   "tune_feedback": 600,
                                   "tune_requests": 1500},
                    "interval_seconds": 3,
                    "grace_seconds": 2,
                },
            }  # fmt: skip
            second = start_pipeline(round_two, env)
            wait_for_pause(api, second, "model-review-")
            promoted = run(["loopline", "approve", second, "--comment", "round 2", "--reviewer", "ada"], env)
            assert promoted.returncode == 0, promoted.stderr
            traffic = subprocess.Popen(
                [str(BIN / "loopline"), "demo-traffic", "--rate", "30", "--seconds", "600",
                 "--feedback-delay", "0.5"],
                env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            wait_for_pause(api, second, "rollout-", timeout=600)
            ab = run(["loopline", "approve", second, "--comment", "ramp held", "--reviewer", "grace"], env)
            assert ab.returncode == 0, ab.stderr
            wait_for_state(api, second, {"COMPLETED"}, timeout=600)
        finally:
            annotator.terminate()
            annotator.wait(timeout=30)
            if traffic is not None:
                traffic.terminate()
                print("demo traffic:", traffic.communicate(timeout=30)[0][-2000:])

        manifests = {p.stem for p in (home / "data" / "labels").glob("*.jsonl")} - {labels[0].stem}
        assert len(manifests) == 1
        merged = {r.content_hash: r for r in read_labeled_manifest(data, manifests.pop())}
        assert all(merged[r.content_hash].split == r.split for r in rows)  # round 1 carried, splits frozen
        assert 225 <= len(merged) <= 250
        projects = httpx.get(f"{ls}/api/projects", headers={"Authorization": f"Token {token}"}).json()[
            "results"
        ]
        newest = max(projects, key=lambda p: p["id"])
        with LabelStudio(ls, token) as studio:
            tasks = studio.tasks_with_annotations(newest["id"])
        assert len(tasks) == 100  # the budget, chosen by the champion
        assert all(t["predictions"][0]["model_version"] == "loopline-classifier v1" for t in tasks)

        v2 = client.get_model_version_by_alias("loopline-classifier", "champion")
        assert v2.version != version.version and v2.tags["review.reviewer"] == "ada"
        assert v2.tags["dataset_version"] != version.tags["dataset_version"]
        assert v2.tags["labeled_version"] in {p.stem for p in (home / "data" / "labels").glob("*.jsonl")}
        moved = json.loads(v2.tags["audit.champion"])  # the A/B stage's promotion, approved by grace
        assert (moved["from_version"], moved["to_version"], moved["who"]) == (
            version.version,
            v2.version,
            "grace",
        )
        assert moved["why"] == f"promoted after the A/B test loopline-classifier-v{v2.version}"
        assert [
            c["alias"]
            for c in map(
                json.loads,
                (
                    v
                    for k, v in sorted(client.get_registered_model("loopline-classifier").tags.items())
                    if k.startswith("audit.")
                ),
            )
        ] == ["challenger", "champion", "challenger", "challenger", "champion", "challenger"]
        keys = {a["key"] for a in httpx.post(f"{api}/artifacts/filter", json={}).json()}
        assert "label-selection" in keys

        # Version 2 replaced version 1 in the champion's server (hot reload after its smoke test).
        assert httpx.get(served).headers["X-Model-Version"] == f"loopline-classifier/{v2.version}"

        # The A/B test: the ramp walked step by step on live traffic, a person approved, v2 took all traffic
        # and then the champion's server; the challenger's server is gone, the router answers with v2.
        store = EventStore(f"sqlite:///{home / 'events.db'}")
        experiment = store.get_experiment(f"loopline-classifier-v{v2.version}")
        assert experiment is not None and experiment.state.status == "stopped"
        decisions = store.list_decisions(experiment.state.name)
        weights = [d.weight_after for d in decisions]
        assert weights[0] == 0.1 and 1.0 in weights and weights[-1] == 0.0
        assert [w for i, w in enumerate(weights) if i == 0 or w != weights[i - 1]] == [
            0.1,
            0.5,
            0.8,
            1.0,
            0.0,
        ]
        assert any(d.verdict == "promote" for d in decisions)
        arms = store.arm_summaries(experiment.state.name)
        assert arms["challenger"].requests > 100 and arms["challenger"].feedback > 40
        # a challenger starved of CPU (four suites on two cores) may miss the router's deadline a few times:
        # the router then answers with the champion (fallback) and counts an error against the challenger
        assert arms["challenger"].errors <= 0.01 * arms["challenger"].requests
        picture = (home / "demo" / "round-2").glob("img-*.png").__next__().read_bytes()
        routed = httpx.post(f"http://127.0.0.1:{router_port}/v1/predict", content=picture,
                            headers={"Content-Type": "image/png", "X-User-Id": "e2e"})  # fmt: skip
        assert routed.status_code == 200 and routed.headers["X-Variant"] == "champion"
        assert routed.headers["X-Model-Version"] == f"loopline-classifier/{v2.version}"
        assert not port_in_use("127.0.0.1", int(ports["LOOPLINE_SERVE_PORT_CHALLENGER"]))
        assert {"rollout-report", "rollout-review"} <= keys
        report = httpx.post(
            f"{api}/artifacts/latest/filter", json={"artifacts": {"key": {"any_": ["rollout-report"]}}}
        ).json()[0]["data"]
        assert "always-valid interval" in report and "data:image/png;base64," in report
        listed = run(["loopline", "deployments"], env)
        assert listed.returncode == 0 and f"v{v2.version}" in listed.stdout, listed.stdout + listed.stderr
        # which labels, and whose, trained the model answering this request (the router has flushed it)
        traced = run(["loopline", "lineage", routed.headers["X-Request-Id"], "--json"], env)
        assert traced.returncode == 0, traced.stdout + traced.stderr
        chain = json.loads(traced.stdout)
        assert chain["complete"] and chain["model"]["version"] == v2.version
        assert chain["labels"]["version"] == v2.tags["labeled_version"] and chain["labels"]["annotators"]
        assert len(chain["datasets"]) == 2 and chain["images"]  # both rounds' images, by content hash
        loop = run(["loopline", "status"], env)  # the whole loop on one screen
        assert loop.returncode == 0, loop.stdout + loop.stderr
        assert re.search(rf"champion +v{v2.version} +serving +100% of users", loop.stdout), loop.stdout
        assert f"A/B {experiment.state.name}: stopped" in loop.stdout
        assert "prefect-server healthy" in loop.stdout
    assert not port_in_use("127.0.0.1", serve_port)  # `loopline services down` stopped the model server
