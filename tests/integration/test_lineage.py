"""`loopline lineage` against real parts: a dataset and a labeled manifest in a data root, a real training
run (Optuna + MLflow), the version registered with the register stage's own lineage tags, a request routed
to it in a SQLite event store; walked from the request id and from MODEL@champion through the CLI, and
with a manifest deleted and with MLflow down."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.data.labeled import AnnotationRecord, write_labeled_manifest
from loopline.data.manifest import ManifestRow, write_manifest
from loopline.data.store import LocalStore
from loopline.rollout.events import ExperimentState, RoutedRequest
from loopline.rollout.store import EventStore, sqlite_url
from loopline.training.search import FloatRange, SearchSpace
from loopline.training.train import TrainRequest, train_and_track

pytestmark = pytest.mark.integration

MODEL, ALICE, BOB = "lineage-digits", 2, 3


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def chain(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every stage's record of one model, as the stages write them; returns the environment to read it."""
    import mlflow

    from loopline.data.demo import labeled_digit_rows
    from loopline.registry.registry import CHAMPION, move_alias, register_run
    from tasks.label import LabeledDatasetRef
    from tasks.register import lineage_tags
    from tasks.train import TrainedModelRef

    tmp = tmp_path_factory.mktemp("lineage")
    root = tmp / "data"
    store = LocalStore(root)
    digits = labeled_digit_rows(store, 120)
    collected = [
        ManifestRow(r.content_hash, f"/incoming/round1/{i}.png", r.stored_uri, 32, 32, "PNG", None, None)
        for i, r in enumerate(digits)
    ]
    dataset, _, _ = write_manifest(store, collected)
    wrong = "1" if digits[0].label == "0" else "0"  # alice gets the first image wrong
    rows = [
        dataclasses.replace(
            r,
            dataset_version=dataset,
            project_id=4,
            export_id=11,
            annotations=(
                AnnotationRecord(2 * i, ALICE, wrong if i == 0 else r.label, None),
                AnnotationRecord(2 * i + 1, BOB, r.label, None),
            ),
        )
        for i, r in enumerate(digits)
    ]
    version, manifest_uri = write_labeled_manifest(store, rows)
    request = TrainRequest(
        labeled_version=version,
        dataset_version=dataset,
        tracking_uri=tracking_uri,
        experiment="lineage",
        storage=f"sqlite:///{tmp / 'optuna.db'}",
        workdir=tmp / "work",
        space=SearchSpace(lr=FloatRange(low=1e-3, high=2e-3), batch_sizes=[32], optimizers=["adamw"]),
        epochs=1,
        n_trials=1,
    )
    outcome = train_and_track(rows, request)
    labels = LabeledDatasetRef(
        version=version,
        manifest_uri=manifest_uri,
        data_root=str(root),
        dataset_version=dataset,
        project_id=4,
        export_id=11,
        images=len(rows),
        kappa=None,
        alpha=0.95,
    )
    trained = TrainedModelRef(
        run_id=outcome.run_id,
        tracking_uri=tracking_uri,
        test_accuracy=outcome.test_accuracy,
        val_accuracy=outcome.val_accuracy,
        onnx_max_abs_diff=outcome.onnx_max_abs_diff,
        labels=list(outcome.labels),
        labeled_version=version,
    )
    client = mlflow.MlflowClient(tracking_uri)
    registered = register_run(client, MODEL, outcome.run_id, lineage_tags(trained, labels), "# card")
    move_alias(client, MODEL, CHAMPION, registered.version, "tester", "first model")

    events = EventStore(sqlite_url(tmp / "events.db"))
    state = ExperimentState(
        "exp-1", MODEL, registered.version, registered.version, "a", "b", "s", 0.0, 0, "running"
    )
    events.save_experiment(state, None)
    events.insert_requests(
        [RoutedRequest("req-42", "exp-1", "champion", registered.version, "u1", 3.5, 200, "7", 0.9)]
    )
    events.close()
    return {
        "LOOPLINE_HOME": str(tmp / "home"),  # no Label Studio token there: annotators by id
        "LOOPLINE_DATA_ROOT": str(tmp / "elsewhere"),  # the model's tags name the real data root
        "LOOPLINE_MLFLOW_TRACKING_URI": tracking_uri,
        "LOOPLINE_EVENT_STORE_URL": sqlite_url(tmp / "events.db"),
        "LOOPLINE_LABEL_STUDIO_URL": f"http://127.0.0.1:{closed_port()}",
        "version": registered.version,
        "labeled": version,
        "dataset": dataset,
        "root": str(root),
        "run_id": outcome.run_id,
    }


