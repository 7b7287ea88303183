"""Doctor's checks of the Prefect API: it answers, its version suits this client, loopline's work pools
exist with a worker, and the blocks the flows load exist. REST calls only (the core never imports prefect).
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from loopline.doctor.checks import Check, failed, mask_url, ok, warning

# Block documents the flows load (type slugs of blocks/servers.py, saved under BLOCK_NAME by
# blocks/register.py; a unit test keeps these in step with the classes).
SERVER_BLOCKS = (
    "loopline-label-studio-server/loopline",
    "loopline-mlflow-server/loopline",
    "loopline-data-root/loopline",
)
REGISTER_FIX = (
    "save them from the settings: run `python -m blocks.register` in the loopline checkout with LOOPLINE_* "
    "and PREFECT_API_URL pointing at these servers (`loopline services up` does it on a laptop)"
)


@dataclass(frozen=True)
class PoolNeed:
    """A work pool loopline's deployments use; ``required``: flows wait forever without its worker."""

    name: str
    required: bool


def api_headers() -> dict[str, str]:
    """Prefect's own client credentials from the environment (Prefect Cloud's key or a server's basic
    auth string), so doctor sees what the flows see."""
    if key := os.environ.get("PREFECT_API_KEY"):
        return {"Authorization": f"Bearer {key}"}
    if auth := os.environ.get("PREFECT_API_AUTH_STRING"):
        return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    return {}


def is_this_machine(url: str) -> bool:
    """Whether ``url``'s host is this machine (loopback or its own host name): the local platform."""
    host = (httpx.URL(url).host or "").lower()
    return host in {"127.0.0.1", "localhost", "::1", "0.0.0.0", socket.gethostname().lower()}


def compare_versions(server: str, client: str) -> Check:
    """Same major.minor: ok. A newer server: a warning (Prefect servers serve older clients). A client
    newer than the server, or another major version: failed (its requests may not be understood)."""
    name = "prefect version"

    def major_minor(version: str) -> tuple[int, int] | None:
        parts = version.split(".")
        try:
            return int(parts[0]), int(parts[1])
        except (IndexError, ValueError):
            return None

    found, mine = major_minor(server), major_minor(client)
    pin = f"pip install 'prefect=={server}' here, or run a Prefect server {client}"
    if found is None or mine is None:
        return warning(name, f"cannot compare server {server!r} with client {client!r}", pin)
    if found == mine:
        return ok(name, f"server {server}, client {client}")
    if found[0] == mine[0] and found > mine:
        return warning(name, f"server {server} is newer than the client {client}", pin)
    return failed(name, f"server {server} does not match the client {client} (major.minor differ)", pin)


def pool_verdict(pool: PoolNeed, found: dict[str, Any] | None, workers: Sequence[dict[str, Any]]) -> Check:
    """A missing or paused pool, or one without an ONLINE worker: failed for a required pool, else a
    warning (flows sent there wait until a worker starts)."""
    name = f"work pool {pool.name}"
    bad = failed if pool.required else warning
    if found is None:
        return bad(
            name,
            f"the work pool {pool.name!r} does not exist",
            "create it: `loopline services up` on a laptop, or `prefect work-pool create "
            f"{pool.name} --type {'process' if pool.required else 'kubernetes'}` (see deployments/)",
        )
    kind = found.get("type", "?")
    if found.get("is_paused"):
        return bad(name, f"{kind} pool {pool.name!r} is paused", f"`prefect work-pool resume {pool.name}`")
    online = [w.get("name", "?") for w in workers if w.get("status") == "ONLINE"]
    if not online:
        waits = "runs sent there wait" if pool.required else "training sent there waits"
        return bad(
            name,
            f"{kind} pool {pool.name!r} has no ONLINE worker ({waits})",
            f"start a worker: `prefect worker start --pool {pool.name}` (on a cluster: its Deployment)",
        )
    return ok(name, f"{kind} pool, {len(online)} online worker(s): {', '.join(sorted(online))}")


