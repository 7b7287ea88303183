"""The A/B router on the kubernetes target against the in-process API stand-in (tests/k8s_stub.py): its
Deployment, Service and PodDisruptionBudget are validated, applied (a rerun patches, never duplicates),
rolled out and deleted; a SQLite event store, which its pods could not reach, is refused with the fix; the
kubeconfig and settings choose it by the target's name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from loopline.errors import ServiceError
from loopline.rollout.hosts import router_host
from loopline.rollout.k8s_router import KubernetesRouter
from loopline.settings import Settings
from tests.k8s_stub import FakeKubernetesApi, write_kubeconfig

pytestmark = pytest.mark.integration
STORE = "postgresql+psycopg://router:pw@events.db.svc:5432/events"
ROUTER_OBJECTS = (
    ("deployments", "ml", "shop-router"),
    ("services", "ml", "shop-router"),
    ("poddisruptionbudgets", "ml", "shop-router"),
)


def settings(tmp_path: Path, store: str | None = STORE) -> Settings:
    return Settings(
        home=tmp_path, k8s_namespace="ml", k8s_name="shop", k8s_secret="shop-secrets",
        serve_image="registry.local/loopline-serve:7", event_store_url=store, k8s_rollout_timeout=10,
    )  # fmt: skip


def test_the_router_deployment_is_applied_rerun_without_duplicates_and_deleted(
    tmp_path: Path, stub: FakeKubernetesApi, api_client: Any
) -> None:
    router = KubernetesRouter(settings(tmp_path), api_client, smoke_reachable=False)
    assert router.running() is None and router.await_state("stopped")  # none runs: nothing to wait for
    assert router.ensure("digits") == "http://shop-router.ml.svc.cluster.local"
    assert all(key in stub.objects for key in ROUTER_OBJECTS)
    deployment = stub.objects[ROUTER_OBJECTS[0]]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "registry.local/loopline-serve:7"
    assert container["args"] == ["route", "--model", "digits", "--host", "0.0.0.0", "--port", "8080"]
    [store_env] = [e for e in container["env"] if e["name"] == "LOOPLINE_EVENT_STORE_URL"]
    assert store_env["valueFrom"]["secretKeyRef"] == {
        "name": "shop-secrets",
        "key": "LOOPLINE_EVENT_STORE_URL",
    }
    assert "pw" not in yaml.safe_dump(deployment)  # the password stays in the Secret
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
    assert deployment["spec"]["replicas"] == 2
    service = stub.objects[ROUTER_OBJECTS[1]]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    router.ensure("digits")  # a rerun: patched in place
    assert [stub.count(r) for r, _, _ in ROUTER_OBJECTS] == [1, 1, 1]
    assert router.running() == "deployment/shop-router -n ml"
    assert router.await_state("stopped", timeout=0.1)  # outside the cluster: waits out the refresh
    assert router.stop() and not any(key in stub.objects for key in ROUTER_OBJECTS)
    assert not router.stop() and router.running() is None


def test_a_sqlite_event_store_is_refused_before_anything_reaches_the_cluster(
    tmp_path: Path, stub: FakeKubernetesApi, api_client: Any
) -> None:
    router = KubernetesRouter(settings(tmp_path, store=None), api_client)
    with pytest.raises(ServiceError, match=r"SQLite file.*LOOPLINE_EVENT_STORE_URL.*shop-secrets"):
        router.ensure("digits")
    assert not stub.objects


def test_the_kubernetes_router_is_chosen_by_the_targets_name_from_the_kubeconfig(
    tmp_path: Path, stub: FakeKubernetesApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_kubeconfig(tmp_path / "kubeconfig", stub)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    host = router_host("kubernetes", settings(tmp_path))
    assert isinstance(host, KubernetesRouter) and host.name == "kubernetes"
    host.ensure("digits")
    assert ROUTER_OBJECTS[0] in stub.objects
    assert router_host("local", settings(tmp_path)).name == "local"
    with pytest.raises(ValueError, match="Unknown deploy target 'swarm'"):
        router_host("swarm", settings(tmp_path))
