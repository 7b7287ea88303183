"""`loopline watch` follows a flow run on a real Prefect server: one line per step, the full log in a file."""

import subprocess
import sys
from pathlib import Path

import pytest

from loopline.watch import WatchError, watch_run
from tests.platform import ROOT

pytestmark = pytest.mark.integration


def test_one_line_per_step_and_the_full_log(prefect_api: str, tmp_path: Path) -> None:
    api = prefect_api  # the session's Prefect server
    env = {"PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "prefect"), "PATH": "/usr/bin:/bin"}
    runner = subprocess.Popen(
        [sys.executable, "tests/integration/watched_flow.py"],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert runner.stdout is not None
    run_id = runner.stdout.readline().strip()
    lines: list[str] = []
    final = watch_run(api, run_id, tmp_path / "run.log", echo=lines.append, poll_seconds=0.5)
    assert runner.wait(timeout=60) == 0
    assert final == "COMPLETED"
    steps = [line for line in lines if line.startswith("  completed")]
    names = sorted(line.split()[1] for line in steps)
    assert names == ["first_step", "inner-stage", "second_step"], lines
    assert len(steps) == len({line.split()[1] for line in steps})  # each step once
    assert any("somewhere: http://127.0.0.1:9/somewhere" in line for line in lines), lines
    assert "the first step says hello" in (tmp_path / "run.log").read_text()
    with pytest.raises(WatchError, match="no flow run"):
        watch_run(api, "00000000-0000-0000-0000-000000000000", tmp_path / "x.log", echo=lines.append)
