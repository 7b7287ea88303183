"""Two worker processes share one Optuna study on a real PostgreSQL server: together they run the
study's trials once, both contribute, and both report the same best trial."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.platform import ROOT
from tests.postgres import running_postgres

pytestmark = pytest.mark.integration


def test_two_workers_share_one_study(tmp_path: Path) -> None:
    with running_postgres("optuna") as url:
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.hpo_worker",
                    url,
                    str(tmp_path / f"data-{i}"),
                    str(tmp_path / "work"),  # shared, as a volume would be on a cluster
                    str(tmp_path / f"worker-{i}.json"),
                ],
                cwd=ROOT,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        for worker in workers:
            _, err = worker.communicate(timeout=600)
            assert worker.returncode == 0, err[-3000:]
    seen = [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(2)]
    trials = seen[1]["trials"]
    assert seen[0]["best"] == seen[1]["best"]  # the first to finish waited for the other's trial
    assert all(t["state"] == "complete" for t in trials)
    assert 4 <= len(trials) <= 5  # both may start a trial at the same moment, never more
    assert len({t["worker"] for t in trials}) == 2  # both did work
    assert len({t["params"]["lr"] for t in trials}) == len(trials)  # no trial asked the same question
