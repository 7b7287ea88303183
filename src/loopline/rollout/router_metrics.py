"""The router's Prometheus metrics, in a registry of its own (several routers in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

# Fine at the low end: the router adds well under a millisecond, and a 40 ms delayed-ACK stall must show.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RouterMetrics:
    """Requests by arm and status, fallbacks by reason, latency by arm, the challenger's weight and share,
    feedback by outcome, dropped events and failed state reads, and the process (CPU, memory)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "loopline_router_requests", "Routed requests by the user's arm and the status returned.",
            ["variant", "status"], registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            "loopline_router_fallbacks",
            "Challenger-arm requests the champion answered, by why (unreachable, timeout, error, protocol).",
            ["reason"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "loopline_router_request_seconds", "Time from request to response through the router, by arm.",
            ["variant"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.weight = Gauge(
            "loopline_router_challenger_weight",
            "The challenger's weight in the experiment state.",
            registry=r,
        )
        self.share = Gauge(
            "loopline_router_challenger_share",
            "The share of users routed to the challenger (the weight; 1 once promoted, 0 once rolled back).",
            registry=r,
        )
        self.feedback_rows = Counter(
            "loopline_router_feedback", "Feedback rows by outcome (accepted, invalid, unknown).", ["outcome"],
            registry=r,
        )  # fmt: skip
        self.events_dropped = Counter(
            "loopline_router_events_dropped", "Rows the event sink refused (raised on).", registry=r
        )
        self.state_failures = Counter(
            "loopline_router_state_read_failures", "Failed reads of the experiment state.", registry=r
        )
        ProcessCollector(registry=r)  # process_cpu_seconds_total: the router's own CPU per request
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def observe(self, variant: str, status: int, seconds: float, fallback: str | None) -> None:
        children = self._children.get((variant, status))
        if children is None:  # labels() costs more than the rest together: look each pair up once
            children = self.requests.labels(variant, str(status)), self.latency.labels(variant)
            self._children[(variant, status)] = children
        children[0].inc()
        children[1].observe(seconds)
        if fallback is not None:
            self.fallbacks.labels(fallback).inc()

    def set_state(self, weight: float, share: float) -> None:
        self.weight.set(weight)
        self.share.set(share)

    def feedback(self, outcome: str, rows: int = 1) -> None:
        self.feedback_rows.labels(outcome).inc(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
