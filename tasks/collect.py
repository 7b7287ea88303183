"""Collect task: run the core collect with a progress artifact, publish its report, return a reference.

One task run per collection: the report is rendered from the result in the same task (no second task run,
no result object handed through the engine), so orchestration costs a few API calls on top of the core.
"""

from __future__ import annotations

import time
from typing import Self
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from pydantic import BaseModel, Field, model_validator

from loopline.data.collect import CollectOptions, CollectResult, collect
from loopline.data.images import ImageLimits
from loopline.data.report import collect_counts_rows, render_collect_summary
from loopline.data.sources import CombinedSource, Source, open_source
from loopline.data.splits import SplitFractions, check_split_fractions
from loopline.data.store import open_store
from loopline.errors import EmptySource
from loopline.rollout.sampling import PREFIX as SAMPLE_PREFIX
from loopline.settings import Settings, get_settings
from tasks.retry import retry_on_transient_io


class CollectParameters(BaseModel):
    """What to collect and how strictly (rendered as a form in the Prefect UI)."""

    source: str = Field(..., description="A local folder (recursive) or s3://bucket/prefix to collect from.")
    data_root: str | None = Field(
        default=None, description="Where to store images and manifests; default: LOOPLINE_DATA_ROOT."
    )
    min_side: int = Field(default=8, ge=1, description="Images with a shorter side are quarantined.")
    max_aspect_ratio: float = Field(
        default=10.0, ge=1.0, description="Longer/shorter side above this: quarantined."
    )
    near_duplicate_threshold: int = Field(
        default=4, ge=-1, le=64, description="Max Hamming distance of perceptual hashes; -1 turns it off."
    )
    val_fraction: float = Field(
        default=0.15, ge=0, lt=1, description="Share of each label held out for validation."
    )
    test_fraction: float = Field(
        default=0.15, ge=0, lt=1, description="Share of each label held out for test."
    )
    seed: int = Field(default=0, description="Seed of the deterministic split.")
    production_sample: bool = Field(
        default=False,
        description="Also collect the A/B router's sample of served images (DATA_ROOT/production/, kept "
        "when LOOPLINE_ROUTER_SAMPLE_RATE > 0): production data goes to labeling with the rest.",
    )

    @model_validator(mode="after")
    def _train_keeps_data(self) -> Self:
        check_split_fractions(self.val_fraction, self.test_fraction)  # val + test < 1: train is not empty
        return self


class DatasetRef(BaseModel):
    """A reference to a collected dataset version."""

    version: str
    manifest_uri: str
    data_root: str
    images: int


class _ProgressReporter:
    """Updates a progress artifact at most once a second."""

    def __init__(self, artifact_id: UUID) -> None:
        self.artifact_id = artifact_id
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last >= 1.0:
            self.last = now
            update_progress_artifact(self.artifact_id, progress=100.0 * done / total)


# A data root or source that is down for a minute is waited out: 5 + 30 + 60 s between the four tries.
@task(
    name="collect-images",
    retries=3,
    retry_delay_seconds=[5, 30, 60],
    retry_condition_fn=retry_on_transient_io,
)
def collect_images(params: CollectParameters) -> DatasetRef:
    """Decode-check, de-duplicate and store the source's images; write the manifest; publish the report
    (artifacts ``collect-progress``, ``collect-counts``, ``collect-summary``); return the reference."""
    logger = get_run_logger()
    settings = get_settings()
    data_root = params.data_root or settings.resolved_data_root
    options = CollectOptions(
        limits=ImageLimits(min_side=params.min_side, max_aspect_ratio=params.max_aspect_ratio),
        near_duplicate_threshold=params.near_duplicate_threshold,
        fractions=SplitFractions(val=params.val_fraction, test=params.test_fraction),
        seed=params.seed,
    )
    progress_id = create_progress_artifact(progress=0.0, key="collect-progress", description="Files checked")
    assert isinstance(progress_id, UUID)  # the sync API returns the id itself
    logger.info("Collecting %s into %s", params.source, data_root)
    result = collect(
        collect_source(params, settings, data_root),
        open_store(data_root, settings),
        options,
        _ProgressReporter(progress_id),
    )
    logger.info(
        "Dataset %s: %d kept of %d seen (manifest %s)",
        result.version,
        result.kept,
        result.seen,
        result.manifest_uri,
    )
    return publish_collect_report(result)


def collect_source(params: CollectParameters, settings: Settings, data_root: str) -> Source:
    """The source to collect: ``params.source``, with the router's sample of served images beside it when
    ``params.production_sample``."""
    source = open_source(params.source, settings)
    if params.production_sample:
        served = open_source(f"{data_root.rstrip('/')}/{SAMPLE_PREFIX}", settings)
        return CombinedSource(source, [served])
    return source


@task(
    name="check-for-new-files",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_on_transient_io,
)
def nothing_to_collect(params: CollectParameters) -> str | None:
    """Why there is nothing to collect (the source, and the production sample when asked for, hold no
    file), else None. A missing or unreachable source raises its named error."""
    settings = get_settings()
    try:
        collect_source(params, settings, params.data_root or settings.resolved_data_root).list_files()
    except EmptySource as exc:
        return str(exc)
    return None


def publish_collect_report(result: CollectResult) -> DatasetRef:
    """Publish the counts table and the summary as artifacts; return the dataset reference."""
    create_table_artifact(
        table=collect_counts_rows(result), key="collect-counts", description=f"Dataset {result.version}"
    )
    create_markdown_artifact(
        markdown=render_collect_summary(result),
        key="collect-summary",
        description=f"Dataset {result.version}",
    )
    return DatasetRef(
        version=result.version,
        manifest_uri=result.manifest_uri,
        data_root=result.data_root,
        images=result.kept,
    )
