"""Registry operations against a real MLflow server: idempotent registration with lineage tags, aliases
moved with an audit trail, review decisions on the version, an unreachable server named."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from loopline.errors import RegistryError
from loopline.registry.registry import (
    CHALLENGER,
    CHAMPION,
    audit_trail,
    move_alias,
    record_decision,
    register_run,
    resolve_alias,
)
from loopline.services.standalone import running_service
from tests.platform import ROOT

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    import mlflow

    with running_service("mlflow", tmp_path_factory.mktemp("mlflow"), ROOT) as (spec, _):
        mlflow.set_tracking_uri(spec.url)
        yield mlflow.MlflowClient(spec.url)


def logged_onnx_run(tmp_path: Path) -> str:
    """A real run holding a (tiny) ONNX model, as training logs it."""
    import mlflow
    import mlflow.onnx
    import onnx

    from loopline.training.onnx_export import export_onnx

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2))
    path = export_onnx(model, 4, tmp_path / "m.onnx")
    mlflow.set_experiment("registry")
    with mlflow.start_run() as run:
        mlflow.onnx.log_model(
            onnx.load(str(path)),
            name="model",
            input_example=np.zeros((1, 3, 4, 4), dtype=np.float32),
            pip_requirements=["onnxruntime"],
        )
    return str(run.info.run_id)


def test_registering_a_run_twice_gives_one_version(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run_id = logged_onnx_run(tmp_path)
    tags = {"dataset_version": "abc", "training.run_id": run_id}
    first = register_run(client, "digits", run_id, tags, "# Model card")
    again = register_run(client, "digits", run_id, tags, "# Model card")
    assert first.created and not again.created and again.version == first.version
    version = client.get_model_version("digits", first.version)
    assert version.tags["dataset_version"] == "abc" and version.description == "# Model card"
    assert len(client.search_model_versions("name = 'digits'")) == 1
    with pytest.raises(RegistryError, match="Invalid registered model name"):
        register_run(client, "bad name", run_id, tags, "")


def test_aliases_move_with_an_audit_trail(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = register_run(client, "audited", logged_onnx_run(tmp_path / "a"), {}, "v1")
    second = register_run(client, "audited", logged_onnx_run(tmp_path / "b"), {}, "v2")
    assert resolve_alias(client, "audited", CHAMPION) is None
    assert resolve_alias(client, "no-such-model", CHAMPION) is None
    move_alias(client, "audited", CHAMPION, first.version, "ada", "first approved model")
    move_alias(client, "audited", CHALLENGER, second.version, "pipeline", "new candidate")
    change = move_alias(client, "audited", CHAMPION, second.version, "grace", "beat the champion by 2 points")
    assert change.from_version == first.version and change.to_version == second.version
    assert resolve_alias(client, "audited", CHAMPION).version == second.version
    trail = audit_trail(client, "audited")
    assert [(c.alias, c.from_version, c.to_version, c.who) for c in trail] == [
        (CHAMPION, None, first.version, "ada"),
        (CHALLENGER, None, second.version, "pipeline"),
        (CHAMPION, first.version, second.version, "grace"),
    ]
    assert client.get_model_version("audited", second.version).tags["audit.champion"]

    record_decision(client, "audited", first.version, "rejected", "ada", "worse on 8s")
    tags = client.get_model_version("audited", first.version).tags
    assert tags["review.decision"] == "rejected" and tags["review.comment"] == "worse on 8s"
