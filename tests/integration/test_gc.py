"""`loopline gc` against real parts: a data root built by collect, a model registered in a real MLflow
server, a Prefect server holding a paused run, Label Studio with snapshot exports, a running and a stopped
model server. Referenced things survive, unreferenced ones go, and a second run frees nothing."""

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.data.collect import CollectOptions, collect
from loopline.data.labeled import LabeledRow, write_labeled_manifest
from loopline.data.manifest import read_manifest
from loopline.data.sources import LocalFolderSource
from loopline.data.store import LocalStore
from loopline.labeling.configs import render_label_config
from loopline.labeling.studio import LabelStudio
from loopline.registry.registry import register_run
from loopline.services import process
from loopline.services.credentials import label_studio_credentials
from loopline.services.process import ProcessSpec, free_port
from loopline.services.standalone import running_service
from tests.helpers import image_bytes, write
from tests.model_runs import logged_onnx_run
from tests.platform import ROOT

pytestmark = pytest.mark.integration

MONTH_AGO = time.time() - 30 * 86400


def age(path: Path) -> Path:
    os.utime(path, (MONTH_AGO, MONTH_AGO))
    return path


def snapshot(home: Path, data: Path) -> dict[str, int]:
    """Every file gc may consider (not the servers' own state, which changes as they run)."""
    roots = [data, home / "results", home / "prefect" / "storage", home / "run", home / "cache"]
    files = [p for root in roots for p in root.rglob("*") if p.is_file()]
    files += list((home / "logs").glob("serve-*"))
    return {str(p): p.stat().st_size for p in files}


