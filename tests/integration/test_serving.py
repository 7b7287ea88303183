"""``loopline serve`` against a real MLflow server: it resolves the champion, answers ready, predicts on a
PNG, and answers keep-alive requests at concurrency 1 without the ~40 ms delayed-ACK stall; with two
worker processes too, which then reload together and count their requests together."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from loopline.registry.registry import CHAMPION, move_alias, register_run
from loopline.services.process import free_port
from tests.latency import assert_no_delayed_ack_stall
from tests.model_runs import logged_onnx_run

pytestmark = pytest.mark.integration

LOOPLINE = Path(sys.executable).parent / "loopline"


@pytest.fixture(scope="module", autouse=True)
def served_model(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The model ``served``, registered on the shared MLflow server with its champion set."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    run_id = logged_onnx_run(tmp_path_factory.mktemp("run"), labels=("cat", "dog"))
    version = register_run(client, "served", run_id, {}, "# served in a test").version
    move_alias(client, "served", CHAMPION, version, "ci", "serve it")
    return tracking_uri


def serve(tracking_uri: str, home: Path, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "PROMETHEUS_"))}
    env.update(LOOPLINE_HOME=str(home), LOOPLINE_MLFLOW_TRACKING_URI=tracking_uri, **extra_env)
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
            assert_no_delayed_ack_stall(timings)
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_serve_names_a_missing_model_and_fails(tracking_uri: str, tmp_path: Path) -> None:
    server = serve(tracking_uri, tmp_path, "--model", "nope", "--port", str(free_port()))
    assert server.wait(timeout=60) == 1
    output = (tmp_path / "serve.log").read_text()
    assert "no registered model is named 'nope'" in output


def wait_ready(client: httpx.Client, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert server.poll() is None, log.read_text()
        try:
            if client.get("/v2/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_two_workers_share_the_port_reload_together_and_count_together(
    tracking_uri: str, tmp_path: Path
) -> None:
    import mlflow

    port, token = free_port(), "w0rkers"
    server = serve(
        tracking_uri,
        tmp_path,
        *("--model", "served", "--alias", CHAMPION, "--port", str(port), "--poll-seconds", "0"),
        LOOPLINE_SERVING_WORKERS="2",
        LOOPLINE_SERVING_ADMIN_TOKEN=token,
    )
    url, image = f"http://127.0.0.1:{port}", png()
    client = mlflow.MlflowClient(tracking_uri)
    first = client.get_model_version("served", "1")
    try:
        with httpx.Client(base_url=url, timeout=5) as keep_alive:
            wait_ready(keep_alive, server, tmp_path / "serve.log")
            deadline = time.monotonic() + 60
            while len(children(server.pid)) < 2:  # (spawn also leaves a resource tracker process)
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)

            timings = []
            for _ in range(50):  # one keep-alive connection: no delayed-ACK stall under workers either
                started = time.perf_counter()
                answer = keep_alive.post("/v1/predict", content=image, headers={"Content-Type": "image/png"})
                timings.append(time.perf_counter() - started)
                assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "served/1"
            assert_no_delayed_ack_stall(timings)

        for _ in range(40):  # a new connection each: the kernel hands them to either worker
            answer = httpx.post(f"{url}/v1/predict", content=image, headers={"Content-Type": "image/png"})
            assert answer.status_code == 200
        scraped = {httpx.get(f"{url}/metrics").text for _ in range(6)}  # whichever worker answers
        counts = {
            sample(text, "loopline_serving_requests_total", route="/v1/predict", status="200")
            for text in scraped
        }
        assert counts == {90.0}, counts  # 50 + 40, from every worker's point of view

        second = client.create_model_version("served", source=first.source, run_id=first.run_id).version
        move_alias(client, "served", CHAMPION, second, "ci", "reload both workers")
        reload = httpx.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert reload.status_code == 200 and reload.json()["outcome"] == "loaded", reload.text
        deadline, served = time.monotonic() + 30, set()
        while served != {f"served/{second}"}:  # the other worker follows within moments
            assert time.monotonic() < deadline, (served, (tmp_path / "serve.log").read_text())
            served = {
                httpx.post(f"{url}/v1/predict", content=image, headers={"Content-Type": "image/png"}).headers[
                    "X-Model-Version"
                ]
                for _ in range(20)
            }
            time.sleep(0.2)
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0, (tmp_path / "serve.log").read_text()
        move_alias(client, "served", CHAMPION, "1", "ci", "back to version 1")
    assert children(server.pid) == []


def sample(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += float(s.value)
    return total
