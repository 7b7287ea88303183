"""Content-addressed storage under the data root: a local folder or an S3 prefix.

Keys are relative POSIX paths (``images/ab/ab12….png``). Writes are atomic: a local write goes to a
temporary file that is renamed into place; an S3 PUT is atomic by nature.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

from loopline.data.s3 import error_code, make_s3_client, parse_s3_uri, s3_fix
from loopline.errors import DataRootNotWritable, DataRootUnavailable
from loopline.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class StoredObject:
    """One stored key with its size and last-modified time (UTC)."""

    key: str
    size: int
    modified: datetime


class DataStore(Protocol):
    """Where loopline keeps images, quarantined files and manifests."""

    root: str

    def uri(self, key: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def check_writable(self) -> None: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def list_objects(self, prefix: str) -> list[StoredObject]: ...
    def delete(self, key: str) -> None: ...


class LocalStore:
    """A data root on the local file system (plain string paths: this is the hot loop of collect)."""

    def __init__(self, root: str | Path) -> None:
        self.root = str(Path(root).expanduser().resolve())
        self._folders: set[str] = set()

    def path(self, key: str) -> Path:
        return Path(self.root) / key

    def uri(self, key: str) -> str:
        return os.path.join(self.root, key)

    def exists(self, key: str) -> bool:
        return os.path.exists(os.path.join(self.root, key))

    def put_bytes(self, key: str, data: bytes) -> None:
        target = os.path.join(self.root, key)
        folder = os.path.dirname(target)
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        tmp = f"{folder}/.{os.path.basename(target)}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get_bytes(self, key: str) -> bytes:
        with open(os.path.join(self.root, key), "rb") as handle:
            return handle.read()

    def list_keys(self, prefix: str) -> list[str]:
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file())

    def list_objects(self, prefix: str) -> list[StoredObject]:
        objects = []
        for key in self.list_keys(prefix):
            with contextlib.suppress(FileNotFoundError):  # removed since it was listed
                stat = self.path(key).stat()
                when = datetime.fromtimestamp(stat.st_mtime, UTC)
                objects.append(StoredObject(key, stat.st_size, when))
        return objects

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def check_writable(self) -> None:
        probe = f".write-check-{uuid.uuid4().hex}"
        try:
            self.put_bytes(probe, b"")
            self.path(probe).unlink()
        except OSError as exc:
            raise DataRootNotWritable(
                f"The data root {self.root!r} is not writable ({exc.strerror or exc}). To fix this, "
                "choose a folder you can write (LOOPLINE_DATA_ROOT=/some/dir) or fix its permissions."
            ) from exc


def _reachable(method: Callable[Concatenate[S3Store, P], R]) -> Callable[Concatenate[S3Store, P], R]:
    """Turn "the S3 server did not answer" (after botocore's own retries) into DataRootUnavailable, which
    names the endpoint and the fix and which the orchestrator's retries treat as transient."""

    @functools.wraps(method)
    def call(store: S3Store, *args: P.args, **kwargs: P.kwargs) -> R:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import ReadTimeoutError

        try:
            return method(store, *args, **kwargs)
        except (BotoConnectionError, ReadTimeoutError) as exc:
            endpoint = store.client.meta.endpoint_url
            raise DataRootUnavailable(
                f"The S3 server of the data root {store.root!r} did not answer at {endpoint} ({exc}). "
                "Nothing partial was kept: a manifest is written last. To fix this, check that the S3 "
                "server is up and reachable (LOOPLINE_S3_ENDPOINT_URL), then run again: what was stored "
                "already is reused."
            ) from exc

    return call


class S3Store:
    """A data root under an S3 prefix (``s3://bucket/prefix``)."""

    def __init__(self, root: str, client: S3Client) -> None:
        self.root = root.rstrip("/")
        self.bucket, self.prefix = parse_s3_uri(self.root)
        self.client = client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    @_reachable
    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    @_reachable
    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    @_reachable
    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    @_reachable
    def list_keys(self, prefix: str) -> list[str]:
        start = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        for page in pages:
            keys.extend(obj["Key"][start:] for obj in page.get("Contents", []))
        return sorted(keys)

    @_reachable
    def list_objects(self, prefix: str) -> list[StoredObject]:
        start = len(self.prefix) + 1 if self.prefix else 0
        objects: list[StoredObject] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        for page in pages:
            for obj in page.get("Contents", []):
                objects.append(StoredObject(obj["Key"][start:], obj["Size"], obj["LastModified"]))
        return sorted(objects, key=lambda o: o.key)

    @_reachable
    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def check_writable(self) -> None:
        from botocore.exceptions import ClientError

        probe = f".write-check-{uuid.uuid4().hex}"
        try:
            self.put_bytes(probe, b"")
            self.client.delete_object(Bucket=self.bucket, Key=self._key(probe))
        except ClientError as exc:
            code = error_code(exc)
            raise DataRootNotWritable(
                f"The data root {self.root!r} is not writable ({code}: {exc}). To fix this, "
                f"{s3_fix(code, self.bucket)}."
            ) from exc


def open_store(root: str, settings: Settings) -> DataStore:
    """The store for a data root: ``s3://bucket/prefix`` or a local path."""
    if root.startswith("s3://"):
        return S3Store(root, make_s3_client(settings))
    return LocalStore(root)
