"""Trial checkpoints of the k8s-gpu pool live where every pod reaches them: a trial that dies on one
machine resumes on another from the copy on the data store (S3 on a cluster; any DataStore here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loopline.data.demo import labeled_digit_rows
from loopline.data.store import LocalStore
from loopline.settings import Settings
from loopline.training.checkpoint import LAST
from loopline.training.checkpoint_mirror import CheckpointMirror, default_checkpoint_root
from loopline.training.data import LabeledImages, build_transform, check_labeled_rows
from loopline.training.engine import TrainConfig, fit, seed_everything
from loopline.training.models import build_model

pytestmark = pytest.mark.unit


def test_a_trial_killed_on_one_machine_resumes_on_another_from_the_mirror(tmp_path: Path) -> None:
    rows = labeled_digit_rows(LocalStore(tmp_path / "img"), 200, val=0.1, test=0.1)
    mapping = check_labeled_rows(rows)

    def loaders() -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:  # type: ignore[type-arg]
        train = [r for r in rows if r.split == "train"]
        val = [r for r in rows if r.split == "val"]
        make = torch.utils.data.DataLoader
        return (
            make(LabeledImages(train, mapping, build_transform(32, train=True)), batch_size=32, shuffle=True),
            make(LabeledImages(val, mapping, build_transform(32, train=False)), batch_size=64),
        )

    mirror = CheckpointMirror(LocalStore(tmp_path / "bucket"), "loopline-study-1")
    config = TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=1)
    first_pod = tmp_path / "pod-a" / "training" / "trial-0"
    seed_everything(config.seed, True)
    model = build_model("small_cnn", len(mapping.labels))
    fit(model, *loaders(), config, first_pod, stop_after=2, on_checkpoint=mirror.push)  # then the pod dies
    assert (tmp_path / "bucket" / "loopline-study-1" / "trial-0" / LAST).is_file()
    assert not list((tmp_path / "bucket").rglob(".*"))  # no temporary files copied

    second_pod = tmp_path / "pod-b" / "training" / "trial-0"
    assert mirror.pull(second_pod) == [LAST]
    assert mirror.pull(second_pod) == []  # what is there already is not fetched again
    resumed = fit(build_model("small_cnn", len(mapping.labels)), *loaders(), config, second_pod)
    assert resumed.resumed_from == 1 and len(resumed.history) == 3


@pytest.mark.parametrize(
    ("data_root", "expected"),
    [("s3://ml-data/loopline/", "s3://ml-data/loopline/checkpoints"), ("/srv/data", None), (None, None)],
)
def test_checkpoints_follow_a_remote_data_root(data_root: str | None, expected: str | None) -> None:
    assert default_checkpoint_root(Settings(data_root=data_root)) == expected
