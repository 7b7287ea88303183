"""What ``loopline gc`` must keep, read from where it is recorded: the manifests under the data root, the
MLflow registry (each registered version's lineage tags and the image hashes of its ``splits.json``) and
the Prefect API (result files of runs that have not finished)."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loopline.data.catalog import tracking_reachable
from loopline.data.labeled import read_labeled_manifest
from loopline.data.manifest import CorruptManifest, parse_manifest
from loopline.data.store import DataStore
from loopline.errors import ReferencesUnavailable

logger = logging.getLogger(__name__)

UNFINISHED = ["SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"]
COLLECT_FLOW = "collect-images"  # flows/collect.py: it stores images before it writes their manifest
PAGE = 200


@dataclass(frozen=True)
class References:
    content_hashes: frozenset[str]  # images a manifest or a registered model names
    exports: frozenset[tuple[int, int]]  # (Label Studio project id, export id)
    registered: frozenset[tuple[str, str]]  # (model name, version)


def manifest_references(store: DataStore) -> References:
    """Image hashes of every dataset and labeled manifest, and the exports the labeled ones came from."""
    hashes: set[str] = set()
    exports: set[tuple[int, int]] = set()
    try:
        for key in store.list_keys("manifests"):
            if key.endswith(".jsonl"):
                hashes.update(r.content_hash for r in parse_manifest(store.get_bytes(key), store.uri(key)))
        for key in store.list_keys("labels"):
            if key.endswith(".jsonl"):
                for row in read_labeled_manifest(store, key.rsplit("/", 1)[-1].removesuffix(".jsonl")):
                    hashes.add(row.content_hash)
                    exports.add((row.project_id, row.export_id))
    except (CorruptManifest, ValueError, KeyError, TypeError) as exc:
        raise ReferencesUnavailable(
            f"A manifest under {store.root} cannot be read ({type(exc).__name__}: {exc}), so gc cannot tell "
            "which images it names; nothing was deleted. To fix this, repair or delete that manifest "
            "(`loopline datasets` names it), then run gc again."
        ) from exc
    return References(frozenset(hashes), frozenset(exports), frozenset())


def _splits_hashes(client: Any, tracking_uri: str, run_id: str) -> set[str]:
    """Image hashes in a training run's ``splits.json`` (empty when the run or the file is gone)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    try:
        if "splits.json" not in {a.path for a in client.list_artifacts(run_id)}:
            return set()
        with tempfile.TemporaryDirectory() as tmp:
            path = download_artifacts(
                run_id=run_id, artifact_path="splits.json", dst_path=tmp, tracking_uri=tracking_uri
            )
            splits = json.loads(Path(path).read_text())
    except MlflowException as exc:
        logger.warning("run %s: its splits cannot be read (%s); it names no images", run_id, exc)
        return set()
    return {h for names in splits.values() for h in names}


def registry_references(tracking_uri: str) -> References:
    """Every registered version, the export its tags name, and the images its training run used.

    Raises:
        ReferencesUnavailable: the MLflow server does not answer.
    """
    if not tracking_reachable(tracking_uri, timeout=5.0):
        raise ReferencesUnavailable(
            f"The MLflow server at {tracking_uri} does not answer, so gc cannot tell what registered models "
            "refer to; nothing was deleted. To fix this, start it (`loopline services up`) or point "
            "LOOPLINE_MLFLOW_TRACKING_URI at it."
        )
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    hashes: set[str] = set()
    exports: set[tuple[int, int]] = set()
    registered: set[tuple[str, str]] = set()
    token = None
    while True:
        page = client.search_model_versions(max_results=PAGE, page_token=token)
        for mv in page:
            registered.add((mv.name, str(mv.version)))
            tags = mv.tags or {}
            project, export = tags.get("label_studio.project_id", ""), tags.get("label_studio.export_id", "")
            if project.isdigit() and export.isdigit():
                exports.add((int(project), int(export)))
            if mv.run_id:
                hashes |= _splits_hashes(client, tracking_uri, mv.run_id)
        token = page.token
        if not token:
            break
    return References(frozenset(hashes), frozenset(exports), frozenset(registered))


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        response = client.post(path, json={**body, "limit": PAGE, "offset": len(rows)})
        response.raise_for_status()
        page = response.json()
        rows.extend(page)
        if len(page) < PAGE:
            return rows


def _storage_key(run: dict[str, Any]) -> str | None:
    data = (run.get("state") or {}).get("data")
    key = data.get("storage_key") if isinstance(data, dict) else None
    return str(key) if key else None


def unfinished_result_keys(api_url: str) -> frozenset[str]:
    """Storage keys of the results of every run that has not finished, its subflows' included (a resumed
    flow reads them again). Raises ``httpx.HTTPError`` when the Prefect API does not answer."""
    keys: set[str] = set()
    with httpx.Client(base_url=api_url.rstrip("/"), timeout=10.0) as client:
        flows = _post(client, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": UNFINISHED}}}})
        seen: set[str] = set()
        while flows:
            ids = [f["id"] for f in flows if f["id"] not in seen]
            seen.update(ids)
            keys.update(k for f in flows if (k := _storage_key(f)))
            if not ids:
                break
            tasks = _post(client, "/task_runs/filter", {"flow_runs": {"id": {"any_": ids}}})
            keys.update(k for t in tasks if (k := _storage_key(t)))
            parents = [t["id"] for t in tasks]
            flows = (
                _post(client, "/flow_runs/filter", {"flow_runs": {"parent_task_run_id": {"any_": parents}}})
                if parents
                else []
            )
    return frozenset(keys)


def collect_running(api_url: str) -> bool:
    """Whether a collect flow run is under way (its images are stored before their manifest exists)."""
    with httpx.Client(base_url=api_url.rstrip("/"), timeout=10.0) as client:
        body = {
            "flows": {"name": {"any_": [COLLECT_FLOW]}},
            "flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING"]}}},
        }
        return bool(_post(client, "/flow_runs/filter", body))
