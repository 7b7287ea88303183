"""Choose a deploy target by name: ``local``, ``docker`` or ``kubernetes`` (``LOOPLINE_DEPLOY_TARGET``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

from loopline.deploy.base import DeployTarget
from loopline.deploy.smoke import SmokeCases
from loopline.settings import Settings

TargetName = Literal["local", "docker"]


def check_target(name: str) -> TargetName:
    for known in get_args(TargetName):
        if name == known:
            return known
    raise ValueError(
        f"Unknown deploy target {name!r}. To fix this, use one of {list(get_args(TargetName))} "
        "(LOOPLINE_DEPLOY_TARGET or the deploy parameters)."
    )


def make_target(
    name: str,
    settings: Settings,
    client: Any,
    tracking_uri: str,
    model: str,
    cases: Callable[[str], SmokeCases],
) -> DeployTarget:
    """The target ``name`` for ``model`` (``client``: an ``MlflowClient``).

    Raises:
        ValueError: an unknown name.
        DockerEngineUnavailable: ``docker`` with no engine answering."""
    chosen = check_target(name)
    if chosen == "docker":
        from loopline.deploy.docker import DockerTarget

        return DockerTarget(settings, client, tracking_uri, model, cases)
    from loopline.deploy.local import LocalTarget

    return LocalTarget(settings, client, tracking_uri, model, cases)
