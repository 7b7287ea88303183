"""Round 2 for boxes: a real ONNX detector scores stored images, box uncertainty x diversity picks the
batch, and its boxes go to Label Studio as validated percent-coordinate predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from loopline.errors import LabelConfigMismatch, ModelLoadError
from loopline.labeling.configs import parse_label_config, render_label_config
from loopline.labeling.preannotate import (
    Detected,
    box_preannotations,
    choose_images_by_boxes,
    detect_stored_images,
    thumbnail_embeddings,
)
from loopline.training.detection.onnx import export_detector_onnx

pytestmark = pytest.mark.unit

LABELS = ("cat", "dog")
CONFIG = parse_label_config(render_label_config("detection", list(LABELS)), "detection")


class ColourProbe(torch.nn.Module):
    """A detector that reads its input back: one box over the whole input, scored by the red channel's
    mean, labelled "dog" (class 2) when the green channel's mean is above 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        image = images[0]
        width, height = (image[0, 0, :] * 0 + 1).sum(), (image[0, :, 0] * 0 + 1).sum()
        zero = width * 0
        boxes = torch.stack([zero, zero, width, height]).reshape(1, 4)
        score = image[0].mean().reshape(1) * self.scale
        labels = 1 + (image[1].mean() > 0.5).long().reshape(1)
        return [{"boxes": boxes, "labels": labels, "scores": score}]


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_detector_onnx(ColourProbe(), tmp_path_factory.mktemp("probe") / "probe.onnx")


@pytest.fixture(scope="module")
def faster_rcnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained torchvision Faster R-CNN (random weights still propose boxes): real plumbing."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=len(LABELS) + 1, min_size=64, max_size=64
    )
    path = tmp_path_factory.mktemp("frcnn") / "detector.onnx"
    return export_detector_onnx(model, path, example_size=(64, 64))


def reader(images: dict[str, Image.Image]) -> Any:
    return lambda uri: images[uri]


