"""Reads one model's routed requests (with their feedback) and served samples in a time window from the
event store, as column arrays: a window of 100,000 requests is one query and a few numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray

from loopline.rollout.events import ServedSample
from loopline.rollout.store import EventStore
from loopline.rollout.store_tables import experiments_table, feedback_table, requests_table, samples_table


@dataclass(frozen=True)
class TrafficWindow:
    """The requests routed for ``model``'s experiments in ``[since, until)``, one array entry each."""

    model: str
    since: datetime
    until: datetime
    request_id: NDArray[np.object_]
    variant: NDArray[np.object_]
    model_version: NDArray[np.object_]
    latency_ms: NDArray[np.float64]
    status: NDArray[np.int64]
    fallback: NDArray[np.bool_]
    predicted_label: NDArray[np.object_]  # None where the answer had none
    confidence: NDArray[np.float64]  # nan where the answer had none
    seconds: NDArray[np.float64]  # since ``since``
    judged: NDArray[np.bool_]  # feedback with a usable outcome came back
    correct: NDArray[np.bool_]  # the feedback's flag, else true label == predicted label (False if unjudged)

    def __len__(self) -> int:
        return len(self.request_id)

    def answered_by(self, version: str) -> NDArray[np.bool_]:
        """The champion arm's requests that ``version`` answered (a fallback is the challenger arm's)."""
        return (self.variant == "champion") & (self.model_version == version) & ~self.fallback


def read_window(store: EventStore, model: str, since: datetime, until: datetime) -> TrafficWindow:
    """``model``'s requests in ``[since, until)`` (through the ``experiments`` table), oldest first."""
    r, f, e = requests_table.c, feedback_table.c, experiments_table.c
    query = (
        sa.select(
            r.request_id, r.variant, r.model_version, r.latency_ms, r.status, r.fallback,
            r.predicted_label, r.confidence, r.at, f.true_label, f.correct,
        )
        .select_from(
            requests_table.join(experiments_table, e.name == r.experiment).outerjoin(
                feedback_table, f.request_id == r.request_id
            )
        )
        .where(e.model == model, r.at >= since, r.at < until)
        .order_by(r.at)
    )  # fmt: skip
    with store.engine.connect() as connection:
        rows = connection.execute(query).all()
    columns = list(zip(*rows, strict=True)) if rows else [()] * 11
    rid, variant, version, latency, status, fallback, label, confidence, at, truth, flag = columns
    predicted = np.array(label, dtype=object)
    flags = np.array(flag, dtype=object)
    truths = np.array(truth, dtype=object)
    has_flag = np.array([v is not None for v in flags], dtype=bool)
    has_truth = np.array([v is not None for v in truths], dtype=bool)
    correct = np.where(has_flag, flags == True, has_truth & (truths == predicted))  # noqa: E712
    return TrafficWindow(
        model=model,
        since=since,
        until=until,
        request_id=np.array(rid, dtype=object),
        variant=np.array(variant, dtype=object),
        model_version=np.array(version, dtype=object),
        latency_ms=np.array(latency, dtype=np.float64),
        status=np.array(status, dtype=np.int64),
        fallback=np.array(fallback, dtype=bool),
        predicted_label=predicted,
        confidence=np.array([np.nan if c is None else c for c in confidence], dtype=np.float64),
        seconds=np.array([(t - since).total_seconds() for t in at], dtype=np.float64),
        judged=has_flag | has_truth,
        correct=np.asarray(correct, dtype=bool),
    )


def samples_of(
    store: EventStore, since: datetime, until: datetime, request_ids: set[str]
) -> list[ServedSample]:
    """Served samples kept in ``[since, until)`` whose request is among ``request_ids``, oldest first."""
    s = samples_table.c
    query = sa.select(samples_table).where(s.at >= since, s.at < until).order_by(s.at, s.request_id)
    with store.engine.connect() as connection:
        rows = connection.execute(query).all()
    return [ServedSample(**row._asdict()) for row in rows if row.request_id in request_ids]
