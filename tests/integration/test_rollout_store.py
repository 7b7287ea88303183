"""The event store and its buffered writer on SQLite and on a real PostgreSQL server (one per module,
a fresh database per test): every row type round-trips, the arm summaries match a hand count, concurrent
saves of an experiment conflict, and the writer survives a slow store, a store outage and a crash."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from loopline.rollout.events import Decision, ExperimentState, Feedback, RoutedRequest, ServedSample
from loopline.rollout.stats import summarize
from loopline.rollout.store import (
    EventStore,
    ExperimentConflict,
    StoredExperiment,
    UnknownRequestId,
    sqlite_url,
)
from loopline.rollout.store_tables import feedback_table, requests_table
from loopline.rollout.writer import BufferedEventWriter
from tests.platform import ROOT
from tests.postgres import running_postgres

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    with running_postgres("loopline") as url:
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:  # a throw-away server: no fsync (its stop took seconds)
            connection.execute(sa.text("ALTER SYSTEM SET fsync = off"))
            connection.execute(sa.text("SELECT pg_reload_conf()"))
        admin.dispose()
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, or a new database on the module's PostgreSQL server."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "events.db")
    server = sa.make_url(request.getfixturevalue("postgres_server"))
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def store(url: str) -> Iterator[EventStore]:
    store = EventStore(url, busy_timeout_ms=200)
    yield store
    store.close()


def routed(
    request_id: str,
    variant: str = "champion",
    *,
    experiment: str = "exp",
    user: str = "u1",
    latency_ms: float = 10.0,
    status: int = 200,
    label: str | None = "cat",
    fallback: bool = False,
    at: datetime = T0,
) -> RoutedRequest:
    return RoutedRequest(
        request_id=request_id,
        experiment=experiment,
        variant=variant,  # type: ignore[arg-type]
        model_version="7" if variant == "challenger" else "6",
        user_hash=user,
        latency_ms=latency_ms,
        status=status,
        predicted_label=label,
        confidence=0.75 if label else None,
        fallback=fallback,
        at=at,
    )


def experiment(name: str = "exp", **changes: object) -> ExperimentState:
    state = ExperimentState(
        name=name,
        model="digits",
        champion_version="6",
        challenger_version="7",
        champion_url="http://127.0.0.1:9001",
        challenger_url="http://127.0.0.1:9002",
        seed="s33d",
        weight=0.1,
        step=0,
        status="running",
        started_at=T0,
        updated_at=T0 + timedelta(microseconds=123_457),
    )
    return dataclasses.replace(state, **changes)  # type: ignore[arg-type]


def stored_requests(store: EventStore) -> list[RoutedRequest]:
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(requests_table).order_by(requests_table.c.request_id)).all()
    return [RoutedRequest(**row._asdict()) for row in rows]


def stored_feedback(store: EventStore) -> list[Feedback]:
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(feedback_table).order_by(feedback_table.c.request_id)).all()
    return [Feedback(**row._asdict()) for row in rows]


def request_count(url: str) -> tuple[int, int]:
    """Rows in ``requests`` and distinct request ids among them, read by a fresh engine."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        query = sa.select(sa.func.count(), sa.func.count(sa.distinct(requests_table.c.request_id)))
        total, distinct = connection.execute(query).one()
    engine.dispose()
    return total, distinct


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.01)


# --- the store -----------------------------------------------------------------------------------------


