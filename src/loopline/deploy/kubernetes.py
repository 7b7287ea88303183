"""Kubernetes manifests of the model server: render them from the templates in ``deployments/kubernetes/``
and validate them offline.

Two flavours: ``plain`` (Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget) and ``kserve``
(one KServe ``InferenceService`` with a custom predictor running the same container). ``loopline k8s
render`` prints them for GitOps; :func:`loopline.deploy.k8s_apply.apply` sends them to a cluster.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from loopline.errors import LooplineError

K8S_VERSION = "1.30"
SERVER_PORT = 8080  # inside the pod; the Service answers on port 80
PLAIN_TEMPLATES = ("deployment.yaml.j2", "service.yaml.j2", "hpa.yaml.j2", "pdb.yaml.j2")
KSERVE_TEMPLATES = ("inferenceservice.yaml.j2",)
_DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# KServe's ComponentExtensionSpec: predictor keys that are not part of the inlined PodSpec.
_KSERVE_EXTENSION_KEYS = frozenset(
    {
        "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "autoScaling",
        "containerConcurrency", "timeout", "canaryTrafficPercent", "labels", "annotations",
        "deploymentStrategy", "logger", "batcher", "model", "workerSpec",
    }
)  # fmt: skip


class ManifestInvalid(LooplineError):
    """Rendered manifests failed validation; the message lists every problem found."""


class ServingManifestParams(BaseModel):
    """What one model server on Kubernetes looks like (one role of one registered model)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(..., pattern=_DNS_1035, max_length=40, description="Base name; objects are NAME-ROLE.")
    namespace: str = Field(default="default", pattern=_DNS_1035, max_length=63)
    image: str = Field(
        ..., min_length=1, description="The serving image (deployments/docker/serve.Dockerfile)."
    )
    model_name: str = Field(..., min_length=1, description="Registered model in MLflow.")
    role: Literal["champion", "challenger"] = "champion"
    alias: str | None = Field(default=None, description="Alias to follow; default: the role.")
    version: str | None = Field(default=None, pattern=r"^[0-9]+$", description="Pin a version instead.")
    min_replicas: int = Field(default=2, ge=1)
    max_replicas: int = Field(default=4, ge=1)
    target_cpu_utilization: int = Field(default=70, ge=1, le=100)
    cpu_request: str = "500m"
    memory_request: str = "512Mi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"
    model_cache_size: str = Field(default="1Gi", description="emptyDir size of the model cache.")
    poll_seconds: float = Field(default=30.0, ge=0, description="Alias re-check period; 0: never.")
    secret_name: str = Field(
        default="loopline-serving",
        pattern=_DNS_1035,
        description="Secret with LOOPLINE_MLFLOW_TRACKING_URI (required) and, as needed, MLflow/S3 "
        "credentials (MLFLOW_TRACKING_TOKEN, AWS_ACCESS_KEY_ID, ...), LOOPLINE_SERVING_ADMIN_TOKEN.",
    )

    @model_validator(mode="after")
    def _replicas_in_order(self) -> ServingManifestParams:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas}): "
                "raise max_replicas or lower min_replicas"
            )
        return self

    @property
    def full_name(self) -> str:
        return f"{self.name}-{self.role}"

    @property
    def selector(self) -> str:
        return self.version or self.alias or self.role


def server_args(params: ServingManifestParams) -> list[str]:
    """The container's arguments (the image's entrypoint is ``loopline``)."""
    chosen = ["--version", params.version] if params.version else ["--alias", params.alias or params.role]
    return ["serve", "--model", params.model_name, *chosen, "--host", "0.0.0.0", "--port", str(SERVER_PORT)]


def _context(params: ServingManifestParams) -> dict[str, Any]:
    selector = {"app.kubernetes.io/name": "loopline-serving", "app.kubernetes.io/instance": params.full_name}
    labels = {
        **selector,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "loopline",
        "loopline.dev/role": params.role,
    }
    annotations = {"loopline.dev/model": params.model_name, "loopline.dev/selector": params.selector}
    return {
        **params.model_dump(),
        "full_name": params.full_name,
        "args": server_args(params),
        "labels": labels,
        "selector": selector,
        "annotations": annotations,
        "kserve_annotations": {**annotations, "serving.kserve.io/deploymentMode": "RawDeployment"},
    }


