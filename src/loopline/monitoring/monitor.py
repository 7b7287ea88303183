"""One monitor run over one window, as a pure function of what was read: ``assess`` turns the window's
requests, the champion's reference and the served samples' measurements into a ``MonitorReport`` with
its ``MonitorVerdict``.

Which traffic: **the champion only**. While a rollout is in progress the router sends some users to the
challenger; those answers come from another model, and the A/B stage already watches them. Every
statistic here counts the champion arm's requests that the champion's registered version answered
(``TrafficWindow.answered_by``); the report still lists each arm's traffic, errors and latency, so a
rollout in progress is visible but can neither raise nor hide a drift alarm.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from loopline.errors import LooplineError
from loopline.monitoring.accuracy import AccuracyBucket, accuracy_over_time, wilson_bucket
from loopline.monitoring.drift import DriftTest, class_mix_test, correct, ks_test
from loopline.monitoring.features import IMAGE_STATISTICS, model_logits, statistics_of
from loopline.monitoring.health import Health, measure_health
from loopline.monitoring.reference import Reference
from loopline.monitoring.verdict import (
    DriftThresholds,
    Finding,
    MonitorStatus,
    MonitorVerdict,
    severity_of,
)
from loopline.monitoring.window import TrafficWindow
from loopline.rollout.events import ServedSample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedInputs:
    """The served samples' measurements (readable ones only) and the samples that could not be read."""

    statistics: NDArray[np.float64]  # samples x IMAGE_STATISTICS
    logits: NDArray[np.float64]  # samples x classes (empty without a reference model)
    unreadable: tuple[str, ...] = ()  # "URI: why"

    def __len__(self) -> int:
        return len(self.statistics)


def measure_served(
    samples: Sequence[ServedSample], read_bytes: Callable[[str], bytes], reference: Reference | None
) -> ServedInputs:
    """Statistics (and the champion's logits, given a reference) of each sample whose bytes can be read
    and decoded; a missing or damaged file is listed in ``unreadable`` and skipped."""
    from loopline.data.pixels import decode_rgb

    pictures, unreadable = [], []
    for sample in samples:
        try:
            pictures.append(decode_rgb(read_bytes(sample.uri)))
        except (LooplineError, OSError, ValueError, SyntaxError) as exc:  # PIL's errors are OSErrors
            unreadable.append(f"{sample.uri}: {type(exc).__name__}")
    logits = (
        model_logits(reference.onnx, pictures, reference.input_size)
        if reference is not None and pictures
        else np.zeros((0, 0))
    )
    return ServedInputs(statistics_of(pictures), logits, tuple(unreadable))


@dataclass(frozen=True)
class MonitorReport:
    """Everything the ``model-monitor`` artifact shows; ``verdict`` is what is kept and announced."""

    verdict: MonitorVerdict
    thresholds: DriftThresholds
    arms: dict[str, Health]  # per arm, every version
    champion: Health  # the traffic judged
    tests: list[DriftTest]
    accuracy: list[AccuracyBucket]
    overall_accuracy: AccuracyBucket
    reference: Reference | None = None
    served_confidences: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    served_statistics: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))


def drift_tests(
    reference: Reference,
    predicted: Sequence[str],
    confidences: NDArray[np.float64],
    served: ServedInputs | None,
    thresholds: DriftThresholds,
    notes: list[str],
) -> list[DriftTest]:
    """The family of drift tests the data allows (uncorrected); what is left out is said in ``notes``."""
    tests = []
    if len(predicted) >= thresholds.min_requests:
        counts = (
            reference.label_counts if thresholds.class_reference == "labels" else reference.predicted_counts
        )
        tests.append(class_mix_test(counts, predicted, reference.labels))
        tests.append(ks_test("confidence", "top_probability", reference.confidences, confidences))
    else:
        notes.append(
            f"prediction drift not judged: {len(predicted)} answers with a prediction, fewer than "
            f"min_requests={thresholds.min_requests}"
        )
    if served is not None and len(served) >= thresholds.min_samples:
        for i, name in enumerate(IMAGE_STATISTICS):
            tests.append(ks_test("image", name, reference.statistics[:, i], served.statistics[:, i]))
        for i, label in enumerate(reference.labels):
            tests.append(ks_test("embedding", f"logit[{label}]", reference.logits[:, i], served.logits[:, i]))
    else:
        notes.append(
            f"input drift not judged: {len(served) if served else 0} readable served samples, fewer than "
            f"min_samples={thresholds.min_samples}"
        )
    return tests