def lineage(chain: dict[str, str], *args: str, **env: str) -> tuple[int, str]:
    settings = {k: v for k, v in chain.items() if k.startswith("LOOPLINE_")}
    result = CliRunner().invoke(app, ["lineage", *args], env={**settings, **env})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def test_from_a_served_request_to_the_labels_their_annotators_and_the_images(chain: dict[str, str]) -> None:
    code, output = lineage(chain, "req-42", "--json")
    assert code == 0, output
    found = json.loads(output)

    assert found["complete"] is True and found["broken"] == []
    assert found["request"]["model"] == MODEL and found["request"]["model_version"] == chain["version"]
    assert found["model"]["aliases"] == ["champion"] and found["model"]["run_id"] == chain["run_id"]
    assert found["model"]["tags"]["labeled_manifest_uri"].endswith(f"labels/{chain['labeled']}.jsonl")
    training = found["training"]
    assert training["params"]["labeled_version"] == chain["labeled"]
    assert training["tags"]["optuna.study"].startswith("loopline-")
    assert training["tags"]["optuna.storage"].endswith("optuna.db")
    labels = found["labels"]
    assert labels["version"] == chain["labeled"] and labels["images"] == 120
    assert labels["alpha_at_gate"] == pytest.approx(0.95) and labels["alpha"] < 1
    assert {(a["user_id"], a["annotations"], a["agree"]) for a in labels["annotators"]} == {
        (ALICE, 120, 119),
        (BOB, 120, 120),
    }
    assert "annotators shown by Label Studio user id" in labels["names_note"]
    assert [
        (r["project_id"], r["export_id"], r["dataset_version"], r["images"]) for r in found["label_studio"]
    ] == [(4, 11, chain["dataset"], 120)]
    assert found["datasets"] == [
        {
            "version": chain["dataset"],
            "uri": f"{chain['root']}/manifests/{chain['dataset']}.jsonl",
            "images": 120,
            "trained_on": 120,
            "sources": {"/incoming/round1": 120},
        }
    ]
    assert len(found["images"]) == 120 and all(
        i["source_uri"].startswith("/incoming/round1/") for i in found["images"]
    )


def test_from_the_champion_alias_as_text(chain: dict[str, str]) -> None:
    code, output = lineage(chain, f"{MODEL}@champion")

    assert code == 0, output
    assert f"{MODEL} v{chain['version']} @champion" in output
    assert f"labeled manifest {chain['labeled']}: 120 images" in output
    assert "user 2: 120 annotations, 99% agree with the final label" in output
    assert "120 collected from /incoming/round1" in output
    assert "request" not in output.split("\n", 1)[1]  # no request: the walk started at the model


def test_mlflow_down_prints_the_request_and_where_the_chain_broke(chain: dict[str, str]) -> None:
    down = f"http://127.0.0.1:{closed_port()}"
    code, output = lineage(chain, "req-42", LOOPLINE_MLFLOW_TRACKING_URI=down)

    assert code == 1
    assert "answered by lineage-digits" in output
    assert f"BROKEN: no MLflow tracking server answers at {down}" in output
    assert "Traceback" not in output


def test_a_deleted_labeled_manifest_is_a_broken_link_and_an_unknown_id_an_error(
    chain: dict[str, str], tmp_path: Path
) -> None:
    manifest = Path(chain["root"]) / "labels" / f"{chain['labeled']}.jsonl"
    kept = tmp_path / "kept.jsonl"
    manifest.rename(kept)
    try:
        code, output = lineage(chain, f"{MODEL}/{chain['version']}")
    finally:
        kept.rename(manifest)
    assert code == 1
    assert f"labels       BROKEN: the labeled manifest {manifest} is gone" in output
    assert f"project 4, export 11: images unknown of dataset {chain['dataset']}" in output

    code, output = lineage(chain, "no-such-request")
    assert code == 1 and "error: No routed request has id 'no-such-request'" in output
