"""The model being served and its hot reload.

``ModelHost`` holds one (model, batcher) pair. A reload resolves the selector (alias or version), loads a
new version beside the old one (``load_model`` warms it up and smoke-checks it), then swaps the pair in one
assignment; the old batcher drains, so requests already queued finish on the old model. A version that
fails to load is refused: the old one keeps serving, the failure is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

from loopline.serving.batching import MicroBatcher
from loopline.serving.metrics import ServingMetrics
from loopline.serving.settings import ServingSettings

if TYPE_CHECKING:
    from loopline.serving.detector import LoadedDetector
    from loopline.serving.model import LoadedModel

    ServedModel: TypeAlias = LoadedModel | LoadedDetector

logger = logging.getLogger(__name__)


class ModelLoader(Protocol):
    """Where versions come from: the registry in production, a folder of test models in tests."""

    def resolve(self) -> str:
        """The version the selector points at now."""
        ...

    def load(self, version: str) -> ServedModel:
        """That version loaded, warmed up and smoke-checked (raises on any failure)."""
        ...


@dataclass(frozen=True)
class RegistryLoader:
    """Versions of a registered model from an MLflow tracking server, files cached under ``cache_dir``."""

    tracking_uri: str
    name: str
    selector: str
    cache_dir: Path
    threads: int | None = None

    def resolve(self) -> str:
        from mlflow import MlflowClient

        from loopline.serving.model import resolve_version

        return resolve_version(MlflowClient(self.tracking_uri), self.name, self.selector)

    def load(self, version: str) -> ServedModel:
        from loopline.serving.model import fetch_version, load_model

        folder = fetch_version(self.tracking_uri, self.name, version, self.cache_dir)
        return load_model(folder, self.name, version, threads=self.threads)


@dataclass(frozen=True)
class Serving:
    """A model and the batcher in front of it; swapped together. A classifier's batcher answers logits
    (``n x classes``) for ``n`` images, a detector's a ``DetectorOutput`` per image."""

    model: ServedModel
    batcher: MicroBatcher


@dataclass(frozen=True)
class ReloadResult:
    outcome: Literal["loaded", "unchanged", "refused"]
    version: str
    previous: str | None
    error: str | None = None


class ModelHost:
    """The served (model, batcher) pair, its hot reload and its alias poller."""

    def __init__(self, settings: ServingSettings, loader: ModelLoader, metrics: ServingMetrics) -> None:
        self.settings, self.loader, self.metrics = settings, loader, metrics
        self.current: Serving | None = None
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None

    async def start(self, initial: ServedModel | None = None) -> None:
        """Serve ``initial`` now, or load the selected version in the background; then poll the alias."""
        if initial is not None:
            await self._swap(initial)
        self._poller = asyncio.create_task(self._poll(load_first=initial is None))

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        async with self._lock:
            if self.current is not None:
                await self.current.batcher.stop()

    async def reload(self) -> ReloadResult:
        """Resolve the selector; load and swap in a new version, or refuse it and keep the old one."""
        async with self._lock:
            previous = self.current.model.version if self.current else None
            version = await asyncio.to_thread(self.loader.resolve)
            if version == previous:
                return ReloadResult("unchanged", version, previous)
            try:
                model = await asyncio.to_thread(self.loader.load, version)
            except Exception as exc:  # any failure refuses the version: the old one must keep serving
                logger.error(
                    "refused %s version %s (still serving %s): %s", self._name, version, previous, exc
                )
                self.metrics.model_loads.labels(version, "refused").inc()
                return ReloadResult("refused", version, previous, error=str(exc))
            await self._swap(model)
            logger.info("serving %s version %s (was %s)", model.name, version, previous)
            return ReloadResult("loaded", version, previous)

    async def _swap(self, model: ServedModel) -> None:
        from loopline.serving.detector import LoadedDetector

        version = model.version
        predict = model.detect_batch if isinstance(model, LoadedDetector) else model.predict

        def on_batch(size: int) -> None:
            self.metrics.batch_size.labels(version).observe(size)

        batcher = MicroBatcher(
            predict,
            max_batch_size=self.settings.max_batch_size,
            max_wait_ms=self.settings.max_wait_ms,
            max_queue=self.settings.max_queue,
            on_batch=on_batch,
        )
        await batcher.start()
        old, self.current = self.current, Serving(model, batcher)
        self.metrics.model_loads.labels(version, "loaded").inc()
        if old is not None:
            await old.batcher.stop()  # drains: what was queued finishes on the old model

    @property
    def _name(self) -> str:
        return self.current.model.name if self.current else self.settings.model_name

    async def _poll(self, load_first: bool) -> None:
        period = self.settings.poll_seconds
        while load_first and self.current is None:  # the first version: retry until it loads
            await self.try_reload()
            if self.current is None:
                await asyncio.sleep(period or 5.0)
        while period > 0:
            await asyncio.sleep(period)
            await self.try_reload()

    async def try_reload(self) -> None:
        """``reload``, logging instead of raising when the selector cannot be resolved (the poller, and the
        signal a sibling worker's reload sends)."""
        try:
            await self.reload()
        except Exception as exc:  # the registry is down or the alias gone: keep serving, retry later
            logger.warning("could not resolve %s %s: %s", self._name, self.settings.selector, exc)
