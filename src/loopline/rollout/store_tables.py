"""The event store's tables (SQLAlchemy Core) and the column types that make both backends read back
what was written: timezone-aware UTC datetimes, and JSON numbers that may be infinite or NaN.
``EventStore`` (store.py) creates them; see its module docstring for what each table holds."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite keeps no zone: stored as naive UTC).
    A naive datetime given to the store is taken to be UTC already."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return utc if dialect.name == "postgresql" else utc.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def encode_numbers(numbers: dict[str, float]) -> dict[str, float | str]:
    """JSON has no NaN or infinity (PostgreSQL's json type refuses them): keep those as strings."""
    return {key: float(v) if math.isfinite(v) else str(float(v)) for key, v in numbers.items()}


def decode_numbers(stored: dict[str, float | str]) -> dict[str, float]:
    return {key: float(value) for key, value in stored.items()}


metadata = sa.MetaData()

requests_table = sa.Table(
    "requests",
    metadata,
    sa.Column("request_id", sa.String, primary_key=True),
    sa.Column("experiment", sa.String, nullable=False),
    sa.Column("variant", sa.String, nullable=False),
    sa.Column("model_version", sa.String, nullable=False),
    sa.Column("user_hash", sa.String, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("predicted_label", sa.String),
    sa.Column("confidence", sa.Float),
    sa.Column("predicted_boxes", sa.JSON(none_as_null=True)),
    sa.Column("fallback", sa.Boolean, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("ix_requests_experiment_variant_at", "experiment", "variant", "at"),
)

feedback_table = sa.Table(
    "feedback",
    metadata,
    sa.Column("request_id", sa.String, primary_key=True),
    sa.Column("true_label", sa.String),
    sa.Column("correct", sa.Boolean),
    sa.Column("true_boxes", sa.JSON(none_as_null=True)),
    sa.Column("at", UTCDateTime, nullable=False),
)

samples_table = sa.Table(
    "served_samples",
    metadata,
    sa.Column("request_id", sa.String, primary_key=True),
    sa.Column("content_hash", sa.String, nullable=False),
    sa.Column("uri", sa.String, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("ix_served_samples_at", "at"),
)

experiments_table = sa.Table(
    "experiments",
    metadata,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("model", sa.String, nullable=False),
    sa.Column("champion_version", sa.String, nullable=False),
    sa.Column("challenger_version", sa.String, nullable=False),
    sa.Column("champion_url", sa.String, nullable=False),
    sa.Column("challenger_url", sa.String, nullable=False),
    sa.Column("seed", sa.String, nullable=False),
    sa.Column("weight", sa.Float, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

decisions_table = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String, nullable=False),
    sa.Column("verdict", sa.String, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("numbers", sa.JSON, nullable=False),
    sa.Column("weight_after", sa.Float, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("ix_decisions_experiment_at", "experiment", "at"),
)


ADDED_COLUMNS = (("requests", "predicted_boxes"), ("feedback", "true_boxes"))  # nullable, added later


def add_missing_columns(connection: sa.Connection) -> None:
    """Add the nullable columns a store made before them lacks (``ADD COLUMN``, both backends)."""
    inspector = sa.inspect(connection)
    for table_name, column_name in ADDED_COLUMNS:
        if column_name in {c["name"] for c in inspector.get_columns(table_name)}:
            continue
        column = metadata.tables[table_name].c[column_name]
        kind = column.type.compile(dialect=connection.dialect)
        connection.execute(sa.text(f"ALTER TABLE {table_name} ADD COLUMN {column_name} {kind}"))