def test_every_row_type_round_trips(store: EventStore) -> None:
    requests = [
        routed("a", "champion", status=200, at=T0 + timedelta(microseconds=1)),
        routed("b", "challenger", status=504, label=None, fallback=True, latency_ms=250.5),
    ]
    store.insert_requests(requests)
    store.insert_requests(requests)  # a retried batch: skipped, not duplicated
    assert stored_requests(store) == requests

    feedback = [Feedback("a", true_label="dog", at=T0), Feedback("b", correct=True, at=T0)]
    store.insert_feedback(feedback)
    assert stored_feedback(store) == feedback

    assert store.save_experiment(experiment(), expected_version=None) == 1
    assert store.get_experiment("exp") == StoredExperiment(experiment(), version=1)
    assert store.get_experiment("nope") is None

    decisions = [
        Decision("exp", "hold", ("too few samples",), {"n": 12.0, "upper": float("inf")}, 0.1, at=T0),
        Decision("exp", "step_up", ("accuracy holds", "latency holds"), {"p99_ms": 41.5}, 0.5, at=T0),
        Decision("other", "roll_back", ("errors",), {}, 0.0, at=T0),
    ]
    for decision in decisions:
        store.append_decision(decision)
    assert store.list_decisions("exp") == decisions[:2]  # oldest first, same time: in insert order
    assert store.list_decisions("exp", limit=1) == decisions[1:2]


def test_the_first_feedback_wins_and_unknown_request_ids_are_refused(store: EventStore) -> None:
    store.insert_requests([routed("a", label="cat")])
    assert store.feedback_is_known("a") and not store.feedback_is_known("zzz")
    assert store.record_feedback_checked(Feedback("a", true_label="cat", at=T0)) is True
    assert store.record_feedback_checked(Feedback("a", true_label="dog", at=T0)) is False
    store.insert_feedback([Feedback("a", correct=False, at=T0)])
    with pytest.raises(UnknownRequestId, match=r"'zzz'.*X-Request-Id"):
        store.record_feedback_checked(Feedback("zzz", true_label="cat"))
    assert stored_feedback(store) == [Feedback("a", true_label="cat", at=T0)]


def test_arm_summaries_match_a_hand_count(store: EventStore) -> None:
    later = T0 + timedelta(minutes=5)
    store.insert_requests(
        [
            routed("c1", "champion", user="u1", latency_ms=10, label="cat", at=later),
            routed("c2", "champion", user="u2", latency_ms=20, label="dog", at=later),
            routed("c3", "champion", user="u1", latency_ms=30, status=503, label=None, at=later),
            routed("x1", "challenger", user="u3", latency_ms=5, label="cat", at=later),
            routed("x2", "challenger", user="u4", latency_ms=100, label="cat", fallback=True, at=later),
            routed("x3", "challenger", user="u5", latency_ms=7, status=502, label=None, at=later),
            routed("x4", "challenger", user="u3", latency_ms=9, label="dog", at=later),
            routed("x0", "challenger", user="u9", latency_ms=1, label="cat", at=T0),  # before `since`
            routed("o1", "challenger", experiment="other", label="cat", at=later),
        ]
    )
    store.insert_feedback(
        [
            Feedback("c1", true_label="cat"),  # right by label
            Feedback("c2", true_label="cat"),  # wrong by label
            Feedback("c3", true_label="cat"),  # no answer: wrong
            Feedback("x1", correct=True),  # right by flag
            Feedback("x2", true_label="cat"),  # the champion's fallback answer counts for the challenger
            Feedback("x3"),  # neither label nor flag: not counted
            Feedback("x4", true_label="dog", correct=False),  # the flag wins over the label
            Feedback("x0", correct=True),
            Feedback("o1", correct=True),
            Feedback("ghost", correct=True),  # no such request: never counted
        ]
    )
    arms = store.arm_summaries("exp", since=later)
    champion, challenger = arms["champion"], arms["challenger"]
    assert (champion.requests, champion.errors, champion.feedback, champion.correct, champion.users) == (
        3,
        1,
        3,
        1,
        2,
    )
    assert (challenger.requests, challenger.errors, challenger.feedback, challenger.correct) == (4, 2, 3, 2)
    assert challenger.users == 2 + 1  # u3 twice, u4, u5
    assert sorted(champion.latencies_ms.tolist()) == [10, 20, 30]
    assert sorted(challenger.latencies_ms.tolist()) == [5, 7, 9, 100]
    assert challenger.latencies_ms.dtype == np.float64

    everything = store.arm_summaries("exp")["challenger"]
    assert (everything.requests, everything.feedback, everything.correct, everything.users) == (5, 4, 3, 4)
    empty = store.arm_summaries("no-such-experiment")["challenger"]
    assert (empty.requests, empty.users, empty.latencies_ms.size) == (0, 0, 0)


