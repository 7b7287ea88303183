"""Deploying to model servers that each target runs its own way (local processes, Docker containers):
the logic every such target shares, in :class:`ServerTarget`; how a target starts, finds and stops a
server, in a :class:`RoleServers`.

Each role (champion, challenger) is one server on the role's fixed port, following the role's alias with
no polling. Deploying version V to a role:
1. the role already serves V: nothing happens (a rerun never starts a second server);
2. a candidate server pinned to V starts on a spare port; once ready, the smoke test runs against it and
   the candidate stops. A candidate that cannot start or fails the test refuses V: the role's server is
   untouched and keeps serving, and the role's alias is moved back to what it serves;
3. otherwise the role's alias points at V (an audited move) and the switch is a hot reload of the role's
   server (``POST /admin/reload`` with the admin token generated under ``LOOPLINE_HOME/secrets/``): the
   old model answers until the new one is loaded, with no gap. When no server runs, one starts.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from loopline.deploy import history
from loopline.deploy.aliases import align_aliases, restore_alias, rollback_versions
from loopline.deploy.base import ROLES, DeploymentRecord, DeploymentRefused, DeployState, Role
from loopline.deploy.smoke import SmokeCases, smoke_test
from loopline.errors import LooplineError
from loopline.local_secrets import read_or_create_secret
from loopline.registry.registry import CHAMPION
from loopline.settings import Settings

ADMIN_TOKEN_FILE = "serving-admin-token"


def admin_token(settings: Settings) -> str:
    """The bearer token of the model servers' ``/admin/reload``, generated once."""
    return read_or_create_secret(settings.resolved_home / "secrets" / ADMIN_TOKEN_FILE, 20)


def role_port(settings: Settings, role: Role) -> int:
    return settings.serve_port_champion if role == CHAMPION else settings.serve_port_challenger


def served_version(url: str, model: str) -> str | None:
    """The version the server at ``url`` serves (its ``X-Model-Version``), None when it does not answer."""
    try:
        answer = httpx.get(f"{url}/v2/models/{model}", timeout=5.0)
    except httpx.HTTPError:
        return None
    header = answer.headers.get("X-Model-Version", "") if answer.status_code == 200 else ""
    return header.rpartition("/")[2] or None


class RoleServers(Protocol):
    """How one target runs the model servers of one registered model."""

    def url(self, role: Role) -> str:
        """Where the role's server answers."""
        ...

    def running(self, role: Role) -> str | None:
        """How the target knows the role's server ("pid 1234", "container 3f2a…"); None when none runs."""
        ...

    def healthy(self, role: Role) -> bool: ...

    def start(self, role: Role) -> None:
        """Start the role's server (following the role's alias); return once it is ready.

        Raises:
            ServiceError: it did not start or did not become ready (with its last log lines)."""
        ...

    def stop(self, role: Role) -> bool:
        """Stop the role's server; True when one was stopped."""
        ...

    def candidate(self, role: Role, version: str) -> AbstractContextManager[str]:
        """A server pinned to ``version`` on a spare port, ready on entry (its URL), gone on exit."""
        ...


