"""Monitor stage: is the champion still serving well what it meets in production?

Input: ``MonitorParameters`` (model name, the window: default the last hour, thresholds). Output: a
``MonitorVerdict`` (ok / drift / no_data, with what drifted), also kept in the event store for
``loopline status`` (``loopline.monitoring.verdicts_store.latest_verdict``). From the event store it reads
the window's routed requests, their feedback and the router's served samples, and judges the champion's
answers (only those: a challenger meeting traffic in a rollout is the A/B stage's) against the champion's
reference data (its labels and its test split, through its ONNX model): traffic, errors, latency,
prediction drift, input drift (image statistics and the model's logits, corrected for multiple testing),
and accuracy from feedback. Artifact: ``model-monitor``; event ``loopline.drift.detected`` (resource
``loopline.model.<name>``) when a threshold is crossed. No traffic, no champion, or no readable reference:
it says so in the verdict's notes and the artifact, and raises no alarm for what it could not judge.
Run: ``prefect deployment run 'monitor-model/local'``, or ``python -m flows.monitor``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger

from loopline.monitoring.reference import Reference, ReferenceUnavailable
from loopline.monitoring.verdict import MonitorVerdict
from tasks.monitor import (
    MonitorParameters,
    assess_window,
    find_monitored_champion,
    load_reference,
    measure_samples,
    publish_monitor,
    read_traffic,
)
from tasks.train import tracking_uri


@flow(name="monitor-model")
def monitor_flow(params: MonitorParameters | None = None) -> MonitorVerdict:
    """Judge the champion's served traffic over the window; see the module docstring."""
    params = params or MonitorParameters()
    until = params.until or datetime.now(UTC)
    until = until if until.tzinfo else until.replace(tzinfo=UTC)
    since = until - timedelta(minutes=params.window_minutes)
    uri = tracking_uri()
    champion = find_monitored_champion(params.model_name, uri)
    notes: list[str] = []
    reference: Reference | None = None
    if champion is not None:
        try:
            reference = load_reference(champion, uri)
        except ReferenceUnavailable as exc:
            get_run_logger().warning("drift not judged: %s", exc)
            notes.append(str(exc))
    window = read_traffic(params.model_name, since, until)
    served = measure_samples(window, champion.version, reference) if champion and len(window) else None
    report = assess_window(window, champion, reference, served, params, notes)
    return publish_monitor(report)


if __name__ == "__main__":
    monitor_flow()
