"""The Dockerfiles in deployments/docker/ and the image builder, checked without a Docker engine."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from loopline.deploy.images import (
    SERVE_PACKAGES,
    DockerEngineUnavailable,
    ImageBuildFailed,
    build_image,
    check_kind,
    requirements_subset,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deployments" / "docker"
LOCK = ROOT / "requirements" / "requirements.lock"
KNOWN = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "USER", "WORKDIR", "EXPOSE", "HEALTHCHECK",
         "ENTRYPOINT", "CMD", "LABEL", "STOPSIGNAL", "VOLUME", "SHELL", "ONBUILD"}  # fmt: skip
HEAVY = {"torch", "torchvision", "prefect", "prefect-kubernetes", "scipy", "scikit-learn", "optuna", "mlflow"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, out = "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not joined and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            joined += line[:-1] + " "
            continue
        joined += line
        keyword, _, args = joined.partition(" ")
        out.append((keyword, args.strip()))
        joined = ""
    assert not joined, f"{path.name} ends inside a continued line"
    return out


@pytest.mark.parametrize("kind", ["serve", "train"])
def test_the_dockerfile_parses_runs_as_non_root_and_installs_offline(kind: str) -> None:
    steps = instructions(DOCKER / f"{kind}.Dockerfile")
    unknown = [k for k, _ in steps if k not in KNOWN]
    assert not unknown, f"unknown instructions {unknown}"
    assert steps[0] == ("ARG", "BASE=python:3.11-slim") and steps[1] == ("FROM", "${BASE}")
    users = [args for k, args in steps if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert [i for i, (k, _) in enumerate(steps) if k == "USER"][-1] > max(
        i for i, (k, _) in enumerate(steps) if k == "RUN"
    ), "the last RUN must come before USER drops root"
    runs = " ".join(args for k, args in steps if k == "RUN")
    assert "--no-index" in runs and "--find-links /tmp/build/wheels" in runs
    assert "--no-deps /tmp/loopline-wheel/loopline-" in runs  # the package's own deps include torch


def test_the_serving_image_checks_health_exposes_8080_and_runs_loopline() -> None:
    steps = dict(instructions(DOCKER / "serve.Dockerfile"))
    assert "/v2/health/ready" in steps["HEALTHCHECK"] and steps["HEALTHCHECK"].count("CMD") == 1
    assert "LOOPLINE_SERVING_PORT" in steps["HEALTHCHECK"]  # the port the server binds, not a fixed one
    assert steps["EXPOSE"] == "8080"
    assert json.loads(steps["ENTRYPOINT"]) == ["loopline"]  # the manifests pass `serve --model …`
    assert "torch" not in (DOCKER / "serve.Dockerfile").read_text().replace("No torch", "")


def test_the_serving_requirements_are_pinned_by_the_lock_and_pull_in_no_torch() -> None:
    subset = requirements_subset("serve", LOCK)
    assert len(subset) == len(SERVE_PACKAGES) and all("==" in line for line in subset)
    locked = set(LOCK.read_text().split())
    assert set(subset) <= locked
    # the closure pip resolves (from the installed distributions' metadata) holds none of the heavy ones
    seen: set[str] = set()
    todo = [Requirement(line).name for line in subset]
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for spec in metadata.requires(name) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    assert not seen & HEAVY, f"the serving image would pull in {sorted(seen & HEAVY)}"
    assert "onnxruntime" in seen and "mlflow-skinny" in seen


def test_the_train_requirements_are_the_whole_lock() -> None:
    subset = requirements_subset("train", LOCK)
    assert any(line.startswith("torch==") for line in subset)
    assert any(line.startswith("prefect-kubernetes==") for line in subset)


def test_the_serving_code_imports_without_torch_or_prefect() -> None:
    blocked = sorted(HEAVY - {"mlflow"} | {"boto3", "pandas", "prefect_kubernetes", "sklearn"})
    script = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
import loopline.cli, loopline.serving.runner, loopline.serving.app, loopline.serving.model
from loopline.serving.model import fetch_version, load_model, resolve_version
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_docker_engine_is_a_named_error_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from loopline.deploy import images

    staged: list[str] = []
    monkeypatch.setattr(images, "stage_context", lambda *args: staged.append("downloaded"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(DockerEngineUnavailable, match=r"no Docker engine answers.*DOCKER_HOST"):
        build_image("serve")
    assert staged == []  # the engine is checked before any wheel is downloaded


def test_an_unknown_image_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ImageBuildFailed, match="valid kinds are serve, train"):
        check_kind("gpu")
    assert check_kind("serve") == "serve"
