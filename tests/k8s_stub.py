"""A small in-process stand-in for the Kubernetes API server on 127.0.0.1 (no cluster can run on the
test machines, see ENVIRONMENT.md): create/read/patch/list/delete of Deployments, Services,
HorizontalPodAutoscalers, PodDisruptionBudgets and KServe InferenceServices (a custom resource),
answering 404 NotFound and 409 AlreadyExists with ``Status`` bodies as the real server does. A
Deployment's status is computed on read: rolled out when ``rollout_ready`` is true and
``never_ready(deployment)`` false, otherwise stuck with no new pod ready; an InferenceService's ``Ready``
condition follows the same two.

Merge patches (RFC 7386) are applied as such; strategic-merge patches are treated as merge patches.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# URL resource → (group/version prefix, kind, API group for messages)
RESOURCES = {
    "deployments": ("/apis/apps/v1", "Deployment", "apps"),
    "services": ("/api/v1", "Service", ""),
    "horizontalpodautoscalers": ("/apis/autoscaling/v2", "HorizontalPodAutoscaler", "autoscaling"),
    "poddisruptionbudgets": ("/apis/policy/v1", "PodDisruptionBudget", "policy"),
    "inferenceservices": ("/apis/serving.kserve.io/v1beta1", "InferenceService", "serving.kserve.io"),
}
_PATH = re.compile(
    r"^(?P<prefix>/api/v1|/apis/[a-z.]+/v[0-9a-z]+)/namespaces/(?P<ns>[^/]+)/(?P<resource>[a-z]+)"
    r"(?:/(?P<name>[^/]+))?(?P<status>/status)?$"
)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeKubernetesApi:
    """The objects the stand-in holds, the requests it saw, and how Deployments roll out."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (resource, namespace, name)
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.rollout_ready = True
        # Deployments whose pod template this matches never get a ready new pod (a bad version)
        self.never_ready: Callable[[dict[str, Any]], bool] = lambda obj: False
        self.lock = threading.Lock()
        self.url = ""

    def status_of(self, obj: dict[str, Any]) -> dict[str, Any]:
        replicas = obj["spec"].get("replicas", 1)
        generation = obj["metadata"]["generation"]
        if self.rollout_ready and not self.never_ready(obj):
            return {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            }
        # the new ReplicaSet's first pod never becomes ready; the old pods keep serving
        return {
            "observedGeneration": generation,
            "replicas": replicas + 1,
            "updatedReplicas": 1,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "unavailableReplicas": 1,
        }

    def inference_service_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        ready = self.rollout_ready and not self.never_ready(obj)
        condition = {"type": "Ready", "status": "True"} if ready else {
            "type": "Ready", "status": "False", "reason": "RevisionMissing"
        }  # fmt: skip
        return {"observedGeneration": obj["metadata"]["generation"], "conditions": [condition]}

    def count(self, resource: str) -> int:
        return sum(1 for key in self.objects if key[0] == resource)


def _failure(code: int, reason: str, message: str, name: str, group: str, resource: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": name, "group": group, "kind": resource},
        "code": code,
    }


class _Handler(BaseHTTPRequestHandler):
    api: FakeKubernetesApi

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def _route(self) -> tuple[str, str, str | None, bool] | None:
        match = _PATH.match(self.path.split("?")[0])
        if (
            not match
            or match["resource"] not in RESOURCES
            or RESOURCES[match["resource"]][0] != match["prefix"]
        ):
            self._send(404, _failure(404, "NotFound", f"the server could not find {self.path}", "", "", ""))
            return None
        return match["resource"], match["ns"], match["name"], bool(match["status"])

    def _handle(self, method: str) -> None:
        api = self.api
        api.requests.append((method, self.path.split("?")[0]))
        route = self._route()
        if route is None:
            return
        resource, namespace, name, _status = route
        prefix, kind, group = RESOURCES[resource]
        with api.lock:
            if name is None and method == "GET":
                items = [o for (r, ns, _), o in api.objects.items() if r == resource and ns == namespace]
                listing = {
                    "kind": f"{kind}List",
                    "apiVersion": prefix.split("/", 2)[-1],
                    "metadata": {"resourceVersion": "1"},
                    "items": [self._view(o) for o in items],
                }
                self._send(200, listing)
                return
            if name is None and method == "POST":
                self._create(resource, namespace, kind, group, prefix)
                return
            key = (resource, namespace, name or "")
            if key not in api.objects:
                message = f'{resource}{"." + group if group else ""} "{name}" not found'
                self._send(404, _failure(404, "NotFound", message, name or "", group, resource))
                return
            if method == "GET":
                self._send(200, self._view(api.objects[key]))
            elif method == "PATCH":
                self._patch(key)
            elif method == "DELETE":  # a Service answers with the deleted object, the others a Status
                gone = api.objects.pop(key)
                success = {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}
                self._send(200, gone if resource == "services" else success)

    def _view(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == "Deployment":
            return {**obj, "status": self.api.status_of(obj)}
        if obj["kind"] == "InferenceService":
            return {**obj, "status": self.api.inference_service_status(obj)}
        return obj

    def _create(self, resource: str, namespace: str, kind: str, group: str, prefix: str) -> None:
        body = self._body()
        name = body["metadata"]["name"]
        key = (resource, namespace, name)
        if key in self.api.objects:
            message = f'{resource}{"." + group if group else ""} "{name}" already exists'
            self._send(409, _failure(409, "AlreadyExists", message, name, group, resource))
            return
        body["metadata"].update(
            {"namespace": namespace, "uid": str(uuid.uuid4()), "resourceVersion": "1", "generation": 1,
             "creationTimestamp": "2026-11-28T00:00:00Z"}
        )  # fmt: skip
        body.pop("status", None)
        self.api.objects[key] = body
        self._send(201, self._view(body))

    def _patch(self, key: tuple[str, str, str]) -> None:
        old = self.api.objects[key]
        new = merge_patch(old, self._body())
        metadata = new["metadata"]
        metadata["resourceVersion"] = str(int(old["metadata"]["resourceVersion"]) + 1)
        if new.get("spec") != old.get("spec"):
            metadata["generation"] = old["metadata"]["generation"] + 1
        self.api.objects[key] = new
        self._send(200, self._view(new))

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


@contextmanager
def running_k8s_stub() -> Iterator[FakeKubernetesApi]:
    """Serve a fresh :class:`FakeKubernetesApi` on 127.0.0.1 and a free port; ``.url`` is its address."""
    api = FakeKubernetesApi()
    handler = type("Handler", (_Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="k8s-stub", daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_kubeconfig(path: Any, api: FakeKubernetesApi) -> None:
    """A kubeconfig at ``path`` whose current context is the stand-in."""
    import yaml

    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stub", "cluster": {"server": api.url}}],
        "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "tester"}}],
        "current-context": "stub",
    }
    path.write_text(yaml.safe_dump(kubeconfig))
