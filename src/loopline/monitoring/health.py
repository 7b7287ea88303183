"""Traffic, error rate and latency percentiles of a set of routed requests (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Health:
    """What users saw: requests, errors (status >= 500, or a fallback to the champion), latency in ms."""

    requests: int
    errors: int
    error_rate: float  # nan without requests
    p50_ms: float
    p95_ms: float
    p99_ms: float


def measure_health(
    status: NDArray[np.int64], fallback: NDArray[np.bool_], latency_ms: NDArray[np.float64]
) -> Health:
    """Health of the requests given as parallel arrays (one entry per request)."""
    n = len(status)
    if n == 0:
        return Health(0, 0, math.nan, math.nan, math.nan, math.nan)
    errors = int(np.count_nonzero((status >= 500) | fallback))
    p50, p95, p99 = (float(v) for v in np.percentile(latency_ms, (50, 95, 99)))
    return Health(n, errors, errors / n, p50, p95, p99)
