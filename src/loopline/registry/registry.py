"""MLflow model registry operations: idempotent registration with lineage tags, aliases (never the
deprecated stages) moved with an audit trail, and review decisions stored on the version."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from loopline.errors import RegistryError

CHAMPION, CHALLENGER = "champion", "challenger"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    created: bool  # False: this run was registered before and that version is returned


@dataclass(frozen=True)
class AliasChange:
    alias: str
    from_version: str | None
    to_version: str | None  # None: the alias was removed
    who: str
    when: str
    why: str


def check_mlflow(tracking_uri: str, attempts: int = 4, delay: float = 2.0) -> None:
    """Fail fast and clearly when the MLflow server does not answer (after ``attempts`` tries)."""
    import httpx

    if not tracking_uri.startswith(("http://", "https://")):
        return  # a local file or database store: nothing to reach
    error: Exception | None = None
    for attempt in range(attempts):
        try:
            if httpx.get(f"{tracking_uri.rstrip('/')}/health", timeout=10).status_code == 200:
                return
        except httpx.HTTPError as exc:
            error = exc
        if attempt < attempts - 1:
            time.sleep(delay * 2**attempt)
    raise RegistryError(
        f"The MLflow server at {tracking_uri} does not answer ({error or 'unhealthy'}) after {attempts} "
        "tries. To fix this, start it (`loopline services up`) or point LOOPLINE_MLFLOW_TRACKING_URI (or the "
        "loopline-mlflow-server block) at a running server."
    )


def check_model_name(name: str) -> None:
    if not _NAME.match(name):
        raise RegistryError(
            f"Invalid registered model name {name!r}. To fix this, use 1-128 letters, digits, '_', '-' or "
            "'.', starting with a letter or digit (e.g. 'loopline-digits')."
        )


def is_not_found(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower()


def register_run(client: Any, name: str, run_id: str, tags: dict[str, str], description: str) -> Registered:
    """Register ``runs:/<run_id>/model`` under ``name`` with ``tags`` and ``description`` (the model card),
    unless a version of this run exists: then return that one, untouched."""
    from mlflow.exceptions import MlflowException

    check_model_name(name)
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        return Registered(name, str(existing[0].version), run_id, created=False)
    try:
        client.create_registered_model(name, description="Registered by loopline.")
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    version = client.create_model_version(
        name, source=f"runs:/{run_id}/model", run_id=run_id, tags=tags, description=description
    )
    deadline = time.monotonic() + 60
    while str(version.status) != "READY" and time.monotonic() < deadline:
        time.sleep(0.5)
        version = client.get_model_version(name, version.version)
    if str(version.status) != "READY":
        raise RegistryError(
            f"Version {version.version} of {name!r} is {version.status} after 60 s "
            f"({version.status_message}). To fix this, check the MLflow server's artifact store."
        )
    return Registered(name, str(version.version), run_id, created=True)


def resolve_alias(client: Any, name: str, alias: str) -> Any | None:
    """The model version ``alias`` points at, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise


def move_alias(client: Any, name: str, alias: str, version: str, who: str, why: str) -> list[AliasChange]:
    """Point ``alias`` at ``version``; every alias change it makes, audited. Moving ``champion`` to the
    version ``challenger`` points at also removes ``challenger`` (a champion is no longer a candidate).

    Audit: a registered-model tag ``audit.<time>.<alias>`` and a version tag ``audit.<alias>``, each
    holding who, when, from which version to which (None: removed), and why."""
    previous = resolve_alias(client, name, alias)
    client.set_registered_model_alias(name, alias, version)
    changes = [_audit(client, name, alias, str(previous.version) if previous else None, version, who, why)]
    if alias == CHAMPION:
        candidate = resolve_alias(client, name, CHALLENGER)
        if candidate is not None and str(candidate.version) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
            changes.append(_audit(client, name, CHALLENGER, version, None, who, f"promoted to {CHAMPION}"))
    return changes


def _audit(
    client: Any, name: str, alias: str, from_version: str | None, to_version: str | None, who: str, why: str
) -> AliasChange:
    when = datetime.now(UTC)
    change = AliasChange(alias, from_version, to_version, who, when.isoformat(), why)
    record = json.dumps(asdict(change))
    client.set_registered_model_tag(name, f"audit.{when.strftime('%Y%m%dT%H%M%S.%fZ')}.{alias}", record)
    client.set_model_version_tag(name, to_version or from_version, f"audit.{alias}", record)
    time.sleep(2e-6)  # the next record's key sorts after this one's (keys order the trail)
    return change


def audit_trail(client: Any, name: str) -> list[AliasChange]:
    """Every alias change of ``name``, oldest first."""
    model = client.get_registered_model(name)
    changes = [AliasChange(**json.loads(v)) for k, v in sorted(model.tags.items()) if k.startswith("audit.")]
    return changes


def record_decision(client: Any, name: str, version: str, decision: str, who: str, comment: str) -> None:
    """Store a review decision on the version (``review.*`` tags)."""
    tags = {
        "review.decision": decision,
        "review.reviewer": who,
        "review.comment": comment,
        "review.at": datetime.now(UTC).isoformat(),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
