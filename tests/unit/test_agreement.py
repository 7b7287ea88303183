import numpy as np
import pytest
from statsmodels.stats.inter_rater import cohens_kappa, fleiss_kappa, to_table

from loopline.errors import QualityGateFailed
from loopline.labeling import agreement as ag

pytestmark = pytest.mark.unit


def noisy_ratings(n_items: int, n_raters: int, error: float, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, n_items)
    return [[str(t if rng.random() > error else rng.integers(0, 4)) for _ in range(n_raters)] for t in truth]


@pytest.mark.parametrize(("error", "seed"), [(0.0, 0), (0.2, 1), (0.6, 2), (1.0, 3)])
def test_cohen_matches_statsmodels(error: float, seed: int) -> None:
    ratings = noisy_ratings(200, 2, error, seed)
    a, b = [r[0] for r in ratings], [r[1] for r in ratings]
    table, _ = to_table(np.array([[int(x), int(y)] for x, y in zip(a, b, strict=True)]), bins=np.arange(5))
    assert ag.cohen_kappa(a, b) == pytest.approx(cohens_kappa(table).kappa, abs=1e-9)


@pytest.mark.parametrize(("raters", "error", "seed"), [(3, 0.1, 0), (5, 0.3, 1), (4, 0.8, 2)])
def test_fleiss_matches_statsmodels(raters: int, error: float, seed: int) -> None:
    ratings = noisy_ratings(150, raters, error, seed)
    table = ag.rating_table(ratings, ["0", "1", "2", "3"])
    assert ag.fleiss_kappa(table) == pytest.approx(fleiss_kappa(table, method="fleiss"), abs=1e-9)


def test_per_label_kappa_finds_the_confused_label() -> None:
    # "a" is always agreed on; "b" and "c" are swapped half the time
    ratings = [["a", "a", "a"]] * 20 + [["b", "b", "c"], ["c", "c", "b"]] * 10
    per = ag.per_label_kappa(ag.rating_table(ratings, ["a", "b", "c"]), ["a", "b", "c"])
    assert per["a"] == pytest.approx(1.0)
    assert per["b"] < 0.5 and per["c"] < 0.5


def test_majority_vote_sends_ties_back() -> None:
    consensus = ag.majority_vote({"x": ["cat", "cat", "dog"], "y": ["cat", "dog"], "z": ["dog"]})
    assert consensus.labels == {"x": "cat", "z": "dog"}
    assert consensus.ties == ("y",)


def test_box_agreement_matches_one_to_one() -> None:
    a = [ag.Box("cat", 0, 0, 10, 10), ag.Box("dog", 50, 50, 10, 10)]
    b = [ag.Box("cat", 1, 1, 10, 10), ag.Box("cat", 50, 50, 10, 10), ag.Box("cat", 0, 0, 10, 10)]
    result = ag.box_agreement(a, b, threshold=0.5)
    assert result.matched == 1  # the dog box has a wrong label; only one cat can match the one cat
    assert result.precision == pytest.approx(1 / 3) and result.recall == pytest.approx(1 / 2)
    assert ag.box_agreement([], []).f1 == 1.0


def test_gate_lists_every_violation() -> None:
    ratings = {
        f"i{k}": r for k, r in enumerate([["a", "a", "a"]] * 20 + [["b", "b", "c"], ["c", "c", "b"]] * 10)
    }
    report = ag.agreement_report(ratings, ["a", "b", "c"])
    assert report.kappa_method == "fleiss" and report.annotators_per_item == 3
    ag.check_agreement_gate(report, min_kappa=0.3)
    with pytest.raises(QualityGateFailed) as info:
        ag.check_agreement_gate(report, min_kappa=0.99, min_label_kappa=0.6)
    text = str(info.value)
    assert "fleiss kappa" in text and "label 'b'" in text and "label 'c'" in text and "label 'a'" not in text


def test_two_annotators_use_cohen_and_single_annotations_say_so() -> None:
    report = ag.agreement_report({"x": ["a", "a"], "y": ["b", "a"], "z": ["b", "b"]}, ["a", "b"])
    assert report.kappa_method == "cohen"
    lonely = ag.agreement_report({"x": ["a"]}, ["a"])
    assert lonely.kappa is None
    with pytest.raises(QualityGateFailed, match="cannot be measured"):
        ag.check_agreement_gate(lonely, min_kappa=0.5)
