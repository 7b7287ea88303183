"""The team tier on one machine: a PostgreSQL server and an S3 API server under the loopline home.

The platform's services run against them instead of SQLite files and local folders: the Prefect server,
MLflow's backend store, Label Studio's database, the Optuna studies and the event store each get a
database of their own (``loopline_<name>``); the data root, MLflow's artifacts and Prefect's results live
in one bucket. On a real team the same settings point at shared servers instead (README, "Run it for a
team"). The S3 server here is moto's: its objects live in memory and are gone when it stops.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from loopline.errors import ServiceError
from loopline.local_secrets import read_or_create_secret
from loopline.services.process import ProcessSpec
from loopline.settings import TEAM_BUCKET, TEAM_DATABASES, Settings


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, its programs run as the ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _postgres_program(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if found is None:
        raise ServiceError(
            f"The team tier needs PostgreSQL's {name!r}, which is not installed. To fix this, install "
            "PostgreSQL (apt-get install postgresql) or point LOOPLINE_EVENT_STORE_URL, "
            "LOOPLINE_OPTUNA_STORAGE and the services at a PostgreSQL server you run."
        )
    return str(found)


def postgres_folder(settings: Settings) -> Path:
    """Where the tier's PostgreSQL keeps its data and socket. Under the home, unless we are root: the
    ``postgres`` user then needs a folder it can reach, so it is a fixed one per home in the temp folder."""
    if os.geteuid() != 0:
        return settings.resolved_home / "postgres"
    digest = hashlib.sha256(str(settings.resolved_home).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"loopline-postgres-{digest}"


def _init_postgres(settings: Settings) -> None:
    """A new database cluster with the user ``loopline`` (password from the home's secrets), unless one
    exists already."""
    folder = postgres_folder(settings)
    if (folder / "data" / "PG_VERSION").exists():
        return
    password = read_or_create_secret(settings.resolved_home / "secrets" / "postgres-password", 16)
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    password_file = folder / "password"
    password_file.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(password_file, "postgres", "postgres")
    password_file.chmod(0o600)
    try:
        initdb = [_postgres_program("initdb"), "-D", str(folder / "data"), "-U", "loopline"]
        initdb += ["--pwfile", str(password_file), "--auth=scram-sha-256", "-E", "UTF8"]
        result = subprocess.run(_as_postgres(initdb), capture_output=True, text=True, timeout=120)
    finally:
        password_file.unlink(missing_ok=True)
    if result.returncode != 0:
        raise ServiceError(f"initdb failed for {folder / 'data'}:\n{result.stderr[-2000:]}")
    link = settings.resolved_home / "postgres"
    if link != folder and not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(folder)


def _admin_url(settings: Settings) -> str:
    """A libpq URL of the tier's server, database ``postgres``."""
    url = settings.team_database_url("unused").replace("postgresql+psycopg", "postgresql")
    return url.rsplit("/", 1)[0] + "/postgres"


def _postgres_ready(settings: Settings) -> bool:
    import psycopg

    with psycopg.connect(_admin_url(settings), connect_timeout=2):
        return True


def _s3_ready(settings: Settings) -> bool:
    return httpx.get(f"http://{settings.host}:{settings.s3_port}/moto-api/", timeout=2.0).status_code == 200


def team_specs(settings: Settings) -> list[ProcessSpec]:
    """The tier's own servers, started before the platform's services."""
    folder = postgres_folder(settings)
    home, host = settings.resolved_home, settings.host
    return [
        ProcessSpec(
            name="postgres",
            command=_as_postgres(
                [
                    _postgres_program("postgres"),
                    "-D",
                    str(folder / "data"),
                    "-p",
                    str(settings.postgres_port),
                    "-k",
                    str(folder),
                    "-c",
                    f"listen_addresses={host}",
                    "-c",
                    "max_connections=200",
                ]
            ),
            state_dir=home,
            url=f"postgresql://{host}:{settings.postgres_port}",
            health=lambda: _postgres_ready(settings),
            port=settings.postgres_port,
            host=host,
            stop_signals=(signal.SIGINT,),  # fast shutdown: TERM would wait for every client to leave
            start_timeout=60,
            prepare=lambda: _init_postgres(settings),
        ),
        ProcessSpec(
            name="s3",
            command=[
                str(Path(sys.executable).parent / "moto_server"),
                "-H",
                host,
                "-p",
                str(settings.s3_port),
            ],
            state_dir=home,
            url=f"http://{host}:{settings.s3_port}",
            health=lambda: _s3_ready(settings),
            env={"MOTO_ALLOW_NONEXISTENT_REGION": "true"},
            port=settings.s3_port,
            host=host,
            start_timeout=60,
        ),
    ]


def create_databases_and_bucket(settings: Settings) -> None:
    """Each service's database and the tier's bucket, where missing (idempotent)."""
    import psycopg
    from botocore.exceptions import BotoCoreError, ClientError

    from loopline.data.s3 import make_s3_client

    try:
        with psycopg.connect(_admin_url(settings), autocommit=True, connect_timeout=5) as conn:
            present = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name in TEAM_DATABASES:
                if f"loopline_{name}" not in present:
                    conn.execute(f'CREATE DATABASE "loopline_{name}"')
    except psycopg.Error as exc:
        raise ServiceError(f"Could not create the team tier's databases: {exc}") from exc
    try:
        client = make_s3_client(settings)
        if TEAM_BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=TEAM_BUCKET)
    except (BotoCoreError, ClientError) as exc:
        raise ServiceError(f"Could not create the team tier's bucket {TEAM_BUCKET!r}: {exc}") from exc


def mlflow_team_args(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """MLflow's backend store and artifact destination on the tier, and the environment that reaches S3."""
    assert settings.s3_access_key_id is not None and settings.s3_secret_access_key is not None
    args = [
        "--backend-store-uri",
        settings.team_database_url("mlflow"),
        "--artifacts-destination",
        f"s3://{TEAM_BUCKET}/mlflow",
    ]
    env = {
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "AWS_ACCESS_KEY_ID": settings.s3_access_key_id.get_secret_value(),
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
        "AWS_DEFAULT_REGION": settings.s3_region,
    }
    return args, env


def label_studio_team_env(settings: Settings) -> dict[str, str]:
    """Label Studio's database settings on the tier (its own PostgreSQL database)."""
    password = read_or_create_secret(settings.resolved_home / "secrets" / "postgres-password", 16)
    return {
        "DJANGO_DB": "default",
        "POSTGRE_NAME": "loopline_labelstudio",
        "POSTGRE_USER": "loopline",
        "POSTGRE_PASSWORD": password,
        "POSTGRE_HOST": settings.host,
        "POSTGRE_PORT": str(settings.postgres_port),
    }
