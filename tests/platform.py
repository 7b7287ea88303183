"""Run the local platform for a test: its own home, free loopback ports, always stopped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from loopline.services.process import free_port
from tests.api_probe import PROBE_FILE_VARIABLE, probing

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def platform_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "PREFECT_"))}
    prefect_port, mlflow_port, ls_port = free_port(), free_port(), free_port()
    env.update(
        LOOPLINE_HOME=str(home),
        LOOPLINE_PROJECT_ROOT=str(ROOT),
        LOOPLINE_PREFECT_PORT=str(prefect_port),
        LOOPLINE_MLFLOW_PORT=str(mlflow_port),
        LOOPLINE_LABEL_STUDIO_PORT=str(ls_port),
        PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api",
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


def run(command: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a command of the project's venv (loopline, prefect, ...) from the repository root."""
    executable = str(BIN / command[0])
    return subprocess.run(
        [executable, *command[1:]], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def running_platform(home: Path, extra_env: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    env = {**platform_env(home), **(extra_env or {})}
    try:
        result = run(["loopline", "services", "up"], env)
        assert result.returncode == 0, result.stdout + result.stderr
        probe_file = os.environ.get(PROBE_FILE_VARIABLE)
        with probing(env["PREFECT_API_URL"], Path(probe_file) if probe_file else None):
            yield env
    finally:
        print_timeline(env["PREFECT_API_URL"])
        run(["loopline", "services", "down"], env, timeout=120)


def print_timeline(api: str) -> None:
    """Every flow and task run of the platform, oldest first, with its duration: where an e2e spent its time
    (pytest shows it when the test fails)."""
    try:  # it runs in a `finally`: it must not hide the test's own failure
        flows = httpx.post(f"{api}/flow_runs/filter", json={"sort": "START_TIME_ASC", "limit": 200})
        tasks = httpx.post(f"{api}/task_runs/filter", json={"limit": 200})
        flows.raise_for_status()
        tasks.raise_for_status()
    except httpx.HTTPError as error:
        print(f"timeline: the Prefect API did not answer ({error})")
        return
    _print_runs(flows.json(), tasks.json())


def _print_runs(flows: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> None:
    names = {f["id"]: f["name"] for f in flows}
    rows = [(f["start_time"] or "", f"flow {f['name']}", f) for f in flows]
    for task in tasks:
        flow_name = names.get(task["flow_run_id"])
        rows.append((task["start_time"] or "", f"  task {task['name']} ({flow_name})", task))
    for start, name, run in sorted(rows, key=lambda row: row[0]):
        took = ""
        if start and run["end_time"]:
            took = f"{(datetime.fromisoformat(run['end_time']) - datetime.fromisoformat(start)).seconds} s"
        print(f"{start[11:19] or '--:--:--'} {took:>6} {run['state_type']:<9} {name}")
