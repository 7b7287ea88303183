"""``loopline status``: the whole loop on one screen — the platform's services, what serves in each role
with its share of users, the A/B experiment, the latest drift verdict, runs waiting for a person, and the
next scheduled runs.

Each part is read on its own; a part that cannot be read (a server down) becomes a line saying what is
wrong and how to fix it, and the others are still shown. Read-only: nothing is started or created (an
event store that does not exist yet is reported as "no A/B experiment", not created).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from loopline.deploy.base import DeploymentRecord
from loopline.rollout.events import ExperimentState
from loopline.services.platform import ServiceStatus
from loopline.settings import Settings


@dataclass(frozen=True)
class ScheduledRun:
    deployment: str
    run_name: str
    when: str  # ISO 8601, the expected start


@dataclass(frozen=True)
class Waiting:
    run_id: str
    run_name: str
    state: str  # Paused or Suspended
    since: str


@dataclass(frozen=True)
class DriftVerdict:
    verdict: str  # ok, drift, no_data
    when: str
    summary: str


@dataclass
class LoopStatus:
    model: str
    services: list[ServiceStatus] = field(default_factory=list)
    deployments: list[DeploymentRecord] = field(default_factory=list)
    experiment: ExperimentState | None = None
    challenger_share: float = 0.0
    drift: DriftVerdict | None = None
    waiting: list[Waiting] = field(default_factory=list)
    scheduled: list[ScheduledRun] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def gather(settings: Settings, model: str, target: str | None = None, scheduled_limit: int = 5) -> LoopStatus:
    """Read every part of the loop's status (see the module docstring)."""
    from loopline.services import platform

    status = LoopStatus(model)
    status.services = platform.status(settings)
    _part(status, "deployments", lambda: _deployments(settings, model, target))
    _part(status, "A/B experiment", lambda: _experiment(settings, model))
    _part(status, "drift", lambda: _drift(settings, model))
    _part(status, "Prefect", lambda: _prefect(settings, scheduled_limit))
    return status


def _part(status: LoopStatus, what: str, read: Any) -> None:
    try:
        for name, value in read().items():
            setattr(status, name, value)
    except Exception as exc:  # one part's trouble must not hide the others
        status.problems.append(f"{what}: {type(exc).__name__}: {exc}")


def _deployments(settings: Settings, model: str, target: str | None) -> dict[str, Any]:
    from loopline.deploy.targets import open_target

    found = open_target(
        target, settings, settings.resolved_mlflow_tracking_uri, model, settings.resolved_data_root
    ).status()
    return {"deployments": found}


def _experiment(settings: Settings, model: str) -> dict[str, Any]:
    url = settings.resolved_event_store_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return {}
    from loopline.rollout.router_state import challenger_share
    from loopline.rollout.service import open_store

    state = open_store(settings).latest_experiment(model)
    return {"experiment": state, "challenger_share": challenger_share(state) if state else 0.0}


def _drift(settings: Settings, model: str) -> dict[str, Any]:
    from loopline.monitoring.verdicts_store import latest_verdict

    found = latest_verdict(settings.resolved_event_store_url, model)  # a missing SQLite file: None
    if found is None:
        return {}
    what = ", ".join(found.drifted) or "nothing drifted"
    summary = f"{found.severity}: {what} ({found.requests} requests, {found.samples} images"
    summary += f", v{found.champion_version})" if found.champion_version else ")"
    return {"drift": DriftVerdict(found.verdict, _iso(found.at), summary)}


def _prefect(settings: Settings, limit: int) -> dict[str, Any]:
    from loopline.approvals import list_waiting

    api = settings.resolved_prefect_api_url
    waiting = [Waiting(r.id, r.name, r.state, _iso(r.since)) for r in reversed(list_waiting(api))]
    body = {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}, "sort": "EXPECTED_START_TIME_ASC"}
    answer = httpx.post(f"{api}/flow_runs/filter", json={**body, "limit": limit}, timeout=10)
    answer.raise_for_status()
    scheduled: list[dict[str, Any]] = answer.json()
    names = _deployment_names(api, {r["deployment_id"] for r in scheduled if r.get("deployment_id")})
    upcoming = [
        ScheduledRun(names.get(r.get("deployment_id") or "", "-"), r["name"], _iso(r["expected_start_time"]))
        for r in scheduled
    ]
    return {"waiting": waiting, "scheduled": upcoming}


def _deployment_names(api: str, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    answer = httpx.post(
        f"{api}/deployments/filter", json={"deployments": {"id": {"any_": sorted(ids)}}}, timeout=10
    )
    answer.raise_for_status()
    flows = httpx.post(f"{api}/flows/filter", json={}, timeout=10).json()
    flow_names = {f["id"]: f["name"] for f in flows}
    return {d["id"]: f"{flow_names.get(d['flow_id'], '?')}/{d['name']}" for d in answer.json()}


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    text = str(value)
    return text[:19].replace("T", " ") if text else "-"


def render(status: LoopStatus) -> list[str]:
    """The status as lines of text."""
    lines = [f"loopline — {status.model}", "", "platform:"]
    for s in status.services:
        lines.append(f"  {s.name:<14} {s.state:<10} {s.url}")
    lines += ["", "serving:"]
    by_role = {r.role: r for r in status.deployments}
    share = {"champion": 1.0 - status.challenger_share, "challenger": status.challenger_share}
    if status.experiment is None:
        share = {"champion": 1.0, "challenger": 0.0}
    for role in ("champion", "challenger"):
        record = by_role.get(role)
        if record is None:
            lines.append(f"  {role:<11} -")
            continue
        traffic = f"{share[role]:.0%} of users" if status.experiment is not None else "direct"
        where = f"{record.url}  ({record.target})"
        lines.append(f"  {role:<11} v{record.version:<4} {record.state:<10} {traffic:<13} {where}")
    experiment = status.experiment
    if experiment is not None:
        lines.append(
            f"  A/B {experiment.name}: {experiment.status}, challenger weight {experiment.weight:.0%}, "
            f"step {experiment.step}, updated {_iso(experiment.updated_at)}"
        )
    else:
        lines.append("  no A/B experiment")
    lines += ["", "drift:"]
    if status.drift is None:
        lines.append("  no monitor run yet (flow monitor-model)")
    else:
        lines.append(f"  {status.drift.verdict} at {status.drift.when}: {status.drift.summary}")
    lines += ["", "waiting for a decision:"]
    lines += [
        f"  {w.run_name} ({w.state} since {w.since}): loopline approve {w.run_id}" for w in status.waiting
    ]
    if not status.waiting:
        lines.append("  nothing")
    lines += ["", "next scheduled runs:"]
    lines += [f"  {r.when}  {r.deployment}  ({r.run_name})" for r in status.scheduled]
    if not status.scheduled:
        lines.append("  none (schedules are off until turned on: see the README)")
    if status.problems:
        lines += ["", "could not read:"] + [f"  {p}" for p in status.problems]
    return lines
