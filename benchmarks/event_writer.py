"""The router's event recording: the buffered writer against writing each request as it is answered.

The router records one row per answered request. ``BufferedEventWriter.record_request`` only appends the
row to a buffer; a thread writes batches. The baseline is what a router without it would do: one
``EventStore.insert_requests([row])`` per request, on the request's own thread.

For each database (a SQLite file, and PostgreSQL: ``--postgres URL`` names a server whose user may create
databases, ``--postgres start`` starts one as the tests do) the script records ``--rows`` requests both
ways into a fresh database and prints:

- the caller's cost per request (median and p99 of each call), and the ratio baseline / buffered;
- rows per second until every row is in the database (for the writer: from the first call to ``close``).

Run: .venv/bin/python benchmarks/event_writer.py [--rows 10000] [--postgres start|postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from loopline.rollout.events import RoutedRequest
from loopline.rollout.store import EventStore, sqlite_url
from loopline.rollout.writer import BufferedEventWriter

ROOT = Path(__file__).resolve().parents[1]


def row(i: int) -> RoutedRequest:
    return RoutedRequest(
        request_id=f"r{i}",
        experiment="bench",
        variant="champion" if i % 2 else "challenger",
        model_version="1",
        user_hash=f"u{i % 97}",
        latency_ms=float(i % 50),
        status=200,
    )


@contextmanager
def fresh_database(kind: str, postgres: str | None) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield sqlite_url(Path(folder) / "events.db")
        return
    assert postgres is not None
    server = sa.make_url(postgres)
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def timed_calls(rows: int, call: Callable[[RoutedRequest], None]) -> list[float]:
    costs = []
    for i in range(rows):
        started = time.perf_counter_ns()
        call(row(i))
        costs.append((time.perf_counter_ns() - started) / 1000)
    return costs


def one_by_one(url: str, rows: int) -> tuple[list[float], float]:
    store = EventStore(url)
    started = time.perf_counter()
    costs = timed_calls(rows, lambda r: store.insert_requests([r]))
    elapsed = time.perf_counter() - started
    store.close()
    return costs, rows / elapsed


def buffered(url: str, rows: int) -> tuple[list[float], float]:
    store = EventStore(url)
    writer = BufferedEventWriter(store, max_buffer=rows * 2, flush_interval=0.05)
    started = time.perf_counter()
    costs = timed_calls(rows, writer.record_request)
    counters = writer.close(timeout=300)
    elapsed = time.perf_counter() - started
    store.close()
    if counters.written != rows:
        raise SystemExit(f"the writer wrote {counters.written} of {rows} rows: {counters}")
    return costs, rows / elapsed


def describe(costs: list[float]) -> str:
    return f"median {statistics.median(costs):8.1f} us, p99 {float(np.percentile(costs, 99)):9.1f} us"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=10_000, help="Requests recorded each way (default 10000)."
    )
    parser.add_argument(
        "--postgres", help="Measure PostgreSQL too: a server URL (SQLAlchemy form), or 'start' to start one."
    )
    args = parser.parse_args()
    kinds = ["sqlite"] + (["postgresql"] if args.postgres else [])
    with ExitStack() as stack:
        if args.postgres == "start":
            sys.path.insert(0, str(ROOT))
            from tests.postgres import running_postgres

            args.postgres = stack.enter_context(running_postgres())
        measure(kinds, args.rows, args.postgres)


def measure(kinds: list[str], rows: int, postgres: str | None) -> None:
    for kind in kinds:
        with fresh_database(kind, postgres) as url:
            direct_costs, direct_rate = one_by_one(url, rows)
        with fresh_database(kind, postgres) as url:
            writer_costs, writer_rate = buffered(url, rows)
        ratio = statistics.median(direct_costs) / statistics.median(writer_costs)
        print(f"{kind}, {rows} requests")
        print(f"  one insert per request: {describe(direct_costs)}; {direct_rate:9,.0f} rows/s")
        print(f"  buffered writer:        {describe(writer_costs)}; {writer_rate:9,.0f} rows/s")
        print(f"  caller's median cost {ratio:,.0f}x lower; rows/s {writer_rate / direct_rate:.1f}x")


if __name__ == "__main__":
    main()
