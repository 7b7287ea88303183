"""The kubernetes deploy target against a real MLflow registry and the in-process API stand-in
(tests/k8s_stub.py): v1 then v2 rolled out, a rerun that applies and records nothing, a v3 whose pods never
become ready refused with v2 applied again, a manifest the schema refuses, a failed smoke test, a rollback,
an undeploy, and a first deployment that fails leaving nothing behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from PIL import Image

from loopline.deploy.history import read_history
from loopline.deploy.k8s_target import KubernetesTarget
from loopline.deploy.kubernetes import ServingManifestParams
from loopline.deploy.smoke import SmokeCases, reference_cases
from loopline.registry.artifacts import fetch_model_files
from loopline.registry.registry import audit_trail, register_run
from loopline.settings import Settings
from tests.k8s_stub import FakeKubernetesApi, write_kubeconfig
from tests.model_runs import logged_onnx_run

pytestmark = pytest.mark.integration
NAME = "k8s-deployed"
RESOURCES = ("deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets")


@pytest.fixture
def not_a_model_server() -> Iterator[str]:
    """Ready on /v2/health/ready, but every infer request fails: a smoke test must refuse it."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/v2/health/ready" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def pictures() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(2)]


def served_args(stub: FakeKubernetesApi, role: str = "champion") -> list[str]:
    deployment = stub.objects[("deployments", "ml", f"digits-{role}")]
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def pinned(version: str) -> Any:
    """A stand-in predicate: the Deployment's pods serve ``version``."""
    return lambda obj: version in obj["spec"]["template"]["spec"]["containers"][0]["args"]


