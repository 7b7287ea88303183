"""The embedded default platform: Prefect server + process worker, MLflow, Label Studio on 127.0.0.1.

State, logs and PID files live under the loopline home (``.loopline/``). ``up`` is idempotent (a running
service is left alone), ``down`` stops only what ``up`` started (by PID file), ``status`` reports each
service's URL and health.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from loopline.errors import LooplineError, ServiceError
from loopline.services import process
from loopline.services import team as team_tier
from loopline.services.credentials import ensure_personal_access_token, label_studio_credentials
from loopline.services.process import ProcessSpec
from loopline.settings import Settings

# Label Studio refuses storage endpoints and ML backends on reserved networks (SSRF protection). When the
# S3 endpoint is on this machine (MinIO, moto), or the platform binds loopback only (the laptop default:
# the model servers that answer Label Studio's ML backend calls are on 127.0.0.1 too), loopline lifts the
# ban for loopback only and keeps the rest of the list.
SSRF_BANNED_EXCEPT_LOOPBACK = (
    "0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,169.254.0.0/16,172.16.0.0/12,192.0.0.0/24,192.0.2.0/24,"
    "192.88.99.0/24,192.168.0.0/16,198.18.0.0/15,198.51.100.0/24,203.0.113.0/24,224.0.0.0/4,"
    "233.252.0.0/24,240.0.0.0/4,255.255.255.255/32,::/128,::ffff:0:0/96,64:ff9b::/96,100::/64,"
    "2001:0000::/32,2001:20::/28,2001:db8::/32,2002::/16,fc00::/7,fe80::/10,ff00::/8"
)

WORK_POOL = "local"
GPU_POOL = "k8s-gpu"
WORKER_NAME = "loopline-local-worker"

State = Literal["healthy", "unhealthy", "stopped"]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    url: str
    state: State
    pid: int | None


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _get_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    return httpx.get(url, headers=headers, timeout=2.0).status_code == 200


def prefect_env(settings: Settings) -> dict[str, str]:
    """Environment of every Prefect process of the local platform."""
    tier = {"LOOPLINE_TIER": settings.resolved_tier} if settings.tier else {}
    return {
        **tier,
        "PREFECT_API_URL": settings.resolved_prefect_api_url,
        "PREFECT_HOME": str(settings.resolved_home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "LOOPLINE_HOME": str(settings.resolved_home),
        "LOOPLINE_PROJECT_ROOT": str(settings.resolved_project_root),
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": settings.result_storage_block,
        # a 500 from the server while its database is busy or restarting is retried like a 502/503
        "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500",
    }


def _loopback_env(settings: Settings) -> dict[str, str]:
    s3 = httpx.URL(settings.s3_endpoint_url).host if settings.s3_endpoint_url else ""
    loopback = ("127.0.0.1", "localhost", "::1")
    if s3 in loopback or settings.host in loopback:
        return {
            "USE_DEFAULT_BANNED_SUBNETS": "false",
            "USER_ADDITIONAL_BANNED_SUBNETS": SSRF_BANNED_EXCEPT_LOOPBACK,
        }
    return {}


def _worker_online(settings: Settings) -> bool:
    response = httpx.post(
        f"{settings.resolved_prefect_api_url}/work_pools/{WORK_POOL}/workers/filter", json={}, timeout=2.0
    )
    return response.status_code == 200 and any(
        w.get("name") == WORKER_NAME and w.get("status") == "ONLINE" for w in response.json()
    )


def seed_label_studio_database(data_dir: Path, venv: Path) -> None:
    """Start a new Label Studio data dir from the empty, fully migrated database that setup.sh built for
    this Label Studio install (``migrated-db.sqlite3`` in its venv): the first start then takes seconds,
    not the ~30 s of migrations. An existing database, or a venv without the file, is left alone."""
    database, template = data_dir / "label_studio.sqlite3", venv / "migrated-db.sqlite3"
    if database.exists() or not template.exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = database.with_suffix(".partial")
    shutil.copyfile(template, partial)
    partial.replace(database)


def service_specs(settings: Settings) -> list[ProcessSpec]:
    """The four services in start order (after the team tier's PostgreSQL and S3 server, on that tier)."""
    home = settings.resolved_home
    team = settings.resolved_tier == "team"
    host = settings.host
    api = settings.resolved_prefect_api_url
    creds = label_studio_credentials(settings)
    ls_url = f"http://{host}:{settings.label_studio_port}"
    data_root = settings.resolved_data_root
    files_root = data_root if not data_root.startswith("s3://") else str(home / "label-studio" / "files")
    ls_venv = settings.resolved_project_root / ".venv-labelstudio"
    ls_bin = ls_venv / "bin" / "label-studio"
    ls_data = home / "label-studio" / "data"
    mlflow_dir = home / "mlflow"
    mlflow_store = [
        "--backend-store-uri",
        f"sqlite:///{mlflow_dir / 'mlflow.db'}",
        "--artifacts-destination",
        str(mlflow_dir / "artifacts"),
    ]
    mlflow_env: dict[str, str] = {}
    prefect_database: dict[str, str] = {}
    label_studio_database = {"DJANGO_DB": "sqlite"}
    if team:
        mlflow_store, mlflow_env = team_tier.mlflow_team_args(settings)
        label_studio_database = team_tier.label_studio_team_env(settings)
        prefect_database = {
            "PREFECT_API_DATABASE_CONNECTION_URL": settings.team_database_url("prefect", driver="asyncpg")
        }
    return [
        *(team_tier.team_specs(settings) if team else []),
        ProcessSpec(
            name="prefect-server",
            command=[
                _bin("prefect"),
                "server",
                "start",
                "--host",
                host,
                "--port",
                str(settings.prefect_port),
            ],
            state_dir=home,
            url=f"http://{host}:{settings.prefect_port}",
            health=lambda: _get_ok(f"{api}/health"),
            env={**prefect_env(settings), **prefect_database},
            port=settings.prefect_port,
            host=host,
        ),
        ProcessSpec(
            name="prefect-worker",
            command=[
                _bin("prefect"),
                "worker",
                "start",
                "--pool",
                WORK_POOL,
                "--type",
                "process",
                "--name",
                WORKER_NAME,
            ],
            state_dir=home,
            url=f"{api} (pool {WORK_POOL})",
            health=lambda: _worker_online(settings),
            env={
                **prefect_env(settings),
                "PREFECT_WORKER_QUERY_SECONDS": "2",
                "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            },
            cwd=settings.resolved_project_root,
            stop_signals=(signal.SIGTERM, signal.SIGINT),
            start_timeout=60,
        ),
        ProcessSpec(
            name="mlflow",
            command=[
                _bin("mlflow"),
                "server",
                "--host",
                host,
                "--port",
                str(settings.mlflow_port),
                *mlflow_store,
                "--serve-artifacts",
                "--workers",
                "1",
            ],
            state_dir=home,
            url=f"http://{host}:{settings.mlflow_port}",
            health=lambda: _get_ok(f"http://{host}:{settings.mlflow_port}/health"),
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **mlflow_env},
            port=settings.mlflow_port,
            host=host,
        ),
        ProcessSpec(
            name="label-studio",
            command=[
                str(ls_bin),
                "start",
                "--no-browser",
                "--internal-host",
                host,
                "--port",
                str(settings.label_studio_port),
            ],
            state_dir=home,
            url=ls_url,
            # Up once it answers: either kind of token works from then on (the user is made before).
            health=lambda: _get_ok(f"{ls_url}/health/"),
            env={
                "HOME": str(home / "label-studio" / "home"),
                "LABEL_STUDIO_BASE_DATA_DIR": str(ls_data),
                **label_studio_database,
                "LABEL_STUDIO_USERNAME": creds.username,
                "LABEL_STUDIO_PASSWORD": creds.password.get_secret_value(),
                "LABEL_STUDIO_USER_TOKEN": creds.legacy_token.get_secret_value(),
                # a team's Label Studio has legacy tokens off: loopline uses a personal access token there
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "false" if team else "true",
                "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
                "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": files_root,
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "LATEST_VERSION_CHECK": "false",
                "COLLECT_ANALYTICS": "false",
                **_loopback_env(settings),
            },
            port=settings.label_studio_port,
            host=host,
            start_timeout=180,
            prepare=None if team else lambda: seed_label_studio_database(ls_data, ls_venv),
        ),
    ]


def ensure_work_pools(settings: Settings) -> None:
    """The process pool ``local`` (served by the local worker) and the ``k8s-gpu`` Kubernetes pool with
    loopline's GPU job template (served by a Kubernetes worker on a cluster; idle locally)."""
    api = settings.resolved_prefect_api_url
    template_path = settings.resolved_project_root / "deployments" / "k8s-gpu" / "base-job-template.json"
    pools = [
        {"name": WORK_POOL, "type": "process", "description": "loopline local process pool"},
        {
            "name": GPU_POOL,
            "type": "kubernetes",
            "description": "loopline GPU training on Kubernetes",
            "base_job_template": json.loads(template_path.read_text()),
        },
    ]
    for pool in pools:
        response = httpx.post(f"{api}/work_pools/", json=pool, timeout=10.0)
        if response.status_code == 409 and "base_job_template" in pool:  # keep the template current
            response = httpx.patch(
                f"{api}/work_pools/{pool['name']}",
                json={"base_job_template": pool["base_job_template"]},
                timeout=10.0,
            )
        if response.status_code not in (200, 201, 204, 409):
            raise ServiceError(
                f"Could not create the work pool {pool['name']!r}: {response.status_code} {response.text}"
            )


def run_prefect_module(settings: Settings, module: str, what: str) -> str:
    """``python -m MODULE`` in the project against the settings' Prefect API; its output.

    Raises:
        ServiceError: it failed (``what`` failed, with the end of its error output)."""
    result = subprocess.run(
        [sys.executable, "-m", module],
        cwd=settings.resolved_project_root,
        env={**os.environ, **prefect_env(settings)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise ServiceError(f"{what} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def register_blocks(settings: Settings) -> None:
    """Save the Prefect blocks that point flows at the local services (blocks/register.py)."""
    run_prefect_module(settings, "blocks.register", "Saving the Prefect blocks")


def _check_prerequisites(settings: Settings) -> None:
    root = settings.resolved_project_root
    if not (root / "flows").is_dir() or not (root / ".venv-labelstudio" / "bin" / "label-studio").exists():
        raise ServiceError(
            f"{root} is not a set-up loopline checkout (flows/ and .venv-labelstudio/ are needed). To fix "
            "this, run `bash scripts/setup.sh` in the checkout, then run loopline from there "
            "(or set LOOPLINE_PROJECT_ROOT)."
        )


def up(settings: Settings) -> list[ServiceStatus]:
    """Start every service that is not running (leave running ones alone) and wait until all are healthy.

    The servers start side by side; the worker starts once the Prefect server is up and has its pool.
    A service that fails is stopped again (if this call started it) and reported with its log.
    """
    _check_prerequisites(settings)
    specs = {s.name: s for s in service_specs(settings)}
    launched: dict[str, tuple[int, bool]] = {}
    try:
        if settings.resolved_tier == "team":
            for name in ("postgres", "s3"):
                launched[name] = process.launch(specs[name])
            for name in ("postgres", "s3"):
                process.wait_healthy(specs[name], launched[name][0])
            team_tier.create_databases_and_bucket(settings)
        for name in ("prefect-server", "mlflow", "label-studio"):
            launched[name] = process.launch(specs[name])
        process.wait_healthy(specs["prefect-server"], launched["prefect-server"][0])
        ensure_work_pools(settings)
        launched["prefect-worker"] = process.launch(specs["prefect-worker"])
        for name in ("prefect-worker", "mlflow", "label-studio"):
            process.wait_healthy(specs[name], launched[name][0])
        ensure_personal_access_token(settings)
        register_blocks(settings)
    except LooplineError:
        for name, (_, started_now) in reversed(launched.items()):
            if started_now:
                process.stop(specs[name])
        raise
    return status(settings)


def down(settings: Settings) -> list[str]:
    """Stop the A/B router and the model servers deployed locally, then, in reverse order, the services
    ``up`` started.
    Returns the names stopped."""
    from loopline.deploy.local import stop_all
    from loopline.rollout.service import stop_router

    served = (["router"] if stop_router(settings) else []) + stop_all(settings)
    return served + [spec.name for spec in reversed(service_specs(settings)) if process.stop(spec)]


def status(settings: Settings) -> list[ServiceStatus]:
    result = []
    for spec in service_specs(settings):
        pid = process.running_pid(spec)
        state: State = "stopped" if pid is None else "healthy" if process.healthy(spec) else "unhealthy"
        result.append(ServiceStatus(spec.name, spec.url, state, pid))
    return result
