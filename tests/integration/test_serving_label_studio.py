"""The model server as Label Studio's ML backend, end to end on loopback: a real Label Studio project
(RectangleLabels, images from Local Files storage) connected to the server's ``/label-studio`` URL gets the
detector's boxes when a task is opened, and the webhook Label Studio creates for the backend starts a flow
run of a real Prefect deployment once a new annotation arrives."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from loopline.labeling.configs import render_label_config
from loopline.labeling.studio import LabelStudio
from loopline.services.credentials import label_studio_credentials
from loopline.services.platform import SSRF_BANNED_EXCEPT_LOOPBACK
from loopline.services.process import free_port
from loopline.services.standalone import running_service
from loopline.serving.app import create_app
from loopline.serving.detector import LoadedDetector
from loopline.serving.model import load_model
from loopline.serving.settings import ServingSettings
from tests.platform import ROOT
from tests.unit.test_serving_detection import LABELS, OneVersion, direct, encoded, export_detector, scene

pytestmark = pytest.mark.integration

# Label Studio refuses ML backends on reserved networks (SSRF protection), loopback included by default.
LOOPBACK_ALLOWED = {
    "USE_DEFAULT_BANNED_SUBNETS": "false",
    "USER_ADDITIONAL_BANNED_SUBNETS": SSRF_BANNED_EXCEPT_LOOPBACK,
}


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabelStudio, Path, str]]:
    home = tmp_path_factory.mktemp("ls")
    with running_service("label-studio", home, ROOT, env=LOOPBACK_ALLOWED) as (spec, settings):
        token = label_studio_credentials(settings).token.get_secret_value()
        with LabelStudio(spec.url, token) as client:
            yield client, Path(settings.resolved_data_root), token


@contextmanager
def model_server(settings: ServingSettings, detector: LoadedDetector) -> Iterator[str]:
    """The model server (uvicorn, in a thread) on a free loopback port; its URL."""
    import uvicorn

    app = create_app(settings, OneVersion(detector), initial=detector)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def until(condition: Any, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError("condition not met in time")


def test_a_project_connected_to_the_server_gets_boxes_and_its_annotations_start_a_round(
    studio: tuple[LabelStudio, Path, str], prefect_api: str, tmp_path: Path
) -> None:
    client, data_root, token = studio
    picture = encoded(scene())
    (data_root / "images").mkdir(parents=True, exist_ok=True)
    (data_root / "images" / "scene.png").write_bytes(picture)
    flow = httpx.post(f"{prefect_api}/flows/", json={"name": "label-round"}).json()
    httpx.post(f"{prefect_api}/deployments/", json={"name": "next", "flow_id": flow["id"]}).raise_for_status()

    detector = load_model(export_detector(tmp_path / "1"), "boxes", "1", threads=1)
    assert isinstance(detector, LoadedDetector)
    settings = ServingSettings(
        model_name="boxes",
        port=free_port(),
        poll_seconds=0,
        min_score=0.0,
        label_studio_url=client.url,
        label_studio_token=token,
        round_deployment="label-round/next",
        round_threshold=1,
        round_parameters={"round": 2},
        prefect_api_url=prefect_api,
    )
    with model_server(settings, detector) as url:
        project = client.get_or_create_project(
            "ml-backend", "ML backend", render_label_config("detection", LABELS), 1
        )
        client.ensure_local_storage(project.id, str(data_root / "images"))
        (task_id,) = client.import_tasks(
            project.id, [{"data": {"image": "/data/local-files/?d=images/scene.png"}}]
        )
        client.request(
            "PATCH", f"/api/projects/{project.id}", json={"evaluate_predictions_automatically": True}
        )
        backend = client.request(
            "POST", "/api/ml", json={"url": f"{url}/label-studio", "project": project.id, "title": "loopline"}
        )
        assert backend["state"] == "CO", backend  # connected: /health and /setup answered

        client.request("GET", f"/api/tasks/{task_id}")  # an annotator opens the task
        predictions = client.request("GET", "/api/predictions/", params={"task": task_id})
        assert len(predictions) == 1
        (prediction,) = predictions
        expected = direct(detector, picture, 0.0)
        assert prediction["model_version"] == "boxes/1"
        assert len(prediction["result"]) == len(expected) > 0
        first = prediction["result"][0]["value"]
        assert first["rectanglelabels"] == [expected[0]["label"]]
        assert first["x"] == pytest.approx(100 * expected[0]["x"] / 120, abs=1e-3)

        me = client.whoami()["id"]
        client.annotate(task_id, prediction["result"], completed_by=me)

        def flow_runs() -> list[dict[str, Any]]:
            found = httpx.post(f"{prefect_api}/flow_runs/filter", json={}).json()
            return [run for run in found if "label-studio-webhook" in run["tags"]]

        (run,) = until(flow_runs)
    assert run["parameters"] == {"round": 2}
    assert f"project-{project.id}" in run["tags"]
