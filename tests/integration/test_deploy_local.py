"""The local deploy target against a real MLflow server and real model servers: v1 deployed and served,
a broken v2 refused while v1 keeps serving, a v3 whose answers differ from its evaluation refused by the
smoke test, a good v4 switched in by hot reload, a rerun that starts nothing, and a rollback to v1."""

from __future__ import annotations

from pathlib import Path

import httpx
import mlflow
import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.deploy.history import read_history
from loopline.deploy.local import LocalTarget, role_spec, stop_all
from loopline.deploy.smoke import SmokeCases, reference_cases
from loopline.registry.artifacts import fetch_model_files
from loopline.registry.registry import audit_trail
from loopline.services import process
from loopline.services.process import free_port
from loopline.settings import Settings
from tests.model_runs import registered_version, smoke_pictures

pytestmark = pytest.mark.integration
NAME = "deployed"


def test_deploy_refuse_switch_rerun_and_roll_back(tracking_uri: str, tmp_path: Path) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    v1, v2, v3, v4 = (registered_version(client, NAME, tmp_path / str(i), broken=i == 2) for i in range(1, 5))
    settings = Settings(
        home=tmp_path / "home",
        serve_port_champion=free_port(),
        serve_port_challenger=free_port(),
        mlflow_tracking_uri=tracking_uri,
        smoke_max_latency_ms=1000,
    )
    tampered: set[str] = {v3}  # the version whose served logits differ from its evaluation

    def cases(version: str) -> SmokeCases:
        run_id = str(client.get_model_version(NAME, version).run_id)
        files = fetch_model_files(run_id, tmp_path / f"files-{version}")
        found = reference_cases(smoke_pictures(), ["p0", "p1", "p2"], files.onnx, files.input_size)
        if version in tampered:
            return SmokeCases(found.ids, found.inputs, found.expected[:, ::-1].copy())
        return found

    target = LocalTarget(settings, client, tracking_uri, NAME, cases)
    url = role_spec(settings, tracking_uri, NAME, "champion").url

    def served() -> str:
        return httpx.get(f"{url}/v2/models/{NAME}").headers["X-Model-Version"]

    try:
        first = target.deploy(v1, who="ada")
        assert (first.state, first.version, first.url) == ("serving", v1, url)
        assert served() == f"{NAME}/{v1}"
        assert client.get_model_version(NAME, v1).tags["deploy.champion.url"] == url
        assert client.get_model_version_by_alias(NAME, "champion").version == v1
        pid = process.running_pid(role_spec(settings, tracking_uri, NAME, "champion"))

        broken = target.deploy(v2, who="ada")
        assert broken.state == "refused" and "exited while starting" in broken.reason
        assert served() == f"{NAME}/{v1}"
        assert client.get_model_version(NAME, v2).tags["deploy.champion.state"] == "refused"

        wrong = target.deploy(v3, who="ada")
        assert wrong.state == "refused" and "predicted differently" in wrong.reason
        assert (
            served() == f"{NAME}/{v1}" and client.get_model_version_by_alias(NAME, "champion").version == v1
        )

        switched = target.deploy(v4, who="ada", why="better")
        assert switched.state == "serving" and served() == f"{NAME}/{v4}"
        assert process.running_pid(role_spec(settings, tracking_uri, NAME, "champion")) == pid  # hot reload
        assert client.get_model_version_by_alias(NAME, "champion").version == v4
        assert target.deploy(v4) == switched  # a rerun: nothing started, nothing recorded
        assert not list((settings.resolved_home / "run").glob("serve-champion-candidate.pid"))
        status = target.status()
        assert [(r.role, r.version, r.state) for r in status] == [("champion", v4, "serving")]

        back = target.rollback(who="grace")
        assert back.version == v1 and served() == f"{NAME}/{v1}"
        last = audit_trail(client, NAME)[-1]
        assert (last.alias, last.from_version, last.to_version, last.who) == ("champion", v4, v1, "grace")
        assert last.why == f"rollback from v{v4}"
        states = [(r.version, r.state) for r in read_history(client, NAME)]
        assert states == [
            (v1, "serving"),
            (v2, "refused"),
            (v3, "refused"),
            (v1, "replaced"),
            (v4, "serving"),
            (v4, "replaced"),
            (v1, "serving"),
        ]
        env = {
            "LOOPLINE_HOME": str(settings.resolved_home),
            "LOOPLINE_MLFLOW_TRACKING_URI": tracking_uri,
            "LOOPLINE_SERVE_PORT_CHAMPION": str(settings.serve_port_champion),
            "LOOPLINE_SERVE_PORT_CHALLENGER": str(settings.serve_port_challenger),
        }
        listed = CliRunner().invoke(app, ["deployments", "--model", NAME], env=env)
        assert listed.exit_code == 0 and f"champion    {NAME} v{v1}" in listed.output, listed.output
    finally:
        assert "serve-champion" in stop_all(settings)
    assert not process.port_in_use("127.0.0.1", settings.serve_port_champion)
