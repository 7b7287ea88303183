"""`loopline export` on a laptop's configuration (a local data root, one MLflow server) and `loopline import`
into a team's (an S3 data root on a real moto server, a second MLflow server that already holds a version
of the same model): images arrive with equal hashes, manifests point at the S3 copies with unchanged
versions, versions are registered under new numbers with aliases, deployment history and audit records
mapped; a second import creates nothing; a tampered bundle is refused before anything is written."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.data.collect import collect
from loopline.data.labeled import AnnotationRecord, LabeledRow, read_labeled_manifest, write_labeled_manifest
from loopline.data.manifest import read_manifest
from loopline.data.sources import LocalFolderSource
from loopline.data.store import DataStore, LocalStore, open_store
from loopline.deploy.base import DeploymentRecord
from loopline.deploy.history import HISTORY_TAG, dump_history, parse_history
from loopline.services.standalone import running_service
from loopline.settings import Settings
from tests.helpers import image_bytes, write
from tests.integration.s3server import S3Server, s3_server
from tests.model_runs import logged_onnx_run
from tests.platform import ROOT

pytestmark = pytest.mark.integration

MODEL = "migrated-digits"


@dataclass(frozen=True)
class Laptop:
    root: Path
    tracking_uri: str
    dataset: str
    labeled: str
    versions: tuple[str, str]


@dataclass(frozen=True)
class Team:
    s3: S3Server
    tracking_uri: str

    def env(self, prefix: str = "loopline") -> dict[str, str]:
        return {
            "LOOPLINE_DATA_ROOT": f"s3://team/{prefix}",
            "LOOPLINE_MLFLOW_TRACKING_URI": self.tracking_uri,
            "LOOPLINE_S3_ENDPOINT_URL": self.s3.endpoint,
            "LOOPLINE_S3_ACCESS_KEY_ID": self.s3.access_key,
            "LOOPLINE_S3_SECRET_ACCESS_KEY": self.s3.secret_key,
        }

    def store(self, prefix: str = "loopline") -> DataStore:
        return open_store(
            f"s3://team/{prefix}", Settings(**{k[9:].lower(): v for k, v in self.env().items()})
        )


def client(uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def register(uri: str, tmp: Path, tags: dict[str, str]) -> str:
    import mlflow

    from loopline.registry.registry import register_run

    mlflow.set_tracking_uri(uri)
    run_id = logged_onnx_run(tmp)
    return register_run(
        client(uri), MODEL, run_id, {**tags, "training.run_id": run_id}, f"card {tmp.name}"
    ).version


def laptop_data(root: Path, tmp: Path) -> tuple[str, str]:
    """Six real images collected into a local data root, and a labeled manifest over them."""
    for i in range(6):
        write(tmp / "incoming" / ("cat" if i % 2 else "dog") / f"{i}.png", image_bytes(40 + i))
    store = LocalStore(root)
    result = collect(LocalFolderSource(tmp / "incoming"), store)
    rows = [
        LabeledRow(
            r.content_hash,
            r.stored_uri,
            r.source_label or "",
            "train",
            result.version,
            3,
            5,
            i,
            (AnnotationRecord(i, 2, r.source_label or "", None),),
        )
        for i, r in enumerate(read_manifest(store, result.version))
    ]
    labeled, _ = write_labeled_manifest(store, rows)
    return result.version, labeled


def started_together(stack: ExitStack, *servers: AbstractContextManager[Any]) -> list[Any]:
    """Enter the servers' contexts at once (each waits for its server to answer), all exited by ``stack``."""
    with ThreadPoolExecutor(len(servers)) as pool:
        futures = [pool.submit(server.__enter__) for server in servers]
    entered, failure = [], None
    for server, future in zip(servers, futures, strict=True):
        try:
            entered.append(future.result())
            stack.push(server.__exit__)
        except BaseException as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    return entered


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Laptop, Team]]:
    from loopline.registry.registry import CHALLENGER, CHAMPION, move_alias

    tmp = tmp_path_factory.mktemp("migrate")
    with ExitStack() as stack:
        (laptop_mlflow, _), (team_mlflow, _), s3 = started_together(
            stack,
            running_service("mlflow", tmp / "laptop-mlflow", ROOT),
            running_service("mlflow", tmp / "team-mlflow", ROOT),
            s3_server(tmp),
        )
        s3.client().create_bucket(Bucket="team")
        root = tmp / "laptop-data"
        dataset, labeled = laptop_data(root, tmp)
        tags = {
            "labeled_version": labeled,
            "data_root": str(root),
            "labeled_manifest_uri": str(root / f"labels/{labeled}.jsonl"),
        }
        first = register(laptop_mlflow.url, tmp / "v1", tags)
        second = register(laptop_mlflow.url, tmp / "v2", tags)
        laptop = client(laptop_mlflow.url)
        move_alias(laptop, MODEL, CHAMPION, first, "ada", "first model")
        move_alias(laptop, MODEL, CHALLENGER, second, "pipeline", "candidate")
        history = [
            DeploymentRecord(
                "local",
                MODEL,
                "7",
                "champion",
                "http://127.0.0.1:8000",
                "pid 1",
                "replaced",
                "2026-01-01T00:00:00+00:00",
                "ada",
            ),  # a version deleted since
            DeploymentRecord(
                "local",
                MODEL,
                first,
                "champion",
                "http://127.0.0.1:8000",
                "pid 2",
                "serving",
                "2026-01-02T00:00:00+00:00",
                "ada",
            ),
            DeploymentRecord(
                "local",
                MODEL,
                second,
                "challenger",
                "http://127.0.0.1:8001",
                "pid 3",
                "serving",
                "2026-01-03T00:00:00+00:00",
                "pipeline",
            ),
        ]
        laptop.set_registered_model_tag(MODEL, HISTORY_TAG, dump_history(history))
        register(team_mlflow.url, tmp / "team-v1", {})  # the team's own version 1: numbers must map
        yield (
            Laptop(root, laptop_mlflow.url, dataset, labeled, (first, second)),
            Team(s3, team_mlflow.url),
        )