def test_arm_summaries_agree_with_the_statistics_own_summary_of_the_rows(store: EventStore) -> None:
    rng = np.random.default_rng(7)
    labels = ["cat", "dog", None]
    requests = [
        routed(
            f"r{i}",
            ("champion", "challenger")[int(rng.integers(2))],
            user=f"u{rng.integers(40)}",
            latency_ms=float(rng.gamma(2.0, 10.0)),
            status=int(rng.choice([200, 200, 200, 500, 504])),
            label=labels[int(rng.integers(3))],
            fallback=bool(rng.random() < 0.1),
        )
        for i in range(400)
    ]
    feedback = [
        Feedback(f"r{rng.integers(420)}", true_label="cat")  # some name no request: ignored by both
        if rng.random() < 0.5
        else Feedback(f"r{rng.integers(420)}", correct=bool(rng.random() < 0.7))
        for _ in range(300)
    ]
    store.insert_requests(requests)
    store.insert_feedback(feedback)
    first_per_request = list({row.request_id: row for row in reversed(feedback)}.values())  # first wins

    expected = summarize(requests, first_per_request)
    for arm, totals in store.arm_summaries("exp").items():
        reference = expected[arm]
        assert (totals.requests, totals.errors, totals.feedback, totals.correct, totals.users) == (
            reference.requests,
            reference.errors,
            reference.feedback,
            reference.correct,
            reference.users,
        )
        assert np.allclose(np.sort(totals.latencies_ms), np.sort(reference.latencies_ms))


def test_arm_summaries_read_one_snapshot_while_requests_are_written(store: EventStore) -> None:
    stop = threading.Event()

    def route() -> None:
        for batch in range(10_000):
            if stop.is_set():
                return
            store.insert_requests(
                [routed(f"b{batch}-{i}", ("champion", "challenger")[i % 2], user=f"u{i}") for i in range(20)]
            )

    router = threading.Thread(target=route)
    router.start()
    try:
        for _ in range(30):
            for arm in store.arm_summaries("exp").values():
                assert arm.latencies_ms.size == arm.requests  # counts and latencies from the same rows
    finally:
        stop.set()
        router.join(10)


def test_concurrent_saves_of_an_experiment_conflict_and_a_restarted_store_reads_it_back(url: str) -> None:
    router, flow = EventStore(url), EventStore(url)  # two processes' views of the same database
    assert router.save_experiment(experiment(), None) == 1
    with pytest.raises(ExperimentConflict, match="already exists"):
        flow.save_experiment(experiment(), None)

    seen_by_router, seen_by_flow = router.get_experiment("exp"), flow.get_experiment("exp")
    assert seen_by_router is not None and seen_by_flow is not None
    stepped = dataclasses.replace(seen_by_flow.state, weight=0.5, step=1, updated_at=T0 + timedelta(hours=1))
    assert flow.save_experiment(stepped, seen_by_flow.version) == 2
    halted = dataclasses.replace(seen_by_router.state, status="halted")
    with pytest.raises(ExperimentConflict, match="expected version 1, stored version 2"):
        router.save_experiment(halted, seen_by_router.version)
    with pytest.raises(ExperimentConflict, match="does not exist"):
        router.save_experiment(experiment("ghost"), 1)
    router.close()
    flow.close()

    restarted = EventStore(url)
    assert restarted.get_experiment("exp") == StoredExperiment(stepped, version=2)
    restarted.close()


