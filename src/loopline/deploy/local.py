"""The ``local`` deploy target: each role (champion, challenger) is one ``loopline serve`` process beside
the local platform, on a fixed port (``LOOPLINE_SERVE_PORT_CHAMPION``/``_CHALLENGER``), following the
role's alias with no polling (``--alias ROLE --poll-seconds 0``), its log in
``LOOPLINE_HOME/logs/serve-<role>.log`` and its PID file in ``LOOPLINE_HOME/run/``.

Deploying version V to a role:
1. the role already serves V: nothing happens (a rerun never starts a second server);
2. a candidate server pinned to V starts on a free port; once ready, the smoke test runs against it and
   the candidate stops. A candidate that cannot start or fails the test refuses V: the role's server is
   untouched and keeps serving, and the role's alias is moved back to what it serves;
3. otherwise the role's alias points at V (an audited move) and the switch is a hot reload of the role's
   server (``POST /admin/reload`` with the admin token generated under ``LOOPLINE_HOME/secrets/``): the
   old model answers until the new one is loaded, with no gap. When no server runs, one starts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from loopline.deploy import history
from loopline.deploy.base import ROLES, DeploymentRecord, DeploymentRefused, DeployState, Role
from loopline.deploy.smoke import SmokeCases, smoke_test
from loopline.errors import ServiceError
from loopline.registry.registry import CHAMPION, move_alias, resolve_alias
from loopline.services import process
from loopline.services.credentials import read_or_create_secret
from loopline.services.process import ProcessSpec
from loopline.settings import Settings

ADMIN_TOKEN_FILE = "serving-admin-token"


def admin_token(settings: Settings) -> str:
    """The bearer token of the local model servers' ``/admin/reload``, generated once."""
    return read_or_create_secret(settings.resolved_home / "secrets" / ADMIN_TOKEN_FILE, 20)


def role_port(settings: Settings, role: Role) -> int:
    return settings.serve_port_champion if role == CHAMPION else settings.serve_port_challenger


def _ready(url: str) -> bool:
    return httpx.get(f"{url}/v2/health/ready", timeout=2.0).status_code == 200


def serve_spec(
    settings: Settings, tracking_uri: str, model: str, name: str, selector: list[str], port: int
) -> ProcessSpec:
    """``loopline serve`` of ``model`` (``selector``: ``--alias A`` or ``--version V``), managed."""
    url = f"http://{settings.host}:{port}"
    command = [str(Path(sys.executable).parent / "loopline"), "serve", "--model", model, *selector]
    return ProcessSpec(
        name=name,
        command=[*command, "--host", settings.host, "--port", str(port), "--poll-seconds", "0"],
        state_dir=settings.resolved_home,
        url=url,
        health=lambda: _ready(url),
        env={
            "LOOPLINE_HOME": str(settings.resolved_home),
            "LOOPLINE_MLFLOW_TRACKING_URI": tracking_uri,
            "LOOPLINE_SERVING_ADMIN_TOKEN": admin_token(settings),
        },
        port=port,
        host=settings.host,
        start_timeout=90,
    )


def role_spec(settings: Settings, tracking_uri: str, model: str, role: Role) -> ProcessSpec:
    port = role_port(settings, role)
    return serve_spec(settings, tracking_uri, model, f"serve-{role}", ["--alias", role], port)


def served_version(url: str, model: str) -> str | None:
    """The version the server at ``url`` serves (its ``X-Model-Version``), None when it does not answer."""
    try:
        answer = httpx.get(f"{url}/v2/models/{model}", timeout=5.0)
    except httpx.HTTPError:
        return None
    header = answer.headers.get("X-Model-Version", "") if answer.status_code == 200 else ""
    return header.rpartition("/")[2] or None


def stop_all(settings: Settings) -> list[str]:
    """Stop every local model server (by PID file: only those loopline started). Returns their names."""
    names = [f"serve-{role}{suffix}" for role in ROLES for suffix in ("-candidate", "")]
    stopped = []
    for name in names:
        spec = ProcessSpec(name, ["loopline"], settings.resolved_home, "", lambda: False)
        if process.stop(spec):
            stopped.append(name)
    return stopped


