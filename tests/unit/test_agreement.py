import numpy as np
import pytest
from statsmodels.stats.inter_rater import fleiss_kappa

from loopline.errors import QualityGateFailed
from loopline.labeling import agreement as ag
from loopline.labeling.ties import TiedTask, more_annotators

pytestmark = pytest.mark.unit


def noisy_ratings(n_items: int, n_raters: int, error: float, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, n_items)
    return [[str(t if rng.random() > error else rng.integers(0, 4)) for _ in range(n_raters)] for t in truth]


def figures(report: ag.AgreementReport) -> tuple[object, ...]:
    """Every figure a report shows (rounded: summation order may move the last bits)."""
    rounded = None if report.alpha is None else round(report.alpha, 12)
    kappa = None if report.fleiss_kappa is None else round(report.fleiss_kappa, 12)
    return (
        report.items,
        report.single,
        report.annotations_per_item,
        rounded,
        kappa,
        report.unanimous,
        {k: round(v, 12) for k, v in report.per_label.items()},
        report.consensus,
        report.notes,
    )


def test_the_same_annotations_give_the_same_agreement_in_any_order() -> None:
    # 7 x (x,x), 9 x (y,y), four disagreements: all recorded (x,y), or two of them (y,x)
    agreed = {f"a{i}": ["x", "x"] for i in range(7)} | {f"b{i}": ["y", "y"] for i in range(9)}
    one_way = agreed | {f"d{i}": ["x", "y"] for i in range(4)}
    both_ways = agreed | {"d0": ["x", "y"], "d1": ["x", "y"], "d2": ["y", "x"], "d3": ["y", "x"]}
    first, second = ag.agreement_report(one_way, ["x", "y"]), ag.agreement_report(both_ways, ["x", "y"])
    assert figures(first) == figures(second)
    # by hand: 40 pairable values, 8 disagreeing of 40 ordered pairs; n_x = 18, n_y = 22
    # alpha = 1 - (8 / 40) / (2 * 18 * 22 / (40 * 39)) = 20 / 33, above a 0.6 gate either way
    assert first.alpha == pytest.approx(20 / 33, abs=1e-12)
    assert ag.agreement_gate(first, 0.6).passed and ag.agreement_gate(second, 0.6).passed


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_permuting_any_tasks_annotations_changes_no_figure(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = ["a", "b", "c", "d"]
    ratings = {
        f"t{i}": [str(rng.choice(labels[: 1 + i % 4])) for _ in range(int(rng.integers(1, 6)))]
        for i in range(int(rng.integers(20, 80)))
    }
    reference = figures(ag.agreement_report(ratings, labels))
    for _ in range(5):
        shuffled = {item: list(rng.permutation(given)) for item, given in ratings.items()}
        reordered = dict(sorted(shuffled.items(), key=lambda _: rng.random()))  # item order too
        assert figures(ag.agreement_report(reordered, labels)) == reference


def test_alpha_matches_krippendorffs_published_nominal_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units,
    # missing values; nominal alpha = 0.743. Unit 12 has a single value and is not pairable.
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    ratings = {f"u{unit}": [str(o[unit]) for o in observers if o[unit] is not None] for unit in range(12)}
    report = ag.agreement_report(ratings, ["1", "2", "3", "4", "5"])
    assert report.alpha == pytest.approx(0.743, abs=5e-4)
    assert report.items == 11 and report.single == 1
    assert report.annotations_per_item == {2: 1, 3: 2, 4: 8}
    assert report.fleiss_kappa is None  # different numbers of annotations per unit


@pytest.mark.parametrize(("raters", "error", "seed"), [(3, 0.1, 0), (5, 0.3, 1), (4, 0.8, 2)])
def test_fleiss_matches_statsmodels(raters: int, error: float, seed: int) -> None:
    ratings = noisy_ratings(150, raters, error, seed)
    table = ag.rating_table(ratings, ["0", "1", "2", "3"])
    assert ag.fleiss_kappa(table) == pytest.approx(fleiss_kappa(table, method="fleiss"), abs=1e-9)


def test_per_label_alpha_finds_the_confused_label() -> None:
    # "a" is always agreed on; "b" and "c" are swapped half the time
    ratings = [["a", "a", "a"]] * 20 + [["b", "b", "c"], ["c", "c", "b"]] * 10
    per = ag.per_label_alpha(ag.rating_table(ratings, ["a", "b", "c"]), ["a", "b", "c"])
    assert per["a"] == pytest.approx(1.0)
    assert per["b"] < 0.5 and per["c"] < 0.5


def test_every_item_with_two_or_more_annotations_counts() -> None:
    ratings = {"x": ["a", "a"], "y": ["a", "b", "b"], "z": ["b", "b", "b", "a"], "w": ["a"]}
    report = ag.agreement_report(ratings, ["a", "b"])
    assert report.items == 3 and report.single == 1 and report.annotations_per_item == {2: 1, 3: 1, 4: 1}
    assert any("single valid annotation" in note for note in report.notes)


def test_majority_vote_names_ties() -> None:
    consensus = ag.majority_vote({"x": ["cat", "cat", "dog"], "y": ["cat", "dog"], "z": ["dog"]})
    assert consensus.labels == {"x": "cat", "z": "dog"}
    assert consensus.ties == ("y",)


def test_a_tie_gets_one_more_annotator_up_to_the_cap_and_never_the_same_ask_twice() -> None:
    ties = [
        TiedTask("h1", 11, 2, {"a": 1, "b": 1}),
        TiedTask("h2", 12, 3, {"a": 1, "b": 1, "c": 1}),
        TiedTask("h3", 13, 3, {"a": 1, "b": 1}),  # one skip among the three
    ]
    assert more_annotators(ties, 3, {}) == {11: 3}
    assert more_annotators(ties, 4, {}) == {11: 3, 12: 4, 13: 4}
    assert more_annotators(ties, 4, {11: 3, 12: 4}) == {13: 4}  # 11 and 12 went unanswered: not again
    assert more_annotators(ties, 2, {}) == {}


def test_box_agreement_matches_one_to_one() -> None:
    a = [ag.Box("cat", 0, 0, 10, 10), ag.Box("dog", 50, 50, 10, 10)]
    b = [ag.Box("cat", 1, 1, 10, 10), ag.Box("cat", 50, 50, 10, 10), ag.Box("cat", 0, 0, 10, 10)]
    result = ag.box_agreement(a, b, threshold=0.5)
    assert result.matched == 1  # the dog box has a wrong label; only one cat can match the one cat
    assert result.precision == pytest.approx(1 / 3) and result.recall == pytest.approx(1 / 2)
    assert ag.box_agreement([], []).f1 == 1.0


def test_box_agreement_thresholds_before_it_assigns() -> None:
    # A-C has the highest IoU (0.47) but is below 0.5; assigning on raw IoU takes A-C and B-D and then
    # thresholds both away. The one-to-one matching at 0.5 is B-C.
    a, b = ag.Box("car", 6, 5, 7, 8), ag.Box("car", 2, 4, 9, 12)
    c, d = ag.Box("car", 4, 3, 10, 12), ag.Box("car", 0, 3, 7, 11)
    assert ag.iou(b, c) >= 0.5 and ag.iou(a, c) < 0.5 and ag.iou(b, d) < 0.5 and ag.iou(a, d) < 0.5
    result = ag.box_agreement([a, b], [c, d], threshold=0.5)
    assert result.matched == 1 and result.f1 == pytest.approx(0.5)


def test_box_agreement_prefers_more_pairs_to_a_higher_total_iou() -> None:
    # r1-o1 overlap best (0.90), but r1-o2 and r2-o1 (0.35 each) both qualify at 0.3: two pairs beat one
    r1, r2 = ag.Box("x", 0, 0, 10, 10), ag.Box("x", 5.3, 0, 10, 10)
    o1, o2 = ag.Box("x", 0.5, 0, 10, 10), ag.Box("x", -4.8, 0, 10, 10)
    assert ag.iou(r1, o1) > ag.iou(r1, o2) + ag.iou(r2, o1) and ag.iou(r2, o2) == 0
    assert ag.box_agreement([r1, r2], [o1, o2], threshold=0.3).matched == 2


def test_gate_lists_every_violation_in_a_verdict() -> None:
    ratings = {
        f"i{k}": r for k, r in enumerate([["a", "a", "a"]] * 20 + [["b", "b", "c"], ["c", "c", "b"]] * 10)
    }
    report = ag.agreement_report(ratings, ["a", "b", "c"])
    assert ag.agreement_gate(report, min_agreement=0.3).passed
    verdict = ag.agreement_gate(report, min_agreement=0.99, min_label_agreement=0.6)
    assert not verdict.passed and verdict.gate == "agreement"
    assert len(verdict.violations) == 3
    assert "Krippendorff's alpha" in verdict.violations[0]
    assert "label 'b'" in verdict.violations[1] and "label 'c'" in verdict.violations[2]
    with pytest.raises(QualityGateFailed, match="min_agreement"):
        verdict.raise_if_failed(ag.AGREEMENT_FIX)
    assert ag.agreement_gate(report, min_agreement=None, min_label_agreement=None).passed


def test_unmeasurable_agreement_fails_the_gate_and_says_why() -> None:
    lonely = ag.agreement_report({"x": ["a"]}, ["a"])
    assert lonely.alpha is None and lonely.items == 0
    verdict = ag.agreement_gate(lonely, min_agreement=0.5)
    assert "cannot be measured" in verdict.violations[0]
    assert any("two or more" in note for note in verdict.notes)
    uniform = ag.agreement_report({"x": ["a", "a"], "y": ["a", "a"]}, ["a", "b"])
    assert uniform.alpha is None and any("same label" in note for note in uniform.notes)
    assert ag.agreement_gate(lonely, min_agreement=None).passed  # the gate turned off


def test_parameter_problems_name_the_fix() -> None:
    assert ag.agreement_parameter_problems(["a", "b"], 2, 3, 0.6, None) == []
    [empty] = ag.agreement_parameter_problems([], 2, 3, 0.6, None)
    assert "empty" in empty
    [duplicated] = ag.agreement_parameter_problems(["a", "b", "a"], 2, 3, 0.6, None)
    assert "['a']" in duplicated
    [single] = ag.agreement_parameter_problems(["a", "b"], 1, 3, 0.6, 0.5)
    assert "annotators_per_task to 2" in single and "min_agreement=None, min_label_agreement=None" in single
    assert ag.agreement_parameter_problems(["a", "b"], 1, 3, None, None) == []
    [cap] = ag.agreement_parameter_problems(["a", "b"], 3, 2, 0.6, None)
    assert "max_annotators_per_task=2" in cap
