"""The Helm values files in deployments/helm/ use only keys the charts have, with the types the charts
expect, and reference credentials from Kubernetes Secrets instead of holding them. The k8s-cpu work-pool
template renders, through prefect-kubernetes, to a Job that Kubernetes 1.30 accepts in strict mode.

Helm is not installable here and chart repositories are unreachable: each chart's values.schema.json is
vendored (as an excerpt, see tests/schemas/helm/README.md) and checked two ways: jsonschema validation (what
`helm install` does) and, because several charts' schemas allow unknown keys at some levels, a walk that
fails on any key the schema does not declare — so a misspelt key fails here instead of being ignored by the
chart on a cluster.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
HELM = ROOT / "deployments" / "helm"
SCHEMAS = ROOT / "tests" / "schemas" / "helm"
CHART_OF = {
    "prefect-server.values.yaml": "prefect-server",
    "prefect-worker-k8s-gpu.values.yaml": "prefect-worker",
    "prefect-worker-k8s-cpu.values.yaml": "prefect-worker",
    "mlflow.values.yaml": "mlflow",
    "label-studio.values.yaml": "label-studio",
}
# Keys that hold a credential itself in these charts (a Secret reference uses other keys).
INLINE_SECRET_KEYS = {"password", "authString", "awsAccessKeyId", "awsSecretAccessKey", "accessKey"}


def load_values(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((HELM / name).read_text())
    return values


def load_schema(chart: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{chart}.schema.json").read_text())
    return schema


def without_required(schema: Any) -> Any:
    """``schema`` with every ``required`` list dropped: Helm validates the values merged over the chart's
    defaults, which supply the keys a values file leaves out."""
    if isinstance(schema, dict):
        return {k: without_required(v) for k, v in schema.items() if k != "required"}
    if isinstance(schema, list):
        return [without_required(v) for v in schema]
    return schema


def undeclared_keys(values: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Every key path in ``values`` that ``schema`` does not declare. A node whose schema lists no
    ``properties``, or maps any key to a schema (``additionalProperties: {...}``), is free-form."""
    if not isinstance(values, dict):
        return []
    declared = schema.get("properties")
    if declared is None or isinstance(schema.get("additionalProperties"), dict):
        return []
    problems = []
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key in declared:
            problems += undeclared_keys(value, declared[key], where)
        else:
            problems.append(f"{where} (the chart declares: {', '.join(sorted(declared))})")
    return problems


def chart_problems(values: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(without_required(schema))
    problems = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in validator.iter_errors(values)
    ]
    return problems + [f"unknown key {key}" for key in undeclared_keys(values, schema)]


def inline_secrets(values: Any, path: str = "") -> list[str]:
    """Key paths that hold a credential in the values file instead of naming a Kubernetes Secret."""
    if isinstance(values, list):
        return [p for i, v in enumerate(values) for p in inline_secrets(v, f"{path}[{i}]")]
    if not isinstance(values, dict):
        return []
    found = []
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        s3_secret_key = key == "secretKey" and path.endswith(".s3")  # Label Studio's inline S3 secret
        if (key in INLINE_SECRET_KEYS or s3_secret_key) and isinstance(value, str) and value:
            found.append(where)
        found += inline_secrets(value, where)
    return found


def test_every_values_file_has_a_vendored_schema() -> None:
    assert sorted(p.name for p in HELM.glob("*.values.yaml")) == sorted(CHART_OF)
    for chart in set(CHART_OF.values()):
        assert (SCHEMAS / f"{chart}.schema.json").is_file(), chart


@pytest.mark.parametrize("name", sorted(CHART_OF))
def test_values_file_matches_the_charts_schema(name: str) -> None:
    assert chart_problems(load_values(name), load_schema(CHART_OF[name])) == []


