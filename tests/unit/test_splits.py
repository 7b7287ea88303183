from collections import Counter

import pytest

from loopline.data.splits import SplitFractions, SplitFractionsError, stratified_split

pytestmark = pytest.mark.unit


def items(counts: dict[str, int]) -> list[tuple[str, str]]:
    return [(f"{label}-{i:04d}", label) for label, n in counts.items() for i in range(n)]


def test_split_is_deterministic_and_order_free() -> None:
    data = items({"cat": 100, "dog": 50})
    first = stratified_split(data, SplitFractions(), seed=7)
    again = stratified_split(list(reversed(data)), SplitFractions(), seed=7)
    assert first == again
    assert stratified_split(data, SplitFractions(), seed=8) != first


def test_each_split_keeps_the_label_proportions() -> None:
    data = items({"cat": 200, "dog": 60, "eel": 20})
    assignment = stratified_split(data, SplitFractions(val=0.1, test=0.2))
    per = Counter((h.split("-")[0], s) for h, s in assignment.items())
    for label, n in {"cat": 200, "dog": 60, "eel": 20}.items():
        assert abs(per[label, "test"] - 0.2 * n) <= 1
        assert abs(per[label, "val"] - 0.1 * n) <= 1
        assert per[label, "train"] + per[label, "val"] + per[label, "test"] == n


def test_tiny_labels_train_only_and_small_ones_still_get_held_out() -> None:
    assignment = stratified_split(items({"rare": 2, "few": 4}), SplitFractions(val=0.1, test=0.1))
    assert {assignment["rare-0000"], assignment["rare-0001"]} == {"train"}
    few = Counter(s for h, s in assignment.items() if h.startswith("few"))
    assert few == {"train": 2, "val": 1, "test": 1}


def test_adding_images_keeps_most_assignments() -> None:
    before = stratified_split(items({"cat": 200}), SplitFractions())
    after = stratified_split(items({"cat": 220}), SplitFractions())
    moved = sum(1 for h, s in before.items() if after[h] != s)
    assert moved <= 10


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.5, 0.5), (0.0, 1.0), (0.7, 0.4)])
def test_bad_fractions_are_refused(val: float, test: float) -> None:
    with pytest.raises(SplitFractionsError, match=r"val \+ test < 1.*To fix this"):
        SplitFractions(val=val, test=test)


@pytest.mark.parametrize(
    ("val", "test"), [(0.0, 0.9), (0.1, 0.85), (0.45, 0.45), (0.6, 0.3), (0.0, 0.0), (0.15, 0.15)]
)
def test_every_label_keeps_training_data(val: float, test: float) -> None:
    counts = {f"label{n}": n for n in range(1, 13)}
    assignment = stratified_split(items(counts), SplitFractions(val=val, test=test))
    per = Counter((h.split("-")[0], s) for h, s in assignment.items())
    for label, n in counts.items():
        assert per[label, "train"] >= 1, (label, n, per[label, "val"], per[label, "test"])
        assert per[label, "train"] + per[label, "val"] + per[label, "test"] == n