def test_replicas_starting_together_on_a_fresh_database_all_open_it(url: str) -> None:
    barrier, errors = threading.Barrier(4), []

    def start_replica() -> None:
        barrier.wait()
        try:
            EventStore(url).close()
        except Exception as error:  # the race lost: "table requests already exists", a duplicate pg_type
            errors.append(error)

    replicas = [threading.Thread(target=start_replica) for _ in range(4)]
    for replica in replicas:
        replica.start()
    for replica in replicas:
        replica.join(30)
    assert errors == []


# --- the writer ----------------------------------------------------------------------------------------


class SlowStore(EventStore):
    """The real store, each request batch 50 ms slower; records which thread wrote and how much."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.batches: list[tuple[int, int]] = []  # (thread id, rows)

    def insert_requests(self, rows: Sequence[RoutedRequest]) -> None:
        time.sleep(0.05)
        super().insert_requests(rows)
        self.batches.append((threading.get_ident(), len(rows)))


def test_the_writer_writes_batches_off_the_calling_thread(url: str) -> None:
    """That a call never waits for the store is the unit test's (a store that never answers); the cost
    of a call and the rows per second are ``benchmarks/event_writer.py``'s."""
    store = SlowStore(url)
    writer = BufferedEventWriter(store, max_buffer=5_000, flush_interval=0.02, batch_size=200)
    for i in range(2_000):
        writer.record_request(routed(f"r{i}", user=f"u{i}"))
    counters = writer.close(timeout=30)
    assert (counters.written, counters.buffered, counters.dropped_full, counters.dropped_error) == (
        2000,
        0,
        0,
        0,
    )
    assert request_count(url) == (2000, 2000)
    assert all(thread != threading.get_ident() for thread, _ in store.batches)
    assert max(rows for _, rows in store.batches) == 200 and len(store.batches) <= 2000 / 200 + 2
    store.close()


def test_ten_thousand_requests_all_arrive(url: str) -> None:
    store = EventStore(url)
    writer = BufferedEventWriter(store, max_buffer=20_000, flush_interval=0.05)
    for i in range(10_000):
        writer.record_request(routed(f"r{i}", user=f"u{i % 97}", latency_ms=float(i % 50)))
    counters = writer.close(timeout=60)
    assert (counters.written, counters.buffered, counters.dropped_full) == (10_000, 0, 0)
    assert request_count(url) == (10_000, 10_000)
    store.close()


@pytest.fixture
def outage(url: str) -> Iterator[tuple[Callable[[], None], Callable[[], None]]]:
    """Take the database down and bring it back: PostgreSQL refuses connections and ends the open ones;
    SQLite is held under another process's exclusive lock."""
    held: list[sqlite3.Connection] = []
    parsed = sa.make_url(url)
    admin = None
    if parsed.get_backend_name() == "postgresql":
        admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")

    def down() -> None:
        if admin is None:
            connection = sqlite3.connect(str(parsed.database), isolation_level=None)
            connection.execute("BEGIN EXCLUSIVE")
            held.append(connection)
            return
        with admin.connect() as connection:
            connection.execute(sa.text(f'ALTER DATABASE "{parsed.database}" ALLOW_CONNECTIONS false'))
            connection.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                {"name": parsed.database},
            )

    def up() -> None:
        if admin is None:
            held.pop().rollback()
            return
        with admin.connect() as connection:
            connection.execute(sa.text(f'ALTER DATABASE "{parsed.database}" ALLOW_CONNECTIONS true'))

    yield down, up
    while held:
        held.pop().close()
    if admin is not None:
        up()
        admin.dispose()


