"""The detector gate: the paired bootstrap of the mAP difference, the verdict, the report and its pictures."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from PIL import Image

from loopline.data.labeled import LabeledRow, PixelBox
from loopline.detections import Detection, coco_map
from loopline.registry.artifacts import ModelFiles
from loopline.registry.detection_eval import DetectionEvaluation, evaluate_detectors
from loopline.registry.detection_gate import DetectionGateRules, compare_detectors, detection_gate
from loopline.registry.detection_pictures import PREDICTED_COLOUR, TRUE_COLOUR, draw_detections
from loopline.registry.detection_report import render_detection_evaluation
from loopline.registry.detection_stats import paired_bootstrap_map
from loopline.registry.gate import IncomparableModels

pytestmark = pytest.mark.unit
LABELS = ("a", "b")


def _truth(n: int) -> dict[str, tuple[PixelBox, ...]]:
    """n images, each with one box (labels alternating), at positions that differ per image."""
    return {f"h{i:03d}": (PixelBox(LABELS[i % 2], 5 + i % 7, 8 + i % 5, 20 + i % 3, 25),) for i in range(n)}


def _found(truth: dict[str, tuple[PixelBox, ...]], hit: Iterable[str]) -> dict[str, tuple[Detection, ...]]:
    """Exact detections (score 0.9) on the images in ``hit``, nothing on the others."""
    keep = set(hit)
    return {
        key: tuple(Detection(b.label, 0.9, b.x, b.y, b.width, b.height) for b in boxes) if key in keep else ()
        for key, boxes in truth.items()
    }


def _evaluation(
    truth: dict[str, tuple[PixelBox, ...]], found: dict[str, tuple[Detection, ...]]
) -> DetectionEvaluation:
    keys = sorted(truth)
    return DetectionEvaluation(
        labels=LABELS,
        images=len(keys),
        scores=coco_map([truth[k] for k in keys], [found[k] for k in keys], LABELS),
        latency_ms=1.0,
        test_set="set",
        truth=truth,
        predictions=found,
        sizes={k: (64, 64) for k in keys},
    )


def test_the_interval_contains_the_true_difference() -> None:
    truth = _truth(30)
    keys = list(truth)
    perfect, half = _found(truth, truth), _found(truth, [k for i, k in enumerate(keys) if i % 4 < 2])
    true_delta = 1.0 - coco_map(list(truth.values()), list(half.values()), LABELS).map  # about 0.5
    result = paired_bootstrap_map(truth, perfect, half, LABELS, resamples=60)
    assert result.delta == pytest.approx(true_delta)
    assert result.interval.low < true_delta < result.interval.high
    assert result.interval.low > 0.2 and result.better_share == 1.0
    # two different models that are equally good: the interval holds 0
    first, second = (_found(truth, [k for i, k in enumerate(keys) if (i % 4 < 2) == odd]) for odd in (0, 1))
    tied = paired_bootstrap_map(truth, first, second, LABELS, resamples=60)
    assert tied.interval.low < 0 < tied.interval.high
    assert 0.2 < tied.better_share < 0.8


def test_the_bootstrap_depends_on_the_seed_not_on_the_order_of_the_images() -> None:
    truth = _truth(20)
    perfect, some = _found(truth, truth), _found(truth, list(truth)[::3])
    first = paired_bootstrap_map(truth, perfect, some, LABELS, resamples=25, seed=7)
    again = paired_bootstrap_map(truth, perfect, some, LABELS, resamples=25, seed=7)
    reverse = dict(reversed(list(truth.items())))
    shuffled = paired_bootstrap_map(
        reverse, dict(reversed(list(perfect.items()))), some, LABELS, resamples=25, seed=7
    )
    assert first == again == shuffled
    assert paired_bootstrap_map(truth, perfect, some, LABELS, resamples=25, seed=8) != first


def test_each_resample_scores_what_pycocotools_scores_on_it() -> None:
    import numpy as np

    truth = _truth(12)
    truth["neg"] = ()  # a valid negative
    keys = sorted(truth)
    challenger = {
        k: (*_found(truth, truth)[k], Detection("b", 0.3, 1, 1, 9, 9)) if i % 3 else ()
        for i, k in enumerate(keys)
    }
    champion = _found(truth, keys[::2])
    result = paired_bootstrap_map(truth, challenger, champion, LABELS, resamples=15, seed=3)
    rng = np.random.default_rng(3)  # the same resamples, each scored by coco_map itself
    deltas = []
    for _ in range(15):
        index = rng.integers(0, len(keys), len(keys))
        picked = [truth[keys[i]] for i in index]
        deltas.append(
            coco_map(picked, [challenger[keys[i]] for i in index], LABELS).map
            - coco_map(picked, [champion[keys[i]] for i in index], LABELS).map
        )
    low, high = np.quantile(deltas, [0.025, 0.975])
    assert (result.interval.low, result.interval.high) == pytest.approx((low, high), abs=1e-12)
    assert result.better_share == pytest.approx(np.mean(np.array(deltas) > 0))


def test_the_bootstrap_refuses_different_images() -> None:
    truth = _truth(4)
    with pytest.raises(ValueError, match="different images"):
        paired_bootstrap_map(truth, _found(truth, truth), {}, LABELS)


def test_identical_models_pass_with_an_interval_around_zero() -> None:
    truth = _truth(30)
    found = _found(truth, list(truth)[:20])
    challenger, champion = _evaluation(truth, found), _evaluation(truth, found)
    rules = DetectionGateRules(resamples=50)
    comparison = compare_detectors(challenger, champion, rules)
    assert comparison.bootstrap is not None
    assert comparison.map_delta == 0 and comparison.bootstrap.delta == 0
    assert comparison.bootstrap.interval.low == comparison.bootstrap.interval.high == 0
    verdict = detection_gate(challenger, comparison, rules)
    assert verdict.passed and verdict.gate == "model" and not verdict.notes


def test_a_clearly_worse_challenger_fails_and_a_small_drop_on_few_images_is_a_note() -> None:
    truth = _truth(24)
    rules = DetectionGateRules(resamples=50)
    worse = _evaluation(truth, _found(truth, list(truth)[:12]))
    champion = _evaluation(truth, _found(truth, truth))
    verdict = detection_gate(worse, compare_detectors(worse, champion, rules), rules)
    assert not verdict.passed
    assert (
        "below min_gain +0.000" in verdict.violations[0]
        and "paired bootstrap interval" in verdict.violations[0]
    )

    few = _truth(6)
    one_miss = _evaluation(few, _found(few, list(few)[1:]))
    small = detection_gate(
        one_miss, compare_detectors(one_miss, _evaluation(few, _found(few, few)), rules), rules
    )
    assert small.passed and "cannot tell it from chance" in small.notes[0]


def test_the_floor_and_a_required_gain() -> None:
    truth = _truth(20)
    good = _evaluation(truth, _found(truth, truth))
    floor = DetectionGateRules(min_map=0.9, resamples=50)
    weak = _evaluation(truth, _found(truth, list(truth)[:5]))
    assert (
        "< min_map 0.900" in detection_gate(weak, compare_detectors(weak, None, floor), floor).violations[0]
    )
    assert detection_gate(good, compare_detectors(good, None, floor), floor).passed
    gain = DetectionGateRules(min_gain=0.1, resamples=50)
    same = compare_detectors(good, good, gain)
    assert "< min_gain +0.100" in detection_gate(good, same, gain).violations[0]


def test_incomparable_evaluations_are_refused() -> None:
    truth = _truth(6)
    other = _truth(7)
    with pytest.raises(IncomparableModels, match="cannot be compared"):
        compare_detectors(
            _evaluation(truth, _found(truth, truth)),
            _evaluation(other, _found(other, other)),
            DetectionGateRules(),
        )


def _near(picture: Image.Image, x: float, y: float, colour: tuple[int, int, int], reach: int = 2) -> bool:
    pixels = picture.load()
    assert pixels is not None
    return any(
        pixels[min(picture.width - 1, max(0, round(x) + dx)), min(picture.height - 1, max(0, round(y) + dy))]
        == colour
        for dx in range(-reach, reach + 1)
        for dy in range(-reach, reach + 1)
    )


def test_drawn_pictures_are_pngs_with_the_boxes_in_their_colours() -> None:
    image = Image.new("RGB", (100, 80), (128, 128, 128))
    true_box = PixelBox("a", 10, 10, 30, 20)
    found = Detection("b", 0.8, 50, 40, 40, 30)
    unsure = Detection("a", 0.1, 60, 5, 20, 20)
    png = draw_detections(image, [true_box], [found, unsure], min_score=0.5)
    drawn = Image.open(io.BytesIO(png))
    assert drawn.format == "PNG" and drawn.size == (192, 154)
    drawn = drawn.convert("RGB")
    scale = 192 / 100
    # the left and top edges of each box, at their midpoints
    assert _near(drawn, 10 * scale, 20 * scale, TRUE_COLOUR)
    assert _near(drawn, 25 * scale, 10 * scale, TRUE_COLOUR)
    assert _near(drawn, 50 * scale, 55 * scale, PREDICTED_COLOUR)
    assert _near(drawn, 90 * scale - 1, 55 * scale, PREDICTED_COLOUR)  # right edge
    assert not _near(drawn, 60 * scale, 15 * scale, PREDICTED_COLOUR)  # below min_score: not drawn
    assert drawn.getpixel((5, 150)) == (128, 128, 128)  # the picture itself is kept


class HalfBox(torch.nn.Module):
    """A toy ONNX-exportable detector: one box over the top-left quarter, label 1, any image size."""

    def __init__(self) -> None:
        super().__init__()
        self.score = torch.nn.Parameter(torch.tensor([0.9]))

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        height, width = images[0].shape[1], images[0].shape[2]
        zero = images[0].mean() * 0
        box = torch.stack([zero, zero, zero + width / 2, zero + height / 2]).reshape(1, 4)
        score = self.score + zero  # from the image, or the exporter folds it into a constant output
        return [{"boxes": box, "labels": (score > 0).long(), "scores": score}]


def test_detectors_are_evaluated_through_onnx_and_reported_with_pictures(tmp_path: Path) -> None:
    from loopline.training.detection.onnx import export_detector_onnx

    onnx = export_detector_onnx(HalfBox(), tmp_path / "half.onnx")
    sizes = {"c1": (40, 60), "c2": (80, 50), "c3": (64, 64), "c4": (30, 30)}
    rows = [
        LabeledRow(
            key,
            f"/img/{key}",
            "a",
            "test" if key != "c4" else "train",
            "v",
            1,
            1,
            1,
            (),
            boxes=(PixelBox("a", 0, 0, w / 2, h / 2),) if key != "c3" else (PixelBox("b", 5, 5, 9, 9),),
            image_size=(w, h),
        )
        for key, (w, h) in sizes.items()
    ]
    files = ModelFiles(onnx, LABELS, 0, {"train": ["c4"], "test": ["c1", "c2", "c3"]}, detector=True)
    evaluations = evaluate_detectors(rows, files, files, "1", lambda uri: Image.new("RGB", sizes[uri[5:]]))
    challenger = evaluations.challenger
    assert challenger.images == 3 and challenger.predictions["c2"][0].box() == PixelBox("a", 0, 0, 40, 25)
    assert challenger.scores.per_class["a"] == (1.0, 1.0) and challenger.scores.per_class["b"] == (0.0, 0.0)
    assert challenger.worst() == [("c3", 0.0)]  # the perfect images are not worth a look
    assert set(evaluations.pictures) == {"c3"}
    rules = DetectionGateRules(resamples=50)
    comparison = compare_detectors(challenger, evaluations.champion, rules)
    verdict = detection_gate(challenger, comparison, rules)
    report = render_detection_evaluation(
        "m", "2", challenger, evaluations.champion, "1", comparison, verdict, evaluations.pictures.get
    )
    assert "| mAP@[.5:.95] | 0.500 | 0.500 | +0.000 |" in report
    assert report.count("data:image/png;base64,") == 1 and "- passed: every rule holds" in report
    leaky = ModelFiles(onnx, LABELS, 0, {"train": ["c1"]}, detector=True)
    with pytest.raises(IncomparableModels, match="trained or validated on 1 of the 3 test images"):
        evaluate_detectors(rows, files, leaky, "1", lambda uri: Image.new("RGB", sizes[uri[5:]]))
    classifier = ModelFiles(onnx, LABELS, 224, {"train": ["c4"]})
    with pytest.raises(IncomparableModels, match="is a classifier and the challenger a detector"):
        evaluate_detectors(rows, files, classifier, "1", lambda uri: Image.new("RGB", sizes[uri[5:]]))
