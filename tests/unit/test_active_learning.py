import numpy as np
import pytest

from loopline.labeling.active import k_center_greedy, select_batch, uncertainty_scores

pytestmark = pytest.mark.unit

PROBS = np.array([[0.98, 0.01, 0.01], [0.5, 0.49, 0.01], [0.34, 0.33, 0.33], [0.7, 0.2, 0.1]])


def test_uncertainty_orders_known_cases() -> None:
    # the flat row is the least confident and has the most entropy; the 0.5/0.49 row has the smallest margin
    assert np.argmax(uncertainty_scores(PROBS, "least_confidence")) == 2
    assert np.argmax(uncertainty_scores(PROBS, "entropy")) == 2
    assert np.argmax(uncertainty_scores(PROBS, "margin")) == 1
    for method in ("least_confidence", "margin", "entropy"):
        assert np.argmin(uncertainty_scores(PROBS, method)) == 0  # type: ignore[arg-type]


def test_k_center_spreads_over_clusters() -> None:
    rng = np.random.default_rng(0)
    clusters = [rng.normal(c, 0.01, size=(20, 2)) for c in ((0, 0), (10, 0), (0, 10))]
    points = np.concatenate(clusters)
    picked = k_center_greedy(points, 3)
    assert sorted(i // 20 for i in picked) == [0, 1, 2]
    # with cluster 0 already labelled, the next two come from the other clusters
    assert sorted(i // 20 for i in k_center_greedy(points, 2, centers=points[:1])) == [1, 2]


def test_diversity_avoids_a_batch_of_copies() -> None:
    # 10 near-identical uncertain images and 3 distinct, slightly less uncertain ones
    probs = np.array([[0.5, 0.5]] * 10 + [[0.55, 0.45]] * 3)
    embeddings = np.concatenate([np.zeros((10, 2)) + 1e-3 * np.arange(10)[:, None], [[5, 0], [0, 5], [5, 5]]])
    plain = select_batch(probs, embeddings, 4, "margin", "none")
    spread = select_batch(probs, embeddings, 4, "margin", "kcenter")
    assert all(i < 10 for i in plain.indices)
    assert sorted(spread.indices)[1:] == [10, 11, 12] and sorted(spread.indices)[0] < 10
    clustered = select_batch(probs, embeddings, 4, "margin", "kmeans")
    assert len(set(clustered.indices) & {10, 11, 12}) == 3


def test_random_baseline_is_seeded_and_budget_is_capped() -> None:
    a = select_batch(PROBS, None, 2, "random", seed=1)
    assert a == select_batch(PROBS, None, 2, "random", seed=1) and len(set(a.indices)) == 2
    assert len(select_batch(PROBS, None, 10, "entropy", "none").indices) == 4
    with pytest.raises(ValueError, match="budget"):
        select_batch(PROBS, None, -1)