def test_the_writer_survives_the_store_going_down_and_writes_everything_once_it_is_back(
    url: str, outage: tuple[Callable[[], None], Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    down, up = outage
    store = EventStore(url, busy_timeout_ms=50)
    writer = BufferedEventWriter(
        store, max_buffer=300, flush_interval=0.02, batch_size=100, max_retry_delay=0.1
    )
    for i in range(100):
        writer.record_request(routed(f"before{i}"))
    wait_for(lambda: writer.written == 100, what="the first rows written")
    with caplog.at_level(logging.WARNING, logger="loopline.rollout.writer"):
        down()
        writer.record_request(routed("during0"))
        wait_for(lambda: writer.flush_failures >= 3, what="three failed flushes")
        for i in range(1, 400):
            writer.record_request(routed(f"during{i}"))
        assert (writer.buffered, writer.dropped_error, writer.dropped_full) == (300, 100, 0)
        up()
        wait_for(lambda: writer.buffered == 0, what="the buffer written after the outage")
    counters = writer.close()
    assert counters.written == 400 and counters.dropped_error == 100
    assert request_count(url) == (400, 400)  # everything buffered landed, nothing twice
    warnings = [record.getMessage() for record in caplog.records]
    assert sum("Cannot write events" in message for message in warnings) == 1, warnings
    assert counters.flush_failures >= 3
    store.close()


CRASHING_ROUTER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from loopline.rollout.events import ExperimentState, RoutedRequest
    from loopline.rollout.store import EventStore
    from loopline.rollout.writer import BufferedEventWriter

    store = EventStore(sys.argv[1])
    state = ExperimentState("exp", "digits", "6", "7", "a", "b", "s", weight=0.5, step=1, status="running")
    store.save_experiment(state, None)
    writer = BufferedEventWriter(store, flush_interval=1.0, batch_size=200)  # full batches go at once
    recorded = 0

    def record(rows):
        global recorded
        for _ in range(rows):
            writer.record_request(RoutedRequest(f"r{recorded}", "exp", "champion", "6", "u", 1.0, 200))
            recorded += 1

    for burst in range(40):
        record(150)
        time.sleep(0.005)
    time.sleep(0.1)
    record(50)  # less than a batch: waits for the next flush, which never comes
    counters = writer.counters()
    print(json.dumps({"recorded": recorded, "written": counters.written, "buffered": counters.buffered,
                      "dropped": counters.dropped_full + counters.dropped_error}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # a crash: no close, no flush
    """
)


def test_a_crash_loses_at_most_the_unflushed_buffer_and_keeps_the_experiment(url: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CRASHING_ROUTER, url], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert child.returncode == -9, child.stderr[-3000:]
    at_crash = json.loads(child.stdout.strip().splitlines()[-1])
    stored, distinct = request_count(url)
    lost = at_crash["recorded"] - at_crash["dropped"] - stored
    print(
        f"crash: recorded {at_crash['recorded']}, buffered at the crash {at_crash['buffered']}, lost {lost}"
    )
    assert stored == distinct
    assert at_crash["written"] <= stored <= at_crash["recorded"]  # a batch in flight may have landed
    assert 0 <= lost <= at_crash["buffered"]

    restarted = EventStore(url)
    found = restarted.get_experiment("exp")
    assert found is not None and (found.version, found.state.weight, found.state.step) == (1, 0.5, 1)
    restarted.close()


def test_served_samples_are_kept_once_per_request_in_time_order(store: EventStore) -> None:
    t0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    served = RoutedRequest("r1", "exp", "champion", "1", "u", 2.0, 200, "7", 0.8, at=t0)
    store.insert_requests([served])
    rows = [
        ServedSample("r2", "bb", "/d/production/bb.png", t0 + timedelta(seconds=2)),
        ServedSample("r1", "aa", "/d/production/aa.png", t0 + timedelta(seconds=1)),
    ]
    store.insert_samples(rows)
    store.insert_samples(list(reversed(rows)))  # a retried batch: nothing twice
    found = store.list_samples()
    assert [(s.request_id, r) for s, r in found] == [("r1", served), ("r2", None)]  # r2's row not stored
    assert [s.request_id for s, _ in store.list_samples(since=t0 + timedelta(seconds=2))] == ["r2"]
    assert store.list_samples(until=t0 + timedelta(seconds=1)) == []
