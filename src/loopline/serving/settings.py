"""The model server's settings: read from the environment (prefix ``LOOPLINE_SERVING_``) when a
``ServingSettings`` is constructed, never at import time; ``loopline serve`` passes its options on top."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    """How one model server serves one registered model."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_SERVING_", extra="ignore")

    model_name: str = Field(default="", description="Registered model to serve.")
    selector: str = Field(
        default="champion", description="Alias (champion, challenger) or version number to serve."
    )
    host: str = Field(default="127.0.0.1", description="Interface to bind; 0.0.0.0 exposes the server.")
    port: int = Field(default=8000, ge=0, le=65535)
    poll_seconds: float = Field(
        default=30.0, ge=0, description="How often the alias is re-resolved for a hot reload (0: never)."
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1, description="Larger request bodies get 413.")
    max_pixels: int = Field(default=40_000_000, ge=1, description="Larger images (width x height) get 400.")
    max_batch_size: int = Field(default=32, ge=1, description="Most inputs per model call.")
    max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="Longest wait (ms) for more requests to join a batch. 0 adds no latency: requests that "
        "queue while the model runs still share the next batch; raise it to trade latency for batch size.",
    )
    max_queue: int = Field(default=256, ge=1, description="Queued inputs beyond this get 503.")
    top_k: int = Field(default=3, ge=1, description="Default k of /v1/predict's top-k probabilities.")
    threads: int | None = Field(
        default=None, ge=1, description="ONNX Runtime intra-op threads (default: every CPU but one)."
    )
    workers: int = Field(
        default=1,
        ge=1,
        description="Server processes sharing the port (each with its own copy of the model); the cores of "
        "a small host: Python's event loop, not the model, bounds one process's throughput.",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of POST /admin/reload; unset: reload over HTTP is disabled."
    )
    min_score: float = Field(
        default=0.3, ge=0, le=1, description="Detectors: boxes scoring below this are left out of answers."
    )
    label_studio_prefix: str = Field(
        default="/label-studio",
        pattern=r"^(/[A-Za-z0-9._-]+)*$",
        description="Where the Label Studio ML backend routes live: connect a project to "
        "http://HOST:PORT/label-studio ('' serves them at the root).",
    )
    label_studio_backend_auth: SecretStr | None = Field(
        default=None,
        description="'user:password' the ML backend routes require as HTTP Basic auth (Label Studio's "
        "'Basic Authentication' on the model connection); unset: open to whoever reaches the server.",
    )
    label_studio_url: str | None = Field(
        default=None,
        description="Label Studio the ML backend fetches task images from (default: loopline's).",
    )
    label_studio_token: SecretStr | None = Field(
        default=None,
        description="Its API token (default: loopline's LOOPLINE_LABEL_STUDIO_TOKEN or the local one).",
    )
    round_deployment: str | None = Field(
        default=None,
        description="Prefect deployment ('flow-name/deployment-name' or its id) the Label Studio webhook "
        "runs once a project has round_threshold new annotations; unset: the webhook only counts.",
    )
    round_threshold: int = Field(
        default=50, ge=1, description="New annotations per project that start a round."
    )
    round_parameters: dict[str, Any] = Field(
        default_factory=dict, description="Parameters of that flow run (JSON in the environment)."
    )
    prefect_api_url: str | None = Field(
        default=None, description="Prefect API of round_deployment (default: loopline's PREFECT API URL)."
    )
