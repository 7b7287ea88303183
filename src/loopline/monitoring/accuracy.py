"""Accuracy from feedback over time: equal buckets of the window, each with a Wilson score interval
(``statsmodels.stats.proportion.proportion_confint``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class AccuracyBucket:
    """Feedback on requests made in ``[start, end)``: how many were judged, how many right."""

    start: datetime
    end: datetime
    judged: int
    correct: int
    accuracy: float  # nan when nothing was judged
    lower: float  # Wilson interval at the given confidence; nan when nothing was judged
    upper: float


def wilson_bucket(start: datetime, end: datetime, correct: int, judged: int, alpha: float) -> AccuracyBucket:
    if judged == 0:
        return AccuracyBucket(start, end, 0, 0, math.nan, math.nan, math.nan)
    from statsmodels.stats.proportion import proportion_confint

    lower, upper = proportion_confint(correct, judged, alpha=alpha, method="wilson")
    return AccuracyBucket(start, end, judged, correct, correct / judged, float(lower), float(upper))


def accuracy_over_time(
    seconds: NDArray[np.float64],
    correct: NDArray[np.bool_],
    since: datetime,
    until: datetime,
    bucket: timedelta,
    alpha: float = 0.05,
) -> list[AccuracyBucket]:
    """Buckets of ``bucket`` length from ``since`` (the last one may be shorter) over the judged requests,
    ``seconds`` being each request's time after ``since``."""
    length = bucket.total_seconds()
    total = (until - since).total_seconds()
    if length <= 0 or total <= 0:
        raise ValueError(f"bucket ({bucket}) and window ({since} to {until}) must both be positive")
    count = max(1, math.ceil(total / length))
    index = np.clip((seconds // length).astype(np.int64), 0, count - 1)
    buckets = []
    for i in range(count):
        start = since + timedelta(seconds=i * length)
        end = min(until, start + bucket)
        mask = index == i
        buckets.append(wilson_bucket(start, end, int(correct[mask].sum()), int(mask.sum()), alpha))
    return buckets
