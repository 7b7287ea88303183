"""The model server's HTTP layer over a tiny real ONNX model (Flatten + Gemm over 1 x 3 x 4 x 4 → 3 logits)
loaded by ``load_model``: every route, each 4xx, the version header, metrics, queue-full 503, hot reload
(in-flight work finishes on the old model; a broken version is refused)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from loopline.serving.app import create_app
from loopline.serving.model import LoadedModel, load_model, softmax
from loopline.serving.preprocess import preprocess_batch
from loopline.serving.settings import ServingSettings

pytestmark = pytest.mark.unit

LABELS = ["cat", "dog", "fox"]
TOKEN = "s3cret"


def write_model(folder: Path, seed: int) -> Path:
    """``folder`` as ``fetch_version`` leaves a version: model/model.onnx and class_mapping.json."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(48, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (folder / "model").mkdir(parents=True)
    onnx.save(model, str(folder / "model" / "model.onnx"))
    (folder / "class_mapping.json").write_text(json.dumps({"labels": LABELS, "input_size": 4}))
    return folder


class Gate:
    """Holds a model's predictions until opened (they run in the batcher's worker thread)."""

    def __init__(self) -> None:
        self.opened, self.entered = threading.Event(), threading.Event()

    def wrap(self, model: LoadedModel) -> LoadedModel:
        gate, session = self, model.session

        class GatedSession:
            def run(self, *args: Any) -> Any:
                gate.entered.set()
                assert gate.opened.wait(10), "the test never opened the gate"
                return session.run(*args)

        return dataclasses.replace(model, session=GatedSession())


class FolderLoader:
    """Versions from folders; ``selected`` plays the alias; ``gates`` hold chosen versions' predictions."""

    def __init__(self, folders: dict[str, Path], selected: str = "1") -> None:
        self.folders, self.selected = folders, selected
        self.gates: dict[str, Gate] = {}
        self.load_started = threading.Event()
        self.hold_load: threading.Event | None = None

    def resolve(self) -> str:
        return self.selected

    def load(self, version: str) -> LoadedModel:
        self.load_started.set()
        if self.hold_load is not None:
            self.hold_load.wait(10)
        model = load_model(self.folders[version], "pets", version, threads=1)
        return self.gates[version].wrap(model) if version in self.gates else model


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    broken = root / "3"
    (broken / "model").mkdir(parents=True)
    (broken / "model" / "model.onnx").write_bytes(b"not an onnx model")
    (broken / "class_mapping.json").write_text(json.dumps({"labels": LABELS, "input_size": 4}))
    return {"1": write_model(root / "1", 1), "2": write_model(root / "2", 2), "3": broken}


def settings(**overrides: Any) -> ServingSettings:
    values: dict[str, Any] = {"model_name": "pets", "poll_seconds": 0, "admin_token": TOKEN, "max_wait_ms": 0}
    return ServingSettings(**{**values, **overrides})


@asynccontextmanager
async def served(loader: FolderLoader, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings(**overrides), loader)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await until(lambda: app.state.host.current is not None or loader.hold_load is not None)
            yield client


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


def png(color: tuple[int, int, int], size: int = 4) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


def fp32(batch: np.ndarray, **extra: Any) -> dict[str, Any]:
    tensor = {"name": "image", "shape": list(batch.shape), "datatype": "FP32", "data": batch.tolist()}
    return {"inputs": [tensor], **extra}


