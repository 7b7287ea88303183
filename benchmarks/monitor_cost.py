"""Monitor cost: seconds to judge a window of N routed requests (default 10k, 30k, 100k, 300k).

For each N, a fresh SQLite event store (in a temporary folder) gets N requests of one model's experiment
spread over the last hour, 10 % of them with feedback. Timed: ``read_window`` (the query and the column
arrays) and ``assess`` (health, class mix and confidence tests, accuracy buckets; the input drift tests
on 300 served samples' measurements, which do not grow with N). Not timed: building the reference and
measuring the served images (one decode and one inference per sample: bounded by the sample, not by N).

Run: .venv/bin/python benchmarks/monitor_cost.py [--sizes 10000 30000 100000 300000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from loopline.monitoring.features import IMAGE_STATISTICS
from loopline.monitoring.monitor import ServedInputs, assess
from loopline.monitoring.reference import Reference
from loopline.monitoring.verdict import DriftThresholds
from loopline.monitoring.window import read_window
from loopline.rollout.events import ExperimentState, Feedback, RoutedRequest
from loopline.rollout.store import EventStore, sqlite_url

LABELS = tuple(str(d) for d in range(10))


def fill(store: EventStore, n: int, now: datetime, rng: np.random.Generator) -> None:
    store.save_experiment(ExperimentState("m-v2", "m", "1", "2", "a", "b", "s", 0.1, 0, "running"), None)
    seconds = rng.uniform(0, 3600, n)
    labels = rng.choice(LABELS, n)
    latency = rng.gamma(2, 3, n)
    confidence = rng.beta(8, 2, n)
    for start in range(0, n, 20_000):
        batch = range(start, min(n, start + 20_000))
        store.insert_requests([
            RoutedRequest(f"r{i}", "m-v2", "champion" if i % 10 else "challenger", "1" if i % 10 else "2",
                          f"u{i % 5000}", float(latency[i]), 200, str(labels[i]), float(confidence[i]), False,
                          now - timedelta(seconds=float(seconds[i])))
            for i in batch
        ])  # fmt: skip
        store.insert_feedback([Feedback(f"r{i}", true_label=str(labels[i])) for i in batch if i % 10 == 1])


def reference(rng: np.random.Generator) -> Reference:
    return Reference(
        "1", LABELS, {label: 100 for label in LABELS}, {label: 30 for label in LABELS}, rng.beta(8, 2, 300),
        rng.normal(100, 10, (300, len(IMAGE_STATISTICS))), rng.normal(0, 1, (300, 10)), 0.9, Path("-"),
        32, "-",
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000, 300_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    served = ServedInputs(rng.normal(100, 10, (300, len(IMAGE_STATISTICS))), rng.normal(0, 1, (300, 10)))
    print(f"{'requests':>9} {'fill s':>7} {'read s':>7} {'assess s':>9} {'total s':>8} {'µs/request':>11}")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = EventStore(sqlite_url(Path(tmp) / "events.db"))
            now = datetime.now(UTC)
            started = time.perf_counter()
            fill(store, n, now, rng)
            filled = time.perf_counter() - started
            reads, assessments = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                window = read_window(store, "m", now - timedelta(hours=1), now + timedelta(seconds=1))
                t1 = time.perf_counter()
                report = assess(
                    window, "1", reference(rng), served, DriftThresholds(), timedelta(minutes=10), now
                )
                t2 = time.perf_counter()
                reads.append(t1 - t0)
                assessments.append(t2 - t1)
            assert len(window) == n and report.champion.requests == n - n // 10, (
                len(window),
                report.champion,
            )
            read, judged = float(np.median(reads)), float(np.median(assessments))
            total = read + judged
            print(f"{n:>9} {filled:>7.1f} {read:>7.2f} {judged:>9.2f} {total:>8.2f} {1e6 * total / n:>11.1f}")
            store.close()


if __name__ == "__main__":
    main()
