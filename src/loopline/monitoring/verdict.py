"""The monitor's thresholds (a flow parameter) and its result: ok, drift, or no data, with what drifted."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from loopline.monitoring.drift import Correction

MonitorStatus = Literal["ok", "drift", "no_data"]
Severity = Literal["none", "warning", "critical"]
FindingKind = Literal["prediction", "confidence", "image", "embedding", "errors", "latency", "accuracy"]


class DriftThresholds(BaseModel):
    """When the monitor raises ``loopline.drift.detected`` (rendered as a form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt threshold must not be silently ignored

    alpha: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="Significance of the drift tests, all corrected together as one family: a window "
        "without drift raises an alarm with probability about alpha at most.",
    )
    correction: Correction = Field(
        default="fdr_bh",
        description="Multiple-testing correction (statsmodels multipletests): fdr_bh (Benjamini-Hochberg), "
        "holm or bonferroni.",
    )
    class_reference: Literal["labels", "predictions"] = Field(
        default="labels",
        description="The predicted classes are compared with the labels' class mix (labels), or with the "
        "champion's predictions on its test split (predictions: a model that favours a class does not "
        "alarm for it).",
    )
    min_requests: int = Field(
        default=50, ge=1, description="Fewer of the champion's answers: prediction drift is not judged."
    )
    min_samples: int = Field(
        default=30, ge=1, description="Fewer readable served samples: input drift is not judged."
    )
    max_error_rate: float = Field(
        default=0.05, ge=0, le=1, description="Error rate (status >= 500 or a fallback) above this alarms."
    )
    max_p99_latency_ms: float = Field(default=1000.0, gt=0, description="p99 latency above this alarms.")
    accuracy_drop: float = Field(
        default=0.10,
        ge=0,
        le=1,
        description="Alarm when the feedback's accuracy is surely (its Wilson interval's upper bound) more "
        "than this below the champion's test accuracy.",
    )
    min_feedback: int = Field(default=30, ge=1, description="Fewer judged answers: accuracy is not judged.")


class Finding(BaseModel):
    """One threshold crossed: what, by how much."""

    kind: FindingKind
    name: str
    value: float  # the adjusted p-value of a test, or the measured rate / latency / accuracy bound
    limit: float  # what it was compared with
    detail: str


class MonitorVerdict(BaseModel):
    """The latest word on a model's served traffic, as ``loopline status`` reads it back."""

    model: str
    verdict: MonitorStatus
    severity: Severity = "none"
    drifted: list[str] = Field(default_factory=list)  # "kind:name" of every finding
    findings: list[Finding] = Field(default_factory=list)
    champion_version: str | None = None
    window_start: datetime
    window_end: datetime
    requests: int = 0  # the champion's answers counted in the window
    samples: int = 0  # served images measured
    notes: list[str] = Field(default_factory=list)  # what could not be judged, and why
    at: datetime


CRITICAL_KINDS = frozenset({"errors", "accuracy", "prediction"})


def severity_of(findings: list[Finding]) -> Severity:
    """critical when users are surely worse off (errors, accuracy) or the answers themselves moved (the
    class mix); warning for a shift in inputs, confidence or latency alone; none without findings."""
    if not findings:
        return "none"
    return "critical" if any(f.kind in CRITICAL_KINDS for f in findings) else "warning"
