"""Choose a deploy target by name: ``local``, ``docker`` or ``kubernetes`` (``LOOPLINE_DEPLOY_TARGET``).

The kubernetes target talks to the cluster of the pod it runs in, else of the kubeconfig (``KUBECONFIG``,
``~/.kube/config``); its objects are ``LOOPLINE_K8S_NAME-<role>`` in ``LOOPLINE_K8S_NAMESPACE`` running
``LOOPLINE_SERVE_IMAGE`` with the Secret ``LOOPLINE_K8S_SECRET``. Inside the cluster the smoke test runs
against the role's Service after each rollout; outside it the readiness probes gate the rollout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

from loopline.deploy.base import DeployTarget
from loopline.deploy.smoke import SmokeCases
from loopline.settings import Settings

TargetName = Literal["local", "docker", "kubernetes"]


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
        DockerEngineUnavailable: ``docker`` with no engine answering.
        KubernetesApplyFailed: ``kubernetes`` with no cluster configured."""
    chosen = check_target(name)
    if chosen == "kubernetes":
        return _kubernetes_target(settings, client, tracking_uri, model, cases)
    if chosen == "docker":
        from loopline.deploy.docker import DockerTarget

        return DockerTarget(settings, client, tracking_uri, model, cases)
    from loopline.deploy.local import LocalTarget

    return LocalTarget(settings, client, tracking_uri, model, cases)


def in_cluster() -> bool:
    """True inside a Kubernetes pod (the Services are reachable by their cluster DNS names)."""
    import os

    return "KUBERNETES_SERVICE_HOST" in os.environ


def kubernetes_api_client() -> Any:
    """A ``kubernetes.client.ApiClient`` of the cluster of the pod this runs in, else of the kubeconfig
    (``KUBECONFIG``, ``~/.kube/config``).

    Raises:
        KubernetesApplyFailed: no cluster is configured."""
    import os

    from kubernetes import client as k8s
    from kubernetes import config

    from loopline.deploy.k8s_apply import KubernetesApplyFailed

    try:
        if in_cluster():
            config.load_incluster_config()
        else:
            # read KUBECONFIG now (the client reads it once, at import)
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    except (config.ConfigException, OSError) as exc:
        raise KubernetesApplyFailed(
            f"No Kubernetes cluster is configured ({exc}). To fix this, point KUBECONFIG at a kubeconfig "
            "(or run inside the cluster), or choose another deploy target (LOOPLINE_DEPLOY_TARGET=local)."
        ) from exc
    return k8s.ApiClient()


def _kubernetes_target(
    settings: Settings, client: Any, tracking_uri: str, model: str, cases: Callable[[str], SmokeCases]
) -> DeployTarget:
    from loopline.deploy.k8s_target import KubernetesTarget
    from loopline.deploy.kubernetes import ServingManifestParams

    api_client = kubernetes_api_client()
    params = ServingManifestParams(
        name=settings.k8s_name,
        namespace=settings.k8s_namespace,
        image=settings.serve_image,
        model_name=model,
        secret_name=settings.k8s_secret,
    )
    target = KubernetesTarget(
        settings, client, tracking_uri, model, cases, api_client, params, settings.k8s_rollout_timeout
    )
    if in_cluster():  # the Services are reachable: smoke-test each rollout through them
        target.smoke_url = target.url
    return target


def open_target(
    name: str | None, settings: Settings, tracking_uri: str, model: str, data_root: str, smoke_images: int = 8
) -> DeployTarget:
    """The target ``name`` (default ``LOOPLINE_DEPLOY_TARGET``) for ``model`` on the MLflow server at
    ``tracking_uri``, smoke-testing with the test images of ``data_root``.

    Raises:
        RegistryError: no MLflow server answers at ``tracking_uri``.
        (and what ``make_target`` raises)"""
    import mlflow

    from loopline.deploy.smoke import registry_cases
    from loopline.registry.registry import check_mlflow

    check_mlflow(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    cases = registry_cases(client, settings, model, data_root, smoke_images)
    return make_target(name or settings.deploy_target, settings, client, tracking_uri, model, cases)
