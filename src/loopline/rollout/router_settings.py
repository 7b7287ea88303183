"""The router's settings: read from the environment (prefix ``LOOPLINE_ROUTER_``) when a ``RouterSettings`` is
constructed, never at import time. The experiment itself (URLs, weight, seed, status) is not here: it comes
from the state provider, so that every replica follows the same one."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    """How the router listens and routes; the experiment itself (URLs, weight, seed) comes from the state
    provider. Read from the environment (prefix ``LOOPLINE_ROUTER_``) when constructed."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_ROUTER_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface to bind; 0.0.0.0 exposes the router.")
    port: int = Field(default=8100, ge=0, le=65535)
    user_header: str = Field(default="X-User-Id", description="Header holding the sticky user key.")
    challenger_timeout_s: float = Field(
        default=1.0, gt=0, description="A challenger slower than this is answered by the champion."
    )
    champion_timeout_s: float = Field(default=30.0, gt=0, description="Beyond this the client gets 504.")
    refresh_seconds: float = Field(
        default=5.0, gt=0, description="Re-read the experiment state once it is older than this."
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1, description="Larger request bodies get 413.")
    max_idle_connections: int = Field(
        default=64, ge=0, description="Keep-alive connections kept open to each model server."
    )
    breaker_failures: int = Field(
        default=5,
        ge=0,
        description="After this many challenger failures in a row its users go straight to the champion for "
        "breaker_seconds (still counted as fallbacks); 0: always try the challenger.",
    )
    breaker_seconds: float = Field(default=5.0, gt=0, description="How long the challenger is skipped.")
    sample_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of /v1/predict images kept in DATA_ROOT/production/ for monitoring and labeling "
        "(with their predictions in the event store); 0: none.",
    )
