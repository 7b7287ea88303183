"""`loopline doctor` against real servers: a Prefect server (work pools with and without workers, blocks),
MLflow (a registered model with a champion), Label Studio (a token), an S3 server with IAM authentication
(moto) and PostgreSQL. A good configuration is all green; each broken part is one failed check that says
how to fix it, exit code 1; no secret, right or wrong, is ever printed (text or --json)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from typer.testing import CliRunner, Result

from loopline.cli import app
from loopline.services import process
from loopline.services.credentials import label_studio_credentials
from loopline.services.platform import GPU_POOL, WORK_POOL, ensure_work_pools, service_specs
from loopline.services.process import ProcessSpec, free_port
from loopline.settings import Settings
from tests.integration.s3server import s3_server
from tests.platform import ROOT
from tests.postgres import running_postgres

pytestmark = pytest.mark.integration

MODEL = "doctor-model"
NO_CHAMPION = "doctor-model-without-champion"
BUCKET = "doctor-bucket"
PG_PASSWORD = "pg-Secret-4711"  # PostgreSQL trusts loopback here: the password only has to stay unprinted
BLOCKS = (
    "loopline-label-studio-server/loopline",
    "loopline-mlflow-server/loopline",
    "loopline-data-root/loopline",
    "local-file-system/loopline-results",
)


@dataclass(frozen=True)
class Platform:
    env: dict[str, str]  # a good configuration
    secrets: list[str]
    mlflow: ProcessSpec


def save_block_documents(api: str) -> None:
    """The block documents doctor looks for, saved through the REST API (as `blocks.register` would)."""
    for slug in BLOCKS:
        block_type, _, name = slug.partition("/")
        kind = httpx.post(f"{api}/block_types/", json={"name": block_type, "slug": block_type})
        kind_id = (
            kind.json()["id"]
            if kind.status_code == 201
            else httpx.get(f"{api}/block_types/slug/{block_type}").json()["id"]
        )
        schema = httpx.post(
            f"{api}/block_schemas/",
            json={
                "fields": {"title": block_type, "type": "object", "properties": {}},
                "block_type_id": kind_id,
            },
        ).json()
        saved = httpx.post(
            f"{api}/block_documents/",
            json={"name": name, "block_type_id": kind_id, "block_schema_id": schema["id"], "data": {}},
        )
        assert saved.status_code == 201, saved.text


def register_champion(tracking_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    client.create_registered_model(MODEL)
    run = client.create_run("0")
    version = client.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(MODEL, "champion", version.version)
    client.create_registered_model(NO_CHAMPION)
    client.create_model_version(NO_CHAMPION, f"runs:/{run.info.run_id}/model", run.info.run_id)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("doctor")
    settings = Settings(
        home=home / "services",
        project_root=ROOT,
        prefect_port=free_port(),
        mlflow_port=free_port(),
        label_studio_port=free_port(),
    )
    specs = {
        s.name: s for s in service_specs(settings) if s.name in ("prefect-server", "mlflow", "label-studio")
    }
    try:
        pids = {name: process.launch(spec)[0] for name, spec in specs.items()}  # side by side: ~12 s
        with s3_server(home) as s3, running_postgres() as database:
            for name, spec in specs.items():
                process.wait_healthy(spec, pids[name])
            api = settings.resolved_prefect_api_url
            ensure_work_pools(settings)
            for pool in (WORK_POOL, GPU_POOL):
                beat = httpx.post(
                    f"{api}/work_pools/{pool}/workers/heartbeat", json={"name": f"{pool}-worker"}
                )
                assert beat.status_code == 204, beat.text
            save_block_documents(api)
            register_champion(specs["mlflow"].url)
            s3.client().create_bucket(Bucket=BUCKET)
            token = label_studio_credentials(settings).token.get_secret_value()
            database_url = database.replace("postgres@", f"postgres:{PG_PASSWORD}@")
            env = {
                "LOOPLINE_HOME": str(home / "doctor"),
                "LOOPLINE_PREFECT_API_URL": api,
                "LOOPLINE_MLFLOW_TRACKING_URI": specs["mlflow"].url,
                "LOOPLINE_LABEL_STUDIO_URL": specs["label-studio"].url,
                "LOOPLINE_LABEL_STUDIO_TOKEN": token,
                "LOOPLINE_DATA_ROOT": f"s3://{BUCKET}/team/data",
                "LOOPLINE_S3_ENDPOINT_URL": s3.endpoint,
                "LOOPLINE_S3_ACCESS_KEY_ID": s3.access_key,
                "LOOPLINE_S3_SECRET_ACCESS_KEY": s3.secret_key,
                "LOOPLINE_EVENT_STORE_URL": database_url,
                "LOOPLINE_OPTUNA_STORAGE": database_url,
            }
            yield Platform(env, [token, s3.access_key, s3.secret_key, PG_PASSWORD], specs["mlflow"])
    finally:
        for spec in specs.values():
            process.stop(spec)


@pytest.fixture(autouse=True)
def mlflow_running(platform: Platform) -> None:
    """MLflow answers at the start of each test (the stopped-MLflow test restarts it in the background)."""
    pid = process.running_pid(platform.mlflow)
    if pid is not None and not process.healthy(platform.mlflow):
        process.wait_healthy(platform.mlflow, pid)


def doctor(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> Result:
    for key in list(os.environ):
        if key.startswith("LOOPLINE_") or key in ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return CliRunner().invoke(app, ["doctor", "--timeout", "3", "--model", MODEL, *args])


def findings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], secrets: list[str]) -> tuple[Result, dict]:  # type: ignore[type-arg]
    """Doctor as text and as JSON; neither may carry any of ``secrets``."""
    text = doctor(monkeypatch, env)
    as_json = doctor(monkeypatch, env, "--json")
    for secret in secrets:
        assert secret not in text.output and secret not in as_json.output, (
            f"a secret was printed: {text.output}"
        )
    assert as_json.exit_code == text.exit_code
    return text, {c["name"]: c for c in json.loads(as_json.output)["checks"]}


def test_a_good_configuration_is_all_green(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    text, checks = findings(monkeypatch, platform.env, platform.secrets)
    assert text.exit_code == 0, text.output
    assert {c["status"] for c in checks.values()} == {"ok"}, text.output
    assert set(checks) >= {
        "prefect api",
        "prefect version",
        "work pool local",
        "work pool k8s-gpu",
        *(f"block {slug}" for slug in BLOCKS),
        "mlflow",
        f"model {MODEL}@champion",
        "label studio",
        "data root",
        "event store",
        "optuna storage",
    }
    assert "postgres:***@127.0.0.1" in checks["event store"]["detail"]
    assert f"bucket '{BUCKET}', prefix 'team/data'" in checks["data root"]["detail"]
    assert "ok: " in text.output.splitlines()[-1]


def test_a_model_without_a_champion_is_a_warning(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    text = doctor(monkeypatch, platform.env, "--model", NO_CHAMPION)  # a later --model wins
    assert text.exit_code == 0, text.output
    assert f"warning  model {NO_CHAMPION}@champion" in text.output and "no champion yet" in text.output


BROKEN = {
    "wrong S3 key id": (
        {"LOOPLINE_S3_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG1"},
        "data root",
        "InvalidAccessKeyId",
        "LOOPLINE_S3_ACCESS_KEY_ID",
    ),
    "wrong S3 secret": (
        {"LOOPLINE_S3_SECRET_ACCESS_KEY": "wrong-secret-key-0123456789"},
        "data root",
        "SignatureDoesNotMatch",
        "LOOPLINE_S3_SECRET_ACCESS_KEY",
    ),
    "missing bucket": (
        {"LOOPLINE_DATA_ROOT": "s3://no-such-bucket/data"},
        "data root",
        "NoSuchBucket",
        "create the bucket 'no-such-bucket'",
    ),
    "bad Label Studio token": (
        {"LOOPLINE_LABEL_STUDIO_TOKEN": "not-the-token-31415926"},
        "label studio",
        "rejected the API token",
        "LOOPLINE_LABEL_STUDIO_TOKEN",
    ),
    "unreachable PostgreSQL": (
        {
            "LOOPLINE_EVENT_STORE_URL": f"postgresql+psycopg://postgres:{PG_PASSWORD}@127.0.0.1:{free_port()}/x"
        },
        "event store",
        "cannot be reached",
        "LOOPLINE_EVENT_STORE_URL",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_part_fails_with_its_fix(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    override, name, detail, fix = BROKEN[case]
    wrong = [v for v in override.values() if not v.startswith("s3://")]
    text, checks = findings(monkeypatch, {**platform.env, **override}, [*platform.secrets, *wrong])
    assert text.exit_code == 1, text.output
    assert checks[name]["status"] == "failed" and detail in checks[name]["detail"], checks[name]
    assert fix in checks[name]["fix"], checks[name]
    others = {n for n, c in checks.items() if c["status"] != "ok"}
    assert others == {name}, text.output  # only the broken part


def test_a_stopped_mlflow_fails_and_doctor_stays_fast(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    process.stop(platform.mlflow)
    try:
        started = time.monotonic()
        text, checks = findings(monkeypatch, platform.env, platform.secrets)
        assert time.monotonic() - started < 10
        assert text.exit_code == 1
        assert checks["mlflow"]["status"] == "failed" and "not reachable" in checks["mlflow"]["detail"]
        assert "LOOPLINE_MLFLOW_TRACKING_URI" in checks["mlflow"]["fix"]
    finally:
        process.launch(platform.mlflow)  # for tests that run later (mlflow_running waits for it)
