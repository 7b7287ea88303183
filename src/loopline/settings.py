"""Process settings, read from the environment (prefix ``LOOPLINE_``) at call time.

Endpoints and secrets that flows share are also saved as Prefect blocks (see ``blocks/``); these settings
are what a process starts from. Nothing here is read at import time: call :func:`get_settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from loopline.local_secrets import read_or_create_secret

Tier = Literal["laptop", "team"]
TIER_FILE = (
    "tier"  # under the home: written by `loopline services up --tier`, read when LOOPLINE_TIER is unset
)
TEAM_BUCKET = "loopline"  # the one-machine team tier's bucket: data/, mlflow/, results/
TEAM_DATABASES = ("prefect", "mlflow", "labelstudio", "optuna", "events")


class Settings(BaseSettings):
    """Everything a loopline process needs to find its services and its data."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", extra="ignore")

    home: Path = Field(
        default=Path(".loopline"),
        description="State, logs, PID files and the default data root of the local platform.",
    )
    project_root: Path = Field(
        default=Path("."), description="The loopline checkout: flows/, prefect.yaml, .venv-labelstudio/."
    )
    host: str = Field(default="127.0.0.1", description="Interface the local services bind to.")
    tier: Tier | None = Field(
        default=None,
        description="laptop: SQLite and local folders. team: the same services on PostgreSQL and an S3 API "
        "server (on this machine unless endpoints are set). Default: what `loopline services up --tier` "
        "chose for this home, else laptop.",
    )
    postgres_port: int = Field(default=5433, ge=1, le=65535, description="The team tier's PostgreSQL.")
    s3_port: int = Field(default=9000, ge=1, le=65535, description="The team tier's S3 API server.")
    prefect_port: int = Field(default=4200, ge=1, le=65535)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    label_studio_port: int = Field(default=8080, ge=1, le=65535)
    serve_port_champion: int = Field(
        default=8000, ge=1, le=65535, description="Port of the local champion model server."
    )
    serve_port_challenger: int = Field(
        default=8001, ge=1, le=65535, description="Port of the local challenger model server."
    )
    deploy_target: str = Field(
        default="local",
        description="Where models are served: local (processes), docker (containers) or kubernetes.",
    )
    serve_image: str = Field(
        default="loopline-serve:latest",
        description="The serving image the docker target runs (`loopline images build serve`).",
    )
    router_port: int = Field(
        default=8100, ge=1, le=65535, description="Port of the local A/B router (in front of both servers)."
    )
    event_store_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the A/B event store (postgresql+psycopg://user:password@host/db on a "
        "cluster); a secret. Default: SQLite in LOOPLINE_HOME/events.db.",
    )
    k8s_namespace: str = Field(default="default", description="Namespace of the kubernetes target's servers.")
    k8s_name: str = Field(
        default="loopline", description="Base name of the kubernetes target's objects (NAME-champion, ...)."
    )
    k8s_secret: str = Field(
        default="loopline-serving",
        description="Secret the model server pods read LOOPLINE_MLFLOW_TRACKING_URI and credentials from.",
    )
    k8s_rollout_timeout: float = Field(default=300.0, gt=0, description="Seconds a rollout may take.")
    smoke_max_latency_ms: float = Field(
        default=250.0, gt=0, description="A deployment's smoke test fails above this median latency (ms)."
    )

    prefect_api_url: str | None = Field(
        default=None, description="Prefect API; default: the local server on prefect_port."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking server; default: the local server on mlflow_port."
    )
    label_studio_url: str | None = Field(
        default=None, description="Label Studio server; default: the local server on label_studio_port."
    )
    label_studio_token: SecretStr | None = Field(
        default=None,
        description="Label Studio API token; default: the one `loopline services up` generated.",
    )

    data_root: str | None = Field(
        default=None, description="Where collected data lives: a local path or s3://bucket/prefix."
    )
    result_storage_block: str = Field(
        default="local-file-system/loopline-results",
        description="Prefect block (type/name) for flow results that must cross machines, e.g. a training "
        "run dispatched to another work pool; on a cluster point it at shared storage (s3-bucket/…).",
    )
    optuna_storage: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the Optuna studies (e.g. postgresql://user:password@host/db, shared "
        "by training workers); a secret, never a flow parameter. Default: SQLite in LOOPLINE_HOME.",
    )
    gc_result_days: float = Field(
        default=7.0,
        ge=0,
        description="`loopline gc` removes Prefect result files older than this (days), unless a run that "
        "has not finished refers to them.",
    )
    gc_blob_grace_hours: float = Field(
        default=24.0,
        ge=0,
        description="`loopline gc` leaves stored images no manifest names alone for this long (hours): a "
        "collect stores its images before it writes their manifest.",
    )
    gc_export_keep: int = Field(
        default=3,
        ge=1,
        description="`loopline gc` keeps this many of the newest loopline snapshot exports per Label "
        "Studio project (and every export a labeled manifest or a registered model names).",
    )
    gc_server_log_days: float = Field(
        default=7.0,
        ge=0,
        description="`loopline gc` removes a stopped local model server's log once older than this (days).",
    )
    incoming_source: str | None = Field(
        default=None,
        description="Where new images land (a folder or s3://bucket/prefix): the nightly pipeline collects "
        "it. Default: <home>/incoming.",
    )
    notify_webhook_url: SecretStr | None = Field(
        default=None,
        description="Webhook that loopline's automations notify (failed or crashed runs, rollbacks, reviews "
        "waiting too long); a secret (Slack-style URLs carry a token). Unset: no notifications.",
    )
    notify_webhook_token: SecretStr | None = Field(
        default=None, description="Sent as `Authorization: Bearer <token>` to the webhook, when set."
    )
    retrain_on_drift: bool = Field(
        default=False,
        description="Let a drift alarm start the nightly pipeline (label and retrain): heavy work, so off "
        "until turned on, like the nightly schedule; `loopline deploy` applies it.",
    )
    review_alert_hours: float = Field(
        default=24.0,
        ge=10 / 3600,  # Prefect's floor for a proactive trigger: 10 seconds
        description="Notify when a run has waited this many hours for a person (a review) with no decision.",
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3 API endpoint (MinIO, moto, ...).")
    s3_region: str = Field(default="us-east-1")
    s3_max_attempts: int = Field(
        default=5, ge=1, description="Tries of one S3 call (botocore's back-off) before it fails."
    )
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None

    @model_validator(mode="after")
    def _team_defaults(self) -> Settings:
        """On the team tier, what is not set explicitly points at the tier's PostgreSQL and S3 server."""
        if self.resolved_tier != "team":
            return self
        explicit = self.model_fields_set
        secrets = self.resolved_home / "secrets"
        defaults: dict[str, object] = {
            "s3_endpoint_url": f"http://{self.host}:{self.s3_port}",
            "s3_access_key_id": SecretStr(read_or_create_secret(secrets / "s3-access-key-id", 10)),
            "s3_secret_access_key": SecretStr(read_or_create_secret(secrets / "s3-secret-access-key", 20)),
            "data_root": f"s3://{TEAM_BUCKET}/data",
            "event_store_url": SecretStr(self.team_database_url("events")),
            "optuna_storage": SecretStr(self.team_database_url("optuna")),
            "result_storage_block": "s3-bucket/loopline-results",
        }
        for name, value in defaults.items():
            if name not in explicit:
                object.__setattr__(self, name, value)
        return self

    @property
    def resolved_tier(self) -> Tier:
        if self.tier is not None:
            return self.tier
        try:
            chosen = (self.resolved_home / TIER_FILE).read_text().strip()
        except OSError:
            return "laptop"
        return "team" if chosen == "team" else "laptop"

    def team_database_url(self, database: str, driver: str = "psycopg") -> str:
        """SQLAlchemy URL of one of the team tier's databases (``loopline_<database>``)."""
        password = read_or_create_secret(self.resolved_home / "secrets" / "postgres-password", 16)
        return (
            f"postgresql+{driver}://loopline:{password}@{self.host}:{self.postgres_port}/loopline_{database}"
        )

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_incoming_source(self) -> str:
        return self.incoming_source or str(self.resolved_home / "incoming")

    @property
    def resolved_project_root(self) -> Path:
        return self.project_root.expanduser().resolve()

    @property
    def resolved_prefect_api_url(self) -> str:
        return self.prefect_api_url or f"http://{self.host}:{self.prefect_port}/api"

    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def resolved_label_studio_url(self) -> str:
        return self.label_studio_url or f"http://{self.host}:{self.label_studio_port}"

    @property
    def resolved_event_store_url(self) -> str:
        if self.event_store_url is not None:
            return self.event_store_url.get_secret_value()
        return f"sqlite:///{self.resolved_home / 'events.db'}"

    @property
    def resolved_data_root(self) -> str:
        if self.data_root:
            if self.data_root.startswith("s3://"):
                return self.data_root.rstrip("/")
            return str(Path(self.data_root).expanduser().resolve())
        return str(self.resolved_home / "data")


def get_settings() -> Settings:
    """Read the settings from the environment now (never cached: tests and workers change it)."""
    return Settings()
