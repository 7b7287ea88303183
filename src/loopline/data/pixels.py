"""Pixels of stored images, read the same way by every stage (training, evaluation, scoring, serving).

- ``decode_rgb``: bytes → an RGB image with its EXIF orientation applied, so a phone photo looks the same
  to the model as to annotators in the browser (which honour EXIF);
- ``ImageReader``: reads a stored URI (a local path or ``s3://bucket/key``) through the data store's
  client, keeping a local copy of S3 objects under a cache folder keyed by the (content-addressed) key,
  so repeated epochs, trials and rounds download each image once.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from loopline.data.s3 import error_code, make_s3_client, parse_s3_uri, s3_fix
from loopline.errors import StoredImageMissing

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from loopline.settings import Settings


def decode_rgb(data: bytes) -> Image.Image:
    """Decode ``data`` into an RGB image, rotated/flipped as its EXIF orientation says."""
    with Image.open(io.BytesIO(data)) as image:
        upright = ImageOps.exif_transpose(image)
        return upright.convert("RGB")


class ImageReader:
    """Reads stored images by URI; S3 objects are cached on local disk (``cache_dir``)."""

    def __init__(self, settings: Settings, cache_dir: str | Path | None = None) -> None:
        self._settings = settings
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()  # readers are shared by threads: make one client
        self.cache_dir = Path(cache_dir) if cache_dir else settings.resolved_home / "cache" / "images"

    def read_bytes(self, uri: str) -> bytes:
        if not uri.startswith("s3://"):
            try:
                return Path(uri).read_bytes()
            except OSError as exc:
                raise StoredImageMissing(
                    f"The stored image {uri} cannot be read ({exc.strerror or exc}). To fix this, point "
                    "LOOPLINE_DATA_ROOT at the data root the manifest was collected into, or collect again."
                ) from exc
        bucket, key = parse_s3_uri(uri)
        cached = self.cache_dir / bucket / key
        if cached.exists():
            return cached.read_bytes()
        with self._client_lock:
            if self._client is None:
                self._client = make_s3_client(self._settings)
        from botocore.exceptions import ClientError

        try:
            data: bytes = self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = error_code(exc)
            raise StoredImageMissing(
                f"The stored image {uri} cannot be read ({code}). To fix this, {s3_fix(code, bucket)}."
            ) from exc
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".part-")  # atomic: no half-written cache
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, cached)
        return data

    def open(self, uri: str) -> Image.Image:
        return decode_rgb(self.read_bytes(uri))