def scenes(count: int) -> dict[str, Image.Image]:
    """``count`` random-noise images of different sizes and modes."""
    rng = np.random.default_rng(7)
    images = {}
    for i in range(count):
        width, height = 48 + 8 * (i % 4), 40 + 12 * (i % 3)
        pixels = (rng.random((height, width, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        images[f"mem://{i:02d}"] = image.convert("L") if i % 5 == 4 else image
    return images


def test_the_detector_sees_the_decoded_image_as_rgb_in_unit_range_at_its_own_size(probe: Path) -> None:
    images = {
        "mem://red-dog": Image.new("RGB", (50, 30), (204, 153, 0)),
        "mem://blue-cat": Image.new("RGB", (24, 64), (51, 25, 230)),
        "mem://grey": Image.new("L", (40, 40), 102),
    }
    uris = list(images)
    found = detect_stored_images(probe, LABELS, uris, reader(images))
    assert found.sizes == ((50, 30), (24, 64), (40, 40))
    labels = [[d.label for d in image] for image in found.detections]
    assert labels == [["dog"], ["cat"], ["cat"]]  # green 0.6, 0.1, 0.4
    scores = [image[0].score for image in found.detections]
    assert scores == pytest.approx([0.8, 0.2, 0.4], abs=1e-5)  # the red channel, not the blue
    boxes = [[d.x, d.y, d.width, d.height] for image in found.detections for d in image]
    np.testing.assert_allclose(boxes, [[0, 0, 50, 30], [0, 0, 24, 64], [0, 0, 40, 40]])  # not resized
    np.testing.assert_array_equal(found.embeddings, thumbnail_embeddings(images.values()))
    above = detect_stored_images(probe, LABELS, uris, reader(images), min_score=0.3)
    assert [len(image) for image in above.detections] == [1, 0, 1]


def test_a_real_detector_scores_every_image_in_its_own_pixels(faster_rcnn: Path) -> None:
    images = scenes(6)
    uris = list(images)
    whole = detect_stored_images(faster_rcnn, LABELS, uris, reader(images))
    batched = detect_stored_images(faster_rcnn, LABELS, uris, reader(images), batch_size=4)
    assert whole == Detected(whole.detections, whole.sizes, whole.embeddings)
    assert whole.detections == batched.detections and whole.sizes == batched.sizes
    assert whole.sizes == tuple(images[u].size for u in uris) and whole.embeddings.shape == (6, 64)
    assert sum(len(image) for image in whole.detections) > 0
    for image, (width, height) in zip(whole.detections, whole.sizes, strict=True):
        assert [d.score for d in image] == sorted((d.score for d in image), reverse=True)
        for d in image:
            assert d.label in LABELS and 0 <= d.score <= 1
            assert d.x >= 0 and d.y >= 0 and d.x + d.width <= width + 1e-3 and d.y + d.height <= height + 1e-3


def test_chosen_images_go_out_with_valid_box_predictions(faster_rcnn: Path) -> None:
    images = scenes(10)
    uris = list(images)
    keys = [f"hash-{u[-2:]}" for u in uris]
    found = detect_stored_images(faster_rcnn, LABELS, uris, reader(images))
    labeled = thumbnail_embeddings([Image.new("RGB", (8, 8), (128, 128, 128))])
    picks = choose_images_by_boxes(found, labeled, 4, seed=0, keys=keys)
    assert len(set(picks)) == 4
    # the same images whatever order the candidates come in
    order = [9, 3, 0, 7, 1, 8, 2, 6, 5, 4]
    again = detect_stored_images(faster_rcnn, LABELS, [uris[i] for i in order], reader(images))
    repicked = choose_images_by_boxes(again, labeled, 4, seed=0, keys=[keys[i] for i in order])
    assert sorted(keys[order[i]] for i in repicked) == sorted(keys[i] for i in picks)

    predictions = box_preannotations(CONFIG, found, picks, keys, "detector v2", min_score=0.0)
    assert set(predictions) == {keys[i] for i in picks if found.detections[i]}
    for i in picks:
        if keys[i] not in predictions:
            continue
        prediction = predictions[keys[i]]
        assert prediction["model_version"] == "detector v2"
        assert len(prediction["result"]) == len(found.detections[i])
        width, height = found.sizes[i]
        for result in prediction["result"]:
            assert (result["original_width"], result["original_height"]) == (width, height)
            value = result["value"]
            assert 0 <= value["x"] and value["x"] + value["width"] <= 100 + 1e-6
    top = max(d.score for image in found.detections for d in image)
    assert box_preannotations(CONFIG, found, picks, keys, "v2", min_score=top + 1e-6) == {}


def test_boxes_that_do_not_fit_the_project_are_refused(probe: Path) -> None:
    images = {"mem://a": Image.new("RGB", (20, 10), (200, 0, 0))}  # the probe says "cat"
    found = detect_stored_images(probe, LABELS, ["mem://a"], reader(images))
    other = parse_label_config(render_label_config("detection", ["car", "dog"]), "detection")
    assert box_preannotations(CONFIG, found, [0], ["a"], "v2", 0.0)["a"]["result"][0]["value"]["x"] == 0
    with pytest.raises(LabelConfigMismatch, match=r"(?s)1 of 1 predictions.*- a: .*labels \['cat'\]"):
        box_preannotations(other, found, [0], ["a"], "v2", 0.0)


def test_a_classifier_is_not_taken_for_a_detector(tmp_path: Path) -> None:
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    path = tmp_path / "classifier.onnx"
    torch.onnx.export(
        classifier,
        (torch.zeros(1, 3, 8, 8),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamo=False,
    )
    images = {"mem://a": Image.new("RGB", (8, 8))}
    with pytest.raises(ModelLoadError, match=r"which takes one input 'images' and returns \['boxes'"):
        detect_stored_images(path, LABELS, ["mem://a"], reader(images))
