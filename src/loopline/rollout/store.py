"""The A/B stage's event store: routed requests, feedback, the experiment's state and its decisions, in
SQLite (a file, the embedded default) or PostgreSQL (production), through SQLAlchemy 2.

Tables (``store_tables.py``; created idempotently by ``EventStore``, no migrations yet: columns added later
are nullable and added to an older store with ``ADD COLUMN``):

- ``requests``: one row per ``RoutedRequest``, ``request_id`` the primary key, indexed on
  (experiment, variant, at) for the per-arm summaries. Inserts skip ids already stored, so a batch
  retried after an ambiguous failure never duplicates a row.
  A detector's answer keeps its boxes (``predicted_boxes``, JSON).
- ``feedback``: one row per request id (a true label, a flag, or a detector's true boxes), **the first
  feedback wins** (later ones for the same id are ignored): a client retrying a post cannot change an
  outcome already counted, and replaying a batch is harmless. No foreign key to ``requests``: the
  feedback route checks the id (``feedback_is_known``) and the summaries join, so an orphan row (its
  request dropped under load) is never counted.
- ``experiments``: one row per experiment name, updated in place under optimistic concurrency: every
  save names the version it read, and a save over a newer version raises ``ExperimentConflict``.
- ``decisions``: every evaluation, its reasons and numbers as JSON (non-finite numbers kept as strings).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from loopline.errors import LooplineError
from loopline.rollout.box_feedback import box_f1, boxes_from_json, boxes_to_json
from loopline.rollout.events import (
    VARIANTS,
    Decision,
    ExperimentState,
    Feedback,
    RoutedRequest,
    ServedSample,
    Variant,
)
from loopline.rollout.store_tables import (
    add_missing_columns,
    decisions_table,
    decode_numbers,
    encode_numbers,
    experiments_table,
    feedback_table,
    metadata,
    requests_table,
    samples_table,
)

SUPPORTED_DIALECTS = ("sqlite", "postgresql")
SCHEMA_LOCK_KEY = 0x1007_11E5  # PostgreSQL advisory lock held while the tables are created


class EventStoreError(LooplineError):
    """The event store refused an operation."""


class EventStoreUnavailable(EventStoreError):
    """The database could not be reached or is locked (worth a retry; the feedback route answers 503)."""


class ExperimentConflict(EventStoreError):
    """Another writer saved the experiment since it was read: read it again, re-apply, save again."""


class UnknownRequestId(EventStoreError):
    """Feedback names a request id the store has never seen (the feedback route answers 404)."""


_STATE_FIELDS = tuple(c.name for c in experiments_table.columns if c.name != "version")


@dataclass(frozen=True)
class StoredExperiment:
    """An experiment's state and the version to name when saving it back."""

    state: ExperimentState
    version: int


