"""The decisions of `loopline doctor`'s checks, without servers: versions, work pools and their workers,
blocks, model aliases, SQLite on a shared tier, result storage, and the deadline that keeps doctor fast."""

import socket
import time
from pathlib import Path

import pytest

from loopline.doctor.checks import Check, Probe, run_probes
from loopline.doctor.prefect_api import (
    SERVER_BLOCKS,
    PoolNeed,
    block_verdict,
    check_prefect,
    compare_versions,
    is_this_machine,
    pool_verdict,
    pools_to_check,
    results_storage_verdict,
)
from loopline.doctor.services import alias_verdicts
from loopline.doctor.storage import check_database

pytestmark = pytest.mark.unit

LOCAL, GPU = PoolNeed("local", required=True), PoolNeed("k8s-gpu", required=False)
ONLINE = [{"name": "w1", "status": "ONLINE"}]


@pytest.mark.parametrize(
    ("server", "client", "status"),
    [
        ("3.9.1", "3.9.1", "ok"),
        ("3.9.4", "3.9.1", "ok"),  # patch releases differ freely
        ("3.10.0", "3.9.1", "warning"),  # a newer server serves older clients
        ("3.8.2", "3.9.1", "failed"),  # a newer client may send what the server does not know
        ("2.20.0", "3.9.1", "failed"),
        ("4.0.0", "3.9.1", "failed"),
        ("nightly", "3.9.1", "warning"),
    ],
)
def test_server_and_client_versions(server: str, client: str, status: str) -> None:
    check = compare_versions(server, client)
    assert check.status == status, check
    if status != "ok":
        assert f"prefect=={server}" in check.fix


def test_the_pools_the_deployments_use_are_required_and_the_gpu_pool_optional() -> None:
    assert pools_to_check([], "local", ["k8s-gpu"]) == [LOCAL, GPU]  # nothing deployed yet
    assert pools_to_check(["local", "k8s-gpu", "local"], "local", ["k8s-gpu"]) == [LOCAL, GPU]
    moved = pools_to_check(["k8s-cpu", "k8s-gpu"], "local", ["k8s-gpu"])
    assert moved == [PoolNeed("k8s-cpu", required=True), GPU]  # every flow on the cluster: no local pool


def test_a_missing_pool_fails_when_the_deployments_need_it_and_warns_otherwise() -> None:
    missing = pool_verdict(LOCAL, None, [])
    assert missing.status == "failed" and "does not exist" in missing.detail
    assert "prefect work-pool create local --type process" in missing.fix
    assert pool_verdict(GPU, None, []).status == "warning"


def test_a_pool_without_an_online_worker() -> None:
    offline = [{"name": "old", "status": "OFFLINE"}]
    local = pool_verdict(LOCAL, {"type": "process"}, offline)
    assert local.status == "failed" and "no ONLINE worker" in local.detail
    assert "prefect worker start --pool local" in local.fix
    gpu = pool_verdict(GPU, {"type": "kubernetes"}, [])
    assert gpu.status == "warning" and "training sent there waits" in gpu.detail


def test_a_paused_pool_and_a_healthy_one() -> None:
    paused = pool_verdict(LOCAL, {"type": "process", "is_paused": True}, ONLINE)
    assert paused.status == "failed" and "prefect work-pool resume local" in paused.fix
    assert pool_verdict(LOCAL, {"type": "process"}, ONLINE) == Check(
        "work pool local", "ok", "process pool, 1 online worker(s): w1"
    )


def test_block_slugs_are_those_of_the_block_classes() -> None:
    from blocks.servers import BLOCK_NAME, DataRoot, LabelStudioServer, MLflowServer

    slugs = {
        f"{cls.get_block_type_slug()}/{BLOCK_NAME}" for cls in (LabelStudioServer, MLflowServer, DataRoot)
    }
    assert slugs == set(SERVER_BLOCKS)


def test_a_missing_block_says_how_to_save_it() -> None:
    assert block_verdict(SERVER_BLOCKS[0], 200).status == "ok"
    server = block_verdict(SERVER_BLOCKS[0], 404)
    assert server.status == "failed" and "python -m blocks.register" in server.fix
    results = block_verdict("s3-bucket/team-results", 404)
    assert results.status == "failed" and "s3-bucket block 'team-results'" in results.fix
    assert "LOOPLINE_RESULT_STORAGE_BLOCK" in results.fix


