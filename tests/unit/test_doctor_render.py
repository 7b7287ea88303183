"""`loopline doctor`'s output: one line per check with its fix under it, a summary, JSON for scripts, and
never a secret — URLs shown with the password masked, every known secret value replaced by ***."""

import json
import os

import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.doctor.checks import Check, Redactor, exit_code, mask_url, url_secrets
from loopline.doctor.render import render_json, render_text
from loopline.services.process import free_port

pytestmark = pytest.mark.unit

CHECKS = [
    Check("prefect api", "ok", "http://127.0.0.1:4200/api answers"),
    Check("work pool k8s-gpu", "warning", "no ONLINE worker", "start a worker"),
    Check("data root", "failed", "s3://b/p: NoSuchBucket", "create the bucket 'b'"),
]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://loopline:pa55word@db:5432/events",
            "postgresql+psycopg://loopline:***@db:5432/events",
        ),
        ("http://user:p%40ss@mlflow.team:5000", "http://user:***@mlflow.team:5000"),
        ("http://127.0.0.1:4200/api", "http://127.0.0.1:4200/api"),
        ("http://just-a-user@host/x", "http://just-a-user@host/x"),
        ("https://hooks.example/x?token=abc123&channel=ml", "https://hooks.example/x?token=***&channel=ml"),
        (
            "postgresql://db/x?sslpassword=s3cr3t&sslmode=require",
            "postgresql://db/x?sslpassword=***&sslmode=require",
        ),
    ],
)
def test_urls_are_shown_without_their_secrets(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_a_url_password_is_known_raw_and_decoded() -> None:
    assert url_secrets("http://u:p%40ss@h/") == ["p%40ss", "p@ss"]
    assert url_secrets("http://h/") == []


def test_the_redactor_masks_every_known_secret_longest_first() -> None:
    redact = Redactor(["abcd", "abcdefgh", None, "", "xy"])  # too short to be a credential: left alone
    assert redact("token abcdefgh and abcd, xy") == "token *** and ***, xy"
    check = redact.check(Check("label studio", "failed", "sent abcdefgh", "replace abcd"))
    assert (check.detail, check.fix) == ("sent ***", "replace ***")


def test_text_aligns_names_puts_each_fix_under_its_check_and_sums_up() -> None:
    lines = render_text(CHECKS)
    assert lines[0] == "ok       prefect api        http://127.0.0.1:4200/api answers"
    assert lines[1] == "warning  work pool k8s-gpu  no ONLINE worker"
    assert lines[2] == "                            fix: start a worker"
    assert lines[3] == "failed   data root          s3://b/p: NoSuchBucket"
    assert lines[4] == "                            fix: create the bucket 'b'"
    assert lines[-1] == "FAILED: 1 ok, 1 warning(s), 1 failed"
    assert render_text(CHECKS[:2])[-1] == "ok, with warnings: 1 ok, 1 warning(s), 0 failed"


def test_json_carries_every_check_and_the_verdict() -> None:
    body = json.loads(render_json(CHECKS))
    assert body["ok"] is False and body["counts"] == {"ok": 1, "warning": 1, "failed": 1}
    assert body["checks"][2] == {
        "name": "data root",
        "status": "failed",
        "detail": "s3://b/p: NoSuchBucket",
        "fix": "create the bucket 'b'",
    }
    assert json.loads(render_json(CHECKS[:2]))["ok"] is True


def test_only_a_failure_fails() -> None:
    assert exit_code(CHECKS) == 1 and exit_code(CHECKS[:2]) == 0 and exit_code([]) == 0


SECRETS = {
    "LOOPLINE_LABEL_STUDIO_TOKEN": "ls-token-0123456789",
    "LOOPLINE_S3_ACCESS_KEY_ID": "AKIADOCTORTEST000001",
    "LOOPLINE_S3_SECRET_ACCESS_KEY": "s3-secret-abcdefghijkl",
    "LOOPLINE_NOTIFY_WEBHOOK_TOKEN": "hook-token-zyxwvut",
}


@pytest.mark.parametrize("as_json", [False, True])
def test_nothing_answers_every_part_fails_fast_and_no_secret_is_printed(
    as_json: bool, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = free_port()
    env = {
        **SECRETS,
        "LOOPLINE_HOME": str(tmp_path),
        "LOOPLINE_PREFECT_API_URL": f"http://admin:prefect-pass-42@127.0.0.1:{dead}/api",
        "LOOPLINE_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{dead}",
        "LOOPLINE_LABEL_STUDIO_URL": f"http://127.0.0.1:{dead}",
        "LOOPLINE_DATA_ROOT": "s3://bucket/prefix",
        "LOOPLINE_S3_ENDPOINT_URL": f"http://127.0.0.1:{dead}",
        "LOOPLINE_EVENT_STORE_URL": f"postgresql+psycopg://loopline:pg-pass-0042@127.0.0.1:{dead}/events",
        "LOOPLINE_OPTUNA_STORAGE": f"postgresql+psycopg://loopline:pg-pass-0043@127.0.0.1:{dead}/optuna",
    }
    for key in [k for k in os.environ if k.startswith("LOOPLINE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, ["doctor", "--timeout", "2", *(["--json"] if as_json else [])])
    assert result.exit_code == 1, result.output
    for secret in [*SECRETS.values(), "prefect-pass-42", "pg-pass-0042", "pg-pass-0043"]:
        assert secret not in result.output
    if as_json:
        statuses = {c["name"]: c["status"] for c in json.loads(result.output)["checks"]}
        assert statuses == dict.fromkeys(
            ["prefect api", "mlflow", "label studio", "data root", "event store", "optuna storage"], "failed"
        )
    else:
        assert "http://admin:***@127.0.0.1" in result.output
        assert "postgresql+psycopg://loopline:***@127.0.0.1" in result.output
        # (what each line says depends on whether the refusal or doctor's deadline came first on a busy
        # machine: the integration test checks the wording against real servers)
        assert result.output.splitlines()[-1] == "FAILED: 0 ok, 0 warning(s), 6 failed"
