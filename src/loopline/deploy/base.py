"""What every deploy target (local processes, Docker, Kubernetes) promises, and what a deployment leaves
behind: a ``DeploymentRecord`` per role, stored on the model version as MLflow tags
(``deploy.<role>.target``, ``.url``, ``.ref``, ``.state``, ``.when``, ``.who``, ``.reason``) and returned
so the orchestration can publish it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, cast

from loopline.errors import LooplineError

Role = Literal["champion", "challenger"]
ROLES: tuple[Role, ...] = ("champion", "challenger")
# serving: answers now; refused: its smoke test (or start) failed, nothing changed; replaced: a newer
# version took the role; stopped: undeployed; unhealthy: the process runs but is not ready.
DeployState = Literal["serving", "refused", "replaced", "stopped", "unhealthy"]


class DeploymentRefused(LooplineError):
    """A version failed to start or failed its smoke test; what served before keeps serving."""


@dataclass(frozen=True)
class DeploymentRecord:
    """One version of one model in one role on one target."""

    target: str  # "local", "docker", "kubernetes"
    model: str
    version: str
    role: Role
    url: str
    ref: str  # how the target knows it: "pid 1234", a container id, a manifest name
    state: DeployState
    when: str  # ISO 8601, UTC
    who: str
    reason: str = ""  # why it was refused, stopped or rolled back

    def tags(self) -> dict[str, str]:
        """The version tags this record is stored as."""
        prefix = f"deploy.{self.role}."
        fields = ("target", "url", "ref", "state", "when", "who", "reason")
        return {prefix + f: str(getattr(self, f)) for f in fields}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeploymentRecord:
        fields = {k: str(v) for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**fields)  # type: ignore[arg-type]  # role and state as stored by to_json


def check_role(role: str) -> Role:
    """``role`` as a ``Role``, or an error naming the valid ones."""
    if role not in ROLES:
        raise ValueError(f"Unknown role {role!r}. To fix this, use one of {list(ROLES)}.")
    return cast(Role, role)


class DeployTarget(Protocol):
    """Where models are served. Every call is idempotent: deploying the version a role already serves
    changes nothing and returns its record."""

    name: str

    def deploy(
        self, version: str, role: Role = "champion", who: str = "loopline", why: str = "deployed"
    ) -> DeploymentRecord:
        """Serve ``version`` in ``role`` once it passed its smoke test (``who``/``why`` audit the alias
        move); a refused version leaves the role as it was and comes back with ``state == "refused"``."""
        ...

    def status(self) -> list[DeploymentRecord]:
        """What serves in each role now (live state, not only the last record)."""
        ...

    def rollback(self, to: str | None = None, who: str = "loopline") -> DeploymentRecord:
        """Serve ``to`` (default: the champion before the current one, from the history) as champion."""
        ...

    def undeploy(self, role: Role, who: str = "loopline") -> DeploymentRecord | None:
        """Stop serving ``role``; None when nothing served it."""
        ...


def render_deployments(records: list[DeploymentRecord]) -> str:
    """The ``model-deployment`` artifact: what serves where."""
    if not records:
        return "# Deployments\n\nNothing is deployed."
    lines = [
        "# Deployments",
        "",
        "| role | model | version | state | url | target | ref | when | who | reason |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        url = f"[{r.url}]({r.url})" if r.url.startswith("http") else r.url or "-"
        lines.append(
            f"| {r.role} | {r.model} | {r.version} | {r.state} | {url} | {r.target} | {r.ref or '-'} | "
            f"{r.when} | {r.who} | {r.reason or '-'} |"
        )
    return "\n".join(lines)


def choose_role(decision: str, promote_directly: bool, champion_serving: str | None) -> Role | None:
    """Where an approved version goes: the first one, or any with ``promote_directly``, serves as champion;
    otherwise it serves beside the champion as challenger. A refused or rejected version goes nowhere."""
    if decision != "approved":
        return None
    if champion_serving is None or promote_directly:
        return "champion"
    return "challenger"
