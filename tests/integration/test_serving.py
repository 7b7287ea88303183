"""``loopline serve`` against a real MLflow server: it resolves the champion, answers ready, predicts on a
PNG, and answers keep-alive requests at concurrency 1 without the ~40 ms delayed-ACK stall."""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from loopline.registry.registry import CHAMPION, move_alias, register_run
from loopline.services.process import free_port
from loopline.services.standalone import running_service
from tests.model_runs import logged_onnx_run
from tests.platform import ROOT

pytestmark = pytest.mark.integration

LOOPLINE = Path(sys.executable).parent / "loopline"


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import mlflow

    with running_service("mlflow", tmp_path_factory.mktemp("mlflow"), ROOT) as (spec, _):
        mlflow.set_tracking_uri(spec.url)
        client = mlflow.MlflowClient(spec.url)
        run_id = logged_onnx_run(tmp_path_factory.mktemp("run"), labels=("cat", "dog"))
        version = register_run(client, "served", run_id, {}, "# served in a test").version
        move_alias(client, "served", CHAMPION, version, "ci", "serve it")
        yield spec.url


def serve(tracking_uri: str, home: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env.update(LOOPLINE_HOME=str(home), LOOPLINE_MLFLOW_TRACKING_URI=tracking_uri)
    home.mkdir(exist_ok=True)
    log = (home / "serve.log").open("wb")
    return subprocess.Popen([str(LOOPLINE), "serve", *args], env=env, stdout=log, stderr=subprocess.STDOUT)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 90)).save(out, format="PNG")
    return out.getvalue()


def test_serve_answers_ready_predicts_and_keeps_latency_low(tracking_uri: str, tmp_path: Path) -> None:
    port = free_port()
    server = serve(tracking_uri, tmp_path, "--model", "served", "--alias", CHAMPION, "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=5) as client:
            deadline = time.monotonic() + 90
            while True:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
            assert (tmp_path / "cache" / "models" / "served" / "1").is_dir()

            image = png()
            answer = client.post("/v1/predict?k=2", content=image, headers={"Content-Type": "image/png"})
            assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "served/1"
            (prediction,) = answer.json()["predictions"]
            assert prediction["label"] in ("cat", "dog") and len(prediction["top_k"]) == 2

            timings = []
            for _ in range(50):  # one keep-alive connection, one request at a time
                started = time.perf_counter()
                response = client.post("/v1/predict", content=image, headers={"Content-Type": "image/png"})
                timings.append(time.perf_counter() - started)
                assert response.status_code == 200
            median_ms = statistics.median(timings) * 1000
            print(f"median /v1/predict latency at concurrency 1: {median_ms:.2f} ms")
            assert median_ms < 10, f"median {median_ms:.1f} ms: a delayed-ACK stall (TCP_NODELAY off)?"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_serve_names_a_missing_model_and_fails(tracking_uri: str, tmp_path: Path) -> None:
    server = serve(tracking_uri, tmp_path, "--model", "nope", "--port", str(free_port()))
    assert server.wait(timeout=60) == 1
    output = (tmp_path / "serve.log").read_text()
    assert "no registered model is named 'nope'" in output