def templates_dir() -> Path:
    """The manifest templates: package data of ``loopline.deploy`` (``k8s_templates``, a link to
    ``deployments/kubernetes/`` in the checkout, copied into the wheel)."""
    found = Path(str(resources.files("loopline.deploy") / "k8s_templates"))
    if not (found / PLAIN_TEMPLATES[0]).is_file():
        raise ManifestInvalid(
            f"the Kubernetes manifest templates are missing from {found}. To fix this, reinstall loopline "
            "from a wheel built from a checkout (they are its package data), or run `pip install -e .` in "
            "a checkout where src/loopline/deploy/k8s_templates links to deployments/kubernetes/"
        )
    return found


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.policies["json.dumps_function"] = json.dumps  # plain JSON (valid YAML), no HTML escaping
    return env


def render_templates(names: tuple[str, ...], context: dict[str, Any]) -> list[dict[str, Any]]:
    """The templates ``names`` of ``deployments/kubernetes/`` rendered with ``context``, as dicts."""
    env = _environment()
    return [yaml.safe_load(env.get_template(name).render(context)) for name in names]


def render_manifests(
    params: ServingManifestParams, flavour: Literal["plain", "kserve"] = "plain"
) -> list[dict[str, Any]]:
    """The manifests of one model server, as dicts in apply order."""
    env = _environment()
    context = _context(params)
    context["container_name"] = "kserve-container" if flavour == "kserve" else "server"
    context["container"] = env.get_template("_container.yaml.j2").render(context).strip()
    context["pod"] = env.get_template("_pod.yaml.j2").render(context).strip()
    return render_templates(KSERVE_TEMPLATES if flavour == "kserve" else PLAIN_TEMPLATES, context)


def to_yaml(docs: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream (what GitOps repositories and ``kubectl apply -f -`` take)."""
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def _where(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".") or "(top level)"


def _schema_problems(doc: dict[str, Any], version: str) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_where(exc.path)}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {doc.get('apiVersion')}/{doc.get('kind')} in Kubernetes {version}"]
    return []


def _inference_service_problems(doc: dict[str, Any], version: str) -> list[str]:
    """KServe's InferenceService is a CRD (no schema in kubernetes-validate): check the required fields
    structurally, then validate the predictor's inlined PodSpec strictly as a core Pod."""
    problems = []
    if doc.get("apiVersion") != "serving.kserve.io/v1beta1":
        problems.append(f"apiVersion: {doc.get('apiVersion')!r} is not serving.kserve.io/v1beta1")
    name = str(doc.get("metadata", {}).get("name", ""))
    if not re.match(_DNS_1035, name):
        problems.append(f"metadata.name: {name!r} is not a DNS-1035 label (KServe requires one)")
    predictor = doc.get("spec", {}).get("predictor")
    if not isinstance(predictor, dict):
        return [*problems, "spec.predictor: required"]
    containers = predictor.get("containers") or []
    if bool(predictor.get("model")) == bool(containers):
        problems.append("spec.predictor: needs exactly one of model or containers")
    if containers and containers[0].get("name") != "kserve-container":
        problems.append("spec.predictor.containers[0].name: KServe expects 'kserve-container'")
    low, high = predictor.get("minReplicas", 1), predictor.get("maxReplicas", 1)
    if isinstance(low, int) and isinstance(high, int) and high < low:
        problems.append(f"spec.predictor: maxReplicas {high} < minReplicas {low}")
    if containers:
        pod_spec = {k: v for k, v in predictor.items() if k not in _KSERVE_EXTENSION_KEYS}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name or "x"}, "spec": pod_spec}
        problems += [f"spec.predictor (as a PodSpec): {p}" for p in _schema_problems(pod, version)]
    return problems


def validate(docs: list[dict[str, Any]], version: str = K8S_VERSION) -> None:
    """Validate every manifest offline against Kubernetes ``version``'s schemas with unknown fields
    refused (kubernetes-validate, strict); the InferenceService CRD structurally (see above).

    Raises:
        ManifestInvalid: listing every failing document with its problem (kubernetes-validate reports
            the first schema violation of each document).
    """
    problems: list[str] = []
    for doc in docs:
        label = f"{doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"
        found = (
            _inference_service_problems(doc, version)
            if doc.get("kind") == "InferenceService"
            else _schema_problems(doc, version)
        )
        problems += [f"{label}: {p}" for p in found]
    if problems:
        raise ManifestInvalid(
            f"{len(problems)} problem(s) in the manifests (Kubernetes {version}, unknown fields refused):\n  "
            + "\n  ".join(problems)
            + "\nFix the template in deployments/kubernetes/ (or the parameters) and render again."
        )
