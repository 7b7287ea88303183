"""Export registered models from MLflow into a bundle: each version's files (downloaded from its training
run, as the serving and register stages read them), its tags and description, its run's parameters and
metrics; the registered model's description, tags (``deploy.history`` among them) and aliases."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loopline.errors import ModelNotFound, RegistryError
from loopline.migrate.bundle import FileEntry, combined_sha256, sha256_file

logger = logging.getLogger(__name__)

MODELS = "models"


@dataclass(frozen=True)
class SourceRun:
    run_id: str
    experiment: str
    run_name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]  # the run's own tags, MLflow's internal ``mlflow.*`` ones left out


@dataclass(frozen=True)
class VersionExport:
    version: str
    description: str
    tags: dict[str, str]
    sha256: str  # of the version's files together (``combined_sha256``)
    files: dict[str, str]  # path under the version's folder → SHA-256
    run: SourceRun


@dataclass(frozen=True)
class ModelExport:
    """What ``models/<name>/model.json`` holds."""

    name: str
    description: str
    tags: dict[str, str]
    aliases: dict[str, str]  # alias → source version
    versions: list[VersionExport] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ModelExport:
        versions = [VersionExport(**{**v, "run": SourceRun(**v["run"])}) for v in raw.get("versions", [])]
        return cls(raw["name"], raw["description"], raw["tags"], raw["aliases"], versions)


@dataclass(frozen=True)
class ExportedModel:
    model: ModelExport
    files: dict[str, FileEntry]  # bundle path → entry, ``model.json`` among them


def model_json_path(name: str) -> str:
    return f"{MODELS}/{name}/model.json"


def version_folder(name: str, version: str) -> str:
    return f"{MODELS}/{name}/{version}"


def _source_run(client: Any, run_id: str) -> SourceRun:
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id).name
    return SourceRun(
        run_id=run_id,
        experiment=experiment,
        run_name=run.info.run_name or "",
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
    )


def export_model(client: Any, tracking_uri: str, name: str, bundle: Path) -> ExportedModel:
    """Write ``name``'s versions and ``model.json`` under ``bundle/models/<name>/``."""
    from mlflow.exceptions import MlflowException

    from loopline.registry.artifacts import download_model_files
    from loopline.registry.registry import is_not_found

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
        known = sorted(m.name for m in client.search_registered_models())
        raise ModelNotFound(
            f"No registered model {name!r} on {tracking_uri} (registered: {known or 'none'}). To fix this, "
            "name the models to export with --model NAME (once per model), or pass --no-models to export "
            "the data only."
        ) from exc
    files: dict[str, FileEntry] = {}
    exported = ModelExport(name, model.description or "", dict(model.tags), dict(model.aliases))
    found = client.search_model_versions(f"name = '{name}'")
    for number in sorted((str(v.version) for v in found), key=int):
        version = client.get_model_version(name, number)  # search may leave tags out
        if not version.run_id:
            raise RegistryError(
                f"Version {number} of {name!r} has no training run, so its files cannot be exported. To fix "
                "this, delete that version or register it from a run (loopline's register stage does)."
            )
        folder = Path(bundle, version_folder(name, number))
        folder.mkdir(parents=True, exist_ok=True)
        download_model_files(version.run_id, folder, tracking_uri)
        hashes = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(folder).as_posix()
            entry = FileEntry(sha256_file(path), path.stat().st_size)
            hashes[relative] = entry.sha256
            files[f"{version_folder(name, number)}/{relative}"] = entry
        exported.versions.append(
            VersionExport(
                version=number,
                description=version.description or "",
                tags=dict(version.tags),
                sha256=combined_sha256(hashes),
                files=hashes,
                run=_source_run(client, version.run_id),
            )
        )
        logger.info("exported %s version %s (%d files)", name, number, len(hashes))
    content = json.dumps(exported.to_json(), indent=1, sort_keys=True).encode()
    path = Path(bundle, model_json_path(name))
    path.write_bytes(content)
    files[model_json_path(name)] = FileEntry(sha256_file(path), len(content))
    return ExportedModel(exported, files)
