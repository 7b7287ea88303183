"""``loopline import``: a bundle's data and models into the current configuration (the target).

Everything is checked before anything is written: the index, every file's SHA-256 (``CorruptBundle``
names every bad file), the target data root (``DataRootNotWritable``) and, when the bundle holds models,
the target MLflow server (``RegistryError``). Then the data, then the models; both idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from loopline.data.store import open_store
from loopline.migrate.bundle import BundleIndex, corrupt, read_index, verify_bundle
from loopline.migrate.export_data import DATA
from loopline.migrate.export_models import model_json_path
from loopline.migrate.import_data import ImportedData, import_data, labeled_key
from loopline.migrate.import_models import ImportedModel, import_model, read_model
from loopline.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportResult:
    data_root: str
    tracking_uri: str
    data: ImportedData
    models: list[ImportedModel]


def check_complete(bundle: Path, index: BundleIndex) -> None:
    """Every file the index's contents need is listed in it (a hand-edited index is caught here)."""
    needed = [f"{DATA}/{key}" for key in set(index.images.values())]
    needed += [f"{DATA}/manifests/{v}.jsonl" for v in index.datasets]
    needed += [f"{DATA}/{labeled_key(v)}" for v in index.labeled]
    needed += [model_json_path(name) for name in index.models]
    unlisted = {path: "not listed in bundle.json" for path in sorted(needed) if path not in index.files}
    if unlisted:
        raise corrupt(bundle, unlisted)


def import_bundle(settings: Settings, bundle: Path, mlflow_attempts: int = 4) -> ImportResult:
    """Import the bundle at ``bundle`` into the data root and MLflow server of ``settings``."""
    from loopline.registry.registry import check_mlflow

    bundle = bundle.expanduser().resolve()
    index = read_index(bundle)
    check_complete(bundle, index)
    verify_bundle(bundle, index)
    exported = [read_model(bundle, index, name) for name in index.models]
    store = open_store(settings.resolved_data_root, settings)
    store.check_writable()
    tracking_uri = settings.resolved_mlflow_tracking_uri
    client = None
    if index.models:
        check_mlflow(tracking_uri, attempts=mlflow_attempts)
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    data = import_data(bundle, index, store)
    labeled = {v: store.uri(labeled_key(v)) for v in index.labeled}
    models = [import_model(client, bundle, index, model, labeled, store.root) for model in exported]
    return ImportResult(store.root, tracking_uri if index.models else "", data, models)