@dataclass(frozen=True)
class ArmTotals:
    """What the statistics need about one arm: an ``ArmCounts`` of ``stats.py`` (not imported here: the
    router writes through this module and needs no SciPy). Requests count in the arm the user was
    assigned to (intention to treat): a challenger request the champion answered after a failure is the
    challenger's, an error, and its latency (what the user waited) is the challenger's too."""

    variant: Variant
    requests: int
    errors: int  # status >= 500, or the champion answered after the challenger failed (fallback)
    latencies_ms: NDArray[np.float64]  # every request's latency, float64, in no particular order
    feedback: int  # requests of this arm with a usable outcome (a flag, a true label or true boxes)
    correct: float  # the flag when given, else true label == predicted label; a detector's: box F1
    users: int  # distinct user hashes (the sample-ratio check)


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of the embedded default: a SQLite file."""
    return f"sqlite:///{path.resolve()}"


class EventStore:
    """The A/B stage's tables on one database. Thread-safe: every call checks out its own connection.

    Args:
        url: a SQLAlchemy URL: ``sqlite:///FILE`` (see ``sqlite_url``) or
            ``postgresql+psycopg://USER@HOST:PORT/DB``.
        busy_timeout_ms: SQLite only: how long a write waits for another writer's lock.
        connect_timeout_s: PostgreSQL only: how long a connection attempt may take.
    """

    def __init__(self, url: str, *, busy_timeout_ms: int = 5000, connect_timeout_s: int = 5) -> None:
        self.engine = create_store_engine(
            url, busy_timeout_ms=busy_timeout_ms, connect_timeout_s=connect_timeout_s
        )
        self.url = self.engine.url.render_as_string(hide_password=True)
        with self._connection() as connection:
            # processes starting together: one creates the tables while the others wait
            if self.engine.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            else:  # pysqlite opens no transaction for DDL: take the write lock first
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            metadata.create_all(connection)
            add_missing_columns(connection)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _connection(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A connection in a transaction, committed at the end; an unreachable or locked database is
        ``EventStoreUnavailable``. With ``snapshot``, every statement reads the same rows (PostgreSQL's
        default isolation, and pysqlite outside a transaction, give each statement its own)."""
        try:
            with self.engine.connect() as connection:
                if snapshot and self.engine.dialect.name == "postgresql":
                    connection = connection.execution_options(isolation_level="REPEATABLE READ")
                with connection.begin():
                    if snapshot and self.engine.dialect.name == "sqlite":
                        connection.exec_driver_sql("BEGIN")
                    yield connection
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
            raise EventStoreUnavailable(
                f"The event store at {self.url} cannot be reached or is locked: {error.orig or error}. "
                "Check that the database is running and reachable; writes are retried."
            ) from error

    def _insert(self, table: sa.Table) -> Any:
        """An INSERT that skips rows whose key is already stored (idempotent batches)."""
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        return sqlite.insert(table).on_conflict_do_nothing()

    # --- requests and feedback -------------------------------------------------------------------------

    def insert_requests(self, rows: Sequence[RoutedRequest]) -> None:
        """Write a batch of routed requests in one transaction; ids already stored are skipped."""
        if rows:
            with self._connection() as connection:
                connection.execute(self._insert(requests_table), [_request_values(row) for row in rows])

    def insert_feedback(self, rows: Sequence[Feedback]) -> None:
        """Write a batch of feedback in one transaction; the first feedback for a request id wins."""
        if rows:
            with self._connection() as connection:
                connection.execute(self._insert(feedback_table), [_feedback_values(row) for row in rows])

    def feedback_is_known(self, request_id: str) -> bool:
        """Whether a routed request with this id is stored (feedback for it may be recorded)."""
        with self._connection() as connection:
            return _request_exists(connection, request_id)

    def record_feedback_checked(self, row: Feedback) -> bool:
        """Store feedback for a known request now. True when stored, False when the request already had
        feedback (the first wins). Raises ``UnknownRequestId`` for an id never routed."""
        with self._connection() as connection:
            if not _request_exists(connection, row.request_id):
                raise unknown_request(row.request_id)
            insert = self._insert(feedback_table).returning(feedback_table.c.request_id)
            return connection.execute(insert, _feedback_values(row)).first() is not None

    def arm_summaries(self, experiment: str, since: datetime | None = None) -> dict[Variant, ArmTotals]:
        """Per-arm counts of an experiment's requests made at or after ``since`` (all when None), with
        the feedback on those requests. Both arms are always present."""
        r, f = requests_table.c, feedback_table.c
        where = [r.experiment == experiment] + ([r.at >= since] if since is not None else [])
        error = sa.or_(r.status >= 500, r.fallback.is_(True))
        counts = sa.select(
            r.variant,
            sa.func.count(),
            sa.func.sum(sa.case((error, 1), else_=0)),
            sa.func.count(sa.distinct(r.user_hash)),
        ).where(*where)
        usable = sa.and_(f.true_boxes.is_(None), sa.or_(f.correct.is_not(None), f.true_label.is_not(None)))
        right = sa.or_(f.correct.is_(True), sa.and_(f.correct.is_(None), f.true_label == r.predicted_label))
        outcomes = (
            sa.select(r.variant, sa.func.count(), sa.func.sum(sa.case((right, 1), else_=0)))
            .select_from(requests_table.join(feedback_table, f.request_id == r.request_id))
            .where(*where, usable)
        )
        with self._connection(snapshot=True) as connection:
            by_arm = {v: (n, int(e), u) for v, n, e, u in connection.execute(counts.group_by(r.variant))}
            judged = {v: (n, float(c)) for v, n, c in connection.execute(outcomes.group_by(r.variant))}
            boxes = sa.select(r.variant, r.predicted_boxes, f.true_boxes).select_from(
                requests_table.join(feedback_table, f.request_id == r.request_id)
            )
            for variant, predicted, truth in connection.execute(
                boxes.where(*where, f.true_boxes.is_not(None), r.predicted_boxes.is_not(None))
            ):  # a detector's requests: the F1 of its boxes counts as its correctness
                n, c = judged.get(variant, (0, 0.0))
                f1 = box_f1(boxes_from_json(predicted) or (), boxes_from_json(truth) or ())
                judged[variant] = (n + 1, c + f1)
            latency = {
                v: np.fromiter(
                    connection.scalars(sa.select(r.latency_ms).where(*where, r.variant == v)), float
                )
                for v in VARIANTS
            }
        summaries = {}
        for variant in VARIANTS:
            requests, errors, users = by_arm.get(variant, (0, 0, 0))
            feedback, correct = judged.get(variant, (0, 0.0))
            summaries[variant] = ArmTotals(
                variant=variant,
                requests=requests,
                errors=errors,
                latencies_ms=latency[variant],
                feedback=feedback,
                correct=correct,
                users=users,
            )
        return summaries

    # --- experiments and decisions ---------------------------------------------------------------------

    def get_experiment(self, name: str) -> StoredExperiment | None:
        """The experiment's state and version, or None when no experiment has this name."""
        with self._connection() as connection:
            query = sa.select(experiments_table).where(experiments_table.c.name == name)
            row = connection.execute(query).first()
        if row is None:
            return None
        values = row._asdict()
        version = values.pop("version")
        return StoredExperiment(state=ExperimentState(**values), version=version)

    def latest_experiment(self, model: str) -> ExperimentState | None:
        """The model's most recently started experiment (what its router routes by), or None."""
        table = experiments_table
        query = sa.select(table).where(table.c.model == model).order_by(table.c.started_at.desc()).limit(1)
        with self._connection() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        values = row._asdict()
        values.pop("version")
        return ExperimentState(**values)

    def save_experiment(self, state: ExperimentState, expected_version: int | None) -> int:
        """Save the experiment's state; returns its new version.

        Args:
            state: the whole state (the row is replaced, ``updated_at`` as given).
            expected_version: the version read with ``get_experiment``; None to create the experiment.

        Raises:
            ExperimentConflict: the experiment exists when creating it, or another writer saved it since
                ``expected_version`` was read (nothing was written).
        """
        values = {name: getattr(state, name) for name in _STATE_FIELDS}
        table = experiments_table
        with self._connection() as connection:
            if expected_version is None:
                insert = self._insert(table).returning(table.c.version)
                if connection.execute(insert, {**values, "version": 1}).first() is not None:
                    return 1
            else:
                update = (
                    table.update()
                    .where(table.c.name == state.name, table.c.version == expected_version)
                    .values(**values, version=table.c.version + 1)
                    .returning(table.c.version)
                )
                if connection.execute(update).first() is not None:
                    return expected_version + 1
            query = sa.select(table.c.version).where(table.c.name == state.name)
            current = connection.execute(query).scalar()
        raise ExperimentConflict(_conflict_message(state.name, expected_version, current))

    def append_decision(self, decision: Decision) -> None:
        values = {
            "experiment": decision.experiment,
            "verdict": decision.verdict,
            "reasons": list(decision.reasons),
            "numbers": encode_numbers(decision.numbers),
            "weight_after": decision.weight_after,
            "at": decision.at,
        }
        with self._connection() as connection:
            connection.execute(decisions_table.insert(), values)

    def list_decisions(self, experiment: str, limit: int | None = None) -> list[Decision]:
        """The experiment's decisions, oldest first (the latest ``limit`` when given)."""
        d = decisions_table.c
        query = sa.select(decisions_table).where(d.experiment == experiment)
        query = query.order_by(d.at.desc(), d.id.desc())
        with self._connection() as connection:
            rows = connection.execute(query.limit(limit)).all()
        return [
            Decision(
                experiment=row.experiment,
                verdict=row.verdict,
                reasons=tuple(row.reasons),
                numbers=decode_numbers(row.numbers),
                weight_after=row.weight_after,
                at=row.at,
            )
            for row in reversed(rows)
        ]

    def get_request(self, request_id: str) -> RoutedRequest | None:
        """The routed request with this id (what answered it, when, how), or None when none is stored."""
        query = sa.select(requests_table).where(requests_table.c.request_id == request_id)
        with self._connection() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        values = row._asdict()
        return RoutedRequest(**{**values, "predicted_boxes": boxes_from_json(values["predicted_boxes"])})

    # --- served samples --------------------------------------------------------------------------------

    def insert_samples(self, rows: Sequence[ServedSample]) -> None:
        """Write a batch of served samples in one transaction; request ids already stored are skipped."""
        if rows:
            with self._connection() as connection:
                values = [{f: getattr(row, f) for f in ServedSample.__dataclass_fields__} for row in rows]
                connection.execute(self._insert(samples_table), values)

    def list_samples(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> list[tuple[ServedSample, RoutedRequest | None]]:
        """Served samples kept in ``[since, until)`` (all when None), oldest first, each with its routed
        request (None when that row was lost: the router's buffer is flushed separately)."""
        s, r = samples_table.c, requests_table.c
        where = ([s.at >= since] if since else []) + ([s.at < until] if until else [])
        query = (
            sa.select(samples_table, requests_table)
            .select_from(samples_table.outerjoin(requests_table, r.request_id == s.request_id))
            .where(*where)
            .order_by(s.at, s.request_id)
        )
        with self._connection() as connection:
            rows = connection.execute(query).all()
        fields, found = list(ServedSample.__dataclass_fields__), []
        request_fields = list(RoutedRequest.__dataclass_fields__)
        for row in rows:
            values = tuple(row)
            sample = ServedSample(**dict(zip(fields, values[: len(fields)], strict=True)))
            rest = dict(zip([c.name for c in requests_table.columns], values[len(fields) :], strict=True))
            request = (
                None if rest["request_id"] is None else RoutedRequest(**{k: rest[k] for k in request_fields})
            )
            found.append((sample, request))
        return found


def unknown_request(request_id: str) -> UnknownRequestId:
    return UnknownRequestId(
        f"No routed request has id {request_id!r}: feedback must name the request id the router returned "
        "in its X-Request-Id header (a request answered in the last second may not be stored yet: retry)."
    )


def _request_exists(connection: Connection, request_id: str) -> bool:
    query = sa.select(requests_table.c.request_id).where(requests_table.c.request_id == request_id)
    return connection.execute(query).first() is not None


def _request_values(row: RoutedRequest) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "experiment": row.experiment,
        "variant": row.variant,
        "model_version": row.model_version,
        "user_hash": row.user_hash,
        "latency_ms": row.latency_ms,
        "status": row.status,
        "predicted_label": row.predicted_label,
        "confidence": row.confidence,
        "predicted_boxes": boxes_to_json(row.predicted_boxes),
        "fallback": row.fallback,
        "at": row.at,
    }


