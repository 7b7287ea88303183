"""The registry side that every deploy target shares: a role's alias follows what the role serves, a
refused version gives the alias back, and a rollback finds the champion that served before (from the
deployment history). Every alias move is audited (``registry.move_alias``)."""

from __future__ import annotations

from typing import Any

from loopline.deploy import history
from loopline.deploy.base import DeploymentRefused, Role
from loopline.registry.registry import CHAMPION, move_alias, resolve_alias


def align_aliases(
    client: Any, model: str, version: str, role: Role, champion_serves: str | None, who: str, why: str
) -> None:
    """Point ``role``'s alias at ``version``. A challenger the register stage already made champion gives
    the champion alias back to ``champion_serves`` (what the champion server serves now)."""
    if role != CHAMPION:
        champion = resolve_alias(client, model, CHAMPION)
        moved = champion is not None and str(champion.version) == version
        if moved and champion_serves and champion_serves != version:
            move_alias(client, model, CHAMPION, champion_serves, who, f"v{version} serves as {role}")
    current = resolve_alias(client, model, role)
    if current is None or str(current.version) != version:
        move_alias(client, model, role, version, who, why)


def restore_alias(client: Any, model: str, role: Role, served: str | None, who: str, why: str) -> None:
    """After a refused version: ``role``'s alias names ``served`` again (when something serves)."""
    current = resolve_alias(client, model, role)
    if served is not None and current is not None and str(current.version) != served:
        move_alias(client, model, role, served, who, why)


def rollback_versions(client: Any, model: str, to: str | None) -> tuple[str, str | None]:
    """(version to serve as champion, the champion serving now): ``to``, or the champion before.

    Raises:
        DeploymentRefused: no ``to`` and no earlier champion in the history."""
    past = history.read_history(client, model)
    last = history.serving(past, "champion")
    current = last.version if last else None
    target = to or history.previous_version(past, current)
    if target is None:
        raise DeploymentRefused(
            f"{model} has no earlier champion deployment to roll back to (now: v{current}). To fix this, "
            "name the version: `loopline rollback --to VERSION`."
        )
    return target, current
