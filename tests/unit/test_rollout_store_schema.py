"""The event store's pure parts: JSON numbers, UTC datetimes, the URLs it accepts."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from loopline.rollout.store import EventStoreError, create_store_engine, sqlite_url
from loopline.rollout.store_tables import UTCDateTime, decode_numbers, encode_numbers

pytestmark = pytest.mark.unit


def test_non_finite_numbers_survive_json() -> None:
    stored = encode_numbers({"p": 0.25, "upper": math.inf, "lower": -math.inf, "z": math.nan})
    assert stored == {"p": 0.25, "upper": "inf", "lower": "-inf", "z": "nan"}
    back = decode_numbers(stored)
    assert back["p"] == 0.25 and back["upper"] == math.inf and back["lower"] == -math.inf
    assert math.isnan(back["z"])


def test_datetimes_are_stored_and_read_as_utc() -> None:
    column = UTCDateTime()
    paris = datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    noon_utc = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert column.process_bind_param(paris, sqlite.dialect()) == noon_utc.replace(tzinfo=None)
    assert column.process_bind_param(paris, postgresql.dialect()) == noon_utc
    assert column.process_bind_param(datetime(2026, 3, 1, 12, 0), sqlite.dialect()) == datetime(
        2026, 3, 1, 12
    )
    assert column.process_result_value(datetime(2026, 3, 1, 12, 0), sqlite.dialect()) == noon_utc
    read = column.process_result_value(paris, postgresql.dialect())
    assert read == noon_utc and read is not None and read.tzinfo == UTC


def test_unsupported_and_in_memory_urls_are_refused_with_examples() -> None:
    with pytest.raises(EventStoreError, match=r"not 'mysql'.*Examples: sqlite:///"):
        create_store_engine("mysql://user@host/db")
    with pytest.raises(EventStoreError, match="needs a SQLite file"):
        create_store_engine("sqlite://")


def test_sqlite_url_is_absolute_and_its_folder_is_created(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "nested" / "events.db")
    assert url == f"sqlite:///{tmp_path}/nested/events.db"
    engine = create_store_engine(url)
    try:
        assert (tmp_path / "nested").is_dir()
    finally:
        engine.dispose()
