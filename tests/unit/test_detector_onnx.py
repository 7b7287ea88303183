"""The detector's ONNX export: the contract's graph, any image size, parity with PyTorch, and refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from loopline.detections import DETECTOR_INPUT, DETECTOR_OUTPUTS
from loopline.errors import DetectorExportRefused
from loopline.training.detection.onnx import (
    _match,
    check_detector_graph,
    detector_onnx_parity,
    export_detector_onnx,
)

pytestmark = pytest.mark.unit


def _images(*sizes: tuple[int, int]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(3, h, w, generator=generator) for h, w in sizes]


class SizeBox(torch.nn.Module):
    """A toy detector: one box around the whole image, its size read as Python ints (a traced constant)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        height, width = int(images[0].shape[1]), int(images[0].shape[2])
        score = images[0].mean().reshape(1) * self.scale
        boxes = torch.tensor([[0.0, 0.0, float(width), float(height)]]) + 0 * score
        return [{"boxes": boxes, "labels": (score > -1).long(), "scores": score}]


class Branchy(SizeBox):
    """A toy detector whose Python branch on the pixels is traced one way only."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        image = images[0]
        boxes = torch.stack([image[0].mean(), image[1].mean(), image[2].mean() + 1, image.mean() + 1])
        score = image.mean().reshape(1) * self.scale
        if float(image.mean()) > 0.5:
            score = score / 2
        return [{"boxes": boxes.reshape(1, 4), "labels": (score > -1).long(), "scores": score}]


class NoScores(SizeBox):
    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": torch.zeros(0, 4) * self.scale, "labels": torch.zeros(0, dtype=torch.int64)}]


def test_a_torchvision_detector_exports_with_any_image_size_and_matches_pytorch(tmp_path: Path) -> None:
    import onnxruntime as ort
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=96
    )
    path = export_detector_onnx(model, tmp_path / "detector.onnx")
    assert not model.training  # the exporter leaves the detector as it found it: evaluating
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [DETECTOR_INPUT]
    assert session.get_inputs()[0].shape == [1, 3, "height", "width"]
    assert [o.name for o in session.get_outputs()] == list(DETECTOR_OUTPUTS)
    parity = detector_onnx_parity(model, path, _images((70, 90), (96, 64), (50, 50)))
    assert parity.images == 3 and len(parity.sizes) == 3
    assert parity.matched_share == 1.0
    assert parity.detections > 0  # an untrained Faster R-CNN still proposes boxes: something was compared
    assert parity.max_box_diff < 0.01 and parity.max_score_diff < 1e-4
    boxes, labels, scores = session.run(None, {DETECTOR_INPUT: _images((77, 55))[0][None].numpy()})
    assert boxes.shape[1] == 4 and labels.dtype == np.int64 and scores.shape == labels.shape
    assert set(parity.metrics()) >= {"onnx_max_box_diff", "onnx_max_score_diff", "onnx_matched_share"}


def test_a_detector_whose_graph_fixes_the_image_size_is_refused(tmp_path: Path) -> None:
    model: Any = SizeBox()
    path = export_detector_onnx(model, tmp_path / "fixed.onnx", example_size=(40, 60))
    # the trace-time size matches; any other size shows the constant box
    same = detector_onnx_parity(model, path, _images((40, 60)), refuse=False)
    assert same.matched_share == 1.0
    with pytest.raises(DetectorExportRefused, match=r"does not reproduce PyTorch: 1 of 2 images") as err:
        detector_onnx_parity(model, path, _images((40, 60), (30, 50)))
    assert "(30, 50) image" in str(err.value)


def test_a_detector_whose_traced_branch_differs_is_refused(tmp_path: Path) -> None:
    model: Any = Branchy()
    path = export_detector_onnx(model, tmp_path / "branchy.onnx", example_size=(20, 20))
    dark, light = torch.rand(3, 20, 30) * 0.4, 0.6 + torch.rand(3, 24, 20) * 0.4
    parity = detector_onnx_parity(model, path, [dark, light], refuse=False)
    assert parity.matched_share == 0.5 and parity.max_score_diff > 0.1
    with pytest.raises(DetectorExportRefused, match="score"):
        detector_onnx_parity(model, path, [dark, light])


def test_one_image_size_cannot_prove_a_dynamic_size(tmp_path: Path) -> None:
    with pytest.raises(DetectorExportRefused, match="one size only"):
        detector_onnx_parity(SizeBox(), tmp_path / "unused.onnx", _images((40, 60), (40, 60)))


def test_a_detector_that_cannot_be_exported_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(DetectorExportRefused, match=r"could not be exported to ONNX \(KeyError: 'scores'\)"):
        export_detector_onnx(NoScores(), tmp_path / "broken.onnx")


def test_a_graph_with_a_fixed_input_size_is_refused(tmp_path: Path) -> None:
    from loopline.training.detection.onnx import _tensor_detector

    path = tmp_path / "static.onnx"
    torch.onnx.export(
        _tensor_detector(SizeBox()),
        (torch.rand(1, 3, 40, 60),),
        str(path),
        input_names=[DETECTOR_INPUT],
        output_names=list(DETECTOR_OUTPUTS),
        dynamo=False,
    )
    with pytest.raises(DetectorExportRefused, match=r"has shape \[1, 3, 40, 60\]: it fixes the image size"):
        check_detector_graph(path)


def _outputs(boxes: list[list[float]], scores: list[float]) -> list[np.ndarray]:
    return [np.array(boxes, dtype=np.float32), np.ones(len(scores), dtype=np.int64), np.array(scores)]


def test_near_equal_scores_may_keep_either_box_but_nothing_else_may_differ() -> None:
    a, b, c = [0.0, 0, 10, 10], [20.0, 20, 30, 30], [40.0, 0, 50, 10]
    # the last two tie: NMS or the top-k cut keeps either one, by float noise
    torch_side = _outputs([a, b], [0.9, 0.5])
    onnx_side = _outputs([a, c], [0.9, 0.5 + 2e-7])
    assert not _match(torch_side, onnx_side, 0.5, 1e-3)[0]  # no tie on either side: refused
    torch_side = _outputs([a, b, c], [0.9, 0.5, 0.5 + 1e-7])
    onnx_side = _outputs([a, c, [60.0, 0, 70, 10]], [0.9, 0.5 + 2e-7, 0.5])
    same, box_diff, score_diff = _match(torch_side, onnx_side, 0.5, 1e-3)
    assert same and box_diff == 0 and score_diff == pytest.approx(1e-7)
    # a box moved by more than the tolerance is a difference, whatever the scores
    assert not _match(_outputs([a], [0.9]), _outputs([[0.0, 0, 11, 10]], [0.9]), 0.5, 1e-3)[0]