class AskAgainWhenBusy(httpx.HTTPTransport):
    """Repeat a request the SQLite-backed Prefect server answered 503 (busy), as Prefect's own client does."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for delay in (0.5, 1, 2, 4, 8):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(delay)
        return super().handle_request(request)


def paused_run_with_results(api: str, key: str, child_key: str) -> None:
    """A paused flow run whose task finished with a persisted result, and a finished subflow (its task's
    result persisted too) under it: a resumed flow reads both again."""
    with httpx.Client(base_url=api, timeout=10, transport=AskAgainWhenBusy()) as client:
        flow_id = client.post("/flows/", json={"name": "gc-test-flow"}).json()["id"]

        def run(state: str, parent_task: str | None = None) -> str:
            body = {"flow_id": flow_id, "state": {"type": state}, "parent_task_run_id": parent_task}
            response = client.post("/flow_runs/", json=body)
            response.raise_for_status()
            return str(response.json()["id"])

        def task(flow_run: str, storage_key: str) -> str:
            body = {"flow_run_id": flow_run, "task_key": storage_key, "dynamic_key": "0", "name": "t"}
            task_run = client.post("/task_runs/", json=body).raise_for_status().json()["id"]
            data = {"storage_key": storage_key, "serializer": {"type": "pickle"}}
            state = {"state": {"type": "COMPLETED", "data": data}, "force": True}
            client.post(f"/task_runs/{task_run}/set_state", json=state).raise_for_status()
            return str(task_run)

        paused = run("PAUSED")
        task(paused, key)
        subflow_task = task(paused, "subflow")  # its state then mirrors the subflow's (no result of its own)
        task(run("COMPLETED", subflow_task), child_key)
        finished = run("COMPLETED")
        task(finished, "finished-result")  # a finished run: its (old) result may go


def exports(studio: LabelStudio, project: int) -> set[int]:
    return {int(e["id"]) for e in studio.exports(project)}


@pytest.fixture
def services(tmp_path: Path) -> Iterator[dict[str, Any]]:
    home = tmp_path / "home"
    with (
        running_service("prefect-server", home, ROOT) as (prefect, _),
        running_service("label-studio", home, ROOT) as (ls, settings),
    ):
        token = label_studio_credentials(settings).token.get_secret_value()
        with LabelStudio(ls.url, token) as studio:
            yield {"home": home, "prefect_api": f"{prefect.url}/api", "ls_url": ls.url, "studio": studio}


def test_gc_frees_only_what_nothing_refers_to(
    services: dict[str, Any], tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    home: Path = services["home"]
    studio: LabelStudio = services["studio"]
    data = tmp_path / "data"
    store = LocalStore(data)
    options = CollectOptions(near_duplicate_threshold=-1)
    # Round 1: three images. Round 2: one of them again and a new one (round 1's manifest still names all).
    for i in range(3):
        write(tmp_path / "round1" / f"{i}.png", image_bytes(100 + i))
    v1 = collect(LocalFolderSource(tmp_path / "round1"), store, options).version
    write(tmp_path / "round2" / "0.png", image_bytes(100))
    write(tmp_path / "round2" / "1.png", image_bytes(200))
    collect(LocalFolderSource(tmp_path / "round2"), store, options)
    # Stored images no manifest names: one only a registered model's splits name, an old orphan, a young one.
    for name, seed in (("model-only", 300), ("orphan", 301), ("young", 302)):
        write(tmp_path / name / "0.png", image_bytes(seed))
        collect(LocalFolderSource(tmp_path / name), store, options)
    hashes = {}
    for key in store.list_keys("manifests"):  # drop the three one-image manifests: their images orphaned
        rows = read_manifest(store, key.rsplit("/", 1)[-1].removesuffix(".jsonl"))
        if len(rows) == 1:
            hashes[rows[0].source_uri.split("/")[-2]] = rows[0].content_hash
            (data / key).unlink()
    for blob in data.joinpath("images").rglob("*.png"):
        if hashes["young"] not in blob.name:
            age(blob)

    # Label Studio: a project with four loopline snapshots and one export a person made.
    project = studio.get_or_create_project(
        "gc", "gc project", render_label_config("classification", ["a"]), 1
    )
    studio.import_tasks(project.id, [{"data": {"image": "/data/local-files/?d=x.png"}}])
    e1, e2, e3, e4 = (studio.snapshot_export(project.id, f"loopline snapshot {i}")[0] for i in range(4))
    people = studio.snapshot_export(project.id, "exported by hand")[0]
    # A labeled manifest built from export e1; a registered model whose tags name e2 and whose training
    # run's splits name the "model-only" image.
    first = read_manifest(store, v1)[0]
    write_labeled_manifest(
        store, [LabeledRow(first.content_hash, first.stored_uri, "a", "train", v1, project.id, e1, 1, ())]
    )
    run_id = logged_onnx_run(tmp_path, splits={"train": [hashes["model-only"]], "val": [], "test": []})
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    tags = {"label_studio.project_id": str(project.id), "label_studio.export_id": str(e2)}
    version = register_run(client, "gc-model", run_id, tags, "# gc").version

    # Prefect results: one of a paused run, one of its finished subflow, old and young ones of nobody.
    paused_run_with_results(services["prefect_api"], "paused-result", "child-result")
    results, storage = home / "results", home / "prefect" / "storage"
    for folder, name in ((results, "paused-result"), (storage, "child-result"), (results, "finished-result")):
        age(write(folder / name, b"x" * 100))
    write(results / "young-result", b"y" * 10)

    # Model servers: a running one (an old log), a stopped one (a stale PID file and an old log).
    serving = ProcessSpec(
        "serve-champion",
        [sys.executable, "-c", "import time; time.sleep(600)", "--model", "gc-model"],
        home,
        "",
        lambda: True,
    )
    process.launch(serving)
    try:
        age(serving.log_file)
        write(home / "run" / "serve-challenger.pid", b"999999\nloopline\n")
        age(write(home / "logs" / "serve-challenger.log", b"z" * 50))
        cache = home / "cache" / "models"
        write(cache / "gc-model" / str(version) / "model.onnx", b"m" * 40)  # registered
        write(cache / "gc-model" / "77" / "model.onnx", b"m" * 40)  # not registered, but gc-model is served
        write(cache / "deleted-model" / "3" / "model.onnx", b"d" * 40)  # neither

        for key, value in {
            "LOOPLINE_HOME": str(home),
            "LOOPLINE_DATA_ROOT": str(data),
            "LOOPLINE_MLFLOW_TRACKING_URI": tracking_uri,
            "LOOPLINE_PREFECT_API_URL": services["prefect_api"],
            "LOOPLINE_LABEL_STUDIO_URL": services["ls_url"],
            "LOOPLINE_GC_EXPORT_KEEP": "1",
        }.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("PREFECT_LOCAL_STORAGE_PATH", raising=False)
        before, exports_before = snapshot(home, data), exports(studio, project.id)
        runner = CliRunner()

        # MLflow down: refused, nothing deleted.
        monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
        refused = runner.invoke(app, ["gc"])
        assert refused.exit_code == 1 and "does not answer" in refused.output, refused.output
        assert snapshot(home, data) == before
        monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", tracking_uri)

        dry = runner.invoke(app, ["gc", "--dry-run", "-v"])
        assert dry.exit_code == 0, dry.output
        assert snapshot(home, data) == before and exports(studio, project.id) == exports_before

        done = runner.invoke(app, ["gc"])
        assert done.exit_code == 0, done.output
        gone = {Path(p).relative_to(tmp_path).as_posix() for p in set(before) - set(snapshot(home, data))}
        orphan = f"data/images/{hashes['orphan'][:2]}/{hashes['orphan']}.png"
        assert gone == {
            orphan,
            "home/results/finished-result",
            "home/run/serve-challenger.pid",
            "home/logs/serve-challenger.log",
            "home/cache/models/deleted-model/3/model.onnx",
        }, dry.output
        assert exports_before - exports(studio, project.id) == {e3}
        assert {e1, e2, e4, people} <= exports(studio, project.id)
        assert process.running_pid(serving) is not None
        # The dry run printed what the real run freed, line for line (the per-kind counts and bytes).
        kinds = ("results", "blobs", "exports", "servers", "model-cache", "total")

        def report(output: str) -> list[str]:
            return [line for line in output.splitlines() if line.startswith(kinds)]

        assert report(done.output) == [line.replace("would free", "freed") for line in report(dry.output)]
        assert "blobs        freed     1" in done.output

        again = runner.invoke(app, ["gc"])
        assert again.exit_code == 0, again.output
        assert report(again.output)[-1].startswith("total        freed     0 (       0 B)")
    finally:
        process.stop(serving)
