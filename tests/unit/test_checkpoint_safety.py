"""Checkpoints and weights load without running code, and weights that do not fit name the layers."""

import os
from pathlib import Path

import pytest
import torch

from loopline.errors import CheckpointError
from loopline.training.checkpoint import load_checkpoint, save_checkpoint
from loopline.training.engine import EpochMetrics, FitResult
from loopline.training.models import build_model

pytestmark = pytest.mark.unit


class Payload:
    """Pickled, it runs ``os.system`` when it is loaded with ``weights_only=False``."""

    def __reduce__(self) -> tuple:  # type: ignore[type-arg]
        return (os.system, ("touch /tmp/loopline-checkpoint-pwned",))


def test_a_checkpoint_with_results_round_trips(tmp_path: Path) -> None:
    result = FitResult(history=[EpochMetrics(0, 1.0, 0.9, 0.5, 0.01, 1.0, 0.1)], best_epoch=0)
    state = {"model": {"w": torch.ones(2)}, "optimizer": {}, "lr_scheduler": {}, "epoch": 0, "result": result}
    save_checkpoint(tmp_path, state)
    loaded = load_checkpoint(tmp_path)
    assert (
        loaded is not None and loaded["result"] == result and torch.equal(loaded["model"]["w"], torch.ones(2))
    )


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = Path("/tmp/loopline-checkpoint-pwned")
    marker.unlink(missing_ok=True)
    torch.save(
        {"model": {}, "optimizer": {}, "lr_scheduler": {}, "epoch": 0, "x": Payload()}, tmp_path / "last.pt"
    )
    with pytest.raises(CheckpointError, match="damaged or unsafe"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_weights_of_another_model_name_the_layers(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(build_model("small_cnn", 3).state_dict(), path)
    assert build_model("small_cnn", 3, path) is not None
    with pytest.raises(CheckpointError, match="5 classes"):
        build_model("small_cnn", 5, path)
    torch.save({"unrelated.weight": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match=r"unrelated\.weight"):
        build_model("small_cnn", 3, path)