def test_deploy_rerun_refuse_roll_back_and_undeploy(
    tracking_uri: str, tmp_path: Path, stub: FakeKubernetesApi, api_client: Any, not_a_model_server: str
) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    v1, v2, v3 = (
        register_run(client, NAME, logged_onnx_run(tmp_path / str(i)), {}, "# a test model").version
        for i in range(1, 4)
    )
    settings = Settings(home=tmp_path / "home", mlflow_tracking_uri=tracking_uri, smoke_max_latency_ms=1000)

    def cases(version: str) -> SmokeCases:
        run_id = str(client.get_model_version(NAME, version).run_id)
        files = fetch_model_files(run_id, tmp_path / f"files-{version}")
        return reference_cases(pictures(), ["p0", "p1"], files.onnx, files.input_size)

    params = ServingManifestParams(
        name="digits", namespace="ml", image="registry.local/loopline-serve:abc", model_name=NAME
    )
    target = KubernetesTarget(settings, client, tracking_uri, NAME, cases, api_client, params, timeout=1.0)

    first = target.deploy(v1, who="ada")
    assert (first.state, first.version, first.target) == ("serving", v1, "kubernetes")
    assert first.url == "http://digits-champion.ml.svc.cluster.local"
    assert served_args(stub)[3:5] == ["--version", v1]
    assert all(stub.count(r) == 1 for r in RESOURCES)
    assert client.get_model_version_by_alias(NAME, "champion").version == v1
    assert client.get_model_version(NAME, v1).tags["deploy.champion.state"] == "serving"

    second = target.deploy(v2, who="ada", why="better")
    assert second.state == "serving" and served_args(stub)[3:5] == ["--version", v2]
    assert client.get_model_version_by_alias(NAME, "champion").version == v2

    rows, requests = len(read_history(client, NAME)), len(stub.requests)
    assert target.deploy(v2) == second  # a rerun: nothing applied, nothing recorded
    assert len(read_history(client, NAME)) == rows
    assert all(method == "GET" for method, _ in stub.requests[requests:])
    assert all(stub.count(r) == 1 for r in RESOURCES)

    stub.never_ready = pinned(v3)  # v3's pods never become ready
    stuck = target.deploy(v3, who="ada")
    assert stuck.state == "refused" and "RolloutTimeout" in stuck.reason
    assert f"v{v2} was applied again" in stuck.reason
    assert served_args(stub)[3:5] == ["--version", v2]
    assert client.get_model_version_by_alias(NAME, "champion").version == v2
    assert [(r.role, r.version, r.state) for r in target.status()] == [("champion", v2, "serving")]

    good = target.manifests
    bad = good("champion", v3)
    bad[0]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    target.manifests = lambda role, version: bad  # type: ignore[method-assign]
    requests = len(stub.requests)
    refused = target.deploy(v3)
    target.manifests = good  # type: ignore[method-assign]
    assert refused.state == "refused" and "ManifestInvalid" in refused.reason
    assert "'imagePullPolicyy' was unexpected" in refused.reason
    assert all(method == "GET" for method, _ in stub.requests[requests:])  # nothing reached the cluster

    stub.never_ready = lambda obj: False
    smoked = KubernetesTarget(
        settings, client, tracking_uri, NAME, cases, api_client, params, timeout=1.0,
        smoke_url=lambda role: not_a_model_server,
    )  # fmt: skip
    failed = smoked.deploy(v3, who="ada")
    assert failed.state == "refused" and failed.reason.startswith("smoke test")
    assert served_args(stub)[3:5] == ["--version", v2]

    back = target.rollback(who="grace")
    assert (back.version, back.state) == (v1, "serving") and served_args(stub)[3:5] == ["--version", v1]
    last = audit_trail(client, NAME)[-1]
    assert (last.alias, last.from_version, last.to_version, last.who) == ("champion", v2, v1, "grace")
    assert last.why == f"rollback from v{v2}"

    gone = target.undeploy("champion", who="grace")
    assert gone is not None and (gone.version, gone.state) == (v1, "stopped")
    assert all(stub.count(r) == 0 for r in RESOURCES)
    assert target.undeploy("champion") is None
    assert target.status() == []  # undeployed on purpose: not listed as down

    stub.never_ready = pinned(v3)
    lonely = target.deploy(v3, "challenger", who="ada")  # nothing served the role before
    assert lonely.state == "refused" and "served nothing before: deleted" in lonely.reason
    assert all(stub.count(r) == 0 for r in RESOURCES)

    assert [(r.version, r.role, r.state) for r in read_history(client, NAME)] == [
        (v1, "champion", "serving"),
        (v1, "champion", "replaced"),
        (v2, "champion", "serving"),
        (v3, "champion", "refused"),
        (v3, "champion", "refused"),
        (v3, "champion", "refused"),
        (v2, "champion", "replaced"),
        (v1, "champion", "serving"),
        (v1, "champion", "stopped"),
        (v3, "challenger", "refused"),
    ]


def test_the_kubernetes_target_is_chosen_by_name_from_the_kubeconfig_and_settings(
    tracking_uri: str, stub: FakeKubernetesApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    from loopline.deploy.k8s_apply import KubernetesApplyFailed
    from loopline.deploy.targets import make_target

    client = mlflow.MlflowClient(tracking_uri)
    version = register_run(client, "chosen", logged_onnx_run(tmp_path / "run"), {}, "# chosen").version
    settings = Settings(
        home=tmp_path, k8s_namespace="ml", k8s_name="by-name", serve_image="registry.local/serve:1"
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(KubernetesApplyFailed, match=r"No Kubernetes cluster is configured.*KUBECONFIG"):
        make_target("kubernetes", settings, client, tracking_uri, "chosen", lambda v: None)  # type: ignore[arg-type,return-value]
    write_kubeconfig(tmp_path / "kubeconfig", stub)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    target = make_target("kubernetes", settings, client, tracking_uri, "chosen", lambda v: None)  # type: ignore[arg-type,return-value]
    record = target.deploy(version, who="ada")
    assert (record.target, record.state, record.version) == ("kubernetes", "serving", version)
    deployment = stub.objects[("deployments", "ml", "by-name-champion")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.local/serve:1"
    assert [r.state for r in target.status()] == ["serving"]
