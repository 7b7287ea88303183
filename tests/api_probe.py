"""Measures the Prefect API while a test runs (benchmarks/tier_e2e.py turns it on): every half second one
read (``POST /flow_runs/filter``) and one write (``POST /logs/``), each timed; a request that fails or
takes over 30 s counts as an error. Results go to a JSON file."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

PROBE_FILE_VARIABLE = "LOOPLINE_BENCH_API_PROBE_FILE"


def _probe(api: str, stop: threading.Event, samples: dict[str, list[float]], errors: list[str]) -> None:
    flow_run_id = str(uuid.uuid4())
    with httpx.Client(base_url=api, timeout=30) as client:
        while not stop.wait(0.5):
            log = {"name": "probe", "level": 20, "message": "probe", "flow_run_id": flow_run_id,
                   "timestamp": datetime.now(UTC).isoformat()}  # fmt: skip
            for kind, call in (
                ("read", lambda: client.post("/flow_runs/filter", json={"limit": 20})),
                ("write", lambda: client.post("/logs/", json=[log])),  # noqa: B023
            ):
                started = time.perf_counter()
                try:
                    response = call()
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    errors.append(f"{kind}: {exc}")
                    continue
                samples[kind].append(time.perf_counter() - started)


@contextmanager
def probing(api: str, out: Path | None) -> Iterator[None]:
    """Probe ``api`` until the block exits and write the latencies to ``out`` (nothing when None)."""
    if out is None:
        yield
        return
    stop, samples, errors = threading.Event(), {"read": [], "write": []}, []  # type: ignore[var-annotated]
    thread = threading.Thread(target=_probe, args=(api, stop, samples, errors), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
        out.write_text(json.dumps({"samples": samples, "errors": errors}))