def invoke(args: list[str], env: dict[str, str]) -> Any:
    return CliRunner().invoke(app, args, env={"LOOPLINE_MLFLOW_TRACKING_URI": "", **env})


def digests(store: DataStore, prefix: str) -> dict[str, str]:
    return {k: hashlib.sha256(store.get_bytes(k)).hexdigest() for k in store.list_keys(prefix)}


def test_a_laptop_moves_to_the_team(sites: tuple[Laptop, Team], tmp_path: Path) -> None:
    from loopline.registry.artifacts import download_model_files

    laptop, team = sites
    bundle = tmp_path / "bundle"
    exported = invoke(
        ["export", str(bundle), "--model", MODEL],
        {"LOOPLINE_DATA_ROOT": str(laptop.root), "LOOPLINE_MLFLOW_TRACKING_URI": laptop.tracking_uri},
    )
    assert exported.exit_code == 0, exported.output
    assert "6 images and 2 model versions" in exported.output

    imported = invoke(["import", str(bundle)], team.env())
    assert imported.exit_code == 0, imported.output
    assert "6 images written" in imported.output and "2 versions registered" in imported.output

    # Data: the same images (same hashes, same keys), manifests of the same versions pointing at S3.
    source, target = LocalStore(laptop.root), team.store()
    assert digests(target, "images") == digests(source, "images") != {}
    rows = read_manifest(target, laptop.dataset)
    assert [r.content_hash for r in rows] == [r.content_hash for r in read_manifest(source, laptop.dataset)]
    assert all(r.stored_uri.startswith("s3://team/loopline/images/") for r in rows)
    labeled = read_labeled_manifest(target, laptop.labeled)
    assert {r.stored_uri for r in labeled} == {r.stored_uri for r in rows}
    assert [a.annotator for r in labeled for a in r.annotations] == [2] * 6

    # Models: the team's v1 stays; the laptop's v1, v2 become v2, v3 with files, aliases, history mapped.
    registry = client(team.tracking_uri)
    mapped = {laptop.versions[0]: "2", laptop.versions[1]: "3"}
    model = registry.get_registered_model(MODEL)
    assert model.aliases == {"champion": "2", "challenger": "3"}
    history = parse_history(model.tags[HISTORY_TAG])
    assert [(r.version, r.role, r.ref) for r in history] == [
        ("2", "champion", "pid 2"),
        ("3", "challenger", "pid 3"),
    ]
    trail = sorted(json.loads(v)["to_version"] for k, v in model.tags.items() if k.startswith("audit."))
    assert trail == ["2", "3"]
    laptop_registry = client(laptop.tracking_uri)
    for source_version, target_version in mapped.items():
        was = laptop_registry.get_model_version(MODEL, source_version)
        now = registry.get_model_version(MODEL, target_version)
        assert now.tags["migrate.source"] == f"{MODEL}/{source_version}"
        assert now.tags["training.run_id"] == now.run_id != was.run_id
        assert now.tags["data_root"] == "s3://team/loopline"
        assert now.tags["labeled_manifest_uri"] == f"s3://team/loopline/labels/{laptop.labeled}.jsonl"
        assert now.description == was.description
        before = download_model_files(was.run_id, tmp_path / "was" / source_version, laptop.tracking_uri)[0]
        after = download_model_files(now.run_id, tmp_path / "now" / target_version, team.tracking_uri)[0]
        assert before.read_bytes() == after.read_bytes()
        assert registry.get_run(now.run_id).data.params == laptop_registry.get_run(was.run_id).data.params

    # Again: nothing new anywhere.
    objects = {o.key for o in target.list_objects("")}
    runs = len(registry.search_runs([registry.get_experiment_by_name("registry").experiment_id]))
    again = invoke(["import", str(bundle)], team.env())
    assert again.exit_code == 0, again.output
    assert "0 images written" in again.output and "0 versions registered" in again.output
    assert "aliases unchanged; 0 tags set" in again.output
    assert {o.key for o in target.list_objects("")} == objects
    assert len(registry.search_model_versions(f"name = '{MODEL}'")) == 3
    assert len(registry.search_runs([registry.get_experiment_by_name("registry").experiment_id])) == runs
    assert registry.get_registered_model(MODEL).tags == model.tags

    # A tampered copy: refused with the files named, nothing of it written (a fresh data root stays empty).
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle, tampered)
    image = next(p for p in sorted((tampered / "data" / "images").rglob("*.png")))
    image.write_bytes(image.read_bytes()[:-1] + b"\0")
    onnx = next((tampered / "models" / MODEL).rglob("*.onnx"))
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    refused = invoke(["import", str(tampered)], team.env("elsewhere"))
    assert refused.exit_code == 1
    for path in (image, onnx):
        assert path.relative_to(tampered).as_posix() in refused.output
    assert "Nothing was imported" in refused.output
    assert team.store("elsewhere").list_keys("") == []
    assert len(registry.search_model_versions(f"name = '{MODEL}'")) == 3

    missing = invoke(["import", str(tmp_path / "nowhere")], team.env())
    assert missing.exit_code == 1 and "does not exist" in missing.output