def expected_logits(folder: Path, batch: np.ndarray) -> np.ndarray:
    return load_model(folder, "pets", "x", threads=1).predict(batch)


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_v2_metadata_health_and_infer(folders: dict[str, Path]) -> None:
    batch = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype(np.float32)

    async def body() -> None:
        async with served(FolderLoader(folders)) as client:
            assert (await client.get("/v2")).json()["name"] == "loopline"
            assert (await client.get("/v2/health/live")).status_code == 200
            ready = await client.get("/v2/health/ready")
            assert ready.status_code == 200 and ready.headers["X-Model-Version"] == "pets/1"
            meta = (await client.get("/v2/models/pets")).json()
            assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 4, 4]}]
            assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}]
            assert (await client.get("/v2/models/pets/versions/1")).json()["versions"] == ["1"]
            assert (await client.get("/v2/models/pets/versions/1/ready")).json()["ready"] is True

            answer = await client.post("/v2/models/pets/infer", json=fp32(batch, id="req-7"))
            assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "pets/1"
            result = answer.json()
            assert result["id"] == "req-7" and result["model_version"] == "1"
            assert [o["name"] for o in result["outputs"]] == ["logits"]
            logits = np.array(result["outputs"][0]["data"]).reshape(result["outputs"][0]["shape"])
            np.testing.assert_allclose(logits, expected_logits(folders["1"], batch), rtol=1e-5)

            # flat data, no batch dimension, both outputs, the versioned path
            one = {"name": "image", "shape": [3, 4, 4], "datatype": "FP32", "data": batch[0].ravel().tolist()}
            outputs = [{"name": "probabilities"}, {"name": "logits"}]
            flat = await client.post(
                "/v2/models/pets/versions/1/infer", json={"inputs": [one], "outputs": outputs}
            )
            probabilities, logits_1 = flat.json()["outputs"]
            assert probabilities["name"] == "probabilities" and probabilities["shape"] == [1, 3]
            assert sum(probabilities["data"]) == pytest.approx(1.0, abs=1e-5)
            np.testing.assert_allclose(logits_1["data"], logits[0], rtol=1e-5)

    run(body)


def test_uint8_pixels_are_normalised_like_preprocess(folders: dict[str, Path]) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 4, 4, 3), dtype=np.uint8)
    expected = expected_logits(folders["1"], preprocess_batch([Image.fromarray(p) for p in pixels], 4))

    async def body() -> None:
        async with served(FolderLoader(folders)) as client:
            for shape, data in (([2, 4, 4, 3], pixels), ([2, 3, 4, 4], pixels.transpose(0, 3, 1, 2))):
                tensor = {"name": "image", "shape": shape, "datatype": "UINT8", "data": data.tolist()}
                answer = await client.post("/v2/models/pets/infer", json={"inputs": [tensor]})
                assert answer.status_code == 200, answer.text
                got = np.array(answer.json()["outputs"][0]["data"]).reshape(2, 3)
                np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    run(body)


def test_v1_predict_raw_body_and_multipart_with_a_bad_image_named(folders: dict[str, Path]) -> None:
    red, blue = png((255, 0, 0)), png((0, 0, 255), size=9)
    pictures = [Image.open(io.BytesIO(red)).convert("RGB"), Image.open(io.BytesIO(blue)).convert("RGB")]
    expected = softmax(expected_logits(folders["1"], preprocess_batch(pictures, 4)))

    async def body() -> None:
        async with served(FolderLoader(folders)) as client:
            raw = await client.post("/v1/predict?k=2", content=red, headers={"Content-Type": "image/png"})
            assert raw.status_code == 200 and raw.headers["X-Model-Version"] == "pets/1"
            answer = raw.json()
            assert (answer["model_name"], answer["model_version"]) == ("pets", "1")
            (only,) = answer["predictions"]
            assert only["label"] == LABELS[int(np.argmax(expected[0]))] and len(only["top_k"]) == 2
            assert only["top_k"][0]["probability"] == pytest.approx(float(expected[0].max()), rel=1e-5)

            files = [
                ("file", ("red.png", red, "image/png")),
                ("file", ("broken.png", b"\x89PNG nonsense", "image/png")),
                ("file", ("blue.png", blue, "image/png")),
            ]
            multi = (await client.post("/v1/predict", files=files)).json()["predictions"]
            assert [p["image"] for p in multi] == ["red.png", "broken.png", "blue.png"]
            assert "broken.png" in multi[1]["error"] and "label" not in multi[1]
            assert multi[2]["label"] == LABELS[int(np.argmax(expected[1]))]
            assert len(multi[0]["top_k"]) == 3  # the default k

    run(body)


