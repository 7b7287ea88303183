"""Register a bundle's model versions in the target MLflow, idempotently.

Each version becomes a run on the target (the source run's parameters, metrics and tags, and the version's
files as its artifacts, where loopline's stages read them) registered under the same name. The run and
the version carry ``migrate.source`` (``NAME/VERSION`` on the source) and ``migrate.sha256`` (of the
version's files): an import finds what an earlier one created by these two tags and creates nothing
again. Version numbers may differ on the target; aliases, ``deploy.history`` and the alias audit records
are rewritten with the target's numbers (``loopline.migrate.remap``), and only tags that differ are set.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopline.migrate.bundle import BundleIndex, corrupt, read_verified, safe_path
from loopline.migrate.export_models import ModelExport, VersionExport, model_json_path, version_folder
from loopline.migrate.remap import changed, remap_model_tags, remap_version_tags

logger = logging.getLogger(__name__)

SOURCE_TAG, SHA_TAG, SOURCE_RUN_TAG = "migrate.source", "migrate.sha256", "migrate.source_run_id"


@dataclass(frozen=True)
class ImportedModel:
    name: str
    versions: dict[str, str]  # source version → target version
    created: list[str] = field(default_factory=list)  # target versions this import registered
    aliases: dict[str, str] = field(default_factory=dict)  # aliases this import set → target version
    tags_set: int = 0  # model and version tags this import wrote (0 on a repeated import)


def read_model(bundle: Path, index: BundleIndex, name: str) -> ModelExport:
    relative = model_json_path(name)
    model = ModelExport.from_json(json.loads(read_verified(bundle, relative, index.files[relative])))
    unlisted = {
        f"{version_folder(name, v.version)}/{path}": "not listed in bundle.json"
        for v in model.versions
        for path in v.files
        if f"{version_folder(name, v.version)}/{path}" not in index.files
    }
    if unlisted:
        raise corrupt(bundle, unlisted)
    return model


def _marks(name: str, version: VersionExport) -> dict[str, str]:
    return {
        SOURCE_TAG: f"{name}/{version.version}",
        SHA_TAG: version.sha256,
        SOURCE_RUN_TAG: version.run.run_id,
    }


def _existing_versions(client: Any, name: str) -> dict[tuple[str, str], Any]:
    found = client.search_model_versions(f"name = '{name}'")
    return {(v.tags.get(SOURCE_TAG, ""), v.tags.get(SHA_TAG, "")): v for v in found if SOURCE_TAG in v.tags}


def _experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return str(found.experiment_id) if found else str(client.create_experiment(name))


def _run(client: Any, bundle: Path, index: BundleIndex, name: str, version: VersionExport) -> str:
    """The target run holding ``version``'s files: one an earlier import finished, or a new one."""
    from mlflow.entities import Metric, Param

    marks = _marks(name, version)
    experiment = _experiment_id(client, version.run.experiment or "loopline-imported")
    query = f"tags.`{SOURCE_TAG}` = '{marks[SOURCE_TAG]}' and tags.`{SHA_TAG}` = '{version.sha256}'"
    for run in client.search_runs([experiment], filter_string=query):
        if run.info.status == "FINISHED":
            return str(run.info.run_id)
    run = client.create_run(experiment, run_name=version.run.run_name, tags={**version.run.tags, **marks})
    run_id = str(run.info.run_id)
    try:
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in sorted(version.run.metrics.items())],
            params=[Param(k, v) for k, v in sorted(version.run.params.items())],
        )
        with tempfile.TemporaryDirectory(prefix="loopline-import-") as staging:
            folder = version_folder(name, version.version)
            for relative in version.files:  # verified as they are read: what is uploaded is what was hashed
                target = safe_path(Path(staging), relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                path = f"{folder}/{relative}"
                target.write_bytes(read_verified(bundle, path, index.files[path]))
            client.log_artifacts(run_id, staging)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")  # never reused: the next import starts afresh
        raise
    client.set_terminated(run_id)
    return run_id


def _places(
    target_version: Any, version: VersionExport, labeled: dict[str, str], root: str
) -> dict[str, str]:
    """Version tags that name places, as they are on the target."""
    places = {"training.run_id": str(target_version.run_id), "data_root": root}
    labeled_uri = labeled.get(version.tags.get("labeled_version", ""))
    if labeled_uri:
        places["labeled_manifest_uri"] = labeled_uri
    return places


def import_model(
    client: Any, bundle: Path, index: BundleIndex, exported: ModelExport, labeled: dict[str, str], root: str
) -> ImportedModel:
    """Register ``exported``'s versions from the bundle (or find them), then set tags and aliases.

    ``labeled``: labeled version → its manifest's URI in the target data root ``root``."""
    from mlflow.exceptions import MlflowException

    from loopline.registry.registry import is_not_found, register_run

    name = exported.name
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
        model = client.create_registered_model(name, description=exported.description)
    if exported.description and model.description != exported.description:
        client.update_registered_model(name, description=exported.description)
    existing = _existing_versions(client, name)
    versions: dict[str, str] = {}
    created: list[str] = []
    for version in exported.versions:
        found = existing.get((f"{name}/{version.version}", version.sha256))
        if found is None:
            run_id = _run(client, bundle, index, name, version)
            registered = register_run(client, name, run_id, _marks(name, version), version.description)
            versions[version.version] = registered.version
            if registered.created:
                created.append(registered.version)
        else:
            versions[version.version] = str(found.version)
    tags_set = 0
    for version in exported.versions:
        target = client.get_model_version(name, versions[version.version])
        places = _places(target, version, labeled, root)
        wanted = {**remap_version_tags(version.tags, versions, places), **_marks(name, version)}
        for key, value in changed(wanted, dict(target.tags)).items():
            client.set_model_version_tag(name, target.version, key, value)
            tags_set += 1
    model = client.get_registered_model(name)
    for key, value in changed(
        remap_model_tags(exported.tags, versions, dict(model.tags)), dict(model.tags)
    ).items():
        client.set_registered_model_tag(name, key, value)
        tags_set += 1
    aliases: dict[str, str] = {}
    for alias, source in sorted(exported.aliases.items()):
        wanted_version = versions.get(str(source))
        if wanted_version is not None and str(model.aliases.get(alias)) != wanted_version:
            client.set_registered_model_alias(name, alias, wanted_version)
            aliases[alias] = wanted_version
    logger.info("imported %s: versions %s, %d created", name, versions, len(created))
    return ImportedModel(name, versions, created, aliases, tags_set)