class ServerTarget:
    """A deploy target over :class:`RoleServers` (see the module docstring)."""

    name = "servers"

    def __init__(
        self,
        servers: RoleServers,
        settings: Settings,
        client: Any,
        model: str,
        cases: Callable[[str], SmokeCases],
    ) -> None:
        """``client``: an ``MlflowClient``; ``cases(version)``: the smoke test's images and logits."""
        self.servers, self.settings, self.client, self.model = servers, settings, client, model
        self.cases = cases

    def _record(
        self, version: str, role: Role, ref: str, state: DeployState, who: str, reason: str = ""
    ) -> DeploymentRecord:
        when = datetime.now(UTC).isoformat(timespec="seconds")
        url = self.servers.url(role)
        return DeploymentRecord(self.name, self.model, version, role, url, ref, state, when, who, reason)

    def deploy(
        self, version: str, role: Role = "champion", who: str = "loopline", why: str = "deployed"
    ) -> DeploymentRecord:
        ref = self.servers.running(role)
        old = served_version(self.servers.url(role), self.model) if ref is not None else None
        past = history.read_history(self.client, self.model)
        if old == version:  # a rerun: the role serves it already
            last = history.serving(past, role)
            if last is not None and last.version == version:
                return last
            return history.save_record(
                self.client, self._record(version, role, ref or "", "serving", who, why)
            )
        problem = self._try_candidate(version, role)
        if problem is None:
            problem = self._switch(ref, version, role, who, why)
        if problem is not None:
            restore_alias(self.client, self.model, role, old, who, f"v{version} was refused: {problem}")
            return history.save_record(self.client, self._record(version, role, "", "refused", who, problem))
        last = history.serving(past, role)
        if last is not None and last.version != version:
            history.save_record(
                self.client,
                replace(self._record(last.version, role, "", "replaced", who), reason=f"v{version}"),
            )
        return history.save_record(
            self.client, self._record(version, role, self.servers.running(role) or "", "serving", who, why)
        )

    def _try_candidate(self, version: str, role: Role) -> str | None:
        """Start ``version`` on a spare port and smoke-test it; None when it passed, else why not."""
        try:
            with self.servers.candidate(role, version) as url:
                verdict = smoke_test(
                    url, self.model, version, self.cases(version), self.settings.smoke_max_latency_ms
                )
        except Exception as exc:  # whatever went wrong refuses the version; the old server keeps serving
            return f"{type(exc).__name__}: {exc}"
        return None if verdict.passed else "smoke test " + verdict.summary()

    def _switch(self, ref: str | None, version: str, role: Role, who: str, why: str) -> str | None:
        """Point the role's alias at ``version`` and make the role's server serve it; None when it does."""
        url, champion = self.servers.url(role), self.servers.url("champion")
        champion_serves = served_version(champion, self.model) if self.servers.running("champion") else None
        align_aliases(self.client, self.model, version, role, champion_serves, who, why)
        try:
            if ref is None:
                self.servers.start(role)
            else:
                answer = httpx.post(
                    f"{url}/admin/reload",
                    headers={"Authorization": f"Bearer {admin_token(self.settings)}"},
                    timeout=120.0,
                )
                if answer.status_code != 200:
                    return f"the {role} server refused the reload ({answer.status_code}): {answer.text[:300]}"
        except (LooplineError, httpx.HTTPError) as exc:
            return f"{type(exc).__name__}: {exc}"
        now = served_version(url, self.model)
        return None if now == version else f"the {role} server serves v{now} after the switch, not v{version}"

    def status(self) -> list[DeploymentRecord]:
        past = history.read_history(self.client, self.model)
        found = []
        for role in ROLES:
            last = history.serving(past, role)
            ref = self.servers.running(role)
            if ref is None:
                if last is not None and not history.undeployed(past, role):  # down, not undeployed
                    found.append(replace(last, state="stopped", ref=""))
                continue
            version = served_version(self.servers.url(role), self.model)
            state: DeployState = "serving" if version and self.servers.healthy(role) else "unhealthy"
            base = last or self._record(version or "?", role, "", state, "?")
            found.append(replace(base, version=version or base.version, state=state, ref=ref))
        return found

    def rollback(self, to: str | None = None, who: str = "loopline") -> DeploymentRecord:
        target, current = rollback_versions(self.client, self.model, to)
        record = self.deploy(target, "champion", who, f"rollback from v{current}")
        if record.state != "serving":
            raise DeploymentRefused(
                f"Rolling {self.model} back to v{target} failed ({record.reason}); v{current} keeps serving. "
                f"To fix this, read the {self.name} model server's log and roll back to another version."
            )
        return record

    def undeploy(self, role: Role, who: str = "loopline") -> DeploymentRecord | None:
        last = history.serving(history.read_history(self.client, self.model), role)
        if not self.servers.stop(role) or last is None:
            return None
        return history.save_record(
            self.client, self._record(last.version, role, "", "stopped", who, "undeployed")
        )
