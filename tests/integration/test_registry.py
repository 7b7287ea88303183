"""Registry operations against a real MLflow server: idempotent registration with lineage tags, aliases
moved with an audit trail, review decisions on the version, an unreachable server named."""

from pathlib import Path

import mlflow
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
from tests.model_runs import logged_onnx_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(tracking_uri: str) -> object:
    import mlflow

    return mlflow.MlflowClient(tracking_uri)


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
    changes = move_alias(
        client, "audited", CHAMPION, second.version, "grace", "beat the champion by 2 points"
    )
    assert [(c.alias, c.from_version, c.to_version) for c in changes] == [
        (CHAMPION, first.version, second.version),
        (CHALLENGER, second.version, None),  # the new champion is no longer a candidate
    ]
    assert resolve_alias(client, "audited", CHAMPION).version == second.version
    assert resolve_alias(client, "audited", CHALLENGER) is None
    assert client.get_model_version("audited", second.version).aliases == [CHAMPION]
    trail = audit_trail(client, "audited")
    assert [(c.alias, c.from_version, c.to_version, c.who) for c in trail] == [
        (CHAMPION, None, first.version, "ada"),
        (CHALLENGER, None, second.version, "pipeline"),
        (CHAMPION, first.version, second.version, "grace"),
        (CHALLENGER, second.version, None, "grace"),
    ]
    tags = client.get_model_version("audited", second.version).tags
    assert tags["audit.champion"] and '"to_version": null' in tags["audit.challenger"]

    # A rollback to a version that is not the challenger leaves the challenger where it is.
    move_alias(client, "audited", CHALLENGER, second.version, "pipeline", "try again")
    rollback = move_alias(client, "audited", CHAMPION, first.version, "ada", "roll back")
    assert [c.alias for c in rollback] == [CHAMPION]
    assert resolve_alias(client, "audited", CHALLENGER).version == second.version

    record_decision(client, "audited", first.version, "rejected", "ada", "worse on 8s")
    tags = client.get_model_version("audited", first.version).tags
    assert tags["review.decision"] == "rejected" and tags["review.comment"] == "worse on 8s"


def test_the_evaluate_task_judges_both_models_on_the_test_split(  # type: ignore[no-untyped-def]
    client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task resolves the champion, downloads both runs' files, reads the test images through the data
    store's ImageReader and returns evaluations paired by content hash, with gallery thumbnails."""
    import mlflow
    from prefect.logging import disable_run_logger

    from loopline.data.demo import labeled_digit_rows
    from loopline.data.labeled import write_labeled_manifest
    from loopline.data.store import open_store
    from loopline.settings import get_settings
    from tasks.label import LabeledDatasetRef
    from tasks.register import RegisterParameters, evaluate_against_champion
    from tasks.train import TrainedModelRef

    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "home"))
    data_root = str(tmp_path / "data")
    rows = labeled_digit_rows(open_store(data_root, get_settings()), 80)
    version, uri = write_labeled_manifest(open_store(data_root, get_settings()), rows)
    digits = tuple(str(d) for d in range(10))
    splits = {s: [r.content_hash for r in rows if r.split == s] for s in ("train", "val", "test")}
    champion_run = logged_onnx_run(tmp_path / "champion", digits, splits)
    challenger_run = logged_onnx_run(tmp_path / "challenger", digits, splits)
    champion = register_run(client, "judged", champion_run, {}, "v1")
    challenger = register_run(client, "judged", challenger_run, {}, "v2")
    move_alias(client, "judged", CHAMPION, champion.version, "ada", "first")
    model = TrainedModelRef(
        run_id=challenger_run,
        tracking_uri=mlflow.get_tracking_uri(),  # the fixture's server
        test_accuracy=0.0,
        val_accuracy=0.0,
        onnx_max_abs_diff=0.0,
        labels=list(digits),
        labeled_version=version,
    )
    labels = LabeledDatasetRef(
        version=version,
        manifest_uri=uri,
        data_root=data_root,
        dataset_version="digits",
        project_id=0,
        export_id=0,
        images=len(rows),
        kappa=None,
    )
    with disable_run_logger():
        result = evaluate_against_champion.fn(
            challenger, model, labels, RegisterParameters(model_name="judged")
        )
    assert result.champion is not None and result.champion_version == champion.version
    assert set(result.challenger.predictions) == set(result.champion.predictions) == set(splits["test"])
    shown = [m.content_hash for m in result.challenger.mistakes[:12]]
    assert shown and list(result.thumbnails) == shown


def test_model_files_come_from_the_named_server_whatever_the_process_wide_uri(  # type: ignore[no-untyped-def]
    client, tmp_path: Path
) -> None:
    """The model server passes its tracking URI explicitly and sets no process-wide one: MLflow's own
    fallback from ``runs:/RUN/model`` to the run's logged model would look in the wrong place."""
    from loopline.registry.artifacts import download_model_files

    run_id = logged_onnx_run(tmp_path / "run", labels=("x", "y"))
    server = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"file://{tmp_path / 'elsewhere'}")
    try:
        onnx, mapping, _ = download_model_files(run_id, tmp_path / "files", server)
    finally:
        mlflow.set_tracking_uri(server)
    assert onnx.suffix == ".onnx" and onnx.stat().st_size > 0 and mapping["labels"] == ["x", "y"]