def block_verdict(slug: str, status_code: int) -> Check:
    name = f"block {slug}"
    if status_code == 200:
        return ok(name, "exists")
    if status_code == 404:
        fix = REGISTER_FIX
        if slug not in SERVER_BLOCKS and not slug.startswith("local-file-system/"):
            block_type, _, block = slug.partition("/")
            fix = (
                f"create the {block_type} block {block!r} the flows store results in (Prefect UI → Blocks, "
                "or a script that saves it), or point LOOPLINE_RESULT_STORAGE_BLOCK at one that exists"
            )
        return failed(name, "does not exist", fix)
    return failed(name, f"the Prefect API answered {status_code}", "check the Prefect server's log")


def results_storage_verdict(slug: str, shared: bool) -> Check | None:
    """A local-file-system result block while flows run on other machines: a training run dispatched to
    another pod writes results the flow that waits for it cannot read. None when there is nothing to say."""
    if not shared or not slug.startswith("local-file-system/"):
        return None
    return warning(
        "result storage",
        f"{slug} is a folder on one machine, and the Prefect API is on another: results of runs on other "
        "pods cannot be read back",
        "set LOOPLINE_RESULT_STORAGE_BLOCK to a shared block (e.g. s3-bucket/loopline-results) and create it",
    )


def pools_to_check(used: Sequence[str], default_pool: str, optional: Sequence[str]) -> list[PoolNeed]:
    """The pools the server's deployments use are required (``default_pool`` when nothing is deployed
    yet: `loopline deploy` puts the flows there); ``optional`` ones (training on GPUs) are checked too,
    and a problem there is a warning."""
    required = sorted({*used} - {*optional}) if used else [default_pool]
    return [*(PoolNeed(p, required=True) for p in required), *(PoolNeed(p, required=False) for p in optional)]


def check_prefect(
    api_url: str,
    client_version: str,
    default_pool: str,
    optional_pools: Sequence[str],
    blocks: Sequence[str],
    timeout: float,
) -> list[Check]:
    """The Prefect API at ``api_url``: health, version, the work pools (those the deployments use, else
    ``default_pool``, and ``optional_pools``) with their workers, and ``blocks`` ("type-slug/name").
    When the API does not answer that is the one finding."""
    shown = mask_url(api_url)
    with httpx.Client(base_url=api_url.rstrip("/"), headers=api_headers(), timeout=timeout) as http:
        try:
            health = http.get("/health")
        except httpx.TransportError as exc:
            return [
                failed(
                    "prefect api",
                    f"{shown} is not reachable ({type(exc).__name__})",
                    "start it (`loopline services up`) or set LOOPLINE_PREFECT_API_URL to the team's "
                    "Prefect server (http://HOST:4200/api)",
                )
            ]
        if health.status_code in (401, 403):
            return [
                failed(
                    "prefect api",
                    f"{shown} refused the credentials ({health.status_code})",
                    "set PREFECT_API_AUTH_STRING (basic auth) or PREFECT_API_KEY (Prefect Cloud)",
                )
            ]
        if health.status_code != 200:
            return [
                failed(
                    "prefect api",
                    f"{shown} answered {health.status_code} to /health: not a Prefect API",
                    "LOOPLINE_PREFECT_API_URL must be a Prefect server's API, ending in /api",
                )
            ]
        checks = [ok("prefect api", f"{shown} answers")]
        version = http.get("/admin/version")
        checks.append(
            compare_versions(str(version.json()), client_version)
            if version.status_code == 200
            else warning("prefect version", f"/admin/version answered {version.status_code}", "")
        )
        deployments = http.post("/deployments/filter", json={"limit": 200})
        found_deployments = deployments.json() if deployments.status_code == 200 else []
        used = [d["work_pool_name"] for d in found_deployments if d.get("work_pool_name")]
        for pool in pools_to_check(used, default_pool, optional_pools):
            found = http.get(f"/work_pools/{pool.name}")
            workers = http.post(f"/work_pools/{pool.name}/workers/filter", json={})
            checks.append(
                pool_verdict(
                    pool,
                    found.json() if found.status_code == 200 else None,
                    workers.json() if workers.status_code == 200 else [],
                )
            )
        for slug in blocks:
            block_type, _, name = slug.partition("/")
            found = http.get(f"/block_types/slug/{block_type}/block_documents/name/{name}")
            checks.append(block_verdict(slug, found.status_code))
        return checks
