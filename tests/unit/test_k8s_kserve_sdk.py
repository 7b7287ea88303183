"""The rendered InferenceService against the kserve SDK's models (``V1beta1InferenceService``): built from
the manifest and dumped back, nothing may be dropped (the generated models drop unknown fields silently).

kserve cannot be installed beside the lock (kserve 0.20/0.21 need protobuf<7, the lock pins 7.36.2; 0.15
needs httpx<0.28), so the check runs in ``.venv-kserve`` (``scripts/setup.sh`` builds it from
``requirements/kserve.lock``), or the interpreter ``LOOPLINE_KSERVE_PYTHON`` names.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from loopline.deploy.kubernetes import ServingManifestParams, render_manifests

pytestmark = pytest.mark.unit
KSERVE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-kserve" / "bin" / "python"

# Runs under the kserve interpreter: kserve's models for kserve types, the kubernetes client's for the core
# types they embed (V1ObjectMeta, V1Container...); prints every field the round trip lost or changed.
ROUND_TRIP = r"""
import json, re, sys
import kserve.models
import kubernetes.client

k8s = kubernetes.client.ApiClient()

def build(data, kind):
    if data is None:
        return None
    if kind.startswith("list["):
        return [build(x, kind[5:-1]) for x in data]
    if kind.startswith("dict("):
        sub = re.match(r"dict\(([^,]*), (.*)\)", kind).group(2)
        return {k: build(v, sub) for k, v in data.items()}
    klass = getattr(kserve.models, kind, None)
    if klass is None:
        return k8s._ApiClient__deserialize(data, kind)
    return klass(**{a: build(data[klass.attribute_map[a]], t) for a, t in klass.openapi_types.items()
                    if klass.attribute_map[a] in data})

def dump(obj):
    if isinstance(obj, list):
        return [dump(x) for x in obj]
    if isinstance(obj, dict):
        return {k: dump(v) for k, v in obj.items()}
    if type(obj).__module__.startswith("kserve."):
        return {m: dump(getattr(obj, a)) for a, m in obj.attribute_map.items() if getattr(obj, a) is not None}
    return k8s.sanitize_for_serialization(obj)

def lost(a, b, path=""):
    if isinstance(a, dict):
        if not isinstance(b, dict):
            return [path]
        out = []
        for k, v in a.items():
            out += lost(v, b[k], f"{path}.{k}") if k in b else [f"{path}.{k}"]
        return out
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return [path]
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in lost(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]

doc = json.load(open(sys.argv[1]))
model = build(doc, "V1beta1InferenceService")
assert type(model.spec.predictor).__name__ == "V1beta1PredictorSpec"
print(json.dumps(lost(doc, dump(model))))
"""


def _lost(doc: dict[str, Any], tmp_path: Path) -> list[str]:
    path = tmp_path / "isvc.json"
    path.write_text(json.dumps(doc))
    python = os.environ.get("LOOPLINE_KSERVE_PYTHON") or str(KSERVE_PYTHON)
    assert Path(python).is_file(), f"{python} is missing: run scripts/setup.sh (it builds .venv-kserve)"
    done = subprocess.run([python, "-c", ROUND_TRIP, str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize("version", [None, "7"])
def test_the_kserve_sdk_models_keep_every_field_of_the_rendered_inference_service(
    version: str | None, tmp_path: Path
) -> None:
    params = ServingManifestParams(
        name="digits", namespace="ml", image="reg/serve:1", model_name="digits", version=version
    )
    [isvc] = render_manifests(params, "kserve")
    assert _lost(isvc, tmp_path) == []


def test_a_misspelt_field_is_what_the_round_trip_loses(tmp_path: Path) -> None:
    params = ServingManifestParams(name="digits", image="reg/serve:1", model_name="digits")
    [isvc] = render_manifests(params, "kserve")
    isvc["spec"]["predictor"]["nodeSelectr"] = {"gpu": "yes"}
    isvc["spec"]["predictor"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert sorted(_lost(isvc, tmp_path)) == [
        ".spec.predictor.containers[0].imagePullPolicyy",
        ".spec.predictor.nodeSelectr",
    ]
