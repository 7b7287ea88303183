"""A paired bootstrap for the mAP difference of two detectors on the same test images (pure functions).

mAP is not a mean over images, so there is no per-image test like McNemar's: the images are resampled
with replacement, the same resample for both models, and both mAPs are recomputed on it (pycocotools,
``loopline.detections.coco_map``). The spread of the differences gives a percentile interval; the share
of resamples in which the challenger is better says how often the test set would rank them this way.
Images are ordered by content hash first, so the result depends on the seed, never on the input order.
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
    true_boxes = [truth[k] for k in keys]
    found = {"challenger": [challenger[k] for k in keys], "champion": [champion[k] for k in keys]}
    shapes = [sizes[k] for k in keys] if sizes else None

    def difference(index: np.ndarray) -> float:
        picked_truth = [true_boxes[i] for i in index]
        picked_sizes = [shapes[i] for i in index] if shapes else None
        scores = {
            name: coco_map(picked_truth, [dets[i] for i in index], labels, picked_sizes).map
            for name, dets in found.items()
        }
        return scores["challenger"] - scores["champion"]

    rng = np.random.default_rng(seed)
    n = len(keys)
    deltas = np.array([difference(rng.integers(0, n, n)) for _ in range(resamples)])
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    return MapBootstrap(
        images=n,
        delta=difference(np.arange(n)),
        interval=Interval(float(low), float(high)),
        confidence=confidence,
        better_share=float((deltas > 0).mean()),
        resamples=resamples,
        seed=seed,
    )
