"""The monitor's verdicts, kept in the event store's database (its own table, ``monitor_verdicts``,
created idempotently beside the A/B stage's tables) so that another process, ``loopline status``, reads
the latest one with ``latest_verdict``."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from loopline.monitoring.verdict import MonitorVerdict
from loopline.rollout.store import create_store_engine
from loopline.rollout.store_tables import UTCDateTime

metadata = sa.MetaData()

verdicts_table = sa.Table(
    "monitor_verdicts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String, nullable=False),
    sa.Column("verdict", sa.String, nullable=False),
    sa.Column("severity", sa.String, nullable=False),
    sa.Column("window_end", UTCDateTime, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("body", sa.JSON, nullable=False),  # the whole MonitorVerdict
    sa.Index("ix_monitor_verdicts_model_at", "model", "at"),
)


def save_verdict(store_url: str, verdict: MonitorVerdict) -> None:
    """Append ``verdict`` (the table is created on first use)."""
    engine = create_store_engine(store_url)
    try:
        with engine.begin() as connection:
            metadata.create_all(connection)
            connection.execute(
                verdicts_table.insert(),
                {
                    "model": verdict.model,
                    "verdict": verdict.verdict,
                    "severity": verdict.severity,
                    "window_end": verdict.window_end,
                    "at": verdict.at,
                    "body": verdict.model_dump(mode="json"),
                },
            )
    finally:
        engine.dispose()


def latest_verdict(store_url: str, model: str) -> MonitorVerdict | None:
    """The latest verdict saved for ``model``; None when the monitor never ran on this store (a missing
    SQLite file is not created)."""
    parsed = sa.make_url(store_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).is_file():
        return None
    engine = create_store_engine(store_url)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table(verdicts_table.name):
                return None
            t = verdicts_table.c
            query = sa.select(t.body).where(t.model == model).order_by(t.at.desc(), t.id.desc()).limit(1)
            body = connection.execute(query).scalar()
    finally:
        engine.dispose()
    return None if body is None else MonitorVerdict.model_validate(body)
