"""Start one service of the local platform on its own (tests and benchmarks): a temporary home,
free loopback ports, stopped on exit."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from loopline.services import process
from loopline.services.platform import service_specs
from loopline.services.process import ProcessSpec, free_port
from loopline.settings import Settings


@contextmanager
def running_service(
    name: str,
    home: Path,
    project_root: Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Iterator[tuple[ProcessSpec, Settings]]:
    """Run service ``name`` until the block exits; ``env`` adds to (or replaces in) its environment,
    ``overrides`` are further Settings fields."""
    settings = Settings(
        home=home,
        project_root=project_root or Path(os.environ.get("LOOPLINE_PROJECT_ROOT", ".")),
        prefect_port=free_port(),
        mlflow_port=free_port(),
        label_studio_port=free_port(),
        **overrides,
    )
    spec = next(s for s in service_specs(settings) if s.name == name)
    if env:
        spec = replace(spec, env={**spec.env, **env})
    process.start(spec)
    try:
        yield spec, settings
    finally:
        process.stop(spec)
