"""Block types: where the Label Studio server, the MLflow server and the data root are.

Secrets are ``SecretStr``: Prefect stores them encrypted-at-rest in its database, shows them masked in
the UI and never prints them.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

BLOCK_NAME = "loopline"


class LabelStudioServer(Block):
    """A Label Studio server and the API token loopline uses on it."""

    _block_type_slug = "loopline-label-studio-server"
    url: str = Field(..., description="Base URL, e.g. http://127.0.0.1:8080")
    api_key: SecretStr = Field(..., description="API token (Account & Settings → Access Token)")


class MLflowServer(Block):
    """An MLflow tracking server and model registry."""

    _block_type_slug = "loopline-mlflow-server"
    tracking_uri: str = Field(..., description="Tracking URI, e.g. http://127.0.0.1:5000")


class DataRoot(Block):
    """Where loopline stores images and manifests: a local folder or an S3 prefix."""

    _block_type_slug = "loopline-data-root"
    uri: str = Field(..., description="A local path or s3://bucket/prefix")
    s3_endpoint_url: str | None = Field(default=None, description="S3 API endpoint for non-AWS stores")
    s3_region: str = Field(default="us-east-1")
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
