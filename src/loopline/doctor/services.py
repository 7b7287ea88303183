"""Doctor's checks of the MLflow tracking server (and the registered model's aliases) and of Label Studio
(the server answers and accepts the token)."""

from __future__ import annotations

import os
from typing import Any

import httpx

from loopline.doctor.checks import Check, failed, mask_url, ok, warning

ALIASES = ("champion", "challenger")
MLFLOW_URI_FIX = (
    "start it (`loopline services up`) or set LOOPLINE_MLFLOW_TRACKING_URI to the team's tracking server"
)


def mlflow_auth() -> httpx.Auth | None:
    """MLflow's own client credentials from the environment (a tracking server behind basic auth)."""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return httpx.BasicAuth(user, password)
    return None


def mlflow_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def alias_verdicts(
    model: str, registered: dict[str, Any] | None, resolved: dict[str, dict[str, Any]]
) -> list[Check]:
    """What the registry says about ``model``: no model yet or no champion yet are warnings (a new
    installation); an alias whose version is missing or failed to register is a failure.

    Args:
        registered: MLflow's ``registered_model`` (None: not registered).
        resolved: alias → the ``model_version`` it resolves to ({} when it does not resolve).
    """
    name = f"model {model}"
    if registered is None:
        return [
            warning(
                name,
                f"no registered model {model!r} yet",
                "the first pipeline run registers it; or pass --model NAME (the name registered)",
            )
        ]
    aliases = {a["alias"]: a["version"] for a in registered.get("aliases", [])}
    checks: list[Check] = []
    for alias in ALIASES:
        label = f"{name}@{alias}"
        if alias not in aliases:
            if alias == "champion":
                checks.append(
                    warning(
                        label,
                        "no champion yet: nothing can be served",
                        "run the pipeline to its deploy stage (the first model becomes champion)",
                    )
                )
            continue
        version = resolved.get(alias, {})
        status = version.get("status", "")
        if not version:
            checks.append(
                failed(
                    label,
                    f"points at version {aliases[alias]}, which does not resolve",
                    f"set the alias again on an existing version (`loopline rollback --model {model}`, or "
                    "the MLflow UI)",
                )
            )
        elif status not in ("READY", ""):
            checks.append(
                failed(label, f"version {version.get('version')} is {status}", "register a version again")
            )
        else:
            checks.append(ok(label, f"version {version.get('version')}"))
    return checks


def check_mlflow(tracking_uri: str, model: str, timeout: float) -> list[Check]:
    """The tracking server answers, and the aliases of ``model`` resolve (REST; a local sqlite/file
    store is read with the MLflow client)."""
    shown = mask_url(tracking_uri)
    if not tracking_uri.startswith(("http://", "https://")):
        return _check_local_store(tracking_uri, model)
    base = tracking_uri.rstrip("/")
    with httpx.Client(base_url=base, timeout=timeout, auth=mlflow_auth(), headers=mlflow_headers()) as http:
        try:
            health = http.get("/health")
        except httpx.TransportError as exc:
            return [failed("mlflow", f"{shown} is not reachable ({type(exc).__name__})", MLFLOW_URI_FIX)]
        if health.status_code != 200:
            return [failed("mlflow", f"{shown} answered {health.status_code} to /health", MLFLOW_URI_FIX)]
        found = http.get("/api/2.0/mlflow/registered-models/get", params={"name": model})
        if found.status_code in (401, 403):
            return [
                failed(
                    "mlflow",
                    f"{shown} refused the credentials ({found.status_code})",
                    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
                )
            ]
        checks = [ok("mlflow", f"{shown} answers")]
        if found.status_code == 404:
            return [*checks, *alias_verdicts(model, None, {})]
        if found.status_code != 200:
            return [*checks, failed(f"model {model}", f"the registry answered {found.status_code}", "")]
        registered = found.json()["registered_model"]
        resolved: dict[str, dict[str, Any]] = {}
        for alias in ALIASES:
            answer = http.get(
                "/api/2.0/mlflow/registered-models/alias", params={"name": model, "alias": alias}
            )
            if answer.status_code == 200:
                resolved[alias] = answer.json()["model_version"]
        return [*checks, *alias_verdicts(model, registered, resolved)]


def _check_local_store(tracking_uri: str, model: str) -> list[Check]:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        registered = client.get_registered_model(model)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return [ok("mlflow", f"local store {mask_url(tracking_uri)}"), *alias_verdicts(model, None, {})]
        return [failed("mlflow", f"{mask_url(tracking_uri)}: {exc.message[:200]}", MLFLOW_URI_FIX)]
    resolved = {}
    for alias, version in registered.aliases.items():
        try:
            found = client.get_model_version(model, version)
            resolved[alias] = {"version": found.version, "status": found.status}
        except MlflowException:
            pass
    body = {"aliases": [{"alias": a, "version": v} for a, v in registered.aliases.items()]}
    return [ok("mlflow", f"local store {mask_url(tracking_uri)}"), *alias_verdicts(model, body, resolved)]


def check_label_studio(url: str, token: str | None, timeout: float) -> list[Check]:
    """Label Studio answers ``whoami`` with ``token``, through loopline's own client (so doctor
    authenticates the way the flows do)."""
    from loopline.errors import LabelStudioError, LabelStudioUnavailable
    from loopline.labeling.studio import LabelStudio

    shown = mask_url(url)
    if not token:
        return [
            failed(
                "label studio",
                "no API token is configured",
                "set LOOPLINE_LABEL_STUDIO_TOKEN (Label Studio → Account & Settings → Access Token)",
            )
        ]
    try:
        with LabelStudio(url, token, timeout=timeout) as studio:
            user = studio.whoami()
    except LabelStudioUnavailable as exc:
        reachable = "not reachable" not in str(exc)
        return [
            failed(
                "label studio",
                f"{shown} failed: {str(exc)[:200]}" if reachable else f"{shown} is not reachable",
                _their_fix(exc, "start it (`loopline services up`) or set LOOPLINE_LABEL_STUDIO_URL"),
            )
        ]
    except LabelStudioError as exc:
        rejected = "401" in str(exc) or "rejected" in str(exc)
        return [
            failed(
                "label studio",
                f"{shown} rejected the API token" if rejected else f"{shown}: {str(exc)[:200]}",
                _their_fix(
                    exc,
                    "set LOOPLINE_LABEL_STUDIO_TOKEN to a valid token (Account & Settings: a legacy "
                    "token or a personal access token), then `python -m blocks.register` to save it",
                ),
            )
        ]
    who = user.get("email") or user.get("username") or user.get("id")
    return [ok("label studio", f"{shown} accepts the token (user {who})")]


def _their_fix(exc: Exception, default: str) -> str:
    """The fix the Label Studio client's error names ("… To fix this, …"), else ``default``."""
    _, named, fix = str(exc).partition("To fix this, ")
    return fix.strip() if named else default