def test_predict_answers_alike_on_the_hot_path_and_through_fastapi(folders: dict[str, Path]) -> None:
    image = {"content": png((9, 99, 199)), "headers": {"Content-Type": "image/png"}}

    async def body() -> None:
        async with served(FolderLoader(folders)) as client:
            hot = await client.post("/v1/predict?k=2", **image)
            routed = await client.post("/v1/predict?k=2&trace=1", **image)  # FastAPI parses this one
            assert hot.status_code == routed.status_code == 200
            assert hot.json() == routed.json() and len(hot.json()["predictions"][0]["top_k"]) == 2
            assert hot.headers["X-Model-Version"] == routed.headers["X-Model-Version"] == "pets/1"
            refused = await client.post("/v1/predict?k=two", **image)
            assert refused.status_code == 400 and "query.k" in refused.json()["error"]
            versioned = await client.post(
                "/v2/models/pets/versions/1/infer", json=fp32(np.zeros((1, 3, 4, 4)))
            )
            assert versioned.status_code == 200
            text = (await client.get("/metrics")).text
            predict = {"route": "/v1/predict", "model_version": "1"}
            assert sample(text, "loopline_serving_requests_total", status="200", **predict) == 2
            assert sample(text, "loopline_serving_requests_total", status="400", **predict) == 1
            infer = {"route": "/v2/models/{name}/versions/{version}/infer", "model_version": "1"}
            assert sample(text, "loopline_serving_requests_total", status="200", **infer) == 1

    run(body)


