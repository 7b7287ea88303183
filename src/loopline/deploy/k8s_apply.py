"""Apply rendered model-server manifests to a cluster with the official ``kubernetes`` client, wait for
the Deployment's rollout, read a Deployment back and delete what was applied.

Create-or-patch: each object is created, and on 409 (it exists) patched with a JSON merge patch of the
rendered document, so a rerun never duplicates anything. A Deployment's ``spec.replicas`` is left out
of the patch: its HorizontalPodAutoscaler owns the replica count once it exists. The rendered strategy
(``maxUnavailable: 0``) keeps the previous ReplicaSet serving until the new pods are ready, so a rollout
that times out here leaves the old version answering.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from loopline.errors import LooplineError

log = logging.getLogger(__name__)
MERGE_PATCH = "application/merge-patch+json"
KSERVE_GROUP, KSERVE_VERSION = "serving.kserve.io", "v1beta1"


class KubernetesApplyFailed(LooplineError):
    """The API server refused an object (other than 'already exists')."""


class RolloutTimeout(LooplineError):
    """A Deployment's new pods did not all become ready in time (the previous ReplicaSet keeps serving)."""


@dataclass(frozen=True)
class AppliedObject:
    """One object sent to the cluster and what happened to it."""

    kind: str
    namespace: str
    name: str
    action: Literal["created", "patched"]


@dataclass(frozen=True)
class _Verbs:
    create: Callable[..., Any]
    patch: Callable[..., Any]
    delete: Callable[..., Any]


def _verbs(kind: str, api_client: Any) -> _Verbs:
    from kubernetes import client

    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    autoscaling, policy = client.AutoscalingV2Api(api_client), client.PolicyV1Api(api_client)
    table = {
        "Deployment": _Verbs(
            apps.create_namespaced_deployment,
            apps.patch_namespaced_deployment,
            apps.delete_namespaced_deployment,
        ),
        "Service": _Verbs(
            core.create_namespaced_service, core.patch_namespaced_service, core.delete_namespaced_service
        ),
        "HorizontalPodAutoscaler": _Verbs(
            autoscaling.create_namespaced_horizontal_pod_autoscaler,
            autoscaling.patch_namespaced_horizontal_pod_autoscaler,
            autoscaling.delete_namespaced_horizontal_pod_autoscaler,
        ),
        "PodDisruptionBudget": _Verbs(
            policy.create_namespaced_pod_disruption_budget,
            policy.patch_namespaced_pod_disruption_budget,
            policy.delete_namespaced_pod_disruption_budget,
        ),
    }
    custom = client.CustomObjectsApi(api_client)

    def isvc(verb: Callable[..., Any]) -> Callable[..., Any]:
        return functools.partial(verb, group=KSERVE_GROUP, version=KSERVE_VERSION, plural="inferenceservices")

    table["InferenceService"] = _Verbs(
        isvc(custom.create_namespaced_custom_object),
        isvc(custom.patch_namespaced_custom_object),
        isvc(custom.delete_namespaced_custom_object),
    )
    if kind not in table:
        raise KubernetesApplyFailed(f"cannot apply kind {kind!r}: valid kinds are {', '.join(table)}")
    return table[kind]


def _refused(doc: dict[str, Any], verb: str, exc: Any) -> KubernetesApplyFailed:
    where = f"{doc['kind']}/{doc['metadata']['name']} in namespace {doc['metadata']['namespace']}"
    return KubernetesApplyFailed(
        f"the API server refused to {verb} {where}: HTTP {exc.status} {exc.reason}: {exc.body}. "
        "Check the manifest with `loopline k8s render` and your permissions with `kubectl auth can-i`"
    )


def apply_object(doc: dict[str, Any], api_client: Any) -> AppliedObject:
    """Create ``doc``, or patch it when it exists (409)."""
    from kubernetes.client.exceptions import ApiException

    verbs = _verbs(doc["kind"], api_client)
    name, namespace = doc["metadata"]["name"], doc["metadata"]["namespace"]
    try:
        verbs.create(namespace=namespace, body=doc, field_validation="Strict")
        action: Literal["created", "patched"] = "created"
    except ApiException as exc:
        if exc.status != 409:
            raise _refused(doc, "create", exc) from exc
        body = copy.deepcopy(doc)
        if doc["kind"] == "Deployment":
            body["spec"].pop("replicas", None)  # the HPA owns it now
        try:
            verbs.patch(
                name=name,
                namespace=namespace,
                body=body,
                field_validation="Strict",
                _content_type=MERGE_PATCH,
            )
        except ApiException as patch_exc:
            raise _refused(doc, "patch", patch_exc) from patch_exc
        action = "patched"
    log.info("%s %s/%s in %s", action, doc["kind"], name, namespace)
    return AppliedObject(doc["kind"], namespace, name, action)


def rollout_state(deployment: Any) -> tuple[bool, str]:
    """(done, a one-line summary) of a ``V1Deployment`` as ``kubectl rollout status`` judges it."""
    spec_replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status
    if status is None:  # not yet seen by the Deployment controller
        return False, f"generation {deployment.metadata.generation or 0}: no status yet"
    generation, observed = deployment.metadata.generation or 0, status.observed_generation or 0
    updated, ready = status.updated_replicas or 0, status.ready_replicas or 0
    total = status.replicas or 0
    summary = (
        f"generation {generation} (observed {observed}), replicas {spec_replicas}: {updated} updated, "
        f"{ready} ready, {total} in total"
    )
    done = observed >= generation and updated == spec_replicas and ready == updated and total == updated
    return done, summary


