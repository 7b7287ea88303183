"""The promotion is one Prefect transaction: the champion alias, the router's state and the deployment
record move together, and when a step after them fails, their rollback hooks put all three back (real
MLflow server, event store on SQLite, a temporary Prefect server)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from loopline.deploy.base import DeploymentRecord
from loopline.deploy.history import read_history
from loopline.registry.registry import CHALLENGER, CHAMPION, move_alias, register_run, resolve_alias
from loopline.rollout.experiment import start_experiment
from loopline.rollout.policy import RampPolicy
from loopline.rollout.store import EventStore
from loopline.settings import Settings
from tests.model_runs import logged_onnx_run

pytestmark = pytest.mark.integration
NAME = "promoted"


def test_a_failure_inside_the_promotion_undoes_the_alias_the_router_and_the_record(
    tracking_uri: str, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow
    from prefect.transactions import transaction

    from tasks.rollout import move_champion_alias, record_promotion, route_all_to_challenger

    client = mlflow.MlflowClient(tracking_uri)
    runs = [logged_onnx_run(tmp_path / f"r{i}") for i in (1, 2)]
    v1, v2 = (register_run(client, NAME, run, {}, "# m").version for run in runs)
    move_alias(client, NAME, CHAMPION, v1, "test", "the champion")
    move_alias(client, NAME, CHALLENGER, v2, "test", "the challenger")
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    store = EventStore(Settings().resolved_event_store_url)
    state = start_experiment(store, NAME, (v1, "http://a"), (v2, "http://b"), RampPolicy())
    record = DeploymentRecord(
        "local", NAME, v2, "champion", "http://b", "pid 1", "serving", "now", "ada", "test"
    )

    @flow
    def promote(fail: bool) -> None:
        with transaction():
            move_champion_alias(tracking_uri, NAME, v2, "ada", "promoted")
            route_all_to_challenger(state.name, "ada")
            record_promotion(tracking_uri, record.to_json())
            if fail:
                raise RuntimeError("a step after the three failed")

    with pytest.raises(RuntimeError, match="a step after the three failed"):
        promote(fail=True)
    champion = resolve_alias(client, NAME, CHAMPION)
    assert champion is not None and str(champion.version) == v1  # the alias went back
    found = store.get_experiment(state.name)
    assert found is not None and found.state.status == "awaiting_approval" and found.state.weight == 0
    history = read_history(client, NAME)
    assert [(r.version, r.state, r.reason) for r in history[-2:]] == [
        (v2, "serving", "test"),
        (v2, "replaced", "promotion undone"),
    ]
    audit = [json.loads(v) for k, v in sorted(client.get_registered_model(NAME).tags.items())
             if k.startswith("audit.")]  # fmt: skip
    last = audit[-1]
    assert (last["alias"], last["from_version"], last["to_version"]) == ("champion", v2, v1)
    assert last["why"] == "promotion undone"

    promote(fail=False)  # the same steps, committed, stay
    champion = resolve_alias(client, NAME, CHAMPION)
    assert champion is not None and str(champion.version) == v2
    found = store.get_experiment(state.name)
    assert found is not None and (found.state.status, found.state.weight) == ("promoted", 1.0)
