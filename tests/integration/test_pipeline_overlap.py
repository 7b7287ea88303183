"""Overlapping scheduled runs of `loopline-pipeline/nightly`, deployed from prefect.yaml and run by a real
worker on a real Prefect server: while another pipeline run waits at its review, two runs started together
queue one behind the other (the deployment's concurrency limit) and each stops before collecting — nothing
labeled or trained twice; once that round is over, a run on the unchanged source stops after collect."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pytest
from prefect.filesystems import LocalFileSystem
from prefect.settings import PREFECT_API_URL, temporary_settings

from loopline.data.collect import collect
from loopline.data.demo import write_demo_data
from loopline.data.sources import LocalFolderSource
from loopline.data.store import LocalStore
from loopline.services import process
from loopline.services.deploy import deploy_env
from loopline.services.platform import ensure_work_pools, service_specs
from loopline.services.standalone import running_service
from tests.platform import ROOT, run

pytestmark = pytest.mark.integration


def wait_for(api: str, run_id: str, states: set[str], timeout: float = 240) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flow_run = httpx.get(f"{api}/flow_runs/{run_id}").json()
        if flow_run["state_type"] in states:
            return flow_run  # type: ignore[no-any-return]
        time.sleep(1)
    raise AssertionError(f"{run_id} did not reach {states}: {flow_run['state']}")


def start_nightly(env: dict[str, str]) -> str:
    started = run(["prefect", "deployment", "run", "loopline-pipeline/nightly"], env)
    assert started.returncode == 0, started.stdout + started.stderr
    return re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)  # type: ignore[union-attr]


def state_names(api: str, run_id: str) -> list[str]:
    states = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}).json()
    return [s["name"] for s in states]


def test_overlapping_nightly_runs_wait_then_stop_and_never_label_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = write_demo_data(tmp_path / "demo", rounds=1, limit=60)
    data, tracking = tmp_path / "data", f"sqlite:///{tmp_path / 'mlflow.db'}"
    for key, value in {
        "LOOPLINE_DATA_ROOT": str(data),
        "LOOPLINE_MLFLOW_TRACKING_URI": tracking,  # the worker's flow runs inherit these
        "LOOPLINE_INCOMING_SOURCE": str(demo.rounds[0]),
    }.items():
        monkeypatch.setenv(key, value)
    with running_service("prefect-server", tmp_path / "home", ROOT) as (_, settings):
        api = settings.resolved_prefect_api_url
        env = deploy_env(settings)
        ensure_work_pools(settings)
        with temporary_settings({PREFECT_API_URL: api}):  # where the worker's runs keep their results
            block = settings.result_storage_block.partition("/")[2]
            LocalFileSystem(basepath=str(tmp_path / "results")).save(block, overwrite=True)
        deployed = run(["prefect", "--no-prompt", "deploy", "--name", "nightly"], env)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        worker = next(s for s in service_specs(settings) if s.name == "prefect-worker")
        waiting = subprocess.Popen(
            [sys.executable, "tests/integration/automation_actors.py", "mid-round"],
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT)},
        )
        process.start(worker)
        try:
            deadline = time.monotonic() + 60
            paused: list[dict] = []  # type: ignore[type-arg]
            while not paused and time.monotonic() < deadline:
                paused = httpx.post(
                    f"{api}/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}}
                ).json()
                time.sleep(1)
            [in_flight] = paused

            first, second = start_nightly(env), start_nightly(env)
            done = [wait_for(api, run_id, {"COMPLETED", "FAILED", "CRASHED"}) for run_id in (first, second)]
            for flow_run in done:
                assert flow_run["state_type"] == "COMPLETED", flow_run["state"]
                assert "waits for a person" in flow_run["state"]["message"]
                assert in_flight["id"] in flow_run["state"]["message"]
            # one waited for the other's slot (ENQUEUE), and neither collected anything
            assert any("AwaitingConcurrencySlot" in state_names(api, r) for r in (first, second))
            assert not (data / "manifests").exists()

            # The round ends; the source has not changed since a model was trained on it.
            resumed = httpx.post(f"{api}/flow_runs/{in_flight['id']}/resume", json={})
            assert resumed.json()["status"] == "ACCEPT", resumed.text
            assert waiting.wait(60) == 0
            version = collect(LocalFolderSource(demo.rounds[0]), LocalStore(data)).version
            client = mlflow.MlflowClient(tracking)
            client.create_registered_model("loopline-classifier")
            run_id = client.create_run(client.create_experiment("overlap")).info.run_id
            client.create_model_version(
                "loopline-classifier",
                f"runs:/{run_id}/model",
                run_id,
                tags={"dataset_version": version, "prefect.flow_run_id": in_flight["id"]},
            )
            started = time.monotonic()
            third = wait_for(api, start_nightly(env), {"COMPLETED", "FAILED", "CRASHED"})
            assert third["state_type"] == "COMPLETED", third["state"]
            assert "Nothing new to do" in third["state"]["message"], third["state"]["message"]
            assert time.monotonic() - started < 120
            assert not list(data.glob("labels/*.jsonl"))  # no labeled manifest: nothing was labeled
        finally:
            process.stop(worker)
            if waiting.poll() is None:
                waiting.kill()