def wait_for_rollout(
    name: str, namespace: str, api_client: Any, timeout: float, poll_seconds: float = 2.0
) -> str:
    """Wait until the Deployment's new pods are all updated and ready; returns the final summary.

    Raises:
        RolloutTimeout: after ``timeout`` seconds, or at once when Kubernetes reports the progress
            deadline exceeded.
    """
    from kubernetes import client

    apps = client.AppsV1Api(api_client)
    deadline = time.monotonic() + timeout
    while True:
        deployment = apps.read_namespaced_deployment_status(name=name, namespace=namespace)
        done, summary = rollout_state(deployment)
        if done:
            return summary
        stalled = any(
            c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded"
            for c in ((deployment.status.conditions if deployment.status else None) or [])
        )
        if stalled or time.monotonic() >= deadline:
            why = "its progress deadline was exceeded" if stalled else f"not rolled out after {timeout:g} s"
            raise RolloutTimeout(
                f"Deployment {name} in namespace {namespace}: {why} ({summary}). The previous ReplicaSet "
                f"keeps serving (maxUnavailable 0). See why with `kubectl -n {namespace} describe deployment "
                f"{name}` and the new pods' events/logs (image pull, Secret missing, readiness on "
                f"/v2/health/ready); undo with `kubectl -n {namespace} rollout undo deployment/{name}`"
            )
        time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))


def inference_service_state(isvc: dict[str, Any]) -> tuple[bool, str]:
    """(ready, a one-line summary) of an InferenceService as KServe reports it: its ``Ready`` condition
    for the generation it last saw."""
    generation = isvc.get("metadata", {}).get("generation", 0)
    status = isvc.get("status") or {}
    observed = status.get("observedGeneration", 0)
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = conditions.get("Ready", {})
    reason = f": {ready['reason']}" if ready.get("reason") else ""
    summary = f"generation {generation} (observed {observed}), Ready {ready.get('status', 'Unknown')}{reason}"
    return observed >= generation and ready.get("status") == "True", summary


def wait_for_inference_service(
    name: str, namespace: str, api_client: Any, timeout: float, poll_seconds: float = 2.0
) -> str:
    """Wait until KServe reports the InferenceService Ready; returns the final summary.

    Raises:
        RolloutTimeout: after ``timeout`` seconds (KServe's RawDeployment keeps the previous pods serving
            until the new ones are ready, as a Deployment with ``maxUnavailable: 0``).
    """
    from kubernetes import client

    custom = client.CustomObjectsApi(api_client)
    deadline = time.monotonic() + timeout
    while True:
        isvc: dict[str, Any] = custom.get_namespaced_custom_object_status(  # type: ignore[assignment]
            KSERVE_GROUP, KSERVE_VERSION, namespace, "inferenceservices", name
        )
        done, summary = inference_service_state(isvc)
        if done:
            return summary
        if time.monotonic() >= deadline:
            raise RolloutTimeout(
                f"InferenceService {name} in namespace {namespace}: not Ready after {timeout:g} s "
                f"({summary}). See why with `kubectl -n {namespace} describe inferenceservice {name}` and "
                "the predictor pods' events/logs (image pull, Secret missing, readiness on /v2/health/ready)"
            )
        time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))


def read_deployment(name: str, namespace: str, api_client: Any) -> Any | None:
    """The live ``V1Deployment`` (with its status), None when there is none."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        return client.AppsV1Api(api_client).read_namespaced_deployment_status(name=name, namespace=namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise KubernetesApplyFailed(
            f"cannot read Deployment {name} in namespace {namespace}: HTTP {exc.status} {exc.reason}: "
            f"{exc.body}. Check your permissions with `kubectl auth can-i get deployments -n {namespace}`"
        ) from exc


def delete_objects(docs: list[dict[str, Any]], api_client: Any) -> list[str]:
    """Delete the objects of ``docs`` (in reverse order); those already gone are skipped. Returns
    ``KIND/NAME`` of each deleted one."""
    from kubernetes.client.exceptions import ApiException

    deleted = []
    for doc in reversed(docs):
        name, namespace = doc["metadata"]["name"], doc["metadata"]["namespace"]
        try:
            _verbs(doc["kind"], api_client).delete(name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise _refused(doc, "delete", exc) from exc
        log.info("deleted %s/%s in %s", doc["kind"], name, namespace)
        deleted.append(f"{doc['kind']}/{name}")
    return deleted


def apply(docs: list[dict[str, Any]], api_client: Any, timeout: float = 300.0) -> list[AppliedObject]:
    """Validate (see :func:`loopline.deploy.kubernetes.validate`), create or patch every object in order,
    then wait for each Deployment's rollout and each InferenceService (KServe, applied through the
    CustomObjectsApi) to be Ready."""
    from loopline.deploy.kubernetes import validate

    validate(docs)
    applied = [apply_object(doc, api_client) for doc in docs]
    for obj in applied:
        if obj.kind == "Deployment":
            wait_for_rollout(obj.name, obj.namespace, api_client, timeout)
        elif obj.kind == "InferenceService":
            wait_for_inference_service(obj.name, obj.namespace, api_client, timeout)
    return applied
