"""The model server's Kubernetes manifests: rendered from deployments/kubernetes/, validated strictly."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from loopline.deploy.kubernetes import ManifestInvalid, ServingManifestParams, render_manifests, validate

pytestmark = pytest.mark.unit

PARAMS = [
    ServingManifestParams(name="digits", image="registry.local/loopline-serve:abc", model_name="digits"),
    ServingManifestParams(
        name="digits",
        namespace="ml-serving",
        image="registry.local/loopline-serve:abc",
        model_name="Digits CNN: v2 \"quoted\" 'model'",  # anything MLflow allows must survive the YAML
        role="challenger",
        version="7",
        min_replicas=1,
        max_replicas=10,
        cpu_limit="4",
        memory_limit="4Gi",
    ),
]


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("flavour", ["plain", "kserve"])
@pytest.mark.parametrize("params", PARAMS, ids=["champion", "challenger-pinned"])
def test_every_rendered_manifest_validates_strictly(params: ServingManifestParams, flavour: Any) -> None:
    docs = render_manifests(params, flavour)
    validate(docs)
    expected = {"plain": ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"],
                "kserve": ["InferenceService"]}  # fmt: skip
    assert [d["kind"] for d in docs] == expected[flavour]
    assert all(d["metadata"]["name"] == f"digits-{params.role}" for d in docs)
    assert all(d["metadata"]["namespace"] == params.namespace for d in docs)


def test_the_deployment_runs_the_server_hardened_with_secrets_only_by_reference() -> None:
    docs = render_manifests(PARAMS[1])
    deployment = _kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"] == [
        "serve", "--model", PARAMS[1].model_name, "--version", "7", "--host", "0.0.0.0", "--port", "8080"
    ]  # fmt: skip
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "4Gi"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/cache/loopline", "/tmp"} <= mounts
    assert all("emptyDir" in v for v in pod["volumes"])
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    tracking = {e["name"]: e for e in container["env"]}["LOOPLINE_MLFLOW_TRACKING_URI"]
    assert tracking["valueFrom"]["secretKeyRef"]["name"] == "loopline-serving"
    assert container["envFrom"] == [{"secretRef": {"name": "loopline-serving"}}]
    # no literal credentials anywhere
    text = yaml.safe_dump(docs).lower()
    assert "aws_secret_access_key" not in text and "password" not in text


def test_service_hpa_and_pdb_select_the_deployments_pods() -> None:
    docs = render_manifests(PARAMS[0])
    pod_labels = _kind(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for selector in (
        _kind(docs, "Service")["spec"]["selector"],
        _kind(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        _kind(docs, "Deployment")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    hpa = _kind(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "digits-champion"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 4)


def test_an_unknown_field_is_refused_naming_the_field_and_every_failing_document() -> None:
    docs = render_manifests(PARAMS[0])
    _kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    _kind(docs, "Service")["spec"]["portz"] = []
    with pytest.raises(ManifestInvalid) as caught:
        validate(docs)
    message = str(caught.value)
    assert "2 problem(s)" in message
    assert "Deployment/digits-champion: spec.template.spec.containers[0]" in message
    assert "'imagePullPolicyy' was unexpected" in message
    assert "Service/digits-champion" in message and "'portz'" in message


def test_the_inference_service_is_checked_structurally_and_its_pod_part_strictly() -> None:
    [isvc] = render_manifests(PARAMS[0], "kserve")
    isvc["spec"]["predictor"]["containers"][0]["name"] = "server"
    isvc["spec"]["predictor"]["nodeSelectr"] = {"gpu": "yes"}
    with pytest.raises(ManifestInvalid) as caught:
        validate([isvc])
    message = str(caught.value)
    assert "KServe expects 'kserve-container'" in message
    assert "'nodeSelectr' was unexpected" in message


def test_replicas_out_of_order_are_refused_with_the_fix() -> None:
    with pytest.raises(ValidationError, match=r"max_replicas \(3\) is below min_replicas \(5\)"):
        ServingManifestParams(name="d", image="i", model_name="m", min_replicas=5, max_replicas=3)


def test_k8s_render_prints_yaml_that_validates() -> None:
    from loopline.cli import app

    result = CliRunner().invoke(
        app, ["k8s", "render", "--model", "digits", "--alias", "champion", "--image", "reg/serve:1"]
    )
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.output))
    validate(docs)
    assert [d["kind"] for d in docs] == [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    args = docs[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:5] == ["serve", "--model", "digits", "--alias", "champion"]
