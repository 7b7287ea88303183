"""The A/B router as a process in front of two real ``loopline serve`` model servers (versions 1 and 2 of a
model registered on a real MLflow server): users stick to their variant, a weight change moves users only
from champion to challenger, keep-alive requests through both of the router's sides never stall on a
delayed ACK, and with the challenger killed its users are still answered (by the champion, counted)."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from PIL import Image

from loopline.registry.registry import register_run
from loopline.rollout.assign import assign
from loopline.rollout.events import ExperimentState
from loopline.rollout.router_runner import state_to_json
from loopline.services.process import free_port
from tests.latency import assert_no_delayed_ack_stall
from tests.model_runs import logged_onnx_run
from tests.platform import ROOT

pytestmark = pytest.mark.integration

LOOPLINE = Path(sys.executable).parent / "loopline"
SEED = "it-seed"


@dataclass
class Stack:
    router_url: str
    state_file: Path
    state: ExperimentState
    champion: subprocess.Popen[bytes]
    challenger: subprocess.Popen[bytes]
    router: subprocess.Popen[bytes]
    logs: Path

    def write_state(self, **changes: object) -> None:
        self.state = replace(self.state, **changes)  # type: ignore[arg-type]
        self.state_file.write_text(json.dumps(state_to_json(self.state)))

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.logs.glob("*.log")))


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "PROMETHEUS_"))}
    env.update(extra)
    return env


def start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)


def wait_ok(url: str, process: subprocess.Popen[bytes], stack_logs: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, "\n".join(p.read_text()[-2000:] for p in stack_logs.glob("*.log"))
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> Iterator[Stack]:
    import mlflow

    logs = tmp_path_factory.mktemp("logs")
    client = mlflow.MlflowClient(tracking_uri)
    for _ in range(2):  # versions 1 and 2: two trainings of the same model (different random weights)
        run_id = logged_onnx_run(tmp_path_factory.mktemp("run"), labels=("cat", "dog"))
        register_run(client, "routed", run_id, {}, "# routed in a test")
    env = clean_env(LOOPLINE_HOME=str(logs / "home"), LOOPLINE_MLFLOW_TRACKING_URI=tracking_uri)
    ports = {"champion": free_port(), "challenger": free_port()}
    servers = {
        role: start(
            [
                str(LOOPLINE),
                "serve",
                "--model",
                "routed",
                "--version",
                version,
                "--port",
                str(ports[role]),
            ],
            logs / f"{role}.log",
            env,
        )
        for role, version in (("champion", "1"), ("challenger", "2"))
    }
    state = ExperimentState(
        name="it",
        model="routed",
        champion_version="1",
        challenger_version="2",
        champion_url=f"http://127.0.0.1:{ports['champion']}",
        challenger_url=f"http://127.0.0.1:{ports['challenger']}",
        seed=SEED,
        weight=0.3,
        step=0,
        status="running",
    )
    state_file = logs / "state.json"
    state_file.write_text(json.dumps(state_to_json(state)))
    router_port = free_port()
    router_env = clean_env(
        LOOPLINE_ROUTER_PORT=str(router_port),
        LOOPLINE_ROUTER_REFRESH_SECONDS="0.2",
        LOOPLINE_ROUTER_CHALLENGER_TIMEOUT_S="2",
    )
    router = start(
        [sys.executable, "-m", "loopline.rollout.router_runner", "--state-file", str(state_file)],
        logs / "router.log",
        router_env,
    )
    stack = Stack(
        f"http://127.0.0.1:{router_port}",
        state_file,
        state,
        servers["champion"],
        servers["challenger"],
        router,
        logs,
    )
    try:
        for role, process in servers.items():
            wait_ok(f"http://127.0.0.1:{ports[role]}/v2/health/ready", process, logs)
        wait_ok(f"{stack.router_url}/healthz", router, logs)
        yield stack
    finally:
        for process in (router, *servers.values()):
            if process.poll() is None:
                process.terminate()
        for process in (router, *servers.values()):
            process.wait(timeout=30)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (20, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def predict(client: httpx.Client, user: str) -> httpx.Response:
    return client.post("/v1/predict", content=png(), headers={"Content-Type": "image/png", "X-User-Id": user})


def wait_weight(client: httpx.Client, weight: float) -> None:
    deadline = time.monotonic() + 10
    while client.get("/healthz").json()["weight"] != weight:
        assert time.monotonic() < deadline, "the router did not pick up the new weight"
        time.sleep(0.1)


def test_users_stick_to_their_variant_answered_by_its_version(stack: Stack) -> None:
    users = [f"user-{i}" for i in range(30)]
    with httpx.Client(base_url=stack.router_url, timeout=10) as client:
        for user in users:
            expected = assign(SEED, user, 0.3)
            for _ in range(2):
                answer = predict(client, user)
                assert answer.status_code == 200, (answer.text, stack.log_tails())
                assert answer.headers["X-Variant"] == expected
                assert answer.headers["X-Model-Version"] == (
                    "routed/2" if expected == "challenger" else "routed/1"
                )
                assert answer.json()["predictions"][0]["label"] in ("cat", "dog")
                assert "x-fallback" not in answer.headers
        assert {assign(SEED, u, 0.3) for u in users} == {"champion", "challenger"}


def test_keep_alive_requests_through_the_router_do_not_stall(stack: Stack) -> None:
    with httpx.Client(base_url=stack.router_url, timeout=10) as client:  # one keep-alive connection
        timings = []
        for i in range(60):  # both arms: the router keeps a connection to each model server
            started = time.perf_counter()
            answer = predict(client, f"user-{i % 10}")
            timings.append(time.perf_counter() - started)
            assert answer.status_code == 200
    assert_no_delayed_ack_stall(timings)  # on either side: client → router, router → model server


def test_a_higher_weight_moves_users_only_from_champion_to_challenger(stack: Stack) -> None:
    users = [f"ramp-{i}" for i in range(40)]
    with httpx.Client(base_url=stack.router_url, timeout=10) as client:
        seen: list[dict[str, str]] = []
        for weight in (0.1, 0.5, 0.9):
            stack.write_state(weight=weight)
            wait_weight(client, weight)
            seen.append({u: predict(client, u).headers["X-Variant"] for u in users})
        for before, after in itertools.pairwise(seen):
            assert [u for u in users if before[u] == "challenger" and after[u] == "champion"] == []
        counts = [sum(arm == "challenger" for arm in arms.values()) for arms in seen]
        assert counts[0] < counts[1] < counts[2], counts
        stack.write_state(weight=0.3)
        wait_weight(client, 0.3)


def test_with_the_challenger_killed_its_users_are_answered_by_the_champion(stack: Stack) -> None:
    users = [f"user-{i}" for i in range(40) if assign(SEED, f"user-{i}", 0.3) == "challenger"]
    stack.challenger.send_signal(signal.SIGKILL)
    stack.challenger.wait(timeout=10)
    reasons = []
    with httpx.Client(base_url=stack.router_url, timeout=10) as client:
        for user in users:
            answer = predict(client, user)
            assert answer.status_code == 200, (answer.text, stack.log_tails())
            assert answer.headers["X-Variant"] == "champion"
            assert answer.headers["X-Model-Version"] == "routed/1"
            reasons.append(answer.headers["X-Fallback"])
        metrics = client.get("/metrics").text
    # refused connections first; after 5 in a row (breaker_failures) the challenger is skipped for a while
    assert reasons == ["unreachable"] * 5 + ["circuit_open"] * (len(users) - 5), reasons
    fallbacks = sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("loopline_router_fallbacks_total")
    )
    assert fallbacks == len(users), metrics
