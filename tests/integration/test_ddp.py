"""The same training entry point under torchrun with two CPU processes (gloo)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.data.demo import labeled_digit_rows
from loopline.data.labeled import write_labeled_manifest
from loopline.data.store import LocalStore
from loopline.services.process import free_port

pytestmark = pytest.mark.integration


def test_two_processes_train_one_model(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    rows = labeled_digit_rows(store, 300, dataset_version="dv")
    version, _ = write_labeled_manifest(store, rows)
    out = tmp_path / "out"
    out.mkdir()
    command = [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "loopline.training.ddp_main",
        "--data-root",
        store.root,
        "--labeled-version",
        version,
        "--epochs",
        "4",
        "--batch-size",
        "16",
        "--out",
        str(out),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "result.json").read_text())
    assert report["world_size"] == 2 and len(report["history"]) == 4
    assert report["best_val_accuracy"] > 0.2  # ten classes: chance is 0.1
    # DDP kept the two replicas' parameters identical
    assert (out / "weights-rank0.sha256").read_text() == (out / "weights-rank1.sha256").read_text()
    assert (out / "checkpoints" / "last.pt").exists()  # written by rank 0
