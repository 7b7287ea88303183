"""``loopline gc``: plan from the inventory and the references, then delete what the plan removes.

MLflow and the manifests must answer (what they refer to is never guessed: gc refuses with
``ReferencesUnavailable``). Without the Prefect API, result files and stored images are skipped (a run
that has not finished, or a collect under way, could need them); without Label Studio, its exports are.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from loopline.data.store import DataStore, open_store
from loopline.errors import LabelStudioError
from loopline.labeling.studio import LabelStudio
from loopline.retention import inventory
from loopline.retention.inventory import server_spec
from loopline.retention.plan import (
    Decision,
    Item,
    Kind,
    Plan,
    plan_blobs,
    plan_exports,
    plan_model_cache,
    plan_results,
    plan_servers,
)
from loopline.retention.references import (
    collect_running,
    manifest_references,
    registry_references,
    unfinished_result_keys,
)
from loopline.services import process
from loopline.services.credentials import label_studio_credentials
from loopline.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    removed: tuple[Item, ...]
    failed: tuple[str, ...]  # what could not be removed, and why


def _studio(settings: Settings) -> LabelStudio:
    token = label_studio_credentials(settings).token.get_secret_value()
    return LabelStudio(settings.resolved_label_studio_url, token)


def plan_gc(settings: Settings, now: datetime | None = None) -> Plan:
    """What gc removes and keeps now, with reasons (deletes nothing).

    Raises:
        ReferencesUnavailable: the MLflow server does not answer, or a manifest cannot be read.
    """
    now = now or datetime.now(UTC)
    store = open_store(settings.resolved_data_root, settings)
    in_manifests = manifest_references(store)
    in_registry = registry_references(settings.resolved_mlflow_tracking_uri)
    decisions: list[Decision] = []
    skipped: dict[Kind, str] = {}
    api = settings.resolved_prefect_api_url
    try:
        in_use, collecting = unfinished_result_keys(api), collect_running(api)
    except httpx.HTTPError as exc:
        reason = f"the Prefect API at {api} does not answer ({type(exc).__name__}); unfinished runs unknown"
        skipped["results"] = skipped["blobs"] = reason
    else:
        files = inventory.result_files(inventory.result_dirs(settings))
        decisions += plan_results(files, in_use, now, settings.gc_result_days)
        if collecting:
            skipped["blobs"] = "a collect flow run is under way (its images have no manifest yet)"
        else:
            hashes = in_manifests.content_hashes | in_registry.content_hashes
            decisions += plan_blobs(inventory.blobs(store), hashes, now, settings.gc_blob_grace_hours)
    try:
        with _studio(settings) as studio:
            exports = inventory.label_studio_exports(studio)
    except LabelStudioError as exc:
        skipped["exports"] = f"Label Studio does not answer: {exc}"
    else:
        named = in_manifests.exports | in_registry.exports
        decisions += plan_exports(exports, named, settings.gc_export_keep)
    home = settings.resolved_home
    servers, served = inventory.model_servers(home)
    decisions += plan_servers(servers, now, settings.gc_server_log_days)
    decisions += plan_model_cache(inventory.model_cache(home), in_registry.registered, served)
    return Plan(tuple(decisions), skipped)


def _export_ids(ref: str) -> tuple[int, int]:
    _, project, _, export = ref.split()  # ExportSnapshot.ref: "project P export E"
    return int(project), int(export)


def _remove(item: Item, store: DataStore, studio: LabelStudio | None) -> None:
    if item.kind == "blobs":
        store.delete(item.ref)
    elif item.kind == "exports":
        assert studio is not None
        studio.delete_export(*_export_ids(item.ref))
    elif item.kind == "model-cache":
        shutil.rmtree(item.ref)
    else:
        Path(item.ref).unlink(missing_ok=True)


def sweep(plan: Plan, settings: Settings) -> SweepResult:
    """Delete what ``plan`` removes. A model server that started since the plan keeps its files."""
    store = open_store(settings.resolved_data_root, settings)
    removed, failed = [], []
    studio = _studio(settings) if any(i.kind == "exports" for i in plan.removals) else None
    try:
        for item in plan.removals:
            if item.kind == "servers" and process.running_pid(
                server_spec(settings.resolved_home, Path(item.ref).stem)
            ):
                failed.append(f"{item.ref}: its server started since gc looked; kept")
                continue
            try:
                _remove(item, store, studio)
            except (OSError, LabelStudioError) as exc:
                failed.append(f"{item.ref}: {exc}")
            else:
                removed.append(item)
    finally:
        if studio is not None:
            studio.close()
    return SweepResult(tuple(removed), tuple(failed))
