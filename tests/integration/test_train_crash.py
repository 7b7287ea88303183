"""Kill the train-model flow mid-way (SIGKILL: no clean-up runs), rerun it, and it continues from the last
checkpoint to the same result as an uninterrupted run. Real Prefect and MLflow servers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from loopline.data.demo import labeled_digit_rows
from loopline.data.labeled import write_labeled_manifest
from loopline.data.store import LocalStore
from loopline.training.checkpoint import load_checkpoint
from tests.platform import ROOT

pytestmark = pytest.mark.integration

PARAMS = {
    "epochs": 4,
    "n_trials": 2,
    "pruner": "none",
    "trial_grace_seconds": 4,
    "search_space": {"lr": {"low": 0.001, "high": 0.01}, "batch_sizes": [32], "optimizers": ["adamw"]},
}


@pytest.fixture(scope="module")
def servers(prefect_api: str, mlflow_server: str) -> dict[str, str]:
    """The session's Prefect and MLflow servers, as the training processes' environment."""
    return {"PREFECT_API_URL": prefect_api, "LOOPLINE_MLFLOW_TRACKING_URI": mlflow_server}


def start(home: Path, labels: dict, servers: dict[str, str]) -> subprocess.Popen:  # type: ignore[type-arg]
    """Each home tracks into its own experiment: a finished run there would otherwise be reused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "PREFECT_"))}
    env.update(servers, LOOPLINE_HOME=str(home), PREFECT_HOME=str(home / "prefect"))
    command = [sys.executable, "-m", "tests.integration.train_runner", json.dumps(labels)]
    command.append(json.dumps(PARAMS | {"experiment": home.name}))
    return subprocess.Popen(
        [*command, str(home / "result.json")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, home: Path) -> dict:  # type: ignore[type-arg]
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return json.loads((home / "result.json").read_text())  # type: ignore[no-any-return]


def test_a_killed_training_resumes_to_the_same_result(tmp_path: Path, servers: dict[str, str]) -> None:
    import mlflow

    store = LocalStore(tmp_path / "data")
    version, uri = write_labeled_manifest(store, labeled_digit_rows(store, 300, dataset_version="dv"))
    labels = {
        "version": version,
        "manifest_uri": uri,
        "data_root": str(tmp_path / "data"),
        "dataset_version": "dv",
        "project_id": 0,
        "export_id": 0,
        "images": 300,
        "kappa": None,
    }
    calm, crashed = tmp_path / "crash-test-calm", tmp_path / "crash-test-killed"
    expected = finish(start(calm, labels, servers), calm)

    victim = start(crashed, labels, servers)
    second_trial = crashed / "training" / version / "trial-1"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = load_checkpoint(second_trial) if (second_trial / "last.pt").exists() else None
        if state is not None and state["epoch"] >= 1:  # two of four epochs done in the second trial
            break
        assert victim.poll() is None, victim.stderr.read()[-3000:]  # type: ignore[union-attr]
        time.sleep(0.1)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (crashed / "result.json").exists()
    time.sleep(PARAMS["trial_grace_seconds"] + 2)  # the dead trial's heartbeat goes stale

    result = finish(start(crashed, labels, servers), crashed)
    resumed = load_checkpoint(second_trial)
    assert resumed is not None and resumed["result"].resumed_from is not None  # continued, not restarted
    for name in ("val_accuracy", "test_accuracy", "labels"):
        assert result[name] == expected[name]
    for trial in ("trial-0", "trial-1"):
        a = torch.load(calm / "training" / version / trial / "best.pt", weights_only=True)
        b = torch.load(crashed / "training" / version / trial / "best.pt", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit

    client = mlflow.MlflowClient(servers["LOOPLINE_MLFLOW_TRACKING_URI"])
    ids = [client.get_experiment_by_name(home.name).experiment_id for home in (calm, crashed)]
    runs = {r.info.run_id: r for r in client.search_runs(ids)}
    final, first = runs[result["run_id"]], runs[expected["run_id"]]
    best = {k: v for k, v in first.data.params.items() if k.startswith("best.") and k != "best.trial"}
    assert {k: final.data.params[k] for k in best} == best  # (the trial number: the retry has its own)
    dead = [r for r in runs.values() if r.data.tags.get("optuna.state", "").startswith("crashed")]
    assert len(dead) == 1 and dead[0].info.status == "FAILED"
