"""What dataset versions exist under a data root, the labeled versions built on each, and (when an MLflow
server answers) the registered model trained on each labeled version.

A labeled manifest (``labels/<version>.jsonl``) names the dataset version of each of its rows; a later
round carries earlier rows forward, so one labeled version can draw on several dataset versions and is
listed under each, with how many of its labels come from that dataset. Labeled rows are read as plain
JSON here (only the two fields needed), so this module does not depend on the labeling stage.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass

from loopline.data.manifest import CorruptManifest, parse_manifest
from loopline.data.store import DataStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabeledSummary:
    version: str
    manifest_uri: str
    labels: int  # labeled images in the whole labeled version
    from_dataset: int  # of those, images of the dataset it is listed under
    classes: int


@dataclass(frozen=True)
class DatasetSummary:
    version: str
    manifest_uri: str | None  # None: labeled manifests name this version but its manifest is gone
    images: int
    labelled: int  # images with a folder (source) label
    labeled: tuple[LabeledSummary, ...] = ()


def _version_of(key: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(".jsonl")


def parse_labeled_rows(content: bytes, uri: str) -> list[tuple[str, str]]:
    """``(dataset_version, label)`` of each row of a labeled manifest; ``CorruptManifest`` if damaged."""
    rows = []
    for number, line in enumerate(content.decode(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            rows.append((str(raw["dataset_version"]), str(raw["label"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CorruptManifest(
                f"The labeled manifest {uri}, line {number} is damaged ({type(exc).__name__}: {exc}). "
                "To fix this, delete the file and run the label stage again for its dataset (the "
                "annotations stay in Label Studio), or restore it from a backup."
            ) from exc
    return rows


def list_datasets(store: DataStore) -> list[DatasetSummary]:
    """Every dataset version under ``store`` with the labeled versions built on it."""
    labeled: dict[str, list[LabeledSummary]] = {}
    for key in store.list_keys("labels"):
        if not key.endswith(".jsonl"):
            continue
        version, uri = _version_of(key), store.uri(key)
        pairs = parse_labeled_rows(store.get_bytes(key), uri)
        per_dataset = Counter(dataset for dataset, _ in pairs)
        classes = len({label for _, label in pairs})
        for dataset, n in per_dataset.items():
            summary = LabeledSummary(version, uri, len(pairs), n, classes)
            labeled.setdefault(dataset, []).append(summary)
    summaries = []
    for key in store.list_keys("manifests"):
        if not key.endswith(".jsonl"):
            continue
        version, uri = _version_of(key), store.uri(key)
        rows = parse_manifest(store.get_bytes(key), uri)
        on_it = tuple(sorted(labeled.pop(version, []), key=lambda s: s.version))
        with_label = sum(1 for r in rows if r.source_label)
        summaries.append(DatasetSummary(version, uri, len(rows), with_label, on_it))
    for version, orphans in sorted(labeled.items()):  # labeled versions whose dataset manifest is gone
        summaries.append(DatasetSummary(version, None, 0, 0, tuple(sorted(orphans, key=lambda s: s.version))))
    return summaries


def labeled_versions(summaries: list[DatasetSummary]) -> list[str]:
    return sorted({lab.version for s in summaries for lab in s.labeled})


def tracking_reachable(tracking_uri: str, timeout: float = 1.0) -> bool:
    """Whether an MLflow tracking URI answers now: an HTTP server's /health, or an existing SQLite file."""
    if tracking_uri.startswith(("http://", "https://")):
        import httpx

        try:
            return httpx.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False
    if tracking_uri.startswith("sqlite:///"):
        from pathlib import Path

        return Path(tracking_uri.removeprefix("sqlite:///")).is_file()
    return False


def registered_models(tracking_uri: str, versions: list[str]) -> dict[str, str]:
    """For each labeled version, the newest registered model version tagged with it (the register stage
    tags ``labeled_version``), as ``"name vN (aliases)"``. Call only when ``tracking_reachable``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    found: dict[str, str] = {}
    for version in versions:
        if not version.isalnum():  # versions are hex digests; anything else is not ours to query
            continue
        hits = client.search_model_versions(f"tags.labeled_version = '{version}'")
        if not hits:
            continue
        newest = max(hits, key=lambda mv: int(mv.version))
        newest = client.get_model_version(newest.name, newest.version)  # search leaves aliases out
        aliases = f" ({', '.join(sorted(newest.aliases))})" if newest.aliases else ""
        found[version] = f"{newest.name} v{newest.version}{aliases}"
    return found


def render_datasets(summaries: list[DatasetSummary], models: dict[str, str] | None = None) -> list[str]:
    """Lines for ``loopline datasets``: each dataset, then its labeled versions indented below it.
    ``models`` (labeled version → model) adds the model column; ``None`` leaves it out."""
    lines = []
    for d in summaries:
        where = d.manifest_uri or "(manifest missing: only labeled manifests name this version)"
        folder = f", {d.labelled} with folder labels" if d.labelled else ""
        lines.append(f"dataset {d.version}  {d.images:>6} images{folder}  {where}")
        if not d.labeled:
            lines.append("  no labeled versions yet")
        for lab in d.labeled:
            share = "" if lab.from_dataset == lab.labels else f" ({lab.from_dataset} from this dataset)"
            line = f"  labeled {lab.version}  {lab.labels:>6} labels, {lab.classes} classes{share}"
            if models is not None:
                line += f"  model: {models.get(lab.version, '-')}"
            lines.append(line)
    return lines
