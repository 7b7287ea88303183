"""Detector outputs as Detections, and COCO mAP through pycocotools."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loopline.data.labeled import PixelBox
from loopline.detections import Detection, coco_map, detections_from_outputs

LABELS = ("cat", "dog")


def _found(box: PixelBox, score: float = 0.9, dx: float = 0.0) -> Detection:
    return Detection(box.label, score, box.x + dx, box.y, box.width, box.height)


TRUTH = [
    [PixelBox("cat", 10, 10, 20, 20), PixelBox("dog", 50, 50, 30, 20)],
    [PixelBox("dog", 5, 5, 40, 40)],
    [],  # a negative image
]


def test_perfect_detections_score_one_and_a_miss_scores_less() -> None:
    perfect = coco_map(TRUTH, [[_found(b) for b in image] for image in TRUTH], LABELS)
    assert perfect.map == pytest.approx(1.0)
    assert perfect.map50 == pytest.approx(1.0)
    assert perfect.per_class == {"cat": pytest.approx((1.0, 1.0)), "dog": pytest.approx((1.0, 1.0))}
    shifted = coco_map(TRUTH, [[_found(b, dx=b.width * 0.3) for b in image] for image in TRUTH], LABELS)
    assert 0.0 < shifted.map < perfect.map
    missed = coco_map(TRUTH, [[_found(TRUTH[0][0])], [], []], LABELS)
    assert missed.per_class["cat"] == pytest.approx((1.0, 1.0))
    assert missed.per_class["dog"] == pytest.approx((0.0, 0.0))


def test_a_false_box_on_the_negative_image_costs_precision() -> None:
    clean = [[_found(b) for b in image] for image in TRUTH]
    noisy = [*clean[:2], [Detection("cat", 0.95, 1, 1, 10, 10)]]
    assert coco_map(TRUTH, noisy, LABELS).map < coco_map(TRUTH, clean, LABELS).map


def test_image_order_does_not_change_the_score() -> None:
    predicted = [[_found(b, score=0.5 + 0.1 * i, dx=2.0 * i) for i, b in enumerate(image)] for image in TRUTH]
    predicted[2] = [Detection("dog", 0.7, 0, 0, 5, 5)]
    order = [2, 0, 1]
    first = coco_map(TRUTH, predicted, LABELS)
    permuted = coco_map([TRUTH[i] for i in order], [predicted[i] for i in order], LABELS)
    assert permuted.map == pytest.approx(first.map)
    assert permuted.map50 == pytest.approx(first.map50)


def test_no_detections_at_all() -> None:
    scores = coco_map(TRUTH, [[], [], []], LABELS)
    assert scores.map == 0.0
    assert scores.per_class["cat"] == (0.0, 0.0)
    only_negatives = coco_map([[]], [[]], LABELS)
    assert math.isnan(only_negatives.per_class["cat"][0])


def test_outputs_become_detections_in_original_pixels_highest_score_first() -> None:
    found = detections_from_outputs(
        np.array([[10, 20, 30, 60], [-4, 0, 8, 8]], dtype=np.float32),
        np.array([2, 1]),
        np.array([0.4, 0.9], dtype=np.float32),
        LABELS,
        scale=(2.0, 0.5),
    )
    assert [d.label for d in found] == ["cat", "dog"]
    assert found[0] == Detection("cat", pytest.approx(0.9), 0.0, 0.0, 16.0, 4.0)
    assert (found[1].x, found[1].y, found[1].width, found[1].height) == (20.0, 10.0, 40.0, 20.0)
    weak = detections_from_outputs(np.zeros((1, 4)), np.array([1]), np.array([0.1]), LABELS, min_score=0.5)
    assert weak == []


def test_class_ids_outside_the_labels_are_refused() -> None:
    with pytest.raises(ValueError, match=r"class ids \[3\], outside 1..2"):
        detections_from_outputs(np.zeros((1, 4)), np.array([3]), np.array([0.9]), LABELS)
    with pytest.raises(ValueError, match="must be as many"):
        detections_from_outputs(np.zeros((2, 4)), np.array([1]), np.array([0.9]), LABELS)