def assess(
    window: TrafficWindow,
    champion_version: str | None,
    reference: Reference | None,
    served: ServedInputs | None,
    thresholds: DriftThresholds,
    bucket: timedelta,
    now: datetime,
    notes: Sequence[str] = (),
) -> MonitorReport:
    """The window judged against the reference (see the module docstring for which traffic counts)."""
    notes = list(notes)
    arms = {
        str(arm): measure_health(window.status[m], window.fallback[m], window.latency_ms[m])
        for arm in sorted(set(window.variant))
        for m in [window.variant == arm]
    }
    mask = window.answered_by(champion_version) if champion_version else np.zeros(len(window), bool)
    champion = measure_health(window.status[mask], window.fallback[mask], window.latency_ms[mask])
    judged, right = window.judged[mask], window.correct[mask]
    accuracy = accuracy_over_time(
        window.seconds[mask][judged], right[judged], window.since, window.until, bucket
    )
    overall = wilson_bucket(window.since, window.until, int(right[judged].sum()), int(judged.sum()), 0.05)
    if served is not None and served.unreadable:
        notes.append(
            f"{len(served.unreadable)} served samples could not be read, e.g. {served.unreadable[0]}"
        )

    def verdict(status: MonitorStatus, findings: list[Finding], tests: list[DriftTest]) -> MonitorReport:
        result = MonitorVerdict(
            model=window.model,
            verdict=status,
            severity=severity_of(findings),
            drifted=[f"{f.kind}:{f.name}" for f in findings],
            findings=findings,
            champion_version=champion_version,
            window_start=window.since,
            window_end=window.until,
            requests=champion.requests,
            samples=len(served) if served is not None else 0,
            notes=notes,
            at=now,
        )
        ok = mask & np.isfinite(window.confidence)
        return MonitorReport(
            result, thresholds, arms, champion, tests, accuracy, overall, reference,
            window.confidence[ok], served.statistics if served is not None else np.zeros((0, 0)),
        )  # fmt: skip

    if champion_version is None:
        notes.insert(0, f"{window.model} has no champion registered: there is nothing to monitor against")
        return verdict("no_data", [], [])
    if len(window) == 0:
        notes.insert(0, f"no requests were routed for {window.model} in the window")
        return verdict("no_data", [], [])
    if champion.requests == 0:
        notes.insert(
            0, f"champion v{champion_version} answered none of the {len(window)} requests in the window"
        )
        return verdict("no_data", [], [])
    findings = health_findings(champion, thresholds, notes)
    tests: list[DriftTest] = []
    if reference is None:
        notes.append("drift and accuracy not judged: the champion's reference data is unavailable")
    else:
        answered = mask & np.array([p is not None for p in window.predicted_label], dtype=bool)
        predicted = [str(p) for p in window.predicted_label[answered]]
        confidences = window.confidence[answered & np.isfinite(window.confidence)]
        tests = correct(drift_tests(reference, predicted, confidences, served, thresholds, notes),
                        thresholds.alpha, thresholds.correction)  # fmt: skip
        findings += [test_finding(t, thresholds.alpha) for t in tests if t.rejected]
        findings += accuracy_findings(overall, reference.accuracy, thresholds, notes)
    return verdict("drift" if findings else "ok", findings, tests)


def test_finding(test: DriftTest, alpha: float) -> Finding:
    detail = (
        f"{test.label}: statistic {test.statistic:.4g}, p {test.p_value:.3g} "
        f"(adjusted {test.adjusted_p:.3g}); median {test.reference_center:.4g} -> {test.current_center:.4g}"
    )
    return Finding(kind=test.kind, name=test.name, value=test.adjusted_p, limit=alpha, detail=detail)


def health_findings(champion: Health, thresholds: DriftThresholds, notes: list[str]) -> list[Finding]:
    if champion.requests < thresholds.min_requests:
        notes.append(
            f"error rate and latency not judged: {champion.requests} requests, fewer than "
            f"min_requests={thresholds.min_requests}"
        )
        return []
    findings = []
    if champion.error_rate > thresholds.max_error_rate:
        findings.append(Finding(
            kind="errors", name="error_rate", value=champion.error_rate, limit=thresholds.max_error_rate,
            detail=f"{champion.errors} errors in {champion.requests} requests ({champion.error_rate:.2%})",
        ))  # fmt: skip
    if champion.p99_ms > thresholds.max_p99_latency_ms:
        findings.append(Finding(
            kind="latency", name="p99_ms", value=champion.p99_ms, limit=thresholds.max_p99_latency_ms,
            detail=f"p99 latency {champion.p99_ms:.1f} ms",
        ))  # fmt: skip
    return findings


def accuracy_findings(
    overall: AccuracyBucket, reference_accuracy: float, thresholds: DriftThresholds, notes: list[str]
) -> list[Finding]:
    if overall.judged < thresholds.min_feedback:
        notes.append(
            f"accuracy not judged: {overall.judged} answers with feedback, fewer than "
            f"min_feedback={thresholds.min_feedback}"
        )
        return []
    limit = reference_accuracy - thresholds.accuracy_drop
    if overall.upper >= limit:
        return []
    detail = (
        f"accuracy {overall.accuracy:.3f} [{overall.lower:.3f}, {overall.upper:.3f}] on "
        f"{overall.judged} answers, test accuracy {reference_accuracy:.3f}"
    )
    return [
        Finding(kind="accuracy", name="feedback_accuracy", value=overall.upper, limit=limit, detail=detail)
    ]
