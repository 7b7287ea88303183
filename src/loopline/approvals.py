"""Resume a flow run that waits at a typed approval (Prefect 3.9 has no resume command of its own)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from loopline.errors import ApprovalError


@dataclass(frozen=True)
class WaitingRun:
    id: str
    name: str
    state: str
    since: str = ""  # when it began waiting (ISO 8601)


def _unreachable(api_url: str, exc: Exception) -> ApprovalError:
    return ApprovalError(
        f"The Prefect API at {api_url} is not reachable ({exc}). To fix this, start it "
        "(`loopline services up`) or set LOOPLINE_PREFECT_API_URL."
    )


def list_waiting(api_url: str) -> list[WaitingRun]:
    """Flow runs that are paused or suspended (both have state type PAUSED)."""
    try:
        body = httpx.post(
            f"{api_url}/flow_runs/filter",
            json={"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}, "sort": "EXPECTED_START_TIME_DESC"},
            timeout=10,
        )
    except httpx.TransportError as exc:
        raise _unreachable(api_url, exc) from exc
    if body.status_code != 200:
        raise ApprovalError(
            f"The Prefect API at {api_url} answered {body.status_code} to a list of waiting runs: "
            f"{body.text[:300]}. To fix this, check that LOOPLINE_PREFECT_API_URL points at a Prefect "
            "server's /api (e.g. http://127.0.0.1:4200/api)."
        )
    return [
        WaitingRun(r["id"], r["name"], r["state_name"], (r.get("state") or {}).get("timestamp") or "")
        for r in body.json()
    ]


def send_decision(
    api_url: str, run_id: str, decision: Literal["approve", "reject"], comment: str, reviewer: str
) -> dict[str, Any]:
    """Resume ``run_id`` with a ``Review``; raise ``ApprovalError`` if it is not waiting or refuses."""
    try:
        response = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10)
    except httpx.TransportError as exc:
        raise _unreachable(api_url, exc) from exc
    if response.status_code in (404, 422):
        raise ApprovalError(
            f"There is no flow run {run_id!r} at {api_url}. `loopline approve --list` shows waiting runs."
        )
    if response.status_code != 200:
        raise ApprovalError(
            f"The Prefect API at {api_url} answered {response.status_code} for flow run {run_id}: "
            f"{response.text[:300]}. Nothing was sent."
        )
    run = response.json()
    state = run.get("state") or {}
    if state.get("type") != "PAUSED":
        raise ApprovalError(
            f"Flow run {run_id} ({run.get('name')}) is not waiting for approval: its state is "
            f"{state.get('name', 'unknown')}. Nothing was sent. `loopline approve --list` shows waiting runs."
        )
    run_input = {"decision": decision, "comment": comment, "reviewer": reviewer}
    # A Prefect server on SQLite answers 5xx ("database is locked") under load: retry those with back-off.
    for delay in (1, 2, 4, 8, 0):
        result = httpx.post(f"{api_url}/flow_runs/{run_id}/resume", json={"run_input": run_input}, timeout=30)
        if result.status_code < 500 or not delay:
            break
        time.sleep(delay)
    if result.status_code >= 400:
        raise ApprovalError(
            f"Prefect refused the decision for {run_id} ({result.status_code}): {result.text[:400]}"
        )
    body: dict[str, Any] = result.json()
    if body.get("status") != "ACCEPT":
        reason = (body.get("details") or {}).get("reason", body)
        raise ApprovalError(f"Prefect did not resume {run_id}: {reason}. The run is still waiting.")
    return body
