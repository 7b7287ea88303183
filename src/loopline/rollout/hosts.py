"""Where the A/B router runs, on each deploy target: beside the model servers it sends users to.

- ``local``: a managed process (``loopline route``; PID file and log under ``LOOPLINE_HOME``);
- ``docker``: a container of the serving image (:mod:`loopline.rollout.docker_router`);
- ``kubernetes``: a router Deployment with its Service and PodDisruptionBudget
  (:mod:`loopline.rollout.k8s_router`).

Every router follows the model's latest experiment in the event store (``LOOPLINE_EVENT_STORE_URL``), so
a restarted router or a second replica carries on with the same weights, and the flow steers it only by
writing the experiment's state there.
"""

from __future__ import annotations

from typing import Protocol

from loopline.rollout import service
from loopline.settings import Settings


class RouterHost(Protocol):
    """How one deploy target runs the router."""

    name: str

    def url(self) -> str:
        """Where the router answers (on Kubernetes: its Service inside the cluster)."""
        ...

    def ensure(self, model: str) -> str:
        """Start the router of ``model``'s experiments unless it runs; its URL once it answers.

        Raises:
            ServiceError: it did not start (with why and how to fix it)."""
        ...

    def running(self) -> str | None:
        """How the target knows the router ("pid 1234", "container 3f2a…", "deployment/…"); None: none."""
        ...

    def await_state(self, status: str, timeout: float = 30.0) -> bool:
        """Wait until the router routes by an experiment in ``status``, so a server it no longer sends
        anyone to can be stopped. True when it does (or when no router runs)."""
        ...

    def stop(self) -> bool:
        """Stop the router; True when one was stopped."""
        ...


class LocalRouter:
    """The router as a local process (see :mod:`loopline.rollout.service`)."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def url(self) -> str:
        return service.router_url(self.settings)

    def ensure(self, model: str) -> str:
        return service.ensure_router(self.settings, model)

    def running(self) -> str | None:
        return service.running_router(self.settings)

    def await_state(self, status: str, timeout: float = 30.0) -> bool:
        return service.await_router(self.settings, status, timeout)

    def stop(self) -> bool:
        return service.stop_router(self.settings)


def router_host(target: str, settings: Settings) -> RouterHost:
    """The router's host for the deploy target ``target`` (``local``, ``docker``, ``kubernetes``).

    Raises:
        ValueError: an unknown target.
        DockerEngineUnavailable: ``docker`` with no engine answering.
        KubernetesApplyFailed: ``kubernetes`` with no cluster configured."""
    from loopline.deploy.targets import check_target

    chosen = check_target(target)
    if chosen == "docker":
        from loopline.rollout.docker_router import DockerRouter

        return DockerRouter(settings)
    if chosen == "kubernetes":
        from loopline.deploy.targets import kubernetes_api_client
        from loopline.rollout.k8s_router import KubernetesRouter

        return KubernetesRouter(settings, kubernetes_api_client())
    return LocalRouter(settings)
