"""The model server's Prometheus metrics, in a registry of their own per app (two apps in one process,
as in tests, never share or clash). Every series is labelled with the model version that served it.

Under several workers (``runner.py``) prometheus-client runs in multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set before the workers start): each process writes its values to files there,
and ``render`` adds up the files of all of them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass
class ServingMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "loopline_serving_requests",
            "HTTP requests by route and status.",
            ["route", "status", "model_version"],
            registry=self.registry,
        )
        self.errors = Counter(
            "loopline_serving_errors",
            "Requests answered with an error (4xx or 5xx) by route and status.",
            ["route", "status", "model_version"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "loopline_serving_request_seconds",
            "Time from request to response by route.",
            ["route", "model_version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "loopline_serving_batch_size",
            "Inputs per model call (micro-batching).",
            ["model_version"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_loads = Counter(
            "loopline_serving_model_loads",
            "Model versions loaded (outcome=loaded) or refused (failed to load or its smoke check).",
            ["model_version", "outcome"],
            registry=self.registry,
        )

    def observe_request(self, route: str, status: int, version: str, seconds: float) -> None:
        self.requests.labels(route, str(status), version).inc()
        if status >= 400:
            self.errors.labels(route, str(status), version).inc()
        self.latency.labels(route, version).observe(seconds)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # several workers: the sum over all of them
            from prometheus_client import multiprocess

            every_worker = CollectorRegistry()
            multiprocess.MultiProcessCollector(every_worker)
            return generate_latest(every_worker)
        return generate_latest(self.registry)
