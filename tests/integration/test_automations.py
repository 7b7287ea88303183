"""loopline's automations on a real Prefect server (its triggers and actions services), created by
`loopline deploy`: a rollback event, a failed flow run and a review nobody gives reach a local webhook
through the notification block; a drift event starts a run of the nightly pipeline deployment; creating them
again duplicates nothing, and a changed setting updates the automation in place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from loopline.services.platform import ensure_work_pools, prefect_env
from loopline.services.process import free_port
from loopline.services.standalone import running_service
from tests.platform import ROOT, run

pytestmark = pytest.mark.integration
TOKEN = "hook-token-123"


class Receiver:
    """A webhook on 127.0.0.1 that keeps every JSON body posted to it (and its Authorization header)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []  # type: ignore[type-arg]
        received = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.headers.get("Authorization", ""), json.loads(body or b"{}")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, text: str, timeout: float = 90) -> dict:  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, body in list(self.calls):
                if text in json.dumps(body):
                    return body
            time.sleep(0.5)
        raise AssertionError(f"no webhook call mentions {text!r}: {self.calls}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    thread = threading.Thread(target=hook.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()


def actor(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    results = {k: v for k, v in env.items() if k != "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"}  # no blocks here
    return subprocess.Popen(
        [sys.executable, "tests/integration/automation_actors.py", *args],
        cwd=ROOT,
        env={**results, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def automations(api: str) -> dict[str, dict]:  # type: ignore[type-arg]
    found = httpx.post(f"{api}/automations/filter", json={}).json()
    names = [a["name"] for a in found]
    assert len(names) == len(set(names)), names  # never two of one
    return {a["name"]: a for a in found}


def test_automations_notify_and_retrain(tmp_path: Path, receiver: Receiver) -> None:
    with running_service("prefect-server", tmp_path / "home", ROOT) as (_, settings):
        api = settings.resolved_prefect_api_url
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "PREFECT_"))},
            **prefect_env(settings),
            "LOOPLINE_PREFECT_PORT": str(settings.prefect_port),
            "LOOPLINE_INCOMING_SOURCE": str(tmp_path / "incoming"),
            "LOOPLINE_NOTIFY_WEBHOOK_URL": receiver.url,
            "LOOPLINE_NOTIFY_WEBHOOK_TOKEN": TOKEN,
            "LOOPLINE_REVIEW_ALERT_HOURS": str(15 / 3600),  # 15 seconds
            "LOOPLINE_RETRAIN_ON_DRIFT": "true",
        }
        ensure_work_pools(settings)
        deployed = run(["loopline", "deploy"], env)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "loopline-pipeline/nightly" in deployed.stdout
        created = automations(api)
        assert len(created) == 4 and all("loopline" in a["tags"] for a in created.values())

        # The nightly schedule exists and is off; the monitor's is on.
        nightly = httpx.get(f"{api}/deployments/name/loopline-pipeline/nightly").json()
        assert [s["active"] for s in nightly["schedules"]] == [False]
        assert nightly["global_concurrency_limit"]["limit"] == 1
        assert nightly["concurrency_options"]["collision_strategy"] == "ENQUEUE"
        assert nightly["parameters"]["params"]["collect"]["source"] == str(tmp_path / "incoming")
        monitor = httpx.get(f"{api}/deployments/name/monitor-model/local").json()
        assert [s["active"] for s in monitor["schedules"]] == [True]

        # A rollback: the webhook gets the model, the version and why, with the token.
        assert actor(env, "emit", "loopline.rollout.rolled-back", "digits").wait(60) == 0
        body = receiver.wait_for("rolled back")
        assert (
            "digits" in body["subject"] and "version 7" in body["text"] and "error rate 4.1%" in body["text"]
        )
        assert all(auth == f"Bearer {TOKEN}" for auth, _ in receiver.calls)

        # A failed flow run: the webhook names it and says why.
        failing = actor(env, "fail")
        assert failing.wait(120) == 0, failing.stdout.read() if failing.stdout else ""
        body = receiver.wait_for("Failed")
        assert "doomed-step" in body["text"] and "the labels could not be exported" in body["text"]

        # Drift: a run of the nightly pipeline deployment is created (no worker here: it stays scheduled).
        assert actor(env, "emit", "loopline.drift.detected", "digits").wait(60) == 0
        deadline = time.monotonic() + 60
        runs: list[dict] = []  # type: ignore[type-arg]
        while time.monotonic() < deadline and not runs:
            runs = httpx.post(
                f"{api}/flow_runs/filter", json={"deployments": {"id": {"any_": [nightly["id"]]}}}
            ).json()
            time.sleep(1)
        assert len(runs) == 1, runs

        # A review nobody gives: after 15 s the webhook says which run waits and how to decide.
        waiting = actor(env, "wait")
        try:
            body = receiver.wait_for("waits for a decision", timeout=120)
            assert "review-nobody-gives" in body["text"] and "loopline approve" in body["text"]
        finally:
            waiting.kill()
            waiting.wait(30)

        # Again, with one setting changed: the same four automations, the changed one updated in place.
        env["LOOPLINE_REVIEW_ALERT_HOURS"] = "48"
        again = subprocess.run(
            [sys.executable, "-m", "blocks.automations"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == "updated automation loopline: review waiting → notify"
        after = automations(api)
        assert {n: a["id"] for n, a in after.items()} == {n: a["id"] for n, a in created.items()}
        assert after["loopline: review waiting → notify"]["trigger"]["within"] == 48 * 3600

        # Without a webhook the notifications go; the drift automation stays.
        env.pop("LOOPLINE_NOTIFY_WEBHOOK_URL")
        quiet = subprocess.run(
            [sys.executable, "-m", "blocks.automations"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert quiet.returncode == 0, quiet.stderr
        assert list(automations(api)) == ["loopline: drift → label and retrain"]
        # The laptop's default: drift does not start heavy work by itself (the automation is there, off).
        env.pop("LOOPLINE_RETRAIN_ON_DRIFT")
        off = subprocess.run(
            [sys.executable, "-m", "blocks.automations"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert off.returncode == 0, off.stderr
        assert automations(api)["loopline: drift → label and retrain"]["enabled"] is False
