"""S3 helpers: URI parsing and a client with retries and back-off on transient errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loopline.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# botocore's error codes that mean "your credentials are wrong", not "try again".
CREDENTIAL_ERROR_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "AccessDenied", "403"}
)


def s3_fix(code: str, bucket: str) -> str:
    """What a person can do about the S3 error ``code`` (one place for every S3 error message)."""
    if code == "NoSuchBucket":
        return f"create the bucket {bucket!r} or check its name and the endpoint (LOOPLINE_S3_ENDPOINT_URL)"
    if code in CREDENTIAL_ERROR_CODES:
        return "check LOOPLINE_S3_ACCESS_KEY_ID / LOOPLINE_S3_SECRET_ACCESS_KEY and the bucket policy"
    if code in {"NoSuchKey", "404", "NotFound"}:
        return "check that the data root still holds it (LOOPLINE_DATA_ROOT) and was not cleaned up"
    return "check the bucket, the endpoint (LOOPLINE_S3_ENDPOINT_URL) and the credentials"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` into ``("bucket", "some/prefix")`` (prefix without slashes)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"Not an S3 URI: {uri!r}. Expected s3://bucket/prefix.")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI {uri!r} has no bucket. Expected s3://bucket/prefix.")
    return bucket, prefix.strip("/")


def make_s3_client(settings: Settings, max_attempts: int | None = None) -> S3Client:
    """An S3 client from settings, retrying transient errors with exponential back-off (botocore):
    ``max_attempts`` tries (default: LOOPLINE_S3_MAX_ATTEMPTS)."""
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {
        "region_name": settings.s3_region,
        "config": Config(
            retries={"max_attempts": max_attempts or settings.s3_max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=30,
        ),
    }
    if settings.s3_endpoint_url:
        kwargs["endpoint_url"] = settings.s3_endpoint_url
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        kwargs["aws_access_key_id"] = settings.s3_access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
    client: S3Client = boto3.client("s3", **kwargs)
    return client


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError, or "" for anything else."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: connection problems, throttling, 5xx."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    if isinstance(exc, EndpointConnectionError | BotoConnectionError | ReadTimeoutError | ConnectionError):
        return True
    code = error_code(exc)
    return code in {
        "SlowDown",
        "Throttling",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "500",
        "503",
    }
