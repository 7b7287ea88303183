"""Choosing round-2 images with the champion's scores (margin x k-center on thumbnails)."""

import numpy as np
import pytest
from PIL import Image

from loopline.labeling.preannotate import Scored, choose_for_labeling, thumbnail_embeddings

pytestmark = pytest.mark.unit


def test_thumbnails_are_64_values_in_unit_range() -> None:
    images = [Image.new("RGB", (32, 32), (255, 255, 255)), Image.new("RGB", (40, 20), (0, 0, 0))]
    embeddings = thumbnail_embeddings(images)
    assert embeddings.shape == (2, 64) and embeddings[0].min() == 1.0 and embeddings[1].max() == 0.0
    assert thumbnail_embeddings([]).shape == (0, 64)


def test_unsure_and_unlike_the_labeled_images_come_first() -> None:
    unsure = [[0.5 + i / 100, 0.5 - i / 100] for i in range(10)]  # margins 0.00 .. 0.18
    sure = [[0.99, 0.01], [0.98, 0.02]]
    probabilities = np.array(unsure + sure)
    embeddings = np.array([[float(i)] for i in range(1, 11)] + [[100.0], [200.0]])
    picks = choose_for_labeling(Scored(probabilities, embeddings), np.array([[0.0]]), budget=2, seed=0)
    # the confident images stay out however far they are; within the unsure pool, k-center spreads the
    # batch away from what is labeled (at 0): the farthest first, then one half-way
    assert picks == [9, 4]


@pytest.mark.parametrize("budget", [1, 4, 6, 50])
def test_copies_are_chosen_once_each_and_the_budget_is_filled(budget: int) -> None:
    # six candidates, all copies of one labeled image and equally unsure: every distance is 0
    candidates = Scored(np.tile([[0.5, 0.5]], (6, 1)), np.zeros((6, 64)))
    picks = choose_for_labeling(candidates, np.zeros((3, 64)), budget=budget, seed=0)
    assert len(picks) == min(budget, 6) == len(set(picks))


def test_nothing_to_choose_from_chooses_nothing() -> None:
    assert choose_for_labeling(Scored(np.zeros((0, 2)), np.zeros((0, 64))), np.zeros((0, 64)), 5, 0) == []
