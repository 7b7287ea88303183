"""What an installed wheel carries: the Kubernetes manifest templates (package data, so ``loopline k8s
render`` works outside a checkout), and dependencies the serving image satisfies (its ``pip check``)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from loopline.deploy.images import SERVE_PACKAGES

pytestmark = pytest.mark.unit
ROOT = Path(__file__).parents[2]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_wheel_holds_every_template_as_in_the_checkout(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: setuptools builds in the tree it is given (build/)
    for part in ("src", "deployments/kubernetes"):
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
        shutil.copytree(ROOT / part, source / part, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = tmp_path.glob("loopline-*.whl")
    templates = sorted((ROOT / "deployments" / "kubernetes").glob("*.j2"))
    assert len(templates) >= 7
    with zipfile.ZipFile(wheel) as archive:
        for template in templates:
            packaged = archive.read(f"loopline/deploy/k8s_templates/{template.name}")
            assert packaged == template.read_bytes(), template.name


def test_the_serving_extra_names_the_serving_images_packages_and_covers_the_base() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    serving = _names(project["optional-dependencies"]["serving"])
    assert serving == set(SERVE_PACKAGES)
    # pip check in the serving image checks the base requirements only: each must be there, pyyaml
    # through mlflow-skinny
    assert "pyyaml" in _names(metadata.requires("mlflow-skinny") or [])
    assert _names(project["dependencies"]) <= serving | {"pyyaml"}