def test_small_images_decode_at_once_large_ones_in_a_worker_thread(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import loopline.serving.predict as predict

    hops: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(func: Callable[..., Any], /, *args: Any) -> Any:
        hops.append(func.__name__)
        return await to_thread(func, *args)

    monkeypatch.setattr(predict.asyncio, "to_thread", counted)
    small, large = png((200, 30, 90), size=16), png((200, 30, 90), size=300)  # 300 x 300 > INLINE_PIXELS

    async def body() -> None:
        async with served(FolderLoader(folders)) as client:
            for data, expected_hops in ((small, []), (large, ["_decode_and_preprocess"])):
                hops.clear()
                answer = await client.post("/v1/predict", content=data, headers={"Content-Type": "image/png"})
                assert answer.status_code == 200 and hops == expected_hops
            # one colour, any size: the same pixels after resizing, so the same answer either way
            labels = set()
            for data in (small, large):
                answer = await client.post("/v1/predict", content=data, headers={"Content-Type": "image/png"})
                labels.add(answer.json()["predictions"][0]["label"])
            assert len(labels) == 1

    run(body)


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("POST", "/v2/models/pets/infer", {"content": b"{not json"}, 400, "not valid JSON"),
    ("POST", "/v2/models/pets/infer", {"json": {"inputs": []}}, 400, "inputs"),
    ("POST", "/v2/models/pets/infer", {"json": [1, 2]}, 400, "v2 protocol"),
    ("POST", "/v2/models/pets/infer", {"json": fp32(np.zeros((1, 3, 8, 8)))}, 400, "[N, 3, 4, 4]"),
    ("POST", "/v2/models/pets/infer", {"json": fp32(np.zeros((1, 4, 4, 3)))}, 400, "does not fit"),
    (
        "POST",
        "/v2/models/pets/infer",
        {"json": {"inputs": [{"name": "image", "shape": [1, 3, 4, 4], "datatype": "INT64", "data": [0]}]}},
        400,
        "INT64",
    ),
    (
        "POST",
        "/v2/models/pets/infer",
        {"json": {"inputs": [{"name": "image", "shape": [1, 3, 4, 4], "datatype": "FP32", "data": [1, 2]}]}},
        400,
        "holds 2 numbers",
    ),
    (
        "POST",
        "/v2/models/pets/infer",
        {
            "json": {
                "inputs": [{"name": "image", "shape": [3, 4, 4], "datatype": "FP32", "data": [[1], [1, 2]]}]
            }
        },
        400,
        "equal-length",
    ),
    (
        "POST",
        "/v2/models/pets/infer",
        {
            "json": {
                "inputs": [{"name": "image", "shape": [4, 4, 3], "datatype": "UINT8", "data": [300] * 48}]
            }
        },
        400,
        "0 to 255",
    ),
    (
        "POST",
        "/v2/models/pets/infer",
        {"json": fp32(np.zeros((1, 3, 4, 4)), outputs=[{"name": "x"}])},
        400,
        "x",
    ),
    (
        "POST",
        "/v2/models/pets/infer",
        {"content": b"{}", "headers": {"Content-Type": "text/plain"}},
        415,
        "json",
    ),
    ("POST", "/v2/models/cats/infer", {"json": fp32(np.zeros((1, 3, 4, 4)))}, 404, "serves 'pets'"),
    ("POST", "/v2/models/pets/versions/9/infer", {"json": fp32(np.zeros((1, 3, 4, 4)))}, 404, "version 1"),
    ("GET", "/v2/models/cats", {}, 404, "'cats'"),
    ("GET", "/v2/models/pets/versions/2/ready", {}, 404, "'2'"),
    ("GET", "/v3/nothing", {}, 404, "No route"),
    ("GET", "/v2/models/pets/infer", {}, 405, "GET"),
    (
        "POST",
        "/v1/predict",
        {"content": b"abc", "headers": {"Content-Type": "text/plain"}},
        415,
        "text/plain",
    ),
    ("POST", "/v1/predict", {"content": b"", "headers": {"Content-Type": "image/png"}}, 400, "'body'"),
    (
        "POST",
        "/v1/predict",
        {"content": b"GIF89a..", "headers": {"Content-Type": "image/gif"}},
        400,
        "readable",
    ),
    (
        "POST",
        "/v1/predict?k=0",
        {"content": png((1, 2, 3)), "headers": {"Content-Type": "image/png"}},
        400,
        "k",
    ),
    (
        "POST",
        "/v1/predict",
        {
            "content": b'--x\r\nContent-Disposition: form-data; name="field"\r\n\r\nno file\r\n--x--\r\n',
            "headers": {"Content-Type": "multipart/form-data; boundary=x"},
        },
        400,
        "no file",
    ),
    (
        "POST",
        "/v1/predict",
        {"content": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
        400,
        "no file",
    ),
    (
        "POST",
        "/v1/predict",
        {"content": b"--x", "headers": {"Content-Type": "multipart/form-data"}},
        400,
        "boundary",
    ),
    (
        "POST",
        "/v2/models/pets/infer",
        {
            "json": {
                "inputs": [{"name": "image", "shape": [3, 4, 4], "datatype": "FP32", "data": [None] * 48}]
            }
        },
        400,
        "NaN",
    ),
    (
        "POST",
        "/v1/predict",
        {"content": b"x" * 5000, "headers": {"Content-Type": "image/png"}},
        413,
        "at most 4096",
    ),
    ("POST", "/admin/reload", {}, 401, "Bearer"),
    ("POST", "/admin/reload", {"headers": {"Authorization": "Bearer wrong"}}, 401, "token"),
]


@pytest.mark.parametrize(("method", "path", "request_args", "status", "named"), BAD_REQUESTS)
def test_bad_input_is_a_4xx_that_names_the_problem_never_a_500(
    folders: dict[str, Path], method: str, path: str, request_args: dict[str, Any], status: int, named: str
) -> None:
    async def body() -> None:
        async with served(FolderLoader(folders), max_body_bytes=4096) as client:
            answer = await client.request(method, path, **request_args)
            assert answer.status_code == status, answer.text
            assert named in answer.json()["error"]
            assert answer.headers["X-Model-Version"] == "pets/1"

    run(body)


def test_body_limit_without_content_length_and_reload_disabled_without_token(
    folders: dict[str, Path],
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    async def body() -> None:
        async with served(FolderLoader(folders), max_body_bytes=4096, admin_token=None) as client:
            answer = await client.post("/v1/predict", content=chunks(), headers={"Content-Type": "image/png"})
            assert answer.status_code == 413 and "at most 4096" in answer.json()["error"]
            disabled = await client.post("/admin/reload", headers={"Authorization": "Bearer anything"})
            assert disabled.status_code == 403 and "LOOPLINE_SERVING_ADMIN_TOKEN" in disabled.json()["error"]

    run(body)


def test_metrics_count_requests_errors_latency_and_batches_by_version(folders: dict[str, Path]) -> None:
    async def body() -> None:
        async with served(FolderLoader(folders)) as client:
            for _ in range(2):
                await client.post("/v2/models/pets/infer", json=fp32(np.zeros((3, 3, 4, 4))))
            await client.post("/v2/models/pets/infer", content=b"{")
            text = (await client.get("/metrics")).text
            infer = {"route": "/v2/models/{name}/infer", "model_version": "1"}
            assert sample(text, "loopline_serving_requests_total", status="200", **infer) == 2
            assert sample(text, "loopline_serving_requests_total", status="400", **infer) == 1
            assert sample(text, "loopline_serving_errors_total", status="400", **infer) == 1
            assert sample(text, "loopline_serving_request_seconds_count", **infer) == 3
            assert sample(text, "loopline_serving_batch_size_sum", model_version="1") == 6
            assert (
                sample(text, "loopline_serving_model_loads_total", model_version="1", outcome="loaded") == 1
            )

    run(body)


def test_a_full_queue_answers_503_with_retry_after(folders: dict[str, Path]) -> None:
    loader = FolderLoader(folders)
    gate = loader.gates["1"] = Gate()
    request = fp32(np.zeros((1, 3, 4, 4)))

    async def body() -> None:
        async with served(loader, max_queue=1, max_batch_size=1) as client:
            first = asyncio.create_task(client.post("/v2/models/pets/infer", json=request))
            await until(gate.entered.is_set)  # the first is in the model, the queue empty
            second = asyncio.create_task(client.post("/v2/models/pets/infer", json=request))
            await until(lambda: client._transport.app.state.host.current.batcher.queued == 1)  # type: ignore[attr-defined]
            refused = await client.post("/v2/models/pets/infer", json=request)
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            assert "requests waiting" in refused.json()["error"]
            gate.opened.set()
            assert (await first).status_code == (await second).status_code == 200

    run(body)


def test_ready_only_after_the_model_loaded(folders: dict[str, Path]) -> None:
    loader = FolderLoader(folders)
    loader.hold_load = threading.Event()

    async def body() -> None:
        async with served(loader) as client:
            await until(loader.load_started.is_set)
            assert (await client.get("/v2/health/live")).status_code == 200
            assert (await client.get("/v2/health/ready")).status_code == 503
            early = await client.post("/v2/models/pets/infer", json=fp32(np.zeros((1, 3, 4, 4))))
            assert early.status_code == 503 and "still loading" in early.json()["error"]
            assert loader.hold_load is not None
            loader.hold_load.set()
            await until(lambda: client._transport.app.state.host.current is not None)  # type: ignore[attr-defined]
            assert (await client.get("/v2/health/ready")).status_code == 200

    run(body)


def test_reload_swaps_versions_in_flight_work_finishes_on_the_old_a_broken_one_is_refused(
    folders: dict[str, Path],
) -> None:
    loader = FolderLoader(folders)
    gate = loader.gates["1"] = Gate()
    batch = np.random.default_rng(2).normal(size=(1, 3, 4, 4)).astype(np.float32)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def body() -> None:
        async with served(loader) as client:
            host = client._transport.app.state.host  # type: ignore[attr-defined]
            in_flight = asyncio.create_task(client.post("/v2/models/pets/infer", json=fp32(batch)))
            await until(gate.entered.is_set)
            loader.selected = "2"
            reload = asyncio.create_task(client.post("/admin/reload", headers=auth))
            await until(lambda: host.current.model.version == "2")
            new = await client.post("/v2/models/pets/infer", json=fp32(batch))  # while v1 still works
            assert new.status_code == 200 and new.headers["X-Model-Version"] == "pets/2"
            assert not in_flight.done()
            gate.opened.set()
            old = await in_flight
            assert old.status_code == 200 and old.headers["X-Model-Version"] == "pets/1"
            np.testing.assert_allclose(
                old.json()["outputs"][0]["data"], expected_logits(folders["1"], batch)[0], rtol=1e-5
            )
            np.testing.assert_allclose(
                new.json()["outputs"][0]["data"], expected_logits(folders["2"], batch)[0], rtol=1e-5
            )
            assert (await reload).json() == {"outcome": "loaded", "version": "2", "previous": "1"}
            again = await client.post("/admin/reload", headers=auth)
            assert again.json()["outcome"] == "unchanged"

            loader.selected = "3"  # not an ONNX model: refused, version 2 keeps serving
            refused = await client.post("/admin/reload", headers=auth)
            assert refused.status_code == 409 and "Version 3 was refused" in refused.json()["error"]
            assert "ONNX Runtime cannot load" in refused.json()["error"]
            after = await client.post("/v2/models/pets/infer", json=fp32(batch))
            assert after.headers["X-Model-Version"] == "pets/2"
            text = (await client.get("/metrics")).text
            assert (
                sample(text, "loopline_serving_model_loads_total", model_version="3", outcome="refused") == 1
            )

    run(body)


def test_the_alias_poller_reloads_by_itself(folders: dict[str, Path]) -> None:
    loader = FolderLoader(folders)

    async def body() -> None:
        async with served(loader, poll_seconds=0.05) as client:
            loader.selected = "2"
            host = client._transport.app.state.host  # type: ignore[attr-defined]
            await until(lambda: host.current.model.version == "2")
            assert (await client.get("/v2/models/pets")).headers["X-Model-Version"] == "pets/2"

    run(body)
