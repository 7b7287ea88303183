"""Detector training on tiny synthetic digit scenes, on CPU: data checks, augmentation that moves boxes
with the pixels, zero-box targets, fit with the detection task, and resume after a crash."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from loopline.data.demo import png_bytes
from loopline.data.demo_boxes import render_scene
from loopline.data.labeled import LabeledRow, PixelBox
from loopline.errors import TrainingDataError
from loopline.training.detection.data import (
    DetectionImages,
    build_detection_transform,
    check_detection_rows,
    collate_detections,
    detection_loader_factory,
)
from loopline.training.detection.models import DETECTOR_NAMES, build_detector
from loopline.training.detection.task import DetectionTask
from loopline.training.engine import TrainConfig, fit, seed_everything
from loopline.training.search import SearchSpace

pytestmark = pytest.mark.unit

DETECTOR = "ssdlite320_mobilenet_v3_large"  # the fastest of the three on a CPU
SIZE = 64  # the detector's input side in these tests


def row(path: Path, split: str, boxes: tuple[PixelBox, ...], size: tuple[int, int]) -> LabeledRow:
    return LabeledRow(
        path.stem, str(path), boxes[0].label if boxes else "", split, "v", 1, 1, 1, (), boxes, size
    )  # type: ignore[arg-type]


def scene_rows(folder: Path, n: int = 12, seed: int = 0) -> list[LabeledRow]:
    """``n`` grey scenes of 0-4 digits (the detection demo's renderer, at a small scale): 60% train."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image, scene = render_scene(rng, digits.images, digits.target, (48, 64), (14, 20))
        path = folder / f"scene-{i:03d}.png"
        path.write_bytes(png_bytes(image))
        split = "train" if i < n * 0.6 else ("val" if i < n * 0.8 else "test")
        rows.append(row(path, split, scene.boxes, (scene.width, scene.height)))
    return rows


def loaders(rows: list[LabeledRow], batch_size: int = 4):  # type: ignore[no-untyped-def]
    mapping = check_detection_rows(rows)
    make = detection_loader_factory(rows, mapping, read_bytes=lambda uri: Path(uri).read_bytes())
    return make(0, batch_size, "train"), make(0, 8, "val"), mapping


def test_bad_boxes_are_refused_with_every_reason(tmp_path: Path) -> None:
    rows = scene_rows(tmp_path, 10)
    box = PixelBox("3", 40.0, 5.0, 30.0, 10.0)  # runs past the right edge of a 48-64 px image
    bad = [
        *rows,
        row(tmp_path / "a.png", "train", (PixelBox("3", 5, 5, 0, 10),), (64, 64)),
        row(tmp_path / "b.png", "train", (box,), (48, 48)),
    ]
    with pytest.raises(TrainingDataError) as raised:
        check_detection_rows(bad)
    assert "zero-area box" in str(raised.value) and "outside the 48x48 image" in str(raised.value)
    only_negatives_in_val = [
        r if r.split != "val" else row(Path(r.stored_uri), "val", (), (64, 64)) for r in rows
    ]
    with pytest.raises(TrainingDataError, match="no boxes in the val split"):
        check_detection_rows(only_negatives_in_val)
    with pytest.raises(TrainingDataError, match="outside the label set"):
        check_detection_rows(rows, labels=["nothing"])


def test_augmentation_moves_boxes_with_the_pixels_and_keeps_them_inside(tmp_path: Path) -> None:
    canvas = np.zeros((60, 80, 3), dtype=np.uint8)
    canvas[20:40, 50:70] = 255  # a white square at x 50-70, y 20-40, near the right edge
    path = tmp_path / "square.png"
    Image.fromarray(canvas).save(path)
    rows = [row(path, "train", (PixelBox("1", 50, 20, 20, 20),), (80, 60))]
    mapping = check_detection_rows([*rows, *(replace(r, split=s) for r in rows for s in ("val", "test"))])
    data = DetectionImages(rows, mapping, build_detection_transform(True))
    moved = 0
    for seed in range(12):
        torch.manual_seed(seed)
        image, target = data[0]
        assert image.dtype == torch.float32 and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert target["labels"].tolist() == [1]
        x1, y1, x2, y2 = target["boxes"][0].tolist()
        assert 0 <= x1 < x2 <= image.shape[2] and 0 <= y1 < y2 <= image.shape[1]
        bright = image.mean(0) > image.mean(0).max() * 0.5  # the square, whatever the colour jitter did
        ys, xs = torch.nonzero(bright, as_tuple=True)
        assert abs(float(xs.float().mean()) + 0.5 - (x1 + x2) / 2) < 2.0  # the box is where the square is
        assert abs(float(ys.float().mean()) + 0.5 - (y1 + y2) / 2) < 2.0
        moved += abs((x1 + x2) / 2 - 60) > 0.5 or abs((y1 + y2) / 2 - 30) > 0.5
    assert moved >= 6  # the jitter does move things


def test_zero_box_targets_train(tmp_path: Path) -> None:
    rows = scene_rows(tmp_path, 10)
    negative = tmp_path / "empty.png"
    Image.new("L", (56, 48), 250).save(negative)
    rows.append(row(negative, "train", (), (56, 48)))
    mapping = check_detection_rows(rows)
    data = DetectionImages([rows[-1]], mapping, build_detection_transform(True))
    _, target = data[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    for name in (DETECTOR, "fasterrcnn_mobilenet_v3_large_320_fpn"):
        model = build_detector(name, len(mapping.labels) + 1, image_size=SIZE).train()
        losses = model(*collate_detections([data[0], data[0]]))
        loss = sum(losses.values())
        loss.backward()
        assert torch.isfinite(loss), name


def test_a_detector_trains_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    rows = scene_rows(tmp_path / "img", 14)
    config = TrainConfig(epochs=2, batch_size=4, lr=1e-3, seed=3, warmup_epochs=0)

    train, val, mapping = loaders(rows)
    task = DetectionTask(mapping.labels)
    seed_everything(config.seed, True)
    straight = build_detector(DETECTOR, len(mapping.labels) + 1, image_size=SIZE)
    full = fit(straight, train, val, config, tmp_path / "ckpt-a", task=task)
    assert len(full.history) == 2 and all(np.isfinite(m.train_loss) for m in full.history)
    assert all(0.0 <= m.val_score <= 1.0 and np.isnan(m.val_loss) for m in full.history)
    assert full.history[1].train_loss < full.history[0].train_loss  # it learns

    train, val, _ = loaders(rows)
    seed_everything(config.seed, True)
    crashed = build_detector(DETECTOR, len(mapping.labels) + 1, image_size=SIZE)
    assert len(fit(crashed, train, val, config, tmp_path / "ckpt-b", stop_after=1, task=task).history) == 1
    train, val, _ = loaders(rows)
    resumed_model = build_detector(DETECTOR, len(mapping.labels) + 1, image_size=SIZE)
    resumed = fit(resumed_model, train, val, config, tmp_path / "ckpt-b", task=task)
    assert resumed.resumed_from == 0 and len(resumed.history) == 2
    assert [m.train_loss for m in resumed.history] == [m.train_loss for m in full.history]
    assert [m.val_score for m in resumed.history] == [m.val_score for m in full.history]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key


def test_every_detector_builds_and_unknown_names_are_listed() -> None:
    for name in DETECTOR_NAMES:
        model = build_detector(name, 3, image_size=SIZE).eval()
        with torch.inference_mode():
            out = model([torch.rand(3, 50, 60)])[0]
        assert set(out) == {"boxes", "labels", "scores"} and out["boxes"].shape[1] == 4
    with pytest.raises(ValueError, match="Valid detectors: fasterrcnn_mobilenet_v3_large_320_fpn"):
        build_detector("yolo", 3)


def test_the_search_space_samples_detectors_and_keeps_classification_studies() -> None:
    import optuna

    space = SearchSpace(detectors=[DETECTOR], detector_batch_sizes=[2], batch_sizes=[64])
    params = space.sample(optuna.create_study().ask(), "detection")
    assert params["model"] == DETECTOR and params["batch_size"] == 2 and "label_smoothing" not in params
    assert space.sample(optuna.create_study().ask())["batch_size"] == 64
    assert "detectors" not in space.for_task("classification")
    assert "models" not in space.for_task("detection") and "label_smoothing" not in space.for_task(
        "detection"
    )
    with pytest.raises(ValueError, match="unknown detectors \\['yolo'\\]"):
        SearchSpace(detectors=["yolo"])


def test_the_detection_task_scores_true_boxes_as_perfect_and_misses_as_zero(tmp_path: Path) -> None:
    rows = scene_rows(tmp_path, 12)
    _, val, mapping = loaders(rows)
    truth = [t for _, targets in val for t in targets]

    class Oracle(torch.nn.Module):  # answers each image with its true boxes, or with boxes shifted away
        def __init__(self, shift: float) -> None:
            super().__init__()
            self.shift, self.seen = shift, 0

        def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
            out = []
            for _ in images:
                t = truth[self.seen]
                self.seen += 1
                out.append(
                    {
                        "boxes": t["boxes"] + self.shift,
                        "labels": t["labels"],
                        "scores": torch.ones(len(t["labels"])),
                    }
                )
            return out

    task = DetectionTask(mapping.labels)
    assert task.evaluate(Oracle(0.0), val, "cpu").score == pytest.approx(1.0)
    assert task.evaluate(Oracle(30.0), val, "cpu").score == pytest.approx(0.0)
