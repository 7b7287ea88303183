"""``loopline deploy``: every deployment in prefect.yaml (``prefect deploy --all``), then loopline's
automations and notification block (``blocks/automations.py``). Both steps are idempotent: a rerun updates
what changed and duplicates nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from loopline.errors import ServiceError
from loopline.services.platform import prefect_env, run_prefect_module
from loopline.settings import Settings


@dataclass(frozen=True)
class Deployed:
    deployments: list[str]
    automations: list[str]  # "created NAME", "updated NAME", "deleted NAME"; empty when nothing changed


def deploy_env(settings: Settings) -> dict[str, str]:
    """The environment prefect.yaml's ``{{ $VAR }}`` placeholders are filled from."""
    return {
        "LOOPLINE_TRAIN_IMAGE": "loopline-train:latest",  # the image of the k8s-gpu training deployment
        **os.environ,
        **prefect_env(settings),
        "LOOPLINE_DATA_ROOT": settings.resolved_data_root,
        "LOOPLINE_INCOMING_SOURCE": settings.resolved_incoming_source,
    }


def deploy_all(settings: Settings) -> Deployed:
    """Create or update every deployment, then the automations that act on their runs and events."""
    prefect = str(Path(sys.executable).parent / "prefect")
    result = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"],
        cwd=settings.resolved_project_root,
        env=deploy_env(settings),
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:  # all of Prefect's words, to see what went wrong
        raise ServiceError(f"`prefect deploy --all` failed:\n{output}")
    names = re.findall(r"Deployment '([^']+)' successfully (?:created|updated)", " ".join(output.split()))
    return Deployed(names, apply_automations(settings))


def apply_automations(settings: Settings) -> list[str]:
    """Run ``python -m blocks.automations`` against the settings' Prefect API; returns what changed."""
    output = run_prefect_module(settings, "blocks.automations", "Creating the Prefect automations")
    return [line.replace(" automation ", " ", 1) for line in output.splitlines() if line]
