"""Production data back into labeling, against real parts: a registered ONNX model served by a
`loopline serve` process, the router as a `loopline route` process keeping every served image
(LOOPLINE_ROUTER_SAMPLE_RATE=1), a real Label Studio server and the collect and label tasks under a
Prefect server. The images users sent reach Label Studio in the next round's project, each with the hash
the sample recorded and its prediction in the event store."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
from PIL import Image

from loopline.deploy.local import ProcessServers
from loopline.registry.registry import CHAMPION, move_alias, register_run
from loopline.rollout.events import ExperimentState
from loopline.rollout.service import ensure_router, stop_router
from loopline.rollout.store import EventStore
from loopline.services.credentials import label_studio_credentials
from loopline.services.process import free_port
from loopline.services.standalone import running_service
from loopline.settings import Settings
from tests.model_runs import logged_onnx_run
from tests.platform import ROOT

pytestmark = pytest.mark.integration
NAME = "sampled"


def digit_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def test_images_users_sent_reach_label_studio_in_the_next_round(
    tracking_uri: str, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow

    from blocks.servers import BLOCK_NAME, LabelStudioServer
    from loopline.labeling.studio import LabelStudio
    from tasks.collect import CollectParameters, collect_images
    from tasks.label import LabelParameters, import_round, prepare_project

    client = mlflow.MlflowClient(tracking_uri)
    digits = tuple(str(d) for d in range(10))
    version = register_run(client, NAME, logged_onnx_run(tmp_path / "run", labels=digits), {}, "#").version
    move_alias(client, NAME, CHAMPION, version, "test", "the champion")
    with running_service("label-studio", tmp_path / "home", ROOT) as (spec, ls_settings):
        env = {
            "LOOPLINE_HOME": str(ls_settings.resolved_home),
            "LOOPLINE_MLFLOW_TRACKING_URI": tracking_uri,
            "LOOPLINE_SERVE_PORT_CHAMPION": str(free_port()),
            "LOOPLINE_ROUTER_PORT": str(free_port()),
            "LOOPLINE_ROUTER_SAMPLE_RATE": "1",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        data_root = Path(settings.resolved_data_root)
        servers = ProcessServers(settings, tracking_uri, NAME)
        store = EventStore(settings.resolved_event_store_url)
        served = [digit_png(seed) for seed in range(3)]
        try:
            servers.start("champion")
            store.save_experiment(  # after a promotion: every user on the champion
                ExperimentState(
                    name=f"{NAME}-v{version}",
                    model=NAME,
                    champion_version=version,
                    challenger_version=version,
                    champion_url=servers.url("champion"),
                    challenger_url=servers.url("champion"),
                    seed="s",
                    weight=0.0,
                    step=0,
                    status="stopped",
                ),
                None,
            )
            router = ensure_router(settings, NAME)
            answers = [
                httpx.post(f"{router}/v1/predict", content=body, headers={"Content-Type": "image/png"})
                for body in [*served, served[0]]  # one user sends the same image twice
            ]
            assert [a.status_code for a in answers] == [200] * 4
        finally:
            assert stop_router(settings)  # flushes the sample and the routed requests
            servers.stop("champion")
        samples = store.list_samples()
        hashes = [hashlib.sha256(body).hexdigest() for body in served]
        assert sorted(s.content_hash for s, _ in samples) == sorted([*hashes, hashes[0]])  # one per request
        assert {s.request_id for s, _ in samples} == {a.headers["X-Request-Id"] for a in answers}
        assert all(r is not None and r.predicted_label in digits and r.confidence for _, r in samples)
        kept = sorted(p.name for p in (data_root / "production").iterdir())
        assert kept == sorted(f"{h}.png" for h in hashes)  # content-addressed: stored once

        next_round = tmp_path / "round-2" / "3"
        next_round.mkdir(parents=True)
        (next_round / "a.png").write_bytes(digit_png(99))
        token = label_studio_credentials(ls_settings).token

        @flow
        def next_round_labeling() -> set[str]:
            dataset = collect_images(CollectParameters(source=str(next_round.parent), production_sample=True))
            params = LabelParameters(labels=list(digits), budget=10)
            project = prepare_project(dataset, params)
            import_round(dataset, project, params, None)
            with LabelStudio(spec.url, token.get_secret_value()) as studio:
                return set(studio.task_hashes(project.id))

        LabelStudioServer(url=spec.url, api_key=token).save(BLOCK_NAME, overwrite=True)
        in_label_studio = next_round_labeling()
        assert set(hashes) <= in_label_studio  # every served image, once each
        assert len(in_label_studio) == len(hashes) + 1  # and the round's own image
