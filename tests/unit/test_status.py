"""`loopline status` rendered from each part it reads, and a part that cannot be read named without hiding
the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.deploy.base import DeploymentRecord
from loopline.rollout.events import ExperimentState
from loopline.services.platform import ServiceStatus
from loopline.settings import Settings
from loopline.status import DriftVerdict, LoopStatus, ScheduledRun, Waiting, gather, render

pytestmark = pytest.mark.unit


def record(role: str, version: str) -> DeploymentRecord:
    return DeploymentRecord("local", "m", version, role, f"http://127.0.0.1:{version}", "pid 1", "serving",  # type: ignore[arg-type]
                            "2026-11-29T10:00:00+00:00", "ada")  # fmt: skip


def test_the_whole_loop_on_one_screen() -> None:
    experiment = ExperimentState("m-v2", "m", "1", "2", "u1", "u2", "seed", 0.5, 1, "running")
    status = LoopStatus(
        model="m",
        services=[ServiceStatus("mlflow", "http://127.0.0.1:5000", "healthy", 42)],
        deployments=[record("champion", "1"), record("challenger", "2")],
        experiment=experiment,
        challenger_share=0.5,
        drift=DriftVerdict("drift", "2026-11-29 10:05:00", "warning: input:brightness"),
        waiting=[Waiting("run-1", "brave-otter", "Suspended", "2026-11-29 09:00:00")],
        scheduled=[ScheduledRun("monitor-model/local", "calm-fox", "2026-11-29 10:10:00")],
    )
    text = "\n".join(render(status))
    assert "mlflow         healthy" in text
    assert "champion    v1    serving    50% of users" in text
    assert "challenger  v2    serving    50% of users" in text
    assert "A/B m-v2: running, challenger weight 50%, step 1" in text
    assert "drift at 2026-11-29 10:05:00: warning: input:brightness" in text
    assert "brave-otter (Suspended since 2026-11-29 09:00:00): loopline approve run-1" in text
    assert "2026-11-29 10:10:00  monitor-model/local  (calm-fox)" in text
    assert "could not read" not in text


def test_parts_that_cannot_be_read_are_named_and_the_rest_is_shown(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, prefect_api_url="http://127.0.0.1:9/api", mlflow_tracking_uri="http://127.0.0.1:9"
    )
    status = gather(settings, "m")
    text = "\n".join(render(status))
    assert [p.split(":")[0] for p in status.problems] == ["deployments", "Prefect"]
    assert "LOOPLINE_PREFECT_API_URL" in text and "LOOPLINE_MLFLOW_TRACKING_URI" in text
    assert "no A/B experiment" in text and "no monitor run yet" in text  # nothing created to say so
    assert not (tmp_path / "events.db").exists()