def _feedback_values(row: Feedback) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "true_label": row.true_label,
        "correct": row.correct,
        "true_boxes": boxes_to_json(row.true_boxes),
        "at": row.at,
    }


def _conflict_message(name: str, expected: int | None, current: int | None) -> str:
    if expected is None:
        return (
            f"Experiment {name!r} already exists (version {current}): read it with get_experiment and save "
            "with that version, or choose another name."
        )
    if current is None:
        return f"Experiment {name!r} does not exist: create it with expected_version=None."
    return (
        f"Experiment {name!r} was saved by another writer: expected version {expected}, stored version "
        f"{current}. Read it again, re-apply the change and save with the version read."
    )


def create_store_engine(url: str, *, busy_timeout_ms: int = 5000, connect_timeout_s: int = 5) -> Engine:
    """An engine for the event store: SQLite in WAL mode with a busy timeout, or PostgreSQL with
    connections checked before use (a restarted server leaves dead ones in the pool)."""
    parsed = sa.make_url(url)
    dialect = parsed.get_backend_name()
    if dialect not in SUPPORTED_DIALECTS:
        raise EventStoreError(
            f"The event store supports {', '.join(SUPPORTED_DIALECTS)}, not {dialect!r} ({url!r}). "
            "Examples: sqlite:////var/lib/loopline/events.db, postgresql+psycopg://user@host:5432/loopline"
        )
    if dialect == "postgresql":
        connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": connect_timeout_s}
        return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    if parsed.database in (None, "", ":memory:"):
        raise EventStoreError(
            f"The event store needs a SQLite file, not an in-memory database ({url!r}): the router and the "
            "rollout flow must see the same rows. Example: sqlite:////var/lib/loopline/events.db"
        )
    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, connect_args={"timeout": busy_timeout_ms / 1000})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across a process crash
        cursor.close()

    return engine
