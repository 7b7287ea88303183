"""`loopline datasets`: every dataset version, the labeled versions built on it, and their models."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.data.collect import CollectOptions, collect
from loopline.data.labeled import LabeledRow, write_labeled_manifest
from loopline.data.manifest import read_manifest
from loopline.data.sources import LocalFolderSource
from loopline.data.store import LocalStore
from loopline.services.process import free_port
from tests.helpers import image_bytes, write

pytestmark = pytest.mark.unit


def collected(tmp_path: Path, name: str, seeds: range) -> tuple[LocalStore, str]:
    for i in seeds:
        write(tmp_path / name / f"{i}.png", image_bytes(700 + i))
    store = LocalStore(tmp_path / "data")
    options = CollectOptions(near_duplicate_threshold=-1)
    return store, collect(LocalFolderSource(tmp_path / name), store, options).version


def label(
    store: LocalStore, dataset: str, n: int, prior: list[LabeledRow] | None = None
) -> tuple[str, list[LabeledRow]]:
    rows = [
        LabeledRow(r.content_hash, r.stored_uri, "cat" if i % 2 else "dog", "train", dataset, 1, 1, i, ())
        for i, r in enumerate(read_manifest(store, dataset)[:n])
    ]
    rows = sorted([*(prior or []), *rows], key=lambda r: r.content_hash)
    return write_labeled_manifest(store, rows)[0], rows


@pytest.fixture
def no_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")


def test_labeled_versions_are_listed_under_their_datasets(tmp_path: Path, no_mlflow: None) -> None:
    store, first = collected(tmp_path, "round1", range(10))
    _, second = collected(tmp_path, "round2", range(10, 16))
    v1, rows1 = label(store, first, 6)
    v2, _ = label(store, second, 4, prior=rows1)  # round 2 carries round 1's labels forward

    result = CliRunner().invoke(app, ["datasets", "--data-root", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    one = lines.index(next(line for line in lines if line.startswith(f"dataset {first}")))
    two = lines.index(next(line for line in lines if line.startswith(f"dataset {second}")))
    assert "10 images" in lines[one] and "6 images" in lines[two]
    block_one = lines[one + 1 : two] if one < two else lines[one + 1 :]
    block_two = lines[two + 1 : one] if two < one else lines[two + 1 :]
    assert any(f"labeled {v1}" in line and "6 labels, 2 classes" in line for line in block_one)
    assert any(
        f"labeled {v2}" in line and "10 labels" in line and "(6 from this dataset)" in line
        for line in block_one
    )
    assert any(f"labeled {v2}" in line and "(4 from this dataset)" in line for line in block_two)
    assert "models not shown: no MLflow tracking server answers" in result.output


def test_the_model_trained_on_a_labeled_version_is_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    store, dataset = collected(tmp_path, "src", range(8))
    version, _ = label(store, dataset, 8)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    client.create_registered_model("digits")
    client.create_model_version("digits", source=str(tmp_path), tags={"labeled_version": "other"})
    client.create_model_version("digits", source=str(tmp_path), tags={"labeled_version": version})
    client.set_registered_model_alias("digits", "champion", "2")
    monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", tracking)

    result = CliRunner().invoke(app, ["datasets", "--data-root", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert f"labeled {version}" in result.output and "model: digits v2 (champion)" in result.output


@pytest.mark.parametrize("folder", ["manifests", "labels"])
def test_a_damaged_manifest_is_named_not_a_traceback(tmp_path: Path, no_mlflow: None, folder: str) -> None:
    store, dataset = collected(tmp_path, "src", range(4))
    label(store, dataset, 4)
    damaged = next((tmp_path / "data" / folder).glob("*.jsonl"))
    damaged.write_bytes(damaged.read_bytes()[:-40])  # cut off mid-line, as a full disk would

    result = CliRunner().invoke(app, ["datasets", "--data-root", str(tmp_path / "data")])
    assert result.exit_code == 1
    assert str(damaged) in result.output and "is damaged" in result.output and "To fix this" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
