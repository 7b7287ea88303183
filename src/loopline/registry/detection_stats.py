"""A paired bootstrap for the mAP difference of two detectors on the same test images (pure functions).

mAP is not a mean over images, so there is no per-image test like McNemar's: the images are resampled
with replacement, the same resample for both models, and both mAPs are recomputed on it (pycocotools,
``loopline.detections.coco_map``). The spread of the differences gives a percentile interval; the share
of resamples in which the challenger is better says how often the test set would rank them this way.
Images are ordered by content hash first, so the result depends on the seed, never on the input order.

pycocotools matches each model's detections image by image once (``COCOeval.evaluate``); each resample
then re-runs only its ``accumulate`` over the resampled images' entries, which gives the mAP pycocotools
computes on that resample (a repeated image counts as two images), about five times faster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from loopline.data.labeled import PixelBox
from loopline.detections import Detection, coco_map
from loopline.registry.stats import Interval

RESAMPLES = 300


@dataclass(frozen=True)
class MapBootstrap:
    """Challenger minus champion mAP@[.5:.95] on the same images, with a paired bootstrap interval."""

    images: int
    delta: float  # on the test set as it is
    interval: Interval  # percentile interval of the resampled differences
    confidence: float
    better_share: float  # resamples in which the challenger's mAP is higher
    resamples: int
    seed: int


def paired_bootstrap_map(
    truth: Mapping[str, Sequence[PixelBox]],
    challenger: Mapping[str, Sequence[Detection]],
    champion: Mapping[str, Sequence[Detection]],
    labels: Sequence[str],
    sizes: Mapping[str, tuple[int, int]] | None = None,
    resamples: int = RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> MapBootstrap:
    """The paired bootstrap of ``mAP(challenger) - mAP(champion)``; every mapping is keyed by content hash
    and must hold the same images (an image with no true boxes is a valid negative)."""
    if not set(truth) == set(challenger) == set(champion):
        raise ValueError(
            f"Paired bootstrap on different images: {len(truth)} with true boxes, {len(challenger)} and "
            f"{len(champion)} with detections. To fix this, evaluate both models on the same test images."
        )
    if not truth:
        raise ValueError("A bootstrap over no images: give at least one test image")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    keys = sorted(truth)
    true_boxes = [tuple(truth[k]) for k in keys]
    shapes = [sizes[k] for k in keys] if sizes else None
    full = {
        name: coco_map(true_boxes, [tuple(found[k]) for k in keys], labels, shapes).map
        for name, found in (("challenger", challenger), ("champion", champion))
    }
    ours = _PerImage(true_boxes, [tuple(challenger[k]) for k in keys], labels)
    theirs = _PerImage(true_boxes, [tuple(champion[k]) for k in keys], labels)
    rng = np.random.default_rng(seed)
    n = len(keys)
    deltas = np.empty(resamples)
    for r in range(resamples):
        index = rng.integers(0, n, n)
        deltas[r] = ours.map(index) - theirs.map(index)
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    return MapBootstrap(
        images=n,
        delta=full["challenger"] - full["champion"],
        interval=Interval(float(low), float(high)),
        confidence=confidence,
        better_share=float((deltas > 0).mean()),
        resamples=resamples,
        seed=seed,
    )


class _PerImage:
    """pycocotools' per-image matching of one model's detections, done once; the mAP of any resample of
    the images (with repeats) is then pycocotools' own ``accumulate`` over those images' entries."""

    def __init__(
        self, truth: Sequence[Sequence[PixelBox]], found: Sequence[Sequence[Detection]], labels: Sequence[str]
    ) -> None:
        import contextlib
        import io

        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        index = {label: i + 1 for i, label in enumerate(labels)}
        self.has_truth = np.array([len(boxes) > 0 for boxes in truth])
        annotations = [
            {"id": 0, "image_id": i + 1, "category_id": index[b.label], "bbox": [b.x, b.y, b.width, b.height],
             "area": b.width * b.height, "iscrowd": 0}
            for i, boxes in enumerate(truth) for b in boxes
        ]  # fmt: skip
        for number, annotation in enumerate(annotations, start=1):
            annotation["id"] = number
        results = [
            {"image_id": i + 1, "category_id": index[d.label], "bbox": [d.x, d.y, d.width, d.height],
             "score": d.score}
            for i, dets in enumerate(found) for d in dets
        ]  # fmt: skip
        self.evaluator: COCOeval | None = None
        if not results:  # nothing detected: AP 0 wherever there is something to find
            return
        with contextlib.redirect_stdout(io.StringIO()):
            ground = COCO()
            ground.dataset = {
                "images": [{"id": i + 1, "width": 0, "height": 0} for i in range(len(truth))],
                "annotations": annotations,
                "categories": [{"id": i, "name": label} for label, i in index.items()],
            }
            ground.createIndex()
            self.evaluator = COCOeval(ground, ground.loadRes(results), "bbox")
            self.evaluator.evaluate()

    def map(self, index: np.ndarray) -> float:
        """mAP@[.5:.95] over the images at ``index`` (repeats count as distinct images); -1 as
        pycocotools reports it when no image there has a true box."""
        import contextlib
        import copy
        import io

        if self.evaluator is None:
            return 0.0 if self.has_truth[index].any() else -1.0
        source = self.evaluator
        images = len(source.params.imgIds)
        areas = len(source.params.areaRng)
        resampled = copy.copy(source)
        resampled.params = copy.copy(source.params)
        resampled._paramsEval = copy.copy(source._paramsEval)
        resampled.params.imgIds = resampled._paramsEval.imgIds = list(range(len(index)))
        resampled.evalImgs = [
            source.evalImgs[(k * areas + a) * images + int(i)]
            for k in range(len(source.params.catIds))
            for a in range(areas)
            for i in index
        ]
        with contextlib.redirect_stdout(io.StringIO()):
            resampled.accumulate()
        precision = resampled.eval["precision"][:, :, :, 0, -1]  # every area, the most detections: stats[0]
        valid = precision[precision > -1]
        return float(valid.mean()) if valid.size else -1.0
