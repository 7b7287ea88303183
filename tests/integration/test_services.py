"""`loopline services up | status | down` against the real Prefect, MLflow and Label Studio servers."""

from pathlib import Path

import httpx
import pytest

from loopline.services.process import _alive
from tests.platform import run, running_platform

pytestmark = pytest.mark.integration

SERVICES = ("prefect-server", "prefect-worker", "mlflow", "label-studio")


def pids(home: Path) -> dict[str, int]:
    return {name: int((home / "run" / f"{name}.pid").read_text().split()[0]) for name in SERVICES}


def test_up_status_down(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_platform(home) as env:
        status = run(["loopline", "services", "status"], env)
        assert status.returncode == 0, status.stdout + status.stderr
        for name in SERVICES:
            assert f"{name}" in status.stdout
        assert status.stdout.count("healthy") == 4
        started = pids(home)

        again = run(["loopline", "services", "up"], env)  # idempotent: nothing restarts
        assert again.returncode == 0, again.stderr
        assert pids(home) == started

        api = env["PREFECT_API_URL"]
        pools = httpx.post(f"{api}/work_pools/filter", json={}).json()
        assert {("local", "process"), ("k8s-gpu", "kubernetes")} <= {(p["name"], p["type"]) for p in pools}
        blocks = httpx.post(f"{api}/block_documents/filter", json={}).json()
        assert {"loopline", "loopline-results"} == {b["name"] for b in blocks}
        assert len(blocks) == 4  # label studio, mlflow, data root, result storage
        token = (home / "secrets" / "label-studio-token").read_text().strip()
        ls = f"http://127.0.0.1:{env['LOOPLINE_LABEL_STUDIO_PORT']}"
        assert (
            httpx.get(
                f"{ls}/api/current-user/whoami", headers={"Authorization": f"Token {token}"}
            ).status_code
            == 200
        )
        assert (
            httpx.get(f"{ls}/api/current-user/whoami", headers={"Authorization": "Token wrong"}).status_code
            == 401
        )
        assert httpx.get(f"http://127.0.0.1:{env['LOOPLINE_MLFLOW_PORT']}/health").text.strip() == "OK"
        # secrets never reach the output or the block documents as plain text
        assert token not in status.stdout + again.stdout + again.stderr
        assert token not in str(blocks)

        down = run(["loopline", "services", "down"], env)
        assert down.returncode == 0
        for name in SERVICES:
            assert name in down.stdout
        assert not any(_alive(pid) for pid in started.values())
        after = run(["loopline", "services", "status"], env)
        assert after.returncode == 1 and after.stdout.count("stopped") == 4
