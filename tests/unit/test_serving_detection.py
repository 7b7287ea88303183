"""The model server with a real (tiny, untrained) torchvision detector exported to ONNX once per session:
``/v1/predict`` boxes in the original image's pixels (checked against a direct ONNX Runtime run on the same
decoded image), the v2 tensors and metadata, malformed requests, and Label Studio's ML backend protocol
(``/label-studio/health|setup|predict|webhook``) against small local HTTP stand-ins for Label Studio's file
serving and the Prefect API."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np
import pytest
from PIL import Image

from loopline.detections import detections_from_outputs, detector_input
from loopline.errors import ModelLoadError
from loopline.labeling.configs import render_label_config
from loopline.serving.app import create_app
from loopline.serving.detector import LoadedDetector
from loopline.serving.model import load_model
from loopline.serving.preprocess import decode_image
from loopline.serving.settings import ServingSettings
from tests.unit.test_serving_app import write_model

pytestmark = pytest.mark.unit

LABELS = ["one", "two"]
TOKEN = "ls-token-123"


def export_detector(folder: Path) -> Path:
    """An untrained fasterrcnn_mobilenet_v3_large_320_fpn (inputs resized to 64 inside) exported by the
    training stage's detector export, as ``fetch_version`` leaves a version."""
    import torch
    import torchvision

    from loopline.training.detection.onnx import export_detector_onnx

    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=len(LABELS) + 1, min_size=64, max_size=64
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on torchvision's detection code
        export_detector_onnx(model, folder / "model" / "model.onnx")
    (folder / "class_mapping.json").write_text(json.dumps({"task_type": "detection", "labels": LABELS}))
    return folder


@pytest.fixture(scope="session")
def detector_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_detector(tmp_path_factory.mktemp("detector") / "1")


@pytest.fixture(scope="session")
def detector(detector_folder: Path) -> LoadedDetector:
    model = load_model(detector_folder, "boxes", "1", threads=1)
    assert isinstance(model, LoadedDetector)
    return model


class OneVersion:
    def __init__(self, model: Any) -> None:
        self.model = model

    def resolve(self) -> str:
        return self.model.version

    def load(self, version: str) -> Any:
        return self.model


