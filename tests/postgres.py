"""A real PostgreSQL server for a test: its own data folder, a free loopback port, always stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loopline.services.process import free_port


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user when we are root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def running_postgres(database: str = "loopline") -> Iterator[str]:
    """Yield a SQLAlchemy URL (psycopg 3) to a fresh database on a throw-away server."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (initdb/pg_ctl on PATH)")
    folder = Path(tempfile.mkdtemp(prefix="loopline-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        _as_postgres(["initdb", "-D", str(data), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    start = _as_postgres(["pg_ctl", "-D", str(data), "-l", str(folder / "log"), "-o", options, "-w", "start"])
    try:
        subprocess.run(start, check=True, capture_output=True, timeout=60)
        subprocess.run(
            _as_postgres(["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database]),
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
    finally:
        stop = _as_postgres(["pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"])
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
