"""apply() with the official kubernetes client against the in-process API stand-in (tests/k8s_stub.py)."""

from __future__ import annotations

from typing import Any

import pytest

from loopline.deploy.k8s_apply import KubernetesApplyFailed, RolloutTimeout, apply, delete_objects
from loopline.deploy.kubernetes import ServingManifestParams, render_manifests
from tests.k8s_stub import FakeKubernetesApi

pytestmark = pytest.mark.integration


def _docs(image: str = "registry.local/loopline-serve:abc123") -> list[dict[str, Any]]:
    params = ServingManifestParams(
        name="digits", namespace="ml", image=image, model_name="digits", min_replicas=2, max_replicas=5
    )
    return render_manifests(params)


def test_apply_creates_then_patches_without_duplicates(stub: FakeKubernetesApi, api_client: Any) -> None:
    first = apply(_docs(), api_client, timeout=5)
    assert [(o.kind, o.action) for o in first] == [
        ("Deployment", "created"),
        ("Service", "created"),
        ("HorizontalPodAutoscaler", "created"),
        ("PodDisruptionBudget", "created"),
    ]
    # the HPA scaled the Deployment up meanwhile: a new image must not reset it to min_replicas
    stub.objects[("deployments", "ml", "digits-champion")]["spec"]["replicas"] = 4

    second = apply(_docs(image="registry.local/loopline-serve:def456"), api_client, timeout=5)

    assert {o.action for o in second} == {"patched"}
    for resource in ("deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets"):
        assert stub.count(resource) == 1, resource
    deployment = stub.objects[("deployments", "ml", "digits-champion")]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":def456")
    assert deployment["spec"]["replicas"] == 4
    assert deployment["metadata"]["generation"] == 2
    patches = [path for method, path in stub.requests if method == "PATCH"]
    assert "/apis/apps/v1/namespaces/ml/deployments/digits-champion" in patches


def test_a_rollout_that_never_becomes_ready_times_out_naming_the_deployment(
    stub: FakeKubernetesApi, api_client: Any
) -> None:
    stub.rollout_ready = False
    with pytest.raises(RolloutTimeout) as caught:
        apply(_docs(), api_client, timeout=0.5)
    message = str(caught.value)
    assert "digits-champion" in message and "namespace ml" in message
    assert "1 updated" in message and "rollout undo" in message


def test_a_refused_object_is_named_with_the_servers_answer(stub: FakeKubernetesApi) -> None:
    from kubernetes import client

    # a path the API server does not serve: the create is answered 404, not 409, so nothing is patched
    with client.ApiClient(client.Configuration(host=stub.url + "/nowhere")) as wrong_prefix:
        with pytest.raises(KubernetesApplyFailed, match=r"refused to create Deployment/digits-champion.*404"):
            apply(_docs(), wrong_prefix, timeout=1)
    assert [method for method, _ in stub.requests] == ["POST"]


def _isvc(image: str = "registry.local/loopline-serve:abc123") -> list[dict[str, Any]]:
    params = ServingManifestParams(name="digits", namespace="ml", image=image, model_name="digits")
    return render_manifests(params, "kserve")


def test_an_inference_service_is_created_then_patched_through_the_custom_objects_api(
    stub: FakeKubernetesApi, api_client: Any
) -> None:
    first = apply(_isvc(), api_client, timeout=5)
    second = apply(_isvc(image="registry.local/loopline-serve:def456"), api_client, timeout=5)

    assert [(o.kind, o.action) for o in first + second] == [
        ("InferenceService", "created"),
        ("InferenceService", "patched"),
    ]
    assert stub.count("inferenceservices") == 1
    isvc = stub.objects[("inferenceservices", "ml", "digits-champion")]
    assert isvc["spec"]["predictor"]["containers"][0]["image"].endswith(":def456")
    assert isvc["metadata"]["generation"] == 2
    path = "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/digits-champion"
    assert ("PATCH", path) in stub.requests
    assert delete_objects(_isvc(), api_client) == ["InferenceService/digits-champion"]
    assert stub.count("inferenceservices") == 0 and delete_objects(_isvc(), api_client) == []


def test_an_inference_service_that_never_becomes_ready_times_out_naming_it(
    stub: FakeKubernetesApi, api_client: Any
) -> None:
    stub.rollout_ready = False
    with pytest.raises(RolloutTimeout) as caught:
        apply(_isvc(), api_client, timeout=0.5)
    message = str(caught.value)
    assert "InferenceService digits-champion in namespace ml" in message
    assert "Ready False: RevisionMissing" in message and "describe inferenceservice" in message


def test_delete_objects_removes_the_plain_objects_and_skips_missing_ones(
    stub: FakeKubernetesApi, api_client: Any
) -> None:
    apply(_docs(), api_client, timeout=5)
    stub.objects.pop(("services", "ml", "digits-champion"))
    assert delete_objects(_docs(), api_client) == [
        "PodDisruptionBudget/digits-champion",
        "HorizontalPodAutoscaler/digits-champion",
        "Deployment/digits-champion",
    ]
    assert not stub.objects
