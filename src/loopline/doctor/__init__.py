"""``loopline doctor``: check a configuration end to end — the Prefect API (version, work pools and their
workers, blocks), MLflow (the model's aliases), Label Studio (the token), the data root (write access) and
the SQL databases — and say, per check, ok / warning / failed with what is wrong and how to fix it.

Every check is bounded in time, all run side by side, and nothing printed carries a secret: URLs are shown
with their passwords masked, and every known secret value is replaced by ``***`` before rendering.
"""

from __future__ import annotations

from importlib.metadata import version

from pydantic import SecretStr

from loopline.doctor.checks import Check, Probe, Redactor, exit_code, run_probes, url_secrets
from loopline.doctor.prefect_api import (
    SERVER_BLOCKS,
    api_headers,
    check_prefect,
    is_this_machine,
    results_storage_verdict,
)
from loopline.doctor.services import check_label_studio, check_mlflow
from loopline.doctor.storage import check_data_root, check_database
from loopline.services.credentials import configured_label_studio_token
from loopline.settings import Settings

__all__ = ["Check", "exit_code", "run_doctor"]


def optuna_storage_url(settings: Settings) -> str:
    """LOOPLINE_OPTUNA_STORAGE, else the training task's default (tasks/train.py)."""
    if settings.optuna_storage is not None:
        return settings.optuna_storage.get_secret_value()
    return f"sqlite:///{settings.resolved_home / 'optuna.db'}"


def known_secrets(settings: Settings, token: str | None) -> list[str]:
    """Every secret value doctor could come across, for the redactor."""
    import os

    values: list[str | None] = [
        token,
        os.environ.get("PREFECT_API_KEY"),
        os.environ.get("PREFECT_API_AUTH_STRING"),
    ]
    values += [header.partition(" ")[2] for header in api_headers().values()]
    values += [os.environ.get(k) for k in ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")]
    for secret in (
        settings.s3_access_key_id,
        settings.s3_secret_access_key,
        settings.notify_webhook_url,
        settings.notify_webhook_token,
        settings.event_store_url,
        settings.optuna_storage,
        settings.label_studio_token,
    ):
        if isinstance(secret, SecretStr):
            values.append(secret.get_secret_value())
    for url in (
        settings.resolved_event_store_url,
        optuna_storage_url(settings),
        settings.resolved_prefect_api_url,
        settings.resolved_mlflow_tracking_uri,
        settings.resolved_label_studio_url,
        settings.s3_endpoint_url or "",
    ):
        values += url_secrets(url)
    return [v for v in values if v]


def run_doctor(settings: Settings, model: str = "loopline-classifier", timeout: float = 5.0) -> list[Check]:
    """Every check of ``settings``, in a fixed order, secrets redacted. Each request waits at most
    ``timeout`` seconds; a probe still busy after three times that is reported failed."""
    from loopline.services.platform import GPU_POOL, WORK_POOL

    api = settings.resolved_prefect_api_url
    shared = not is_this_machine(api)
    token = configured_label_studio_token(settings)
    blocks = [*SERVER_BLOCKS, settings.result_storage_block]
    client_version = version("prefect")
    probes = [
        Probe(
            "prefect api",
            lambda: check_prefect(api, client_version, WORK_POOL, [GPU_POOL], blocks, timeout),
            "check LOOPLINE_PREFECT_API_URL and that the Prefect server answers",
        ),
        Probe(
            "mlflow",
            lambda: check_mlflow(settings.resolved_mlflow_tracking_uri, model, timeout),
            "check LOOPLINE_MLFLOW_TRACKING_URI and that the tracking server answers",
        ),
        Probe(
            "label studio",
            lambda: check_label_studio(settings.resolved_label_studio_url, token, timeout),
            "check LOOPLINE_LABEL_STUDIO_URL and that Label Studio answers",
        ),
        Probe(
            "data root",
            lambda: check_data_root(settings.resolved_data_root, settings),
            "check LOOPLINE_DATA_ROOT and, for S3, LOOPLINE_S3_ENDPOINT_URL",
        ),
        Probe(
            "event store",
            lambda: check_database(
                "event store", settings.resolved_event_store_url, "LOOPLINE_EVENT_STORE_URL", shared, timeout
            ),
            "check LOOPLINE_EVENT_STORE_URL and that the database answers",
        ),
        Probe(
            "optuna storage",
            lambda: check_database(
                "optuna storage", optuna_storage_url(settings), "LOOPLINE_OPTUNA_STORAGE", shared, timeout
            ),
            "check LOOPLINE_OPTUNA_STORAGE and that the database answers",
        ),
    ]
    checks = run_probes(probes, deadline_s=3 * timeout)
    if (storage := results_storage_verdict(settings.result_storage_block, shared)) is not None:
        checks.append(storage)
    redact = Redactor(known_secrets(settings, token))
    return [redact.check(c) for c in checks]
