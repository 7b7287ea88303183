"""Active learning: which unlabeled images should people label next (pure functions).

Uncertainty (least confidence, margin, entropy) picks images the model is unsure of; diversity (k-center
greedy or k-means on embeddings) keeps the batch from being many copies of the same confusion. Random
sampling is the baseline every strategy is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Uncertainty = Literal["random", "least_confidence", "margin", "entropy"]
Diversity = Literal["none", "kcenter", "kmeans"]


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


def k_center_greedy(
    embeddings: np.ndarray, budget: int, centers: np.ndarray | None = None, first: int = 0
) -> list[int]:
    """Greedy k-center: repeatedly take the point farthest from everything chosen (and ``centers``)."""
    x = np.asarray(embeddings, dtype=np.float64)
    budget = min(budget, len(x))
    if budget <= 0:
        return []
    if centers is not None and len(centers):
        c = np.asarray(centers, dtype=np.float64)
        nearest = np.min(((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=2), axis=1)
        chosen: list[int] = []
    else:
        chosen = [first]
        nearest = ((x - x[first]) ** 2).sum(axis=1)
    while len(chosen) < budget:
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, ((x - x[pick]) ** 2).sum(axis=1))
    return chosen


def _kmeans_picks(embeddings: np.ndarray, scores: np.ndarray, budget: int, seed: int) -> list[int]:
    """Cluster into ``budget`` groups and take the most uncertain member of each."""
    from sklearn.cluster import KMeans

    labels = KMeans(n_clusters=budget, n_init=3, random_state=seed).fit_predict(embeddings)
    picks = []
    for cluster in range(budget):
        members = np.flatnonzero(labels == cluster)
        if len(members):
            picks.append(int(members[np.argmax(scores[members])]))
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
    """Choose ``budget`` candidates to label next.

    With diversity, the ``candidate_factor * budget`` most uncertain candidates form a pool, and the
    batch is spread over it (k-center greedy from the already-labeled embeddings, or one pick per
    k-means cluster). ``uncertainty="random"`` is the baseline (a seeded uniform sample).
    """
    n = len(probabilities)
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    budget = min(budget, n)
    if uncertainty == "random":
        picks = np.random.default_rng(seed).choice(n, size=budget, replace=False)
        return Selection(tuple(int(i) for i in picks), tuple(0.0 for _ in picks), "random")
    scores = uncertainty_scores(probabilities, uncertainty)
    order = np.argsort(-scores, kind="stable")
    if diversity == "none" or embeddings is None or budget == 0:
        picked = [int(i) for i in order[:budget]]
    else:
        pool = order[: max(budget, candidate_factor * budget)]
        pool_embeddings = np.asarray(embeddings, dtype=np.float64)[pool]
        if diversity == "kcenter":
            local = k_center_greedy(pool_embeddings, budget, centers=labeled_embeddings)
        elif diversity == "kmeans":
            local = _kmeans_picks(pool_embeddings, scores[pool], budget, seed)
        else:
            raise ValueError(f"Unknown diversity {diversity!r}; valid: none, kcenter, kmeans")
        picked = [int(pool[i]) for i in local]
    return Selection(tuple(picked), tuple(float(scores[i]) for i in picked), f"{uncertainty}+{diversity}")
