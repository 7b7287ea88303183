"""The A/B router on the ``kubernetes`` target: a Deployment ``NAME-router`` (two replicas of the serving
image running ``loopline route``), its ClusterIP Service and a PodDisruptionBudget, rendered from
``deployments/kubernetes/router-*.yaml.j2``, validated strictly and applied with the official client
beside the model servers' Deployments (:mod:`loopline.deploy.k8s_target`), whose Services it sends users
to.

Every replica follows the model's latest experiment in the event store, which must therefore be a
database the flow and the pods both reach: the pods read ``LOOPLINE_EVENT_STORE_URL`` (PostgreSQL) from
the Secret ``LOOPLINE_K8S_SECRET``; a SQLite file on this machine is refused with that fix. The readiness
probe asks ``/healthz``, which answers 503 until the experiment state was read and re-reads it once it is
older than the router's refresh period.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loopline.deploy.k8s_apply import apply_object, delete_objects, read_deployment, wait_for_rollout
from loopline.deploy.kubernetes import render_templates, validate
from loopline.errors import ServiceError
from loopline.rollout.router_settings import RouterSettings
from loopline.rollout.service import await_status
from loopline.settings import Settings

TEMPLATES = ("router-deployment.yaml.j2", "router-service.yaml.j2", "router-pdb.yaml.j2")
PROBE_PERIOD_S = 5.0  # the readiness probe's period (router-deployment.yaml.j2)
_DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


class RouterManifestParams(BaseModel):
    """The router of one registered model's A/B tests on Kubernetes."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(..., pattern=_DNS_1035, max_length=40, description="Objects are NAME-router.")
    namespace: str = Field(default="default", pattern=_DNS_1035, max_length=63)
    image: str = Field(..., min_length=1, description="The serving image (it also runs the router).")
    model_name: str = Field(..., min_length=1)
    secret_name: str = Field(
        default="loopline-serving", pattern=_DNS_1035, description="Secret with LOOPLINE_EVENT_STORE_URL."
    )
    replicas: int = Field(default=2, ge=1)
    user_header: str = Field(default="X-User-Id", min_length=1)
    cpu_request: str = "250m"
    memory_request: str = "256Mi"
    cpu_limit: str = "1"
    memory_limit: str = "512Mi"

    @property
    def full_name(self) -> str:
        return f"{self.name}-router"


def render_router_manifests(params: RouterManifestParams) -> list[dict[str, Any]]:
    """The router's Deployment, Service and PodDisruptionBudget, as dicts in apply order."""
    selector = {"app.kubernetes.io/name": "loopline-router", "app.kubernetes.io/instance": params.full_name}
    labels = {**selector, "app.kubernetes.io/component": "ab-router", "app.kubernetes.io/part-of": "loopline"}
    context = {
        **params.model_dump(),
        "full_name": params.full_name,
        "args": ["route", "--model", params.model_name, "--host", "0.0.0.0", "--port", "8080"],
        "labels": labels,
        "selector": selector,
        "annotations": {"loopline.dev/model": params.model_name},
    }
    return render_templates(TEMPLATES, context)


class KubernetesRouter:
    """The router as a Kubernetes Deployment (see the module docstring)."""

    name = "kubernetes"

    def __init__(
        self, settings: Settings, api_client: Any, smoke_reachable: bool | None = None, timeout: float = 0
    ) -> None:
        """``api_client``: a ``kubernetes.client.ApiClient``; ``smoke_reachable``: whether this process
        reaches the router's Service (default: when it runs inside the cluster); ``timeout``: seconds the
        rollout may take (default ``LOOPLINE_K8S_ROLLOUT_TIMEOUT``)."""
        from loopline.deploy.targets import in_cluster

        self.settings, self.api_client = settings, api_client
        self.reachable = in_cluster() if smoke_reachable is None else smoke_reachable
        self.timeout = timeout or settings.k8s_rollout_timeout

    def params(self, model: str) -> RouterManifestParams:
        s = self.settings
        return RouterManifestParams(
            name=s.k8s_name, namespace=s.k8s_namespace, image=s.serve_image, model_name=model,
            secret_name=s.k8s_secret, user_header=RouterSettings().user_header,
        )  # fmt: skip

    def url(self) -> str:
        s = self.settings
        return f"http://{s.k8s_name}-router.{s.k8s_namespace}.svc.cluster.local"

    def running(self) -> str | None:
        name = f"{self.settings.k8s_name}-router"
        found = read_deployment(name, self.settings.k8s_namespace, self.api_client)
        return None if found is None else f"deployment/{name} -n {self.settings.k8s_namespace}"

    def ensure(self, model: str) -> str:
        """Apply the router's manifests (create or patch: a rerun duplicates nothing) and wait for its
        rollout, i.e. until its pods read the experiment.

        Raises:
            ServiceError: the event store is a SQLite file the pods cannot share.
            ManifestInvalid, KubernetesApplyFailed, RolloutTimeout: as for the model servers."""
        if self.settings.resolved_event_store_url.startswith("sqlite"):
            raise ServiceError(
                "The router on Kubernetes follows the experiment in the event store, which is a SQLite file "
                "on this machine that its pods cannot reach. To fix this, set LOOPLINE_EVENT_STORE_URL to "
                "a PostgreSQL database (postgresql+psycopg://user:password@host/db) here and in the Secret "
                f"{self.settings.k8s_secret!r} (key LOOPLINE_EVENT_STORE_URL)."
            )
        docs = render_router_manifests(self.params(model))
        validate(docs)
        for doc in docs:
            applied = apply_object(doc, self.api_client)
            if applied.kind == "Deployment":
                wait_for_rollout(applied.name, applied.namespace, self.api_client, self.timeout)
        return self.url()

    def await_state(self, status: str, timeout: float = 30.0) -> bool:
        """Inside the cluster: the Service's answer says ``status``. Outside it (no route to the pods):
        every replica's readiness probe re-reads the state once it is older than the refresh period, so
        after two refresh periods and a probe period every replica follows it."""
        if self.running() is None:
            return True
        if self.reachable:
            return await_status(self.url(), status, timeout)
        time.sleep(min(timeout, 2 * RouterSettings().refresh_seconds + PROBE_PERIOD_S))
        return True

    def stop(self) -> bool:
        docs = render_router_manifests(self.params("-"))
        return bool(delete_objects(docs, self.api_client))
