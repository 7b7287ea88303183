"""Doctor's checks of where state lives: the data root (a folder or an S3 prefix: write, read back and
delete a probe) and the SQL databases (the A/B event store, Optuna's studies: connect and ``select 1``)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from loopline.data.s3 import error_code, make_s3_client, parse_s3_uri, s3_fix
from loopline.data.store import DataStore, LocalStore, S3Store
from loopline.doctor.checks import Check, failed, mask_url, ok, warning
from loopline.settings import Settings

PROBE_BODY = b"loopline doctor probe\n"


def check_data_root(root: str, settings: Settings) -> list[Check]:
    """Write, read back and delete a small probe object under the data root."""
    name = "data root"
    if root.startswith("s3://"):
        return [_check_s3_root(root, settings)]
    existing = Path(root)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        step = _probe(LocalStore(root))
    except OSError as exc:
        return [
            failed(
                name,
                f"{root} is not writable ({exc.strerror or type(exc).__name__})",
                f"fix the permissions of {existing}, or set LOOPLINE_DATA_ROOT to a folder you can write",
            )
        ]
    if step:
        return [failed(name, f"{root}: {step}", "check the disk and the folder (LOOPLINE_DATA_ROOT)")]
    return [ok(name, f"{root} is writable (a probe file was written, read back and deleted)")]


def _check_s3_root(root: str, settings: Settings) -> Check:
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    name = "data root"
    bucket, prefix = parse_s3_uri(root)
    where = f"bucket {bucket!r}, prefix {prefix or '(none)'!r}"
    endpoint = mask_url(settings.s3_endpoint_url) if settings.s3_endpoint_url else "AWS S3"
    store = S3Store(root, make_s3_client(settings, max_attempts=1))
    try:
        step = _probe(store)
    except EndpointConnectionError:
        return failed(
            name,
            f"{root}: the S3 endpoint {endpoint} is unreachable ({where})",
            "check LOOPLINE_S3_ENDPOINT_URL (host and port) and that the object store runs",
        )
    except NoCredentialsError:
        return failed(
            name,
            f"{root}: no S3 credentials ({where})",
            "set LOOPLINE_S3_ACCESS_KEY_ID and LOOPLINE_S3_SECRET_ACCESS_KEY (or the AWS_* variables)",
        )
    except ClientError as exc:
        code = error_code(exc) or "error"
        operation = getattr(exc, "operation_name", "") or "request"
        return failed(
            name,
            f"{root}: {code} on {operation} ({where}, endpoint {endpoint})",
            s3_fix(code, bucket),
        )
    except BotoCoreError as exc:
        return failed(
            name, f"{root}: {type(exc).__name__} ({where}, endpoint {endpoint})", s3_fix("", bucket)
        )
    if step:
        return failed(name, f"{root}: {step} ({where})", s3_fix("", bucket))
    return ok(name, f"{root} is writable ({where}: a probe object was put, read back and deleted)")


def _probe(store: DataStore) -> str:
    """Put, get and delete a probe object; "" when all went well, else what went wrong."""
    key = f".loopline-doctor-{uuid.uuid4().hex}"
    store.put_bytes(key, PROBE_BODY)
    try:
        if store.get_bytes(key) != PROBE_BODY:
            return "the probe read back differs from what was written"
    finally:
        store.delete(key)
    return ""


def check_database(name: str, url: str, setting: str, shared: bool, timeout: float) -> list[Check]:
    """Connect to the SQLAlchemy ``url`` and run ``select 1``.

    Args:
        name: what the database is for ("event store", "optuna storage").
        setting: the environment variable that sets ``url`` (named in the fix).
        shared: the flows run on other machines too (the Prefect API is not on this one): a SQLite file
            cannot be shared, so it is a warning.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    from sqlalchemy.pool import NullPool

    try:
        parsed = make_url(url)
    except ArgumentError:
        return [failed(name, f"{setting} is not a SQLAlchemy URL", f"set {setting}=postgresql+psycopg://…")]
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        return [_check_sqlite(name, parsed.database or "", setting, shared)]
    connect_args: dict[str, object] = {}
    if parsed.get_backend_name() in ("postgresql", "mysql"):
        connect_args["connect_timeout"] = max(1, int(timeout))
    fix = f"check that the database server runs and {setting} (host, port, database, user, password)"
    try:
        engine = create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
        try:
            with engine.connect() as connection:
                connection.execute(text("select 1"))
        finally:
            engine.dispose()
    except ModuleNotFoundError as exc:
        return [failed(name, f"{shown}: the driver {exc.name!r} is not installed", f"pip install {exc.name}")]
    except Exception as exc:  # the driver's errors differ by database: name the kind and its first line
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        return [failed(name, f"{shown} cannot be reached: {type(exc).__name__}: {reason}", fix)]
    return [ok(name, f"{shown} answers")]


def _check_sqlite(name: str, database: str, setting: str, shared: bool) -> Check:
    path = Path(database)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not database or database == ":memory:":
        return failed(
            name, "an in-memory SQLite database keeps nothing", f"set {setting} to a file or a server"
        )
    if not os.access(path if path.exists() else folder, os.W_OK):
        return failed(name, f"SQLite file {path} is not writable", f"fix its permissions or set {setting}")
    state = "exists" if path.exists() else "will be created on first use"
    if shared:
        return warning(
            name,
            f"SQLite file {path} ({state}): the Prefect API is on another machine, and flows running there "
            "cannot share this file",
            f"set {setting}=postgresql+psycopg://USER:PASSWORD@HOST:5432/DB (one every worker reaches)",
        )
    return ok(name, f"SQLite file {path} ({state})")
