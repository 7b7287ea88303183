"""The k8s-gpu work-pool template renders, through prefect-kubernetes, to a Job that the Kubernetes 1.30
schema accepts in strict mode (unknown fields are errors)."""

import asyncio
import json
from pathlib import Path

import kubernetes_validate
import pytest
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

pytestmark = pytest.mark.unit

TEMPLATE = json.loads((Path(__file__).parents[2] / "deployments/k8s-gpu/base-job-template.json").read_text())


class _NoBlocks:
    """The template has no block or variable references, so rendering needs no Prefect API."""

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"rendering asked the Prefect API for {name}")


def render(values: dict) -> dict:  # type: ignore[type-arg]
    config = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(TEMPLATE, values, client=_NoBlocks())
    )
    manifest: dict = config.job_manifest  # type: ignore[type-arg]
    return manifest


def test_gpu_node_selector_and_tolerations_render_and_validate() -> None:
    job = render(
        {
            "image": "registry.local/loopline-train:abc123",
            "gpu_limit": 2,
            "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "namespace": "ml",
            "cpu_request": "4",
            "memory_limit": "32Gi",
        }
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_unset_variables_drop_their_keys_and_still_validate() -> None:
    job = render({"image": "loopline-train:latest"})
    pod = job["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    kubernetes_validate.validate(job, "1.30", strict=True)


def test_strict_validation_catches_a_misplaced_field() -> None:
    job = render({"image": "loopline-train:latest"})
    job["spec"]["template"]["spec"]["completions"] = 1  # a Job field inside the pod spec
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.30", strict=True)
