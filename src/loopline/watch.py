"""Follow a flow run from the terminal: one line per step as it finishes, the full log in a file.

``prefect deployment run --watch`` prints every log line of every task; a person following the loop
wants the stages, their states, how long they took and where to look. ``watch_run`` polls the Prefect
REST API (no Prefect import: the CLI stays fast), prints a line per task run and child flow run when it
reaches a final state or waits for a person, appends every log line of the run and its children to
``log_file``, and ends with the run's links (the Prefect UI, and every link artifact the run made).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loopline.errors import LooplineError

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class WatchError(LooplineError):
    """The flow run cannot be followed (no such run, the API is unreachable, or it timed out)."""


@dataclass(frozen=True)
class Step:
    id: str
    name: str
    state_type: str
    state_name: str
    seconds: float | None


def render_step(step: Step) -> str:
    """``  completed   wait-for-labels (46 s)``: Prefect's run-name suffix (``-be8``, ``-0``) dropped."""
    took = f" ({step.seconds:.0f} s)" if step.seconds is not None else ""
    name = re.sub(r"-(?:[0-9a-f]{3}|\d+)$", "", step.name)
    return f"  {step.state_name.lower():<11} {name}{took}"


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post(path, json=body)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()
    return result


def _steps(client: httpx.Client, run_ids: list[str]) -> list[Step]:
    tasks = _post(
        client,
        "/task_runs/filter",
        {"task_runs": {"flow_run_id": {"any_": run_ids}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 200},
    )
    return [
        Step(t["id"], t["name"], t["state_type"] or "", t["state_name"] or "", t.get("total_run_time"))
        for t in tasks
    ]


def _children(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    """Flow runs started inside ``run_id``: subflows and deployment runs it waited for."""
    tasks = _post(client, "/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [run_id]}}})
    if not tasks:
        return []
    return _post(
        client, "/flow_runs/filter", {"flow_runs": {"parent_task_run_id": {"any_": [t["id"] for t in tasks]}}}
    )


def watch_run(
    api_url: str,
    run_id: str,
    log_file: Path,
    echo: Callable[[str], None] = print,
    poll_seconds: float = 2.0,
    timeout: float = 24 * 3600,
) -> str:
    """Follow ``run_id`` until it ends; returns its final state type (COMPLETED, FAILED, …)."""
    ui = api_url.rstrip("/").removesuffix("/api")
    shown: dict[str, str] = {}
    log_after, logged = "1970-01-01T00:00:00Z", set[str]()
    deadline = time.monotonic() + timeout
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with httpx.Client(base_url=api_url.rstrip("/"), timeout=15) as client, log_file.open("a") as log:
        try:
            run = client.get(f"/flow_runs/{run_id}")
        except httpx.TransportError as exc:
            raise WatchError(
                f"The Prefect API at {api_url} is not reachable ({exc}). To fix this, start it "
                "(`loopline services up`) or set LOOPLINE_PREFECT_API_URL."
            ) from exc
        if run.status_code != 200:
            raise WatchError(f"There is no flow run {run_id!r} at {api_url} ({run.status_code}).")
        echo(f"{run.json()['name']}: {ui}/runs/flow-run/{run_id}  (full log: {log_file})")
        while True:
            try:
                state = client.get(f"/flow_runs/{run_id}").json()
                runs = [run_id, *(c["id"] for c in _children(client, run_id))]
                for step in _steps(client, runs):
                    if step.state_type in FINAL | {"PAUSED"} and shown.get(step.id) != step.state_name:
                        shown[step.id] = step.state_name
                        echo(render_step(step))
                logs = _post(
                    client,
                    "/logs/filter",
                    {
                        "logs": {"flow_run_id": {"any_": runs}, "timestamp": {"after_": log_after}},
                        "sort": "TIMESTAMP_ASC",
                        "limit": 200,
                    },
                )
            except (httpx.TransportError, httpx.HTTPStatusError, ValueError) as exc:
                log.write(f"(watch: {exc}; asking again)\n")  # a busy SQLite server: ask again
                time.sleep(poll_seconds)
                continue
            logs = [entry for entry in logs if entry["id"] not in logged]  # `after_` is inclusive
            for entry in logs:
                log.write(f"{entry['timestamp']} {entry.get('name', '')}: {entry['message']}\n")
                log_after = entry["timestamp"]
                logged.add(entry["id"])
            log.flush()
            key = f"{run_id}:{state['state_name']}"
            if state["state_type"] == "PAUSED" and key not in shown:
                shown[key] = state["state_name"]
                echo(f"  waiting     for a person: loopline approve {run_id}  (or Resume in the UI)")
            if state["state_type"] in FINAL and not logs:
                echo(f"{state['name']}: {state['state_name']}")
                for link in _links(client, runs):
                    echo(f"  {link}")
                return str(state["state_type"])
            if time.monotonic() > deadline:
                raise WatchError(f"Flow run {run_id} did not finish within {timeout:.0f} s.")
            time.sleep(poll_seconds)


LINK = re.compile(r"^\[[^\]]*\]\((https?://[^)\s]+)\)$")  # Prefect 3 keeps a link artifact as markdown


def _links(client: httpx.Client, run_ids: list[str]) -> list[str]:
    artifacts = _post(client, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": run_ids}}})
    found = ((a.get("key") or "link", LINK.match(str(a.get("data") or "").strip())) for a in artifacts)
    return sorted({f"{key}: {match.group(1)}" for key, match in found if match})
