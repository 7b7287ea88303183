"""prefect.yaml's train-model/k8s-gpu deployment runs in the training image from the project copy the image
holds, not from the checkout of whoever deployed it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).parents[2]
PROJECT_IN_IMAGE = "/opt/loopline/project"
SET_WORKDIR = "prefect.deployments.steps.set_working_directory"


def deployment(name: str, entrypoint: str) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    [found] = [d for d in config["deployments"] if d["name"] == name and d["entrypoint"] == entrypoint]
    return found  # type: ignore[no-any-return]


def test_k8s_gpu_pulls_nothing_from_the_host_and_runs_in_the_images_project() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    gpu = deployment("k8s-gpu", "flows/train.py:train_flow")
    # a deployment's own pull replaces the top-level one, which cds into the deployer's checkout
    assert "LOOPLINE_PROJECT_ROOT" in yaml.safe_dump(config["pull"])
    assert gpu["pull"] == [{SET_WORKDIR: {"directory": PROJECT_IN_IMAGE}}]
    assert "LOOPLINE_PROJECT_ROOT" not in yaml.safe_dump(gpu)
    variables = gpu["work_pool"]["job_variables"]
    assert gpu["work_pool"]["name"] == "k8s-gpu"
    assert variables["image"] == "{{ $LOOPLINE_TRAIN_IMAGE }}"
    assert variables["gpu_limit"] >= 1
    # the data root (and with it the trial checkpoints) must be one the pods reach: the deployer's setting
    assert variables["env"]["LOOPLINE_DATA_ROOT"] == "{{ $LOOPLINE_DATA_ROOT }}"
    assert "LOOPLINE_HOME" not in variables["env"]  # the image's own (/tmp/loopline), not the laptop's


def test_the_training_image_holds_the_project_where_the_pull_step_goes() -> None:
    dockerfile = (ROOT / "deployments" / "docker" / "train.Dockerfile").read_text()
    assert re.search(rf"^COPY project {PROJECT_IN_IMAGE}/?$", dockerfile, re.M)
    assert re.search(rf"^WORKDIR {PROJECT_IN_IMAGE}$", dockerfile, re.M)
    assert f"LOOPLINE_PROJECT_ROOT={PROJECT_IN_IMAGE}" in dockerfile


def test_the_staged_project_holds_the_entrypoint_and_every_folder_it_imports_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loopline.deploy import images

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "requirements.txt").write_text("")
    monkeypatch.setattr(images, "_run", lambda command, cwd: None)  # no pip download or wheel build
    if hasattr(images, "download_wheels"):
        monkeypatch.setattr(images, "download_wheels", lambda kind, root: wheels)
    context = images.stage_context("train", ROOT, tmp_path / "context")

    gpu = deployment("k8s-gpu", "flows/train.py:train_flow")
    path = gpu["entrypoint"].split(":")[0]
    assert (context / "project" / path).is_file()  # COPY project /opt/loopline/project
    imported = set(re.findall(r"^from (flows|tasks|blocks)\b", (ROOT / path).read_text(), re.M))
    assert imported and all((context / "project" / folder).is_dir() for folder in imported)


def test_each_pull_step_names_a_prefect_step_and_its_arguments() -> None:
    """What the worker does in the pod before running the flow: import each step by name and call it
    with its inputs (a misspelt step or argument fails there, after the image was pulled)."""
    from prefect.deployments.steps.core import _get_function_for_step

    for step in deployment("k8s-gpu", "flows/train.py:train_flow")["pull"]:
        [(name, inputs)] = step.items()
        function = _get_function_for_step(name, requires=inputs.pop("requires", None))
        inspect.signature(function).bind(**{k: v for k, v in inputs.items() if k != "id"})
        assert Path(inputs["directory"]).is_absolute()


def test_the_nightly_pipeline_is_scheduled_but_created_inactive_and_collects_the_incoming_source() -> None:
    nightly = deployment("nightly", "flows/pipeline.py:pipeline_flow")
    [schedule] = nightly["schedules"]
    assert schedule["active"] is False  # heavy work: turned on by hand (README "Run it on a schedule")
    assert schedule["cron"] == "0 2 * * *" and schedule["slug"] == "nightly"
    collect = nightly["parameters"]["params"]["collect"]
    assert collect["source"] == "{{ $LOOPLINE_INCOMING_SOURCE }}" and collect["production_sample"] is True
    from flows.pipeline import PipelineParameters

    params = PipelineParameters.model_validate(
        {**nightly["parameters"]["params"], "collect": {**collect, "source": "/incoming"}}
    )
    assert params.stop_when_unchanged  # a night with nothing new stops after collect


def test_the_monitor_runs_every_ten_minutes_and_is_on() -> None:
    monitor = deployment("local", "flows/monitor.py:monitor_flow")
    [schedule] = monitor["schedules"]
    assert schedule["interval"] == 600 and schedule.get("active", True) is True
    assert monitor["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}


@pytest.mark.parametrize("name", ["local", "nightly"])
def test_pipeline_runs_of_a_deployment_queue_one_behind_the_other(name: str) -> None:
    pipeline = deployment(name, "flows/pipeline.py:pipeline_flow")
    assert pipeline["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}


def test_prefect_builds_the_schedules_it_is_given() -> None:
    """What `prefect deploy` sends for each schedule (a misspelt key or a bad cron fails here)."""
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule

    nightly = _schedule_config_to_deployment_schedule(
        deployment("nightly", "flows/pipeline.py:pipeline_flow")["schedules"][0]
    )
    assert nightly["active"] is False and nightly["schedule"].cron == "0 2 * * *"
    monitor = _schedule_config_to_deployment_schedule(
        deployment("local", "flows/monitor.py:monitor_flow")["schedules"][0]
    )
    assert monitor["schedule"].interval.total_seconds() == 600