@pytest.mark.parametrize("name", sorted(CHART_OF))
def test_a_misspelt_or_mistyped_key_fails(name: str) -> None:
    values = load_values(name)
    schema = load_schema(CHART_OF[name])
    # a typo next to the first nested key (e.g. server.uiConfig -> server.uiConfigg)
    top = next(k for k, v in values.items() if isinstance(v, dict))
    misspelt = copy.deepcopy(values)
    first = next(iter(misspelt[top]))
    misspelt[top][first + "g"] = misspelt[top].pop(first)
    assert any(f"{top}.{first}g" in p for p in chart_problems(misspelt, schema))
    # a typo at the top level, where some charts' own schemas allow anything
    assert chart_problems({**values, top + "s": {}}, schema) != []
    # a list where the chart expects a mapping
    assert chart_problems({**values, top: [values[top]]}, schema) != []


@pytest.mark.parametrize("name", sorted(CHART_OF))
def test_credentials_come_from_kubernetes_secrets(name: str) -> None:
    assert inline_secrets(load_values(name)) == []


def test_the_inline_secret_check_finds_a_password() -> None:
    values = load_values("mlflow.values.yaml")
    values["backendStore"]["postgres"]["password"] = "hunter2"
    assert inline_secrets(values) == ["backendStore.postgres.password"]


@pytest.mark.parametrize("pool", ["k8s-gpu", "k8s-cpu"])
def test_each_worker_polls_its_pool_with_the_pools_template(pool: str) -> None:
    worker = load_values(f"prefect-worker-{pool}.values.yaml")["worker"]
    assert worker["config"]["workPool"] == pool
    assert worker["config"]["type"] == "kubernetes"
    assert worker["config"]["baseJobTemplate"]["existingConfigMapName"] == f"loopline-{pool}-job-template"
    assert (ROOT / "deployments" / pool / "base-job-template.json").is_file()


def test_worker_and_ui_point_at_the_prefect_server() -> None:
    server = load_values("prefect-server.values.yaml")
    api = server["server"]["uiConfig"]["prefectUiApiUrl"]
    for pool in ("k8s-gpu", "k8s-cpu"):
        worker = load_values(f"prefect-worker-{pool}.values.yaml")["worker"]
        assert worker["apiConfig"] == "server"
        assert worker["serverApiConfig"]["apiUrl"].startswith("http://prefect-server.")
        assert api == worker["serverApiConfig"]["uiUrl"] + "/api"


CPU_TEMPLATE = json.loads((ROOT / "deployments/k8s-cpu/base-job-template.json").read_text())
GPU_TEMPLATE = json.loads((ROOT / "deployments/k8s-gpu/base-job-template.json").read_text())


class _NoBlocks:
    """The template has no block or variable references, so rendering needs no Prefect API."""

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"rendering asked the Prefect API for {name}")


def render_cpu(values: dict[str, Any]) -> dict[str, Any]:
    config = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(CPU_TEMPLATE, values, client=_NoBlocks())
    )
    manifest: dict[str, Any] = config.job_manifest
    return manifest


def test_cpu_template_renders_a_valid_job_with_the_env_secret_and_no_gpu() -> None:
    job = render_cpu({"image": "registry.local/loopline-train:abc123", "cpu_request": "2", "namespace": "ml"})
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "loopline-env"}}]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert container["resources"]["requests"] == {"cpu": "2"}
    kubernetes_validate.validate(job, "1.30", strict=True)
    other = render_cpu({"image": "loopline-train:latest", "env_secret": "team-a-env"})
    other_container = other["spec"]["template"]["spec"]["containers"][0]
    assert other_container["envFrom"] == [{"secretRef": {"name": "team-a-env"}}]
    kubernetes_validate.validate(other, "1.30", strict=True)


def container_of(job_configuration: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = job_configuration["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    return container


def test_cpu_template_is_the_gpu_template_without_gpus_plus_the_env_secret() -> None:
    gpu_vars = set(GPU_TEMPLATE["variables"]["properties"]) - {"gpu_limit"}
    assert set(CPU_TEMPLATE["variables"]["properties"]) == gpu_vars | {"env_secret"}
    gpu_job = copy.deepcopy(GPU_TEMPLATE["job_configuration"])
    cpu_job = copy.deepcopy(CPU_TEMPLATE["job_configuration"])
    del container_of(gpu_job)["resources"]["limits"]["nvidia.com/gpu"]
    del container_of(cpu_job)["envFrom"]
    assert cpu_job == gpu_job
