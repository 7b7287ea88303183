"""Monitor tasks: read the champion and its reference data (MLflow, the data root), the window's traffic
and served samples (the event store), judge them (``loopline.monitoring``), and publish: the
``model-monitor`` artifact, the ``loopline.drift.detected`` event when a threshold is crossed, and the
verdict kept in the event store for ``loopline status``."""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel, Field, field_validator

from loopline.data.labeled import read_labeled_manifest
from loopline.data.pixels import ImageReader
from loopline.data.store import open_store
from loopline.errors import LooplineError
from loopline.monitoring.monitor import MonitorReport, ServedInputs, assess, measure_served
from loopline.monitoring.reference import (
    Champion,
    Reference,
    ReferenceUnavailable,
    build_reference,
    find_champion,
    labeled_source,
)
from loopline.monitoring.report import render_monitor_report
from loopline.monitoring.verdict import DriftThresholds, MonitorVerdict
from loopline.monitoring.verdicts_store import save_verdict
from loopline.monitoring.window import TrafficWindow, read_window, samples_of
from loopline.registry.artifacts import ModelFiles
from loopline.registry.registry import check_model_name
from loopline.rollout.service import open_store as open_event_store
from loopline.serving.model import fetch_version, read_model_files
from loopline.settings import get_settings
from tasks.register import mlflow_client
from tasks.retry import IO_RETRIES

DRIFT_EVENT = "loopline.drift.detected"


class MonitorParameters(BaseModel):
    """What to monitor and when to alarm (rendered as a form in the Prefect UI)."""

    model_name: str = Field(default="loopline-classifier", description="Registered model name in MLflow.")
    window_minutes: float = Field(
        default=60, gt=0, description="The window: this many minutes up to `until`."
    )
    until: datetime | None = Field(default=None, description="End of the window (UTC); empty: now.")
    bucket_minutes: float = Field(
        default=10, gt=0, description="Accuracy from feedback per bucket this long."
    )
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)

    @field_validator("model_name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        check_model_name(name)
        return name


@task(name="find-monitored-champion", **IO_RETRIES)
def find_monitored_champion(model: str, tracking_uri: str) -> Champion | None:
    """The version behind the champion alias (None: nothing registered as champion yet)."""
    return find_champion(mlflow_client(tracking_uri), model)


def _model_files(champion: Champion, tracking_uri: str) -> ModelFiles:
    """The champion's files, in the model servers' per-version cache (``LOOPLINE_HOME/cache/models``,
    downloaded once, known to ``loopline gc``)."""
    cache = get_settings().resolved_home / "cache" / "models"
    return read_model_files(fetch_version(tracking_uri, champion.name, champion.version, cache))


@task(name="load-reference", cache_policy=NO_CACHE, **IO_RETRIES)
def load_reference(champion: Champion, tracking_uri: str) -> Reference:
    """The champion's reference (``loopline.monitoring.reference``); ``ReferenceUnavailable`` when its
    lineage, labeled manifest, test split or model files cannot be read."""
    settings = get_settings()
    root, version = labeled_source(champion)
    try:
        store = open_store(root, settings)
        rows = read_labeled_manifest(store, version)
        files = _model_files(champion, tracking_uri)
    except (LooplineError, OSError, KeyError, ValueError) as exc:
        raise ReferenceUnavailable(
            f"The reference data of {champion.name} v{champion.version} cannot be read (labeled version "
            f"{version} under {root}): {exc}"
        ) from exc
    source = store.uri(f"labels/{version}.jsonl")
    return build_reference(champion, rows, files, ImageReader(settings).open, source)


@task(name="read-traffic", cache_policy=NO_CACHE)
def read_traffic(model: str, since: datetime, until: datetime) -> TrafficWindow:
    window = read_window(open_event_store(get_settings()), model, since, until)
    get_run_logger().info("%d requests for %s from %s to %s", len(window), model, since, until)
    return window


@task(name="measure-served-samples", cache_policy=NO_CACHE)
def measure_samples(window: TrafficWindow, version: str, reference: Reference | None) -> ServedInputs:
    """The served samples of the champion's answers in the window, measured (unreadable ones listed)."""
    settings = get_settings()
    ids = set(window.request_id[window.answered_by(version)])
    samples = samples_of(open_event_store(settings), window.since, window.until, ids)
    served = measure_served(samples, ImageReader(settings).read_bytes, reference)
    if served.unreadable:
        get_run_logger().warning("%d served samples unreadable, skipped", len(served.unreadable))
    return served


@task(name="assess-window", cache_policy=NO_CACHE)
def assess_window(
    window: TrafficWindow,
    champion: Champion | None,
    reference: Reference | None,
    served: ServedInputs | None,
    params: MonitorParameters,
    notes: list[str],
) -> MonitorReport:
    version = champion.version if champion else None
    bucket = timedelta(minutes=params.bucket_minutes)
    now = datetime.now(window.until.tzinfo)
    return assess(window, version, reference, served, params.thresholds, bucket, now, notes)


@task(name="publish-monitor", cache_policy=NO_CACHE)
def publish_monitor(report: MonitorReport) -> MonitorVerdict:
    """The artifact, the event when something drifted, and the verdict saved for ``loopline status``."""
    verdict = report.verdict
    create_markdown_artifact(
        key="model-monitor",
        markdown=render_monitor_report(report),
        description=f"{verdict.model}: {verdict.verdict} ({', '.join(verdict.drifted) or 'nothing drifted'})",
    )
    if verdict.verdict == "drift":
        emit_event(
            event=DRIFT_EVENT,
            resource={"prefect.resource.id": f"loopline.model.{verdict.model}",
                      "prefect.resource.name": verdict.model},
            payload={"severity": verdict.severity, "drifted": verdict.drifted,
                     "findings": [f.model_dump() for f in verdict.findings],
                     "champion_version": verdict.champion_version, "requests": verdict.requests,
                     "samples": verdict.samples, "window_start": verdict.window_start.isoformat(),
                     "window_end": verdict.window_end.isoformat()},
        )  # fmt: skip
    save_verdict(get_settings().resolved_event_store_url, verdict)
    get_run_logger().info("%s: %s %s %s", verdict.model, verdict.verdict, verdict.drifted, verdict.notes)
    return verdict
