"""The readers ``loopline.lineage`` walks with, over the real parts: the A/B event store, the MLflow
registry and tracking server, the data root's manifests and Label Studio's users. Each turns what can go
wrong (a server down, a file deleted or damaged) into ``LinkBroken`` with what to do about it, and never
writes anything: a missing SQLite event store is not created, no Label Studio token is generated."""

from __future__ import annotations

import json
from typing import Any

from loopline.data.labeled import LabeledRow, read_labeled_manifest
from loopline.data.manifest import ManifestRow, manifest_key, read_manifest
from loopline.errors import LooplineError
from loopline.lineage import LinkBroken, ModelVersion, Readers, ServedRequest, TrainingRun
from loopline.services.credentials import (
    configured_label_studio_token,
)
from loopline.settings import Settings


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, LooplineError) else f"{type(exc).__name__}: {exc}"


class StoreEvents:
    """Routed requests in the event store (``LOOPLINE_EVENT_STORE_URL``)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def served_request(self, request_id: str) -> ServedRequest | None:
        import sqlalchemy as sa

        from loopline.rollout.store import EventStore

        parsed = sa.make_url(self.url)
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            from pathlib import Path

            if not Path(parsed.database).is_file():
                raise LinkBroken(
                    f"there is no event store at {parsed.database}: no request was routed with these "
                    "settings. To fix this, point LOOPLINE_EVENT_STORE_URL (or LOOPLINE_HOME) at the "
                    "router's event store."
                )
        try:
            store = EventStore(self.url)
            try:
                row = store.get_request(request_id)
                experiment = store.get_experiment(row.experiment) if row else None
            finally:
                store.close()
        except Exception as exc:  # any failure of the store is a link that cannot be followed
            raise LinkBroken(_why(exc)) from exc
        if row is None:
            return None
        return ServedRequest(
            request_id=row.request_id,
            at=row.at.isoformat(),
            experiment=row.experiment,
            model=experiment.state.model if experiment else "",
            variant=row.variant,
            model_version=row.model_version,
            status=row.status,
            latency_ms=row.latency_ms,
            predicted_label=row.predicted_label,
            confidence=row.confidence,
            fallback=row.fallback,
        )


class MlflowRegistry:
    """Model versions and training runs on an MLflow tracking server (checked once, quickly: MLflow's own
    client retries a dead server for minutes)."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            from loopline.data.catalog import tracking_reachable

            uri = self.tracking_uri
            if uri.startswith(("http://", "https://", "sqlite:///")) and not tracking_reachable(uri, 5.0):
                raise LinkBroken(
                    f"no MLflow tracking server answers at {uri}. To fix this, start it (`loopline services "
                    "up`) or point LOOPLINE_MLFLOW_TRACKING_URI at the server the models were registered on."
                )
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

    def _version(self, read: Any) -> ModelVersion | None:
        from loopline.registry.registry import is_not_found

        client = self.client()
        try:
            found = read(client)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise LinkBroken(f"the MLflow registry at {self.tracking_uri} failed: {_why(exc)}") from exc
        return ModelVersion(
            name=found.name,
            version=str(found.version),
            aliases=tuple(sorted(found.aliases or ())),
            run_id=found.run_id or "",
            source=found.source or "",
            created=_millis(found.creation_timestamp),
            tags=dict(found.tags or {}),
        )

    def model_version(self, name: str, version: str) -> ModelVersion | None:
        return self._version(lambda client: client.get_model_version(name, version))

    def aliased_version(self, name: str, alias: str) -> ModelVersion | None:
        return self._version(lambda client: client.get_model_version_by_alias(name, alias))

    def training_run(self, run_id: str) -> TrainingRun:
        from loopline.registry.registry import is_not_found

        if not run_id:
            raise LinkBroken("the model version names no run (it was not registered from a training run)")
        client = self.client()
        try:
            run = client.get_run(run_id)
        except Exception as exc:
            if is_not_found(exc):
                raise LinkBroken(
                    f"the training run {run_id} is not on {self.tracking_uri} (deleted?)"
                ) from exc
            raise LinkBroken(f"the MLflow server at {self.tracking_uri} failed: {_why(exc)}") from exc
        return TrainingRun(
            run_id=run.info.run_id,
            run_name=run.info.run_name or "",
            experiment_id=str(run.info.experiment_id),
            status=str(run.info.status),
            params=dict(sorted(run.data.params.items())),
            metrics=dict(sorted(run.data.metrics.items())),
            tags={k: v for k, v in sorted(run.data.tags.items()) if not k.startswith("mlflow.")},
        )


def _millis(stamp: int | None) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(stamp / 1000, UTC).isoformat() if stamp else ""


class DataRootManifests:
    """Labeled and dataset manifests under a data root (a folder or an S3 prefix)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _read(self, root: str, key: str, what: str, read: Any) -> Any:
        from loopline.data.store import open_store

        try:
            store = open_store(root, self.settings)
            uri = store.uri(key)
            if not store.exists(key):
                raise LinkBroken(
                    f"the {what} {uri} is gone (deleted, or the data root moved). To fix this, restore it "
                    "from a backup, or point LOOPLINE_DATA_ROOT at the data root it was written to."
                )
            return uri, read(store)
        except LinkBroken:
            raise
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise LinkBroken(f"the {what} under {root} is damaged: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            raise LinkBroken(f"the {what} under {root} cannot be read: {_why(exc)}") from exc

    def labeled_rows(self, root: str, version: str) -> tuple[str, list[LabeledRow]]:
        key = f"labels/{version}.jsonl"
        result: tuple[str, list[LabeledRow]] = self._read(
            root, key, "labeled manifest", lambda store: read_labeled_manifest(store, version)
        )
        return result

    def dataset_rows(self, root: str, version: str) -> tuple[str, list[ManifestRow]]:
        result: tuple[str, list[ManifestRow]] = self._read(
            root, manifest_key(version), "dataset manifest", lambda store: read_manifest(store, version)
        )
        return result


class StudioPeople:
    """Label Studio's users (id → e-mail), to name the annotators."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url, self.token = url, token

    def names(self) -> dict[int, str]:
        from loopline.labeling.studio import LabelStudio

        if not self.token:
            raise LinkBroken("no Label Studio token is set (LOOPLINE_LABEL_STUDIO_TOKEN)")
        try:
            with LabelStudio(self.url, self.token, timeout=5.0) as studio:
                users = studio.request("GET", "/api/users") or []
        except LooplineError as exc:
            raise LinkBroken(str(exc)) from exc
        return {int(u["id"]): str(u.get("email") or u.get("username") or u["id"]) for u in users}


def readers_from_settings(settings: Settings, *, ask_label_studio: bool = True) -> Readers:
    """The readers of the configured platform: event store, MLflow, data root and Label Studio."""
    studio = settings.resolved_label_studio_url
    return Readers(
        events=StoreEvents(settings.resolved_event_store_url),
        registry=MlflowRegistry(settings.resolved_mlflow_tracking_uri),
        data=DataRootManifests(settings),
        people=StudioPeople(studio, configured_label_studio_token(settings)) if ask_label_studio else None,
        data_root=settings.resolved_data_root,
        label_studio_url=studio,
    )
