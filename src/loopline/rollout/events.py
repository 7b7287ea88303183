"""What the A/B stage records and decides on: one row per routed request, per feedback, the experiment's
state and its decisions. Plain data shared by the router (writes requests), the feedback route, the event
store (persists all four) and the statistics (reads per-arm summaries)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from loopline.data.labeled import PixelBox

Variant = Literal["champion", "challenger"]
VARIANTS: tuple[Variant, ...] = ("champion", "challenger")
ExperimentStatus = Literal["running", "awaiting_approval", "promoted", "rolled_back", "halted", "stopped"]
Verdict = Literal["step_up", "hold", "promote", "roll_back", "inconclusive"]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RoutedRequest:
    """One request the router answered."""

    request_id: str
    experiment: str
    variant: Variant  # the arm the user is assigned to (counted there even when the champion answered)
    model_version: str  # the version that answered
    user_hash: str  # hex digest of the user key: never the key itself
    latency_ms: float
    status: int  # HTTP status returned to the client
    predicted_label: str | None = None
    confidence: float | None = None
    fallback: bool = False  # the challenger failed or timed out and the champion answered
    at: datetime = field(default_factory=utc_now)
    predicted_boxes: tuple[PixelBox, ...] | None = None  # a detector's answer (original image's pixels)


@dataclass(frozen=True)
class ServedSample:
    """A served image kept for monitoring and for labeling (the router's sample, off unless enabled): its
    bytes content-addressed in the data root (``production/<sha256>.<ext>``), its prediction in the
    routed request of the same id."""

    request_id: str
    content_hash: str  # sha256 of the image bytes, hex
    uri: str  # where the bytes are stored
    at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True)
class Feedback:
    """The outcome of a request, known later: its true label, its true boxes (a detector's request), or
    only whether the answer was correct."""

    request_id: str
    true_label: str | None = None
    correct: bool | None = None
    at: datetime = field(default_factory=utc_now)
    true_boxes: tuple[PixelBox, ...] | None = None


@dataclass(frozen=True)
class ExperimentState:
    """An experiment as the router and the rollout flow share it (one row, updated in place)."""

    name: str
    model: str
    champion_version: str
    challenger_version: str
    champion_url: str
    challenger_url: str
    seed: str  # of the sticky assignment
    weight: float  # the challenger's share of users, 0..1
    step: int  # index in the ramp
    status: ExperimentStatus
    started_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True)
class Decision:
    """One evaluation of an experiment: the verdict, why, and the numbers behind it."""

    experiment: str
    verdict: Verdict
    reasons: tuple[str, ...]
    numbers: dict[str, float]
    weight_after: float
    at: datetime = field(default_factory=utc_now)


class EventSink(Protocol):
    """Where the router sends rows: it must never block the request path (buffer and flush elsewhere)."""

    def record_request(self, row: RoutedRequest) -> None: ...

    def record_feedback(self, row: Feedback) -> None: ...