class LocalTarget:
    """Model servers as local processes (see the module docstring)."""

    name = "local"

    def __init__(
        self,
        settings: Settings,
        client: Any,
        tracking_uri: str,
        model: str,
        cases: Callable[[str], SmokeCases],
    ) -> None:
        """``client``: an ``MlflowClient``; ``cases(version)``: the smoke test's images and logits."""
        self.settings, self.client, self.tracking_uri, self.model = settings, client, tracking_uri, model
        self.cases = cases

    def _record(
        self, version: str, role: Role, url: str, ref: str, state: DeployState, who: str, reason: str = ""
    ) -> DeploymentRecord:
        when = datetime.now(UTC).isoformat(timespec="seconds")
        return DeploymentRecord(self.name, self.model, version, role, url, ref, state, when, who, reason)

    def deploy(
        self, version: str, role: Role = "champion", who: str = "loopline", why: str = "deployed"
    ) -> DeploymentRecord:
        spec = role_spec(self.settings, self.tracking_uri, self.model, role)
        pid = process.running_pid(spec)
        old = served_version(spec.url, self.model) if pid is not None else None
        past = history.read_history(self.client, self.model)
        if old == version:  # a rerun: the role serves it already
            last = history.serving(past, role)
            if last is not None and last.version == version:
                return last
            return self._save(self._record(version, role, spec.url, f"pid {pid}", "serving", who, why))
        problem = self._try_candidate(version, role)
        if problem is None:
            problem = self._switch(spec, pid, version, role, who, why)
        if problem is not None:
            self._restore_alias(role, old, who, f"v{version} was refused: {problem}")
            return self._save(self._record(version, role, spec.url, "", "refused", who, problem))
        last = history.serving(past, role)
        if last is not None and last.version != version:
            self._save(
                replace(self._record(last.version, role, spec.url, "", "replaced", who), reason=f"v{version}")
            )
        pid = process.running_pid(spec)
        return self._save(self._record(version, role, spec.url, f"pid {pid}", "serving", who, why))

    def _try_candidate(self, version: str, role: Role) -> str | None:
        """Start ``version`` on a spare port and smoke-test it; None when it passed, else why not."""
        port = process.free_port(self.settings.host)
        spec = serve_spec(
            self.settings,
            self.tracking_uri,
            self.model,
            f"serve-{role}-candidate",
            ["--version", version],
            port,
        )
        process.stop(spec)  # a candidate left behind by a crash
        try:
            process.start(spec)
            verdict = smoke_test(
                spec.url, self.model, version, self.cases(version), self.settings.smoke_max_latency_ms
            )
        except Exception as exc:  # whatever went wrong refuses the version; the old server keeps serving
            return f"{type(exc).__name__}: {exc}"
        finally:
            process.stop(spec)
        return None if verdict.passed else "smoke test " + verdict.summary()

    def _switch(
        self, spec: ProcessSpec, pid: int | None, version: str, role: Role, who: str, why: str
    ) -> str | None:
        """Point the role's alias at ``version`` and make the role's server serve it; None when it does."""
        self._align_aliases(version, role, who, why)
        try:
            if pid is None:
                process.start(spec)
            else:
                answer = httpx.post(
                    f"{spec.url}/admin/reload",
                    headers={"Authorization": f"Bearer {admin_token(self.settings)}"},
                    timeout=120.0,
                )
                if answer.status_code != 200:
                    return f"the {role} server refused the reload ({answer.status_code}): {answer.text[:300]}"
        except (ServiceError, httpx.HTTPError) as exc:
            return f"{type(exc).__name__}: {exc}"
        now = served_version(spec.url, self.model)
        return None if now == version else f"the {role} server serves v{now} after the switch, not v{version}"

    def _align_aliases(self, version: str, role: Role, who: str, why: str) -> None:
        """The role's alias names what it serves. A challenger the register stage already made champion
        gives the champion alias back to the version the champion server serves."""
        current = resolve_alias(self.client, self.model, role)
        if role != CHAMPION:
            champion = resolve_alias(self.client, self.model, CHAMPION)
            spec = role_spec(self.settings, self.tracking_uri, self.model, "champion")
            served = served_version(spec.url, self.model) if process.running_pid(spec) else None
            if champion is not None and str(champion.version) == version and served and served != version:
                move_alias(self.client, self.model, CHAMPION, served, who, f"v{version} serves as {role}")
        if current is None or str(current.version) != version:
            move_alias(self.client, self.model, role, version, who, why)

    def _restore_alias(self, role: Role, served: str | None, who: str, why: str) -> None:
        current = resolve_alias(self.client, self.model, role)
        if served is not None and current is not None and str(current.version) != served:
            move_alias(self.client, self.model, role, served, who, why)

    def _save(self, record: DeploymentRecord) -> DeploymentRecord:
        history.save_record(self.client, record)
        return record

    def status(self) -> list[DeploymentRecord]:
        past = history.read_history(self.client, self.model)
        found = []
        for role in ROLES:
            spec = role_spec(self.settings, self.tracking_uri, self.model, role)
            last = history.serving(past, role)
            pid = process.running_pid(spec)
            if pid is None:
                if last is not None:
                    found.append(replace(last, state="stopped", ref=""))
                continue
            version = served_version(spec.url, self.model)
            state: DeployState = "serving" if version and process.healthy(spec) else "unhealthy"
            base = last or self._record(version or "?", role, spec.url, "", state, "?")
            found.append(replace(base, version=version or base.version, state=state, ref=f"pid {pid}"))
        return found

    def rollback(self, to: str | None = None, who: str = "loopline") -> DeploymentRecord:
        past = history.read_history(self.client, self.model)
        last = history.serving(past, "champion")
        current = last.version if last else None
        target = to or history.previous_version(past, current)
        if target is None:
            raise DeploymentRefused(
                f"{self.model} has no earlier champion deployment to roll back to (now: v{current}). To fix "
                "this, name the version: `loopline rollback --to VERSION`."
            )
        record = self.deploy(target, "champion", who, f"rollback from v{current}")
        if record.state != "serving":
            raise DeploymentRefused(
                f"Rolling {self.model} back to v{target} failed ({record.reason}); v{current} keeps serving. "
                "To fix this, read the log under LOOPLINE_HOME/logs/ and roll back to another version."
            )
        return record

    def undeploy(self, role: Role, who: str = "loopline") -> DeploymentRecord | None:
        spec = role_spec(self.settings, self.tracking_uri, self.model, role)
        last = history.serving(history.read_history(self.client, self.model), role)
        if not process.stop(spec) or last is None:
            return None
        return self._save(self._record(last.version, role, spec.url, "", "stopped", who, "undeployed"))
