"""Sources to collect from: a local folder (recursive) or an S3 prefix (paginated).

A file's *source label* is the name of the folder it sits in below the source root (``root/cat/1.png``
is labelled ``cat``); files directly under the root have no label.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from loopline.data.s3 import CREDENTIAL_ERROR_CODES, error_code, make_s3_client, parse_s3_uri, s3_fix
from loopline.errors import EmptySource, SourceAccessDenied, SourceNotFound, SourceUnreachable
from loopline.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass(frozen=True)
class SourceFile:
    """One file found in a source."""

    uri: str
    size: int
    label: str | None


class Source(Protocol):
    uri: str

    def list_files(self) -> list[SourceFile]: ...
    def read(self, file: SourceFile) -> bytes: ...


def label_from_relative(relative: str) -> str | None:
    """The first folder of a path relative to the source root, or None for files at the root."""
    parts = relative.split("/")
    return parts[-2] if len(parts) > 1 else None


class LocalFolderSource:
    """Every file below a local folder, recursively, hidden files and folders skipped."""

    def __init__(self, path: str | Path) -> None:
        self.root = Path(path).expanduser().resolve()
        self.uri = str(self.root)

    def list_files(self) -> list[SourceFile]:
        if not self.root.is_dir():
            raise SourceNotFound(
                f"The source folder {self.uri!r} does not exist or is not a folder. To fix this, "
                "pass an existing folder of images (or s3://bucket/prefix)."
            )
        files = sorted(self._walk(self.uri, ""), key=lambda f: f.uri)
        if not files:
            raise EmptySource(
                f"The source folder {self.uri!r} holds no files. To fix this, add images to it."
            )
        return files

    def _walk(self, folder: str, relative: str) -> Iterator[SourceFile]:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                rel = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_dir():
                    yield from self._walk(entry.path, rel)
                elif entry.is_file():
                    yield SourceFile(entry.path, entry.stat().st_size, label_from_relative(rel))

    def read(self, file: SourceFile) -> bytes:
        with open(file.uri, "rb") as handle:
            return handle.read()


class S3PrefixSource:
    """Every object under ``s3://bucket/prefix``, listed page by page."""

    def __init__(self, uri: str, client: S3Client) -> None:
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = parse_s3_uri(self.uri)
        self.client = client

    def list_files(self) -> list[SourceFile]:
        from botocore.exceptions import ClientError, EndpointConnectionError

        prefix = f"{self.prefix}/" if self.prefix else ""
        files: list[SourceFile] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    relative = key[len(prefix) :]
                    if (
                        not relative
                        or key.endswith("/")
                        or any(p.startswith(".") for p in relative.split("/"))
                    ):
                        continue
                    files.append(
                        SourceFile(f"s3://{self.bucket}/{key}", obj["Size"], label_from_relative(relative))
                    )
        except EndpointConnectionError as exc:
            raise SourceUnreachable(
                f"Cannot reach the S3 endpoint of {self.uri!r} ({exc}). To fix this, check that the S3 "
                "service is up and LOOPLINE_S3_ENDPOINT_URL points at it (or the network to AWS)."
            ) from exc
        except ClientError as exc:
            code = error_code(exc)
            fix = s3_fix(code, self.bucket)
            if code == "NoSuchBucket":
                raise SourceNotFound(
                    f"The bucket of {self.uri!r} does not exist. To fix this, {fix}."
                ) from exc
            if code in CREDENTIAL_ERROR_CODES:
                raise SourceAccessDenied(f"Cannot list {self.uri!r}: {code}. To fix this, {fix}.") from exc
            raise
        if not files:
            raise EmptySource(
                f"Nothing found under {self.uri!r}. To fix this, check the prefix or upload images there."
            )
        return sorted(files, key=lambda f: f.uri)

    def read(self, file: SourceFile) -> bytes:
        key = file.uri[len(f"s3://{self.bucket}/") :]
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


def open_source(uri: str, settings: Settings) -> Source:
    """The source for a folder path or an ``s3://bucket/prefix`` URI."""
    if uri.startswith("s3://"):
        return S3PrefixSource(uri, make_s3_client(settings))
    return LocalFolderSource(uri)


class CombinedSource:
    """Several sources collected as one dataset version, e.g. a round's folder and the router's sample of
    served images. The first source must exist (``SourceNotFound``), but may be empty; the others are
    optional: one that is missing or empty adds nothing (the production sample before the router kept
    anything). ``EmptySource`` only when all of them hold nothing."""

    def __init__(self, required: Source, optional: list[Source]) -> None:
        self.sources = [required, *optional]
        self.uri = " + ".join(source.uri for source in self.sources)
        self._owner: dict[str, Source] = {}

    def list_files(self) -> list[SourceFile]:
        files = []
        for index, source in enumerate(self.sources):
            try:
                found = source.list_files()
            except EmptySource:
                continue
            except SourceNotFound:
                if index == 0:
                    raise
                continue
            for file in found:
                self._owner.setdefault(file.uri, source)
            files += found
        if not files:
            raise EmptySource(
                f"None of {self.uri} holds a file. To fix this, add images to {self.sources[0].uri}."
            )
        return files

    def read(self, file: SourceFile) -> bytes:
        return self._owner.get(file.uri, self.sources[0]).read(file)
