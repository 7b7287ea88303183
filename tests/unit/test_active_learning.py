import tracemalloc

import numpy as np
import pytest

from loopline.detections import Detection
from loopline.labeling.active import (
    Diversity,
    detection_uncertainty,
    k_center_greedy,
    select_batch,
    select_by_scores,
    select_detection_batch,
    uncertainty_scores,
)

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


def reference_k_center(x: np.ndarray, budget: int, centers: np.ndarray | None = None) -> list[int]:
    """The textbook algorithm, all pairs at once (small inputs only): what the chunked one must match."""
    nearest = (
        ((x[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2).min(axis=1)
        if centers is not None
        else ((x - x[0]) ** 2).sum(axis=1)
    )
    chosen = [] if centers is not None else [0]
    while len(chosen) < budget:
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, ((x - x[chosen[-1]]) ** 2).sum(axis=1))
    return chosen


def test_k_center_never_picks_a_point_twice() -> None:
    assert k_center_greedy(np.array([[0, 0], [0, 0], [1, 1]]), 3) == [0, 2, 1]
    # every point a copy of a labeled one: all distances are 0 from the start
    assert sorted(k_center_greedy(np.zeros((4, 2)), 10, centers=np.zeros((1, 2)))) == [0, 1, 2, 3]


def test_k_center_on_many_duplicates_returns_the_budget_distinct() -> None:
    rng = np.random.default_rng(3)
    points = rng.integers(0, 3, size=(200, 2)).astype(float)  # at most 9 distinct points, 200 rows
    for centers in (None, points[:5]):
        for budget in (9, 50, 200, 500):
            picked = k_center_greedy(points, budget, centers=centers)
            assert len(picked) == min(budget, 200) and len(set(picked)) == len(picked)
            assert all(0 <= i < 200 for i in picked)
    # the distinct locations still come first
    assert len({tuple(points[i]) for i in k_center_greedy(points, 9)}) == 9


def test_k_center_matches_the_textbook_algorithm_without_ties() -> None:
    rng = np.random.default_rng(4)
    for trial in range(10):
        points = rng.normal(size=(300, 6))
        centers = rng.normal(size=(40, 6))
        assert k_center_greedy(points, 30) == reference_k_center(points, 30), trial
        assert k_center_greedy(points, 30, centers=centers) == reference_k_center(points, 30, centers), trial


def test_k_center_memory_is_bounded_by_chunks() -> None:
    # pool x centers x dim at once would be 100,000 x 10,000 x 4 x 8 bytes = 32 GB
    rng = np.random.default_rng(5)
    pool = rng.random((100_000, 4), dtype=np.float32)
    labeled = rng.random((10_000, 4), dtype=np.float32)
    tracemalloc.start()
    try:
        picked = k_center_greedy(pool, 20, centers=labeled)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(set(picked)) == 20
    assert peak < 150 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_k_center_rejects_mismatched_centers() -> None:
    with pytest.raises(ValueError, match="same dimension"):
        k_center_greedy(np.zeros((3, 2)), 2, centers=np.zeros((2, 5)))


def test_kmeans_fills_empty_clusters_from_the_most_uncertain() -> None:
    # 3 distinct embeddings among 8 candidates: k-means with 5 clusters leaves clusters empty
    probs = np.array([[0.5 + i / 20, 0.5 - i / 20] for i in range(8)])  # candidate 0 most uncertain
    embeddings = np.array([[0.0], [0.0], [0.0], [1.0], [1.0], [2.0], [2.0], [2.0]])
    picks = select_batch(probs, embeddings, 5, "margin", "kmeans", candidate_factor=2).indices
    assert len(picks) == 5 and len(set(picks)) == 5
    assert {0, 3, 5} <= set(picks)  # the most uncertain of each distinct embedding


@pytest.mark.parametrize("diversity", ["none", "kcenter", "kmeans"])
@pytest.mark.parametrize("budget", [0, 1, 7, 30, 100])
def test_select_batch_returns_min_of_budget_and_pool_distinct(diversity: Diversity, budget: int) -> None:
    probs = np.tile([[0.5, 0.5]], (30, 1))  # every candidate equally uncertain
    embeddings = np.zeros((30, 3))  # and every one a copy of the others
    selection = select_batch(
        probs,
        embeddings,
        budget,
        "margin",
        diversity,
        labeled_embeddings=embeddings[:2],
    )
    assert len(selection.indices) == min(budget, 30) == len(set(selection.indices))


def boxes(*scores: float, label: str = "cat", at: float = 0.0) -> list[Detection]:
    """Boxes with these scores, side by side (no overlaps), starting at x = ``at``."""
    return [Detection(label, s, at + 20.0 * i, 0.0, 10.0, 10.0) for i, s in enumerate(scores)]


def test_box_uncertainty_orders_known_cases() -> None:
    images = [
        boxes(0.98, 0.97),  # sure of both
        boxes(0.98, 0.52),  # one box near a coin flip
        boxes(0.98, 0.06),  # a box barely above the floor is background, not doubt
        boxes(0.98, 0.02),  # below the floor: does not count
        [],  # no box at all
    ]
    least = detection_uncertainty(images, "least_confident")
    assert least == pytest.approx([0.06, 0.96, 0.12, 0.04, 0.5])
    entropy = detection_uncertainty(images, "entropy")
    assert np.argmax(entropy) == 1 and entropy[4] == 0.5 and entropy[3] < entropy[0] < entropy[1]
    with pytest.raises(ValueError, match="valid: least_confident, entropy, disputed"):
        detection_uncertainty(images, "margin")  # type: ignore[arg-type]


def test_an_image_with_no_boxes_is_not_ranked_as_certain() -> None:
    for method in ("least_confident", "entropy", "disputed"):
        sure, empty = detection_uncertainty([boxes(0.99), []], method)  # type: ignore[arg-type]
        assert empty > sure, method
    assert detection_uncertainty([[]], no_boxes=0.8)[0] == 0.8


def test_disputed_boxes_are_overlapping_boxes_of_different_labels() -> None:
    cat = Detection("cat", 0.9, 0.0, 0.0, 10.0, 10.0)
    images = [
        [cat, Detection("dog", 0.6, 1.0, 0.0, 10.0, 10.0)],  # the same object, two labels
        [cat, Detection("dog", 0.6, 30.0, 0.0, 10.0, 10.0)],  # two objects side by side
        [cat, Detection("cat", 0.6, 1.0, 0.0, 10.0, 10.0)],  # a duplicate box, same label
        [cat, Detection("dog", 0.3, 1.0, 0.0, 10.0, 10.0), Detection("bird", 0.7, 0.0, 1.0, 10.0, 10.0)],
    ]
    assert list(detection_uncertainty(images, "disputed")) == pytest.approx([0.6, 0.0, 0.0, 0.7])


def detection_pool(seed: int) -> tuple[list[list[Detection]], np.ndarray]:
    """40 images: 10 near-copies of one uncertain scene, 10 distinct uncertain ones, 20 sure ones."""
    rng = np.random.default_rng(seed)
    detections = [boxes(0.5) for _ in range(10)] + [boxes(0.45 + 0.005 * i) for i in range(10)]
    detections += [boxes(0.99, 0.98) for _ in range(20)]
    embeddings = np.concatenate(
        [
            np.full((10, 8), 0.5) + rng.normal(0, 1e-4, (10, 8)),  # the copies
            rng.random((10, 8)),
            rng.random((20, 8)),
        ]
    )
    return detections, embeddings


def test_detection_batch_is_uncertain_and_avoids_near_duplicates() -> None:
    detections, embeddings = detection_pool(0)
    # budget 4: the pool (5 x budget) is the 20 uncertain images, the batch is spread over it
    picks = select_detection_batch(detections, embeddings, 4, labeled_embeddings=np.zeros((1, 8))).indices
    assert len(set(picks)) == 4 and all(i < 20 for i in picks)  # no sure image
    assert sum(i < 10 for i in picks) <= 1  # the copies of one scene count once at most
    plain = select_detection_batch(detections, embeddings, 4, diversity="none").indices
    assert len(set(plain)) == 4 and all(i < 10 for i in plain)  # without diversity: four copies


@pytest.mark.parametrize("diversity", ["kcenter", "kmeans", "none"])
def test_detection_batch_is_deterministic_and_order_free(diversity: Diversity) -> None:
    detections, embeddings = detection_pool(1)
    labeled = np.random.default_rng(2).random((3, 8))
    keys = [f"hash-{i:02d}" for i in range(40)]

    def chosen(order: np.ndarray, with_keys: bool) -> list[str]:
        selection = select_detection_batch(
            [detections[i] for i in order],
            embeddings[order],
            6,
            diversity=diversity,
            labeled_embeddings=labeled,
            keys=[keys[i] for i in order] if with_keys else None,
        )
        return [keys[order[i]] for i in selection.indices]

    for with_keys in (True, False):
        first = chosen(np.arange(40), with_keys)
        assert len(set(first)) == 6 and first == chosen(np.arange(40), with_keys)
        for seed in range(3):
            shuffled = np.random.default_rng(seed).permutation(40)
            assert chosen(shuffled, with_keys) == first


def test_ties_between_copies_are_broken_by_keys_whatever_the_order() -> None:
    detections = [boxes(0.5)] * 6  # six identical images
    embeddings = np.zeros((6, 4))
    keys = ["f", "a", "d", "b", "e", "c"]
    picks = select_detection_batch(detections, embeddings, 2, keys=keys).indices
    assert sorted(keys[i] for i in picks) == ["a", "b"]
    reverse = select_detection_batch(detections[::-1], embeddings, 2, keys=keys[::-1]).indices
    assert sorted(keys[::-1][i] for i in reverse) == ["a", "b"]
    with pytest.raises(ValueError, match="6 distinct values"):
        select_detection_batch(detections, embeddings, 2, keys=["a"] * 6)


def test_select_by_scores_is_what_select_batch_does_with_the_scores() -> None:
    rng = np.random.default_rng(6)
    probs = rng.dirichlet(np.ones(3), size=50)
    embeddings = rng.random((50, 5))
    for diversity in ("none", "kcenter", "kmeans"):
        batch = select_batch(probs, embeddings, 7, "entropy", diversity, seed=3)  # type: ignore[arg-type]
        scores = uncertainty_scores(probs, "entropy")
        same = select_by_scores(scores, embeddings, 7, diversity, seed=3, name="entropy")  # type: ignore[arg-type]
        assert batch == same
    with pytest.raises(ValueError, match="embeddings has 4 rows but scores has 50"):
        select_by_scores(scores, embeddings[:4], 3)
    assert select_detection_batch([], np.zeros((0, 64)), 5).indices == ()