@asynccontextmanager
async def served(model: Any, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    values: dict[str, Any] = {"model_name": "boxes", "poll_seconds": 0, "max_wait_ms": 0, **overrides}
    app = create_app(ServingSettings(**values), OneVersion(model), initial=model)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def scene(width: int = 120, height: int = 80, seed: int = 3) -> Image.Image:
    """Bright rectangles on a dark noisy background (something for an untrained detector to box)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    pixels[10:40, 15:55] = (250, 240, 30)
    pixels[45:75, 70:115] = (30, 200, 250)
    return Image.fromarray(pixels)


def encoded(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def direct(detector: LoadedDetector, data: bytes, min_score: float) -> list[dict[str, Any]]:
    """The boxes of a plain ONNX Runtime run on the decoded image (no server)."""
    picture = decode_image(data, 10**8, 10**8)
    boxes, labels, scores = detector.session.run(
        ["boxes", "labels", "scores"], {"images": detector_input(picture)}
    )
    found = detections_from_outputs(boxes, labels, scores, LABELS, min_score=min_score)
    return [
        {"label": d.label, "score": d.score, "x": d.x, "y": d.y, "width": d.width, "height": d.height}
        for d in found
    ]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def assert_same_boxes(answer: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [b["label"] for b in answer] == [b["label"] for b in expected]
    for got, want in zip(answer, expected, strict=True):
        for key in ("score", "x", "y", "width", "height"):
            assert got[key] == pytest.approx(want[key], abs=1e-3), key


# -- loading ---------------------------------------------------------------------------------------------


def test_a_detector_loads_from_its_class_mapping_and_finds_boxes(detector: LoadedDetector) -> None:
    assert detector.labels == tuple(LABELS)
    found = direct(detector, encoded(scene()), min_score=0.0)
    assert found, "the untrained detector finds no box at all: the tests below would check nothing"
    assert all(0 <= b["x"] and b["x"] + b["width"] <= 120 + 1e-3 for b in found)
    assert all(0 <= b["y"] and b["y"] + b["height"] <= 80 + 1e-3 for b in found)
    assert any(b["x"] + b["width"] > 64 for b in found), "boxes must be in the 120 x 80 input's pixels"


def test_a_classifier_registered_as_a_detector_is_refused(tmp_path: Path) -> None:
    folder = write_model(tmp_path / "v", seed=1)
    (folder / "class_mapping.json").write_text(json.dumps({"task_type": "detection", "labels": LABELS}))
    with pytest.raises(ModelLoadError, match="detector, which takes one input 'images'"):
        load_model(folder, "boxes", "1", threads=1)


def test_a_detector_mapping_without_labels_is_refused(detector_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "v"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "model.onnx").write_bytes((detector_folder / "model" / "model.onnx").read_bytes())
    (folder / "class_mapping.json").write_text(json.dumps({"task_type": "detection", "labels": ["a", "a"]}))
    with pytest.raises(ModelLoadError, match="distinct names"):
        load_model(folder, "boxes", "1", threads=1)


# -- /v1/predict -----------------------------------------------------------------------------------------


def test_predict_answers_boxes_in_the_original_pixels(detector: LoadedDetector) -> None:
    data = encoded(scene())

    async def check() -> None:
        async with served(detector, min_score=0.0) as client:
            response = await client.post("/v1/predict", content=data, headers={"content-type": "image/png"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "boxes" and body["version"] == "1" and body["task_type"] == "detection"
        assert body["image"] == {"width": 120, "height": 80}
        assert response.headers["x-model-version"] == "boxes/1"
        assert_same_boxes(body["boxes"], direct(detector, data, 0.0))

    run(check())


def test_predict_leaves_out_boxes_below_the_score_threshold(detector: LoadedDetector) -> None:
    data = encoded(scene())
    everything = direct(detector, data, 0.0)
    threshold = float(np.median([b["score"] for b in everything]))

    async def check() -> None:
        async with served(detector, min_score=threshold) as client:
            response = await client.post("/v1/predict", content=data, headers={"content-type": "image/png"})
        kept = response.json()["boxes"]
        assert kept and len(kept) < len(everything)
        assert all(b["score"] >= threshold for b in kept)
        assert_same_boxes(kept, direct(detector, data, threshold))

    run(check())


def test_predict_applies_the_exif_orientation_before_detecting(detector: LoadedDetector) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show upright
    data = encoded(scene(), "JPEG", quality=95, exif=exif.tobytes())

    async def check() -> None:
        async with served(detector, min_score=0.0) as client:
            response = await client.post("/v1/predict", content=data, headers={"content-type": "image/jpeg"})
        body = response.json()
        assert body["image"] == {"width": 80, "height": 120}
        assert_same_boxes(body["boxes"], direct(detector, data, 0.0))

    run(check())


def test_predict_takes_one_image_per_request_for_a_detector(detector: LoadedDetector) -> None:
    data = encoded(scene())

    async def check() -> None:
        async with served(detector) as client:
            files = [("file", ("a.png", data, "image/png")), ("file", ("b.png", data, "image/png"))]
            two = await client.post("/v1/predict", files=files)
            broken = await client.post(
                "/v1/predict", content=b"not an image", headers={"content-type": "image/png"}
            )
        assert two.status_code == 400 and "one image per request" in two.json()["error"]
        assert broken.status_code == 400 and "not a readable image" in broken.json()["error"]

    run(check())


# -- v2 --------------------------------------------------------------------------------------------------


def test_v2_metadata_describes_the_detector_tensors(detector: LoadedDetector) -> None:
    async def check() -> None:
        async with served(detector) as client:
            body = (await client.get("/v2/models/boxes")).json()
        assert body["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [1, 3, -1, -1]}]
        assert body["outputs"] == [
            {"name": "boxes", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "labels", "datatype": "INT64", "shape": [-1]},
            {"name": "scores", "datatype": "FP32", "shape": [-1]},
        ]

    run(check())


def test_v2_infer_returns_the_detector_tensors_for_any_image_size(detector: LoadedDetector) -> None:
    picture = scene(96, 72)
    tensor = detector_input(picture)
    expected = detector.session.run(["boxes", "labels", "scores"], {"images": tensor})
    raw = np.asarray(picture, dtype=np.uint8)

    async def check() -> None:
        async with served(detector) as client:
            fp32 = {
                "name": "images",
                "shape": [1, 3, 72, 96],
                "datatype": "FP32",
                "data": tensor.ravel().tolist(),
            }
            uint8 = {
                "name": "images",
                "shape": [72, 96, 3],
                "datatype": "UINT8",
                "data": raw.ravel().tolist(),
            }
            answers = [
                await client.post("/v2/models/boxes/infer", json={"inputs": [given], "id": "r1"})
                for given in (fp32, uint8)
            ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["id"] == "r1" and body["model_version"] == "1"
            outputs = {o["name"]: o for o in body["outputs"]}
            assert outputs["labels"]["datatype"] == "INT64"
            assert outputs["boxes"]["shape"] == [len(expected[0]), 4]
            assert outputs["labels"]["data"] == expected[1].tolist()
            np.testing.assert_allclose(np.reshape(outputs["boxes"]["data"], (-1, 4)), expected[0], atol=1e-3)
            np.testing.assert_allclose(outputs["scores"]["data"], expected[2], atol=1e-4)

    run(check())


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"name": "images", "shape": [2, 3, 4, 4], "datatype": "FP32", "data": [0.5] * 96}, "one image per"),
        ({"name": "images", "shape": [1, 4, 4, 4], "datatype": "FP32", "data": [0.5] * 64}, "does not fit"),
        (
            {"name": "image", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [0.5] * 48},
            "one input, 'images'",
        ),
        ({"name": "images", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [0.5] * 47}, "needs 48"),
        ({"name": "images", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [9.0] * 48}, "in [0, 1]"),
        ({"name": "images", "shape": [1, 3, 4, 4], "datatype": "INT8", "data": [1] * 48}, "not supported"),
    ],
)
def test_v2_malformed_detector_requests_get_a_400_naming_the_problem(
    detector: LoadedDetector, tensor: dict[str, Any], message: str
) -> None:
    async def check() -> None:
        async with served(detector) as client:
            response = await client.post("/v2/models/boxes/infer", json={"inputs": [tensor]})
            unknown = await client.post(
                "/v2/models/boxes/infer",
                json={"inputs": [tensor], "outputs": [{"name": "logits"}]},
            )
        assert response.status_code == 400 and message in response.json()["error"]
        assert unknown.status_code == 400 and "Unknown output" in unknown.json()["error"]

    run(check())


# -- Label Studio's ML backend ---------------------------------------------------------------------------


@contextmanager
def fake_label_studio(files: dict[str, bytes]) -> Iterator[tuple[str, list[str]]]:
    """Serves ``files`` by the paths Label Studio uses (local files, cloud URIs resolved per task), only
    with the token; yields its URL and the paths asked for."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            if self.headers.get("authorization") != f"Token {TOKEN}":
                self.send_response(401)
                self.end_headers()
                return
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if url.path == "/data/local-files/":
                key = query["d"][0]
            elif url.path.endswith("/resolve/"):
                key = base64.urlsafe_b64decode(query["fileuri"][0]).decode()
            else:
                key = ""
            body = files.get(key)
            self.send_response(200 if body is not None else 404)
            self.send_header("content-length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", asked
    finally:
        server.shutdown()
        server.server_close()


CONFIG = render_label_config("detection", LABELS)


def test_ml_backend_health_and_setup_check_the_project_config(detector: LoadedDetector) -> None:
    async def check() -> None:
        async with served(detector) as client:
            health = await client.get("/label-studio/health")
            setup = await client.post(
                "/label-studio/setup", json={"project": "3.1700000000", "schema": CONFIG}
            )
            wrong = await client.post(
                "/label-studio/setup",
                json={"project": "3.1", "schema": render_label_config("detection", ["cat", "dog"])},
            )
            choices = await client.post(
                "/label-studio/setup", json={"schema": render_label_config("classification", LABELS)}
            )
        assert health.status_code == 200 and health.json()["status"] == "UP"
        assert setup.json() == {"model_version": "boxes/1"}
        assert wrong.status_code == 400
        assert "labels ['one', 'two']" in wrong.json()["error"]
        assert "missing ['one', 'two'], unexpected ['cat', 'dog']" in wrong.json()["error"]
        assert choices.status_code == 400 and "RectangleLabels" in choices.json()["error"]

    run(check())


def test_ml_backend_predicts_boxes_in_percent_for_images_label_studio_serves(
    detector: LoadedDetector,
) -> None:
    local, cloud = encoded(scene()), encoded(scene(64, 100, seed=5))
    files = {"images/a.png": local, "s3://bucket/data/b.png": cloud}
    tasks = [
        {"id": 7, "data": {"image": "/data/local-files/?d=images/a.png"}},
        {"id": 8, "data": {"image": "s3://bucket/data/b.png"}},
    ]

    async def check(url: str) -> dict[str, Any]:
        async with served(detector, min_score=0.0, label_studio_url=url, label_studio_token=TOKEN) as client:
            request = {"tasks": tasks, "label_config": CONFIG, "project": "3.1", "params": {"context": None}}
            response = await client.post("/label-studio/predict", json=request)
            missing = await client.post(
                "/label-studio/predict",
                json={
                    **request,
                    "tasks": [{"id": 9, "data": {"image": "/data/local-files/?d=images/none.png"}}],
                },
            )
        assert response.status_code == 200, response.text
        assert missing.status_code == 422 and "Task 9" in missing.json()["error"]
        return dict(response.json())

    with fake_label_studio(files) as (url, asked):
        body = run(check(url))
    assert "/tasks/8/resolve/?fileuri=" in " ".join(asked)
    assert body["model_version"] == "boxes/1"
    assert len(body["results"]) == 2
    for prediction, data, (width, height) in zip(
        body["results"], (local, cloud), ((120, 80), (64, 100)), strict=True
    ):
        expected = direct(detector, data, 0.0)
        assert prediction["model_version"] == "boxes/1"
        assert len(prediction["result"]) == len(expected) > 0
        assert prediction["score"] == pytest.approx(np.mean([b["score"] for b in expected]), abs=1e-4)
        for result, box in zip(prediction["result"], expected, strict=True):
            assert result["type"] == "rectanglelabels" and result["from_name"] == "label"
            assert result["to_name"] == "image"
            assert (result["original_width"], result["original_height"]) == (width, height)
            value = result["value"]
            assert value["rectanglelabels"] == [box["label"]]
            assert value["x"] == pytest.approx(100 * box["x"] / width, abs=1e-3)
            assert value["y"] == pytest.approx(100 * box["y"] / height, abs=1e-3)
            assert value["width"] == pytest.approx(100 * box["width"] / width, abs=1e-3)
            assert value["height"] == pytest.approx(100 * box["height"] / height, abs=1e-3)


def test_ml_backend_refuses_predictions_for_a_project_of_other_labels(detector: LoadedDetector) -> None:
    async def check() -> None:
        async with served(
            detector, label_studio_url="http://127.0.0.1:9", label_studio_token=TOKEN
        ) as client:
            response = await client.post(
                "/label-studio/predict",
                json={
                    "tasks": [{"id": 1, "data": {"image": "/x.png"}}],
                    "label_config": CONFIG.replace("two", "three"),
                },
            )
        assert response.status_code == 400 and "does not match" in response.json()["error"]

    run(check())


@contextmanager
def fake_prefect() -> Iterator[tuple[str, list[tuple[str, Any]]]]:
    """The two Prefect API routes the webhook uses: deployment by name, create a flow run."""
    calls: list[tuple[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            calls.append(("GET", self.path))
            if self.path == "/api/deployments/name/label-flow/next-round":
                self._answer(200, {"id": "dep-1"})
            else:
                self._answer(404, {"detail": "Deployment not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            calls.append(("POST " + self.path, body))
            self._answer(201, {"id": f"run-{len(calls)}"})

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/api", calls
    finally:
        server.shutdown()
        server.server_close()


def annotation_event(action: str, project: int, n: int = 1) -> dict[str, Any]:
    annotation: Any = [{"id": i} for i in range(n)] if action == "ANNOTATIONS_CREATED" else {"id": 1}
    return {"action": action, "project": {"id": project}, "annotation": annotation}


def test_webhook_counts_new_annotations_and_starts_a_round_at_the_threshold(detector: LoadedDetector) -> None:
    async def check(api: str, calls: list[tuple[str, Any]]) -> None:
        settings = {
            "round_deployment": "label-flow/next-round",
            "round_threshold": 4,
            "round_parameters": {"round": 2},
            "prefect_api_url": api,
        }
        async with served(detector, **settings) as client:
            answers = []
            for event in (
                annotation_event("ANNOTATION_CREATED", 3),
                annotation_event("ANNOTATION_UPDATED", 3),
                annotation_event("ANNOTATIONS_CREATED", 4, n=5),  # another project: its own count
                annotation_event("ANNOTATIONS_CREATED", 3, n=2),
                annotation_event("ANNOTATION_CREATED", 3),
            ):
                answers.append((await client.post("/label-studio/webhook", json=event)).json())
            for _ in range(500):
                if sum(c[0].startswith("POST") for c in calls) == 2:
                    break
                await asyncio.sleep(0.01)
        assert [a["pending"] for a in answers] == [1, 0, 5, 3, 4]
        assert [a["round_started"] for a in answers] == [False, False, True, False, True]

    with fake_prefect() as (api, calls):
        run(check(api, calls))
    posts = [c for c in calls if c[0].startswith("POST")]
    assert [c[0] for c in posts] == ["POST /api/deployments/dep-1/create_flow_run"] * 2
    assert {tuple(c[1]["tags"]) for c in posts} == {
        ("label-studio-webhook", "project-4"),
        ("label-studio-webhook", "project-3"),
    }
    assert all(c[1]["parameters"] == {"round": 2} for c in posts)


def test_webhook_without_a_deployment_only_counts(detector: LoadedDetector) -> None:
    async def check() -> None:
        async with served(detector, round_threshold=1) as client:
            answer = await client.post(
                "/label-studio/webhook", json=annotation_event("ANNOTATION_CREATED", 1)
            )
        assert answer.json() == {"counted": 1, "pending": 1, "round_started": False}

    run(check())


def test_ml_backend_routes_require_basic_auth_when_it_is_set(detector: LoadedDetector) -> None:
    good = "Basic " + base64.b64encode(b"studio:pw").decode()
    bad = "Basic " + base64.b64encode(b"studio:nope").decode()

    async def check() -> None:
        async with served(detector, label_studio_backend_auth="studio:pw") as client:
            missing = await client.get("/label-studio/health")
            wrong = await client.get("/label-studio/health", headers={"authorization": bad})
            right = await client.get("/label-studio/health", headers={"authorization": good})
            v1 = await client.get("/v2/health/ready")  # the model server's own routes are not affected
        assert missing.status_code == wrong.status_code == 401
        assert "Basic Authentication" in missing.json()["error"]
        assert right.status_code == 200 and v1.status_code == 200

    run(check())


def test_ml_backend_fetches_an_image_url_outside_label_studio_without_the_token(
    detector: LoadedDetector,
) -> None:
    data = encoded(scene())

    seen: list[str | None] = []

    class Files(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("authorization"))
            self.send_response(200)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    task = {"id": 3, "data": {"image": f"http://127.0.0.1:{elsewhere.server_port}/pics/a.png"}}

    async def check() -> dict[str, Any]:
        async with served(
            detector, min_score=0.0, label_studio_url="http://127.0.0.1:9", label_studio_token=TOKEN
        ) as c:
            response = await c.post("/label-studio/predict", json={"tasks": [task], "label_config": CONFIG})
        assert response.status_code == 200, response.text
        return dict(response.json())

    try:
        body = run(check())
    finally:
        elsewhere.shutdown()
        elsewhere.server_close()
    assert seen == [None]
    assert len(body["results"][0]["result"]) == len(direct(detector, data, 0.0)) > 0
