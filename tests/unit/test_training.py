"""The training core on the real digits data, on CPU: data checks, models, fit, resume, ONNX parity."""

from pathlib import Path

import numpy as np
import pytest
import torch

from loopline.data.demo import labeled_digit_rows
from loopline.data.labeled import LabeledRow
from loopline.data.store import LocalStore
from loopline.errors import CheckpointError, TrainingDataError
from loopline.training.data import LabeledImages, build_transform, check_labeled_rows
from loopline.training.engine import TrainConfig, fit, seed_everything
from loopline.training.models import MODEL_NAMES, build_model
from loopline.training.onnx_export import export_onnx, onnx_parity

pytestmark = pytest.mark.unit


def digit_rows(folder: Path, n: int = 400) -> list[LabeledRow]:
    return labeled_digit_rows(LocalStore(folder), n, val=0.1, test=0.1)


def loaders(rows: list[LabeledRow], batch_size: int = 32):  # type: ignore[no-untyped-def]
    mapping = check_labeled_rows(rows)
    train = LabeledImages([r for r in rows if r.split == "train"], mapping, build_transform(32, train=True))
    val = LabeledImages([r for r in rows if r.split == "val"], mapping, build_transform(32, train=False))
    make = torch.utils.data.DataLoader
    return make(train, batch_size=batch_size, shuffle=True), make(val, batch_size=64), mapping


def test_bad_label_sets_are_refused_with_every_reason(tmp_path: Path) -> None:
    rows = digit_rows(tmp_path, 400)
    few = [r for r in rows if r.label != "3"] + [r for r in rows if r.label == "3"][:2]
    no_test = [r for r in rows if not (r.label == "5" and r.split == "test")]
    with pytest.raises(TrainingDataError, match=r"fewer than 5 labels: \{'3': 2\}"):
        check_labeled_rows(few)
    with pytest.raises(TrainingDataError, match=r"missing from the test split: \['5'\]"):
        check_labeled_rows(no_test)


def test_every_model_builds_and_unknown_names_are_listed() -> None:
    for name in MODEL_NAMES:
        model = build_model(name, 10)
        out = model.eval()(torch.zeros(2, 3, 64, 64))
        assert out.shape == (2, 10)
    with pytest.raises(ValueError, match="Valid models: small_cnn, resnet18"):
        build_model("vgg99", 10)


def test_fit_learns_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    rows = digit_rows(tmp_path / "img")
    config = TrainConfig(epochs=4, batch_size=32, lr=3e-3, seed=1)

    train, val, mapping = loaders(rows)
    seed_everything(config.seed, True)  # the caller seeds before building the model (as train does)
    straight = build_model("small_cnn", len(mapping.labels))
    full = fit(straight, train, val, config, tmp_path / "ckpt-a")
    assert full.best_val_accuracy > 0.6  # ten classes: chance is 0.1

    train, val, _ = loaders(rows)
    seed_everything(config.seed, True)
    crashed = build_model("small_cnn", len(mapping.labels))
    partial = fit(crashed, train, val, config, tmp_path / "ckpt-b", stop_after=2)
    assert len(partial.history) == 2
    train, val, _ = loaders(rows)
    resumed_model = build_model("small_cnn", len(mapping.labels))
    resumed = fit(resumed_model, train, val, config, tmp_path / "ckpt-b")
    assert resumed.resumed_from == 1 and len(resumed.history) == 4
    assert [m.val_accuracy for m in resumed.history] == [m.val_accuracy for m in full.history]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key


def test_a_damaged_checkpoint_is_named(tmp_path: Path) -> None:
    rows = digit_rows(tmp_path / "img", 100)
    train, val, mapping = loaders(rows)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="delete it"):
        fit(
            build_model("small_cnn", len(mapping.labels)),
            train,
            val,
            TrainConfig(epochs=1),
            tmp_path / "ckpt",
        )


def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    model = build_model("small_cnn", 10)
    path = export_onnx(model, 32, tmp_path / "model.onnx")
    batches = [
        torch.from_numpy(np.random.default_rng(i).normal(size=(8, 3, 32, 32)).astype("float32"))
        for i in range(3)
    ]
    parity = onnx_parity(model, path, batches)
    assert parity.samples == 24 and parity.max_abs_diff < 1e-4 and parity.top1_agreement == 1.0


class _ScriptedTask:
    """A task whose validation scores are given in advance (the loss trains a linear layer on nothing)."""

    score_name = "score"

    def __init__(self, scores: list[float]) -> None:
        self.scores = iter(scores)

    def loss(self, net, batch, config):  # type: ignore[no-untyped-def]
        return net(batch[0]).pow(2).mean(), len(batch[0])

    def evaluate(self, model, loader, device):  # type: ignore[no-untyped-def]
        from loopline.training.engine import Evaluation

        return Evaluation(float("nan"), next(self.scores), None)


@pytest.mark.parametrize(
    ("scores", "epochs_run"),
    [
        ([0.0] * 8, 8),  # nothing learned yet (a detector's first epochs at mAP 0): no early stop
        ([0.0, 0.0, 0.0, 0.2, 0.1, 0.1, 0.1, 0.1], 6),  # patience 2 counts from the first score above 0
        ([0.5, 0.4, 0.4, 0.9, 0.1, 0.1, 0.1, 0.1], 3),
    ],
)
def test_patience_counts_from_the_first_score_above_zero(
    tmp_path: Path, scores: list[float], epochs_run: int
) -> None:
    import torch

    from loopline.training.engine import TrainConfig, fit

    data = torch.utils.data.TensorDataset(torch.ones(2, 3), torch.zeros(2))
    batches = torch.utils.data.DataLoader(data, batch_size=2)
    config = TrainConfig(epochs=8, patience=2, warmup_epochs=0)
    result = fit(torch.nn.Linear(3, 1), batches, batches, config, tmp_path, task=_ScriptedTask(scores))
    assert len(result.history) == epochs_run
    assert result.stopped_early == (epochs_run < 8)