def test_results_in_a_local_folder_warn_only_when_flows_run_elsewhere() -> None:
    assert results_storage_verdict("local-file-system/loopline-results", shared=False) is None
    assert results_storage_verdict("s3-bucket/loopline-results", shared=True) is None
    check = results_storage_verdict("local-file-system/loopline-results", shared=True)
    assert check is not None and check.status == "warning" and "s3-bucket" in check.fix


def test_which_prefect_api_is_on_this_machine() -> None:
    assert is_this_machine("http://127.0.0.1:4200/api") and is_this_machine("http://localhost:4200/api")
    assert is_this_machine(f"http://{socket.gethostname()}:4200/api")
    assert not is_this_machine("https://prefect.team.example/api")


def test_model_aliases() -> None:
    none = alias_verdicts("m", None, {})
    assert [c.status for c in none] == ["warning"] and "no registered model 'm'" in none[0].detail
    no_champion = alias_verdicts("m", {"aliases": []}, {})
    assert [(c.name, c.status) for c in no_champion] == [("model m@champion", "warning")]
    both = alias_verdicts(
        "m",
        {"aliases": [{"alias": "champion", "version": "3"}, {"alias": "challenger", "version": "4"}]},
        {"champion": {"version": "3", "status": "READY"}, "challenger": {"version": "4", "status": "READY"}},
    )
    assert [(c.name, c.status, c.detail) for c in both] == [
        ("model m@champion", "ok", "version 3"),
        ("model m@challenger", "ok", "version 4"),
    ]
    broken = alias_verdicts(
        "m",
        {"aliases": [{"alias": "champion", "version": "3"}, {"alias": "challenger", "version": "9"}]},
        {"champion": {"version": "3", "status": "FAILED_REGISTRATION"}},
    )
    assert [c.status for c in broken] == ["failed", "failed"]
    assert "FAILED_REGISTRATION" in broken[0].detail and "does not resolve" in broken[1].detail


def test_sqlite_is_fine_on_a_laptop_and_a_warning_when_flows_run_elsewhere(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    [laptop] = check_database("event store", url, "LOOPLINE_EVENT_STORE_URL", shared=False, timeout=1)
    assert laptop.status == "ok" and "will be created on first use" in laptop.detail
    assert not (tmp_path / "events.db").exists()  # doctor creates nothing
    [team] = check_database("event store", url, "LOOPLINE_EVENT_STORE_URL", shared=True, timeout=1)
    assert team.status == "warning" and "LOOPLINE_EVENT_STORE_URL=postgresql+psycopg://" in team.fix


def test_a_url_that_is_not_sqlalchemy() -> None:
    [check] = check_database(
        "optuna storage", "not a url", "LOOPLINE_OPTUNA_STORAGE", shared=False, timeout=1
    )
    assert check.status == "failed" and "LOOPLINE_OPTUNA_STORAGE" in check.fix


def test_a_probe_that_hangs_is_reported_at_the_deadline_and_one_that_raises_is_one_line() -> None:
    def hang() -> list[Check]:
        time.sleep(30)
        return []

    def boom() -> list[Check]:
        raise RuntimeError("client bug")

    probes = [
        Probe("mlflow", hang, "check MLflow"),
        Probe("data root", boom, "check the data root"),
        Probe("event store", lambda: [Check("event store", "ok", "answers")], ""),
    ]
    started = time.monotonic()
    checks = run_probes(probes, deadline_s=0.5)
    assert time.monotonic() - started < 10  # cut at the deadline, not after the 30 s hang
    assert checks == [
        Check("mlflow", "failed", "no answer within 0.5 s", "check MLflow"),
        Check(
            "data root", "failed", "the check itself failed: RuntimeError: client bug", "check the data root"
        ),
        Check("event store", "ok", "answers"),
    ]


def test_a_prefect_api_that_accepts_but_never_answers_fails_within_the_timeout() -> None:
    with socket.socket() as listener:  # connections queue in the backlog; nothing ever answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        api = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
        started = time.monotonic()
        [check] = check_prefect(api, "3.9.1", "local", ["k8s-gpu"], list(SERVER_BLOCKS), timeout=0.5)
    assert time.monotonic() - started < 4  # under httpx's own 5 s default: the 0.5 s was used
    assert check.status == "failed" and "not reachable (ReadTimeout)" in check.detail
    assert "LOOPLINE_PREFECT_API_URL" in check.fix
