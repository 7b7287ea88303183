"""A detector's ONNX export (the contract in ``loopline.detections``) and its parity with PyTorch.

``export_detector_onnx`` wraps a torchvision detector so the graph takes one tensor ``images``
``[1, 3, H, W]`` (not a list) and returns ``boxes``, ``labels``, ``scores``, and exports it with the
TorchScript exporter (``dynamo=False``, as torchvision's own ONNX tests do for detectors: their resize and
post-processing follow tracing-aware paths) with ``H``, ``W`` and the number of detections dynamic.
``detector_onnx_parity`` runs PyTorch and ONNX Runtime on the same images of at least two sizes and
refuses (``DetectorExportRefused``) a detector whose ONNX does not reproduce its detections.

With torch 2.14 the tracer turns two of Faster R-CNN's data-dependent sizes into constants of the traced
example: the box coder's ``box_sum`` (a Python sum of proposal counts) and the per-image ``split`` of
the box head's output. A trained detector then failed in ONNX Runtime on most images (a ``Reshape`` in
the box head), which the parity check caught. For the export only, ``_traceable`` swaps in equivalents for
one image that keep those sizes in the graph; the detector's resize to a fixed square
(``loopline.training.detection.models``) keeps the anchors' count a true constant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loopline.detections import DETECTOR_INPUT, DETECTOR_OUTPUTS
from loopline.errors import DetectorExportRefused

BOX_TOLERANCE = 0.5  # pixels: a box coordinate may differ this much between PyTorch and ONNX Runtime
SCORE_TOLERANCE = 1e-3
TIE = 1e-5  # scores this close rank by float noise: either of the two boxes may be kept
MIN_MATCHED = 1.0  # share of images whose detections must match


@dataclass(frozen=True)
class DetectorParity:
    """PyTorch against ONNX Runtime on the same images. Differences are over the detections matched one
    to one (same label, box and score within the tolerances); an image matches when all of its do, but
    for boxes kept instead of one another between near-equal scores (see ``_match``)."""

    images: int
    sizes: tuple[tuple[int, int], ...]  # distinct (height, width) checked
    detections: int  # PyTorch's, over all images
    max_box_diff: float  # pixels
    max_score_diff: float
    matched_share: float  # images whose detections match

    def metrics(self) -> dict[str, float]:
        """For MLflow: ``onnx_*`` metrics of the run."""
        return {
            "onnx_max_box_diff": self.max_box_diff,
            "onnx_max_score_diff": self.max_score_diff,
            "onnx_matched_share": self.matched_share,
            "onnx_parity_images": float(self.images),
        }


def _tensor_detector(model: Any) -> Any:
    """``model`` behind a module taking ``images`` [1, 3, H, W] and returning (boxes, labels, scores)."""
    import torch

    class TensorDetector(torch.nn.Module):
        def __init__(self, detector: Any) -> None:
            super().__init__()
            self.detector = detector

        def forward(self, images: Any) -> tuple[Any, Any, Any]:
            found = self.detector([images[0]])[0]
            return found["boxes"], found["labels"], found["scores"]

    return TensorDetector(model).eval()


def _traceable_decode(coder: Any) -> Any:
    """``BoxCoder.decode`` with the proposals' count taken from the tensor, not summed in Python."""
    import torch

    def decode(rel_codes: Any, boxes: Any) -> Any:
        concat = torch.cat(boxes, dim=0)
        return coder.decode_single(rel_codes, concat).reshape(concat.shape[0], rel_codes.shape[1] // 4, 4)

    return decode


def _single_image_postprocess(heads: Any) -> Any:
    """``RoIHeads.postprocess_detections`` for one image (no split by a traced count), as torchvision
    computes it: softmax, clip, drop the background, score threshold, small boxes, per-class NMS, top k."""
    import torch
    import torch.nn.functional as F
    from torchvision.ops import boxes as box_ops

    def postprocess(class_logits: Any, box_regression: Any, proposals: Any, image_shapes: Any) -> Any:
        boxes = box_ops.clip_boxes_to_image(
            heads.box_coder.decode(box_regression, proposals), image_shapes[0]
        )
        scores = F.softmax(class_logits, -1)
        labels = (
            torch.arange(class_logits.shape[-1], device=class_logits.device).view(1, -1).expand_as(scores)
        )
        boxes, scores, labels = (
            boxes[:, 1:].reshape(-1, 4),
            scores[:, 1:].reshape(-1),
            labels[:, 1:].reshape(-1),
        )
        sure = torch.where(scores > heads.score_thresh)[0]
        boxes, scores, labels = boxes[sure], scores[sure], labels[sure]
        kept = box_ops.remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
        kept = box_ops.batched_nms(boxes, scores, labels, heads.nms_thresh)[: heads.detections_per_img]
        return [boxes[kept]], [scores[kept]], [labels[kept]]

    return postprocess


@contextlib.contextmanager
def _traceable(model: Any) -> Iterator[None]:
    """A Faster R-CNN with ``_traceable_decode`` and ``_single_image_postprocess`` while it is exported;
    other detectors unchanged."""
    heads, rpn = getattr(model, "roi_heads", None), getattr(model, "rpn", None)
    if heads is None or rpn is None:
        yield
        return
    swapped = [(rpn.box_coder, "decode"), (heads.box_coder, "decode"), (heads, "postprocess_detections")]
    rpn.box_coder.decode = _traceable_decode(rpn.box_coder)
    heads.box_coder.decode = _traceable_decode(heads.box_coder)
    heads.postprocess_detections = _single_image_postprocess(heads)
    try:
        yield
    finally:
        for owner, name in swapped:
            del owner.__dict__[name]  # back to the class's method


def export_detector_onnx(
    model: Any, path: Path, opset: int = 17, example_size: tuple[int, int] = (96, 128)
) -> Path:
    """Export ``model`` (a torchvision detector, evaluated on the CPU) to ``path`` following the contract.

    Raises ``DetectorExportRefused`` when the export fails or the graph's input does not keep the image's
    height and width free. ``example_size`` (height, width) is the traced example's size."""
    import torch

    model.eval().cpu()
    wrapped = _tensor_detector(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, 3, *example_size, generator=torch.Generator().manual_seed(0))
    axes = {DETECTOR_INPUT: {2: "height", 3: "width"}} | {
        name: {0: "detections"} for name in DETECTOR_OUTPUTS
    }
    try:
        with _traceable(model):
            torch.onnx.export(
                wrapped,
                (example,),
                str(path),
                input_names=[DETECTOR_INPUT],
                output_names=list(DETECTOR_OUTPUTS),
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
    except Exception as exc:  # the exporters raise many kinds: name it, refuse the model
        raise DetectorExportRefused(
            f"The detector {type(model).__name__} could not be exported to ONNX ({type(exc).__name__}: "
            f"{exc}). To fix this, use one of loopline's torchvision detectors (their post-processing "
            "exports with the TorchScript exporter) or change the model so torch.onnx.export can trace it."
        ) from exc
    finally:
        model.eval()  # the exporter restores the wrapper's mode, which would leave the detector training
    check_detector_graph(path)
    return path


def check_detector_graph(path: Path) -> None:
    """Refuse (``DetectorExportRefused``) an ONNX file whose names are not the contract's or whose input
    fixes the image's height or width."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = [i for i in graph.input if i.name == DETECTOR_INPUT]
    outputs = sorted(o.name for o in graph.output)
    if not inputs or outputs != sorted(DETECTOR_OUTPUTS):
        raise DetectorExportRefused(
            f"The exported graph at {path} has inputs {[i.name for i in graph.input]} and outputs {outputs}; "
            f"the detector contract wants input {DETECTOR_INPUT!r} and outputs {list(DETECTOR_OUTPUTS)}. "
            "To fix this, export with loopline.training.detection.onnx.export_detector_onnx."
        )
    dims = inputs[0].type.tensor_type.shape.dim
    fixed = [i for i in (2, 3) if len(dims) > i and dims[i].HasField("dim_value")]
    if len(dims) != 4 or fixed:
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
        raise DetectorExportRefused(
            f"The exported detector's input {DETECTOR_INPUT!r} has shape {shape}: it fixes the image size, "
            "but the contract takes any height and width. To fix this, export with dynamic height and "
            "width axes (export_detector_onnx does)."
        )


def detector_onnx_parity(
    model: Any,
    onnx_path: Path,
    images: Sequence[Any],
    box_tolerance: float = BOX_TOLERANCE,
    score_tolerance: float = SCORE_TOLERANCE,
    min_matched: float = MIN_MATCHED,
    refuse: bool = True,
) -> DetectorParity:
    """Run ``model`` and the ONNX model on ``images`` (tensors [3, H, W] or [1, 3, H, W], RGB in [0, 1],
    of at least two sizes) and compare their detections. With ``refuse``, raises
    ``DetectorExportRefused`` naming the reason when fewer than ``min_matched`` of the images match,
    when a matched box or score is beyond the tolerances, or when ONNX Runtime cannot run a size."""
    import onnxruntime as ort
    import torch

    batches = [image if image.dim() == 4 else image.unsqueeze(0) for image in images]
    sizes = tuple(sorted({(int(b.shape[2]), int(b.shape[3])) for b in batches}))
    if refuse and len(sizes) < 2:
        raise DetectorExportRefused(
            f"The parity check got images of one size only {list(sizes)}: it cannot show the ONNX graph "
            "takes any size. To fix this, check images of at least two different heights and widths."
        )
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    wrapped = _tensor_detector(model.eval().cpu())
    box_diff = score_diff = 0.0
    matched = detections = 0
    failures: list[str] = []
    with torch.inference_mode():
        for batch in batches:
            expected = [t.numpy() for t in wrapped(batch.float())]
            try:
                got = session.run(list(DETECTOR_OUTPUTS), {DETECTOR_INPUT: batch.float().numpy()})
            except Exception as exc:  # ONNX Runtime's own errors (e.g. a shape fixed in the graph)
                failures.append(f"ONNX Runtime fails on a {tuple(batch.shape[2:])} image ({exc})")
                continue
            same, boxes, scores = _match(expected, got, box_tolerance, score_tolerance)
            detections += len(expected[0])
            box_diff, score_diff = max(box_diff, boxes), max(score_diff, scores)
            matched += same
            if not same and len(failures) < 3:
                failures.append(
                    f"a {tuple(batch.shape[2:])} image: PyTorch finds {len(expected[0])} objects, ONNX "
                    f"Runtime {len(got[0])} (largest box difference {boxes:.3g} px, score {scores:.3g})"
                )
    parity = DetectorParity(
        len(batches), sizes, detections, box_diff, score_diff, matched / len(batches) if batches else 0.0
    )
    if refuse and (parity.matched_share < min_matched or not batches):
        raise DetectorExportRefused(
            f"The detector's ONNX export does not reproduce PyTorch: {matched} of {len(batches)} images "
            f"match (needed {min_matched:.0%}; boxes within {box_tolerance} px, scores within "
            f"{score_tolerance}); {'; '.join(failures) or 'no images given'}. To fix this, keep "
            "data-dependent Python control flow and size-dependent constants out of the model's forward "
            "(the export traces one path), or retrain a stock torchvision detector."
        )
    return parity


def _match(
    expected: Sequence[np.ndarray], got: Sequence[np.ndarray], box_tolerance: float, score_tolerance: float
) -> tuple[bool, float, float]:
    """(do the detections match?, largest box and score differences: over the matched pairs when they
    match, else also by position, to show how far apart they are).

    Detections are matched one to one, ignoring order. A detection left unmatched is forgiven only when
    another detection on its own side scores within ``TIE`` of it: between near-equal scores, top-k,
    NMS and the detections-per-image cut keep either box depending on float noise (a barely trained
    detector has many such ties); anything else unmatched means the export computes something else."""
    boxes, o_boxes = (np.asarray(a[0]).reshape(-1, 4) for a in (expected, got))
    labels, scores, o_labels, o_scores = (np.asarray(a).reshape(-1) for a in (*expected[1:], *got[1:]))
    free = np.ones(len(o_boxes), dtype=bool)
    paired = np.zeros(len(boxes), dtype=bool)
    box_diff = score_diff = 0.0
    for i, (box, label, score) in enumerate(zip(boxes, labels, scores, strict=True)):
        diffs = np.abs(o_boxes - box).max(axis=1) if len(o_boxes) else np.zeros(0)
        fits = free & (o_labels == label) & (np.abs(o_scores - score) <= score_tolerance)
        fits &= diffs <= box_tolerance
        if not fits.any():
            continue
        best = int(np.argmin(np.where(fits, diffs, np.inf)))
        free[best], paired[i] = False, True
        box_diff = max(box_diff, float(diffs[best]))
        score_diff = max(score_diff, float(abs(o_scores[best] - score)))
    same = _tied(scores, ~paired) and _tied(o_scores, free)
    if not same and len(boxes) and len(o_boxes):  # for the refusal: the differences by position
        n = min(len(boxes), len(o_boxes))
        box_diff = max(box_diff, float(np.abs(o_boxes[:n] - boxes[:n]).max()))
        score_diff = max(score_diff, float(np.abs(o_scores[:n] - scores[:n]).max()))
    return same, box_diff, score_diff


def _tied(scores: np.ndarray, unmatched: np.ndarray) -> bool:
    """Every unmatched detection has another detection on its side scoring within ``TIE`` of it."""
    for i in np.flatnonzero(unmatched):
        close = np.abs(scores - scores[i]) <= TIE
        close[i] = False
        if not close.any():
            return False
    return True
