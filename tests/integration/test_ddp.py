"""The same training entry point under torchrun with two CPU processes (gloo)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.data.demo import png_bytes, render_digit
from loopline.data.splits import SplitFractions, stratified_split
from loopline.data.store import LocalStore
from loopline.labeling.labeled import LabeledRow, write_labeled_manifest
from loopline.services.process import free_port

pytestmark = pytest.mark.integration


def test_two_processes_train_one_model(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    store = LocalStore(tmp_path / "data")
    n = 300
    labels = [str(t) for t in digits.target[:n]]
    splits = stratified_split([(f"h{i}", labels[i]) for i in range(n)], SplitFractions(0.15, 0.15))
    rows = []
    for i in range(n):
        key = f"images/{i}.png"
        store.put_bytes(key, png_bytes(render_digit(digits.images[i], 32)))
        rows.append(LabeledRow(f"h{i}", store.uri(key), labels[i], splits[f"h{i}"], "dv", 0, 0, i, ()))
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
