"""``loopline export``: the current configuration's data and registered models, written to a bundle."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from loopline.data.store import open_store
from loopline.errors import LooplineError
from loopline.migrate.bundle import INDEX, BundleIndex, write_index
from loopline.migrate.export_data import export_data
from loopline.migrate.export_models import export_model
from loopline.settings import Settings

logger = logging.getLogger(__name__)


class BundleFolderNotEmpty(LooplineError):
    """An export would mix its files with what a folder already holds."""


@dataclass(frozen=True)
class ExportResult:
    index_path: Path
    datasets: int
    labeled: int
    images: int
    models: dict[str, int]  # model → versions exported
    files: int
    size: int  # bytes, all files together


def _check_folder(bundle: Path) -> None:
    if bundle.exists() and (not bundle.is_dir() or any(bundle.iterdir())):
        what = "a file" if not bundle.is_dir() else "a folder that is not empty"
        raise BundleFolderNotEmpty(
            f"{str(bundle)!r} is {what}. To fix this, export into a new or empty folder (an export never "
            "mixes its files with others; remove an unfinished export first)."
        )


def export_bundle(settings: Settings, bundle: Path, models: list[str]) -> ExportResult:
    """Write the data root's manifests, labeled manifests and images, and ``models`` with every version,
    from the MLflow server of ``settings``, into the new folder ``bundle``; ``bundle.json`` last."""
    from loopline.registry.registry import check_mlflow

    bundle = bundle.expanduser().resolve()
    _check_folder(bundle)
    tracking_uri = settings.resolved_mlflow_tracking_uri
    client = None
    if models:
        from mlflow import MlflowClient

        check_mlflow(tracking_uri)
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    bundle.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.resolved_data_root, settings)
    data = export_data(store, bundle)
    files = dict(data.files)
    versions: dict[str, int] = {}
    for name in models:
        exported = export_model(client, tracking_uri, name, bundle)
        versions[name] = len(exported.model.versions)
        files.update(exported.files)
    index = BundleIndex(
        source_data_root=store.root,
        source_tracking_uri=tracking_uri if models else "",
        created=datetime.now(UTC).isoformat(),
        datasets=data.datasets,
        labeled=data.labeled,
        images=data.images,
        models=tuple(models),
        files=files,
    )
    path = write_index(bundle, index)
    logger.info("wrote %s: %d files", path, len(files))
    return ExportResult(
        index_path=path,
        datasets=len(data.datasets),
        labeled=len(data.labeled),
        images=len(set(data.images.values())),
        models=versions,
        files=len(files),
        size=sum(e.size for e in files.values()),
    )


__all__ = ["INDEX", "BundleFolderNotEmpty", "ExportResult", "export_bundle"]
