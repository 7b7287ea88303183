"""Active learning: which unlabeled images should people label next (pure functions).

Uncertainty (least confidence, margin, entropy) picks images the model is unsure of; diversity (k-center
greedy or k-means on embeddings) keeps the batch from being many copies of the same confusion. Random
sampling is the baseline every strategy is measured against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import numpy as np

from loopline.detections import Detection
from loopline.labeling.agreement import Box, iou

Uncertainty = Literal["random", "least_confidence", "margin", "entropy"]
Diversity = Literal["none", "kcenter", "kmeans"]
DetectionUncertainty = Literal["least_confident", "entropy", "disputed"]
BOX_FLOOR = 0.05  # box scores below this are background (torchvision's default box_score_thresh)
NO_BOXES_UNCERTAINTY = 0.5  # an image with no box is not certain: see detection_uncertainty


@dataclass(frozen=True)
class Selection:
    indices: tuple[int, ...]  # into the candidate arrays, in pick order
    scores: tuple[float, ...]  # uncertainty of each pick (0 for random)
    strategy: str


def uncertainty_scores(probabilities: np.ndarray, method: Uncertainty) -> np.ndarray:
    """Higher = less certain. ``probabilities`` is (n, classes), rows summing to 1."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (n, classes >= 2), got shape {p.shape}")
    if method == "least_confidence":
        return 1.0 - p.max(axis=1)
    if method == "margin":
        top2 = np.sort(p, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    if method == "entropy":
        return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
    if method == "random":
        return np.zeros(len(p))
    raise ValueError(f"Unknown uncertainty {method!r}; valid: random, least_confidence, margin, entropy")


_BLOCK_ELEMENTS = 1 << 21  # float64 values per distance block (16 MB): bounds memory whatever the sizes


def _distances_to_point(x: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Exact squared distances of every row of ``x`` to ``point``, in row chunks."""
    out = np.empty(len(x))
    rows = max(1, _BLOCK_ELEMENTS // max(1, x.shape[1]))
    for start in range(0, len(x), rows):
        out[start : start + rows] = ((x[start : start + rows] - point) ** 2).sum(axis=1)
    return out


def nearest_center_distances(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Squared distance of every row of ``x`` to its nearest row of ``centers``, in bounded memory.

    Blocks of (rows x centers) find the nearest center with ||a||² + ||b||² - 2ab; the distance to that
    center is then computed exactly, so a duplicate of a center is at exactly 0 (no rounding noise).
    """
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(centers, dtype=np.float64)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
        raise ValueError(
            f"embeddings {x.shape} and centers {c.shape} must be 2-d with the same dimension; "
            "embed the labeled images the same way as the candidates"
        )
    nearest = np.empty(len(x))
    if not len(x):
        return nearest
    c_norms = (c**2).sum(axis=1)
    cols = max(1, min(len(c), _BLOCK_ELEMENTS))
    rows = max(1, _BLOCK_ELEMENTS // max(cols, x.shape[1]))
    for start in range(0, len(x), rows):
        block = x[start : start + rows]
        best = np.full(len(block), np.inf)
        best_center = np.zeros(len(block), dtype=np.intp)
        for c_start in range(0, len(c), cols):
            part = c[c_start : c_start + cols]
            d = block @ part.T
            d *= -2.0
            d += c_norms[c_start : c_start + cols]  # ||a||² is the same along a row: not needed to rank
            arg = d.argmin(axis=1)
            value = d[np.arange(len(block)), arg]
            better = value < best
            best[better] = value[better]
            best_center[better] = arg[better] + c_start
        nearest[start : start + rows] = ((block - c[best_center]) ** 2).sum(axis=1)
    return nearest


def k_center_greedy(
    embeddings: np.ndarray, budget: int, centers: np.ndarray | None = None, first: int = 0
) -> list[int]:
    """Greedy k-center: repeatedly take the point farthest from everything chosen (and ``centers``).

    Returns ``min(budget, len(embeddings))`` distinct indices in pick order: a chosen point is never
    chosen again, even when every remaining distance is 0 (duplicate images, or copies of ``centers``).
    Without ``centers`` the first pick is ``first``. Memory is bounded by blocks, not pool x centers.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    budget = min(budget, len(x))
    if budget <= 0:
        return []
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (n, dim), got shape {x.shape}")
    chosen: list[int] = []
    if centers is not None and len(centers):
        nearest = nearest_center_distances(x, np.asarray(centers))
    else:
        if not 0 <= first < len(x):
            raise ValueError(f"first must index the {len(x)} embeddings, got {first}")
        chosen.append(first)
        nearest = _distances_to_point(x, x[first])
        nearest[first] = -1.0  # below every distance: never the farthest again
    while len(chosen) < budget:
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        np.minimum(nearest, _distances_to_point(x, x[pick]), out=nearest)
        nearest[pick] = -1.0
    return chosen


def _kmeans_picks(embeddings: np.ndarray, scores: np.ndarray, budget: int, seed: int) -> list[int]:
    """Cluster into ``budget`` groups and take the most uncertain member of each; clusters can come out
    empty (duplicate embeddings), so the batch is filled up with the most uncertain points not picked."""
    import warnings

    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    budget = min(budget, len(embeddings))
    if budget <= 0:
        return []
    with warnings.catch_warnings():  # "fewer distinct points than clusters": handled by the fill-up
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = KMeans(n_clusters=budget, n_init=3, random_state=seed).fit_predict(embeddings)
    picks: list[int] = []
    for cluster in range(budget):
        members = np.flatnonzero(labels == cluster)
        if len(members):
            picks.append(int(members[np.argmax(scores[members])]))
    taken = set(picks)
    for i in np.argsort(-scores, kind="stable"):
        if len(picks) >= budget:
            break
        if int(i) not in taken:
            picks.append(int(i))
            taken.add(int(i))
    return sorted(picks, key=lambda i: -scores[i])


def select_batch(
    probabilities: np.ndarray,
    embeddings: np.ndarray | None,
    budget: int,
    uncertainty: Uncertainty = "margin",
    diversity: Diversity = "kcenter",
    labeled_embeddings: np.ndarray | None = None,
    candidate_factor: int = 5,
    seed: int = 0,
) -> Selection:
    """Choose ``min(budget, candidates)`` distinct candidates to label next.

    With diversity, the ``candidate_factor * budget`` most uncertain candidates form a pool, and the
    batch is spread over it (k-center greedy from the already-labeled embeddings, or one pick per
    k-means cluster). ``uncertainty="random"`` is the baseline (a seeded uniform sample).
    """
    n = len(probabilities)
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if uncertainty == "random":
        _check_rows(embeddings, n, "probabilities")
        budget = min(budget, n)
        if budget == 0:
            return Selection((), (), "random")
        picks = np.random.default_rng(seed).choice(n, size=budget, replace=False)
        return Selection(tuple(int(i) for i in picks), tuple(0.0 for _ in picks), "random")
    _check_rows(embeddings, n, "probabilities")
    scores = uncertainty_scores(probabilities, uncertainty) if min(budget, n) else np.zeros(n)
    return select_by_scores(
        scores, embeddings, budget, diversity, labeled_embeddings, candidate_factor, seed, uncertainty
    )


def _check_rows(embeddings: np.ndarray | None, n: int, what: str) -> None:
    if embeddings is not None and len(embeddings) != n:
        raise ValueError(
            f"embeddings has {len(embeddings)} rows but {what} has {n}; pass one row per candidate"
        )


def select_by_scores(
    scores: np.ndarray,
    embeddings: np.ndarray | None,
    budget: int,
    diversity: Diversity = "kcenter",
    labeled_embeddings: np.ndarray | None = None,
    candidate_factor: int = 5,
    seed: int = 0,
    name: str = "uncertainty",
) -> Selection:
    """``select_batch`` over precomputed uncertainty ``scores`` (higher = less certain, one per
    candidate), e.g. a detector's per-image box uncertainty; ``name`` goes into the strategy."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(scores)
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    _check_rows(embeddings, n, "scores")
    budget = min(budget, n)
    strategy = f"{name}+{diversity}"
    if budget == 0:
        return Selection((), (), strategy)
    order = np.argsort(-scores, kind="stable")
    if diversity == "none" or embeddings is None:
        picked = [int(i) for i in order[:budget]]
    else:
        pool = order[: max(budget, candidate_factor * budget)]
        pool_embeddings = np.asarray(embeddings, dtype=np.float64)[pool]
        if diversity == "kcenter":
            centers = (
                labeled_embeddings if labeled_embeddings is not None and len(labeled_embeddings) else None
            )
            local = k_center_greedy(pool_embeddings, budget, centers=centers)
        elif diversity == "kmeans":
            local = _kmeans_picks(pool_embeddings, scores[pool], budget, seed)
        else:
            raise ValueError(f"Unknown diversity {diversity!r}; valid: none, kcenter, kmeans")
        picked = [int(pool[i]) for i in local]
    return Selection(tuple(picked), tuple(float(scores[i]) for i in picked), strategy)


def _binary_entropy_bits(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return -(q * np.log2(q) + (1 - q) * np.log2(1 - q))


def _as_box(d: Detection) -> Box:
    return Box(d.label, d.x, d.y, d.width, d.height)


def _disputed(boxes: Sequence[Detection], overlap: float) -> float:
    """The strongest dispute: over overlapping boxes (IoU >= ``overlap``) of different labels, the
    highest score the weaker box of a pair has (0 when no boxes of different labels overlap)."""
    worst = 0.0
    for a, b in combinations(boxes, 2):
        weaker = min(a.score, b.score)
        if a.label != b.label and weaker > worst and iou(_as_box(a), _as_box(b)) >= overlap:
            worst = weaker
    return worst


def detection_uncertainty(
    detections: Sequence[Sequence[Detection]],
    method: DetectionUncertainty = "least_confident",
    floor: float = BOX_FLOOR,
    no_boxes: float = NO_BOXES_UNCERTAINTY,
    overlap: float = 0.5,
) -> np.ndarray:
    """Per-image uncertainty in [0, 1] of a detector's boxes (higher = less certain); boxes scoring below
    ``floor`` are background and do not count.

    - ``least_confident``: 1 - |2s - 1| for the box whose score s is closest to 0.5 (1 for a box at 0.5;
      a box near the floor is confidently background, not uncertain, unlike "1 - the lowest score");
    - ``entropy``: the mean binary entropy (bits) of the box scores;
    - ``disputed``: overlapping boxes (IoU >= ``overlap``) with different labels, scored by the weaker box.

    An image with no box above the floor is a missed object as often as a true negative, so it is not
    ranked as certain: it gets ``no_boxes`` (0.5 by default: as unsure as an image whose least sure box
    scores 0.25 or 0.75, below truly ambiguous boxes and above confident ones).
    """
    if method not in ("least_confident", "entropy", "disputed"):
        raise ValueError(
            f"Unknown detection uncertainty {method!r}; valid: least_confident, entropy, disputed"
        )
    out = np.empty(len(detections))
    for i, image in enumerate(detections):
        boxes = [d for d in image if d.score >= floor]
        scores = np.array([d.score for d in boxes], dtype=np.float64)
        if not boxes:
            out[i] = no_boxes
        elif method == "least_confident":
            out[i] = 1.0 - float(np.abs(2 * scores - 1).min())
        elif method == "entropy":
            out[i] = float(_binary_entropy_bits(scores).mean())
        else:
            out[i] = _disputed(boxes, overlap)
    return out


def content_order(
    scores: np.ndarray, embeddings: np.ndarray, keys: Sequence[str] | None = None
) -> np.ndarray:
    """A candidate order that depends on the candidates, not on the order they came in: by ``keys``
    (e.g. content hashes) when given, else by embedding then score (rows equal in both are the same
    image as far as selection can tell)."""
    if keys is not None:
        if len(keys) != len(scores) or len(set(keys)) != len(keys):
            raise ValueError(f"keys must be {len(scores)} distinct values, one per candidate")
        return np.array(sorted(range(len(keys)), key=lambda i: keys[i]), dtype=np.intp)
    if not len(scores):
        return np.zeros(0, dtype=np.intp)
    x = np.asarray(embeddings, dtype=np.float64).reshape(len(scores), -1)
    return np.lexsort((np.asarray(scores, dtype=np.float64), *(x[:, j] for j in reversed(range(x.shape[1])))))


def select_detection_batch(
    detections: Sequence[Sequence[Detection]],
    embeddings: np.ndarray,
    budget: int,
    uncertainty: DetectionUncertainty = "least_confident",
    diversity: Diversity = "kcenter",
    labeled_embeddings: np.ndarray | None = None,
    keys: Sequence[str] | None = None,
    seed: int = 0,
) -> Selection:
    """Images to label next from a detector's boxes: the most uncertain images (``detection_uncertainty``)
    spread by ``select_by_scores`` (k-center from ``labeled_embeddings`` by default). The same candidates
    give the same picks in whatever order they come (ties broken by ``keys``, else by content); indices
    are into the inputs as given."""
    scores = detection_uncertainty(detections, uncertainty)
    if len(embeddings) != len(scores):
        raise ValueError(
            f"embeddings has {len(embeddings)} rows but there are {len(scores)} images of detections; "
            "pass one row per candidate"
        )
    order = content_order(scores, embeddings, keys)
    local = select_by_scores(
        scores[order],
        np.asarray(embeddings)[order],
        budget,
        diversity,
        labeled_embeddings,
        seed=seed,
        name=uncertainty,
    )
    return Selection(tuple(int(order[i]) for i in local.indices), local.scores, local.strategy)
