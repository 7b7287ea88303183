"""The drift tests: a shift is found, no shift raises an alarm at about the stated rate (the whole family,
corrected), and the corrections are statsmodels'."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loopline.monitoring.drift import class_mix_test, correct, holm, ks_test

pytestmark = pytest.mark.unit
LABELS = tuple("abcd")
SEEDS = 200


def family(rng: np.random.Generator, shift: float, mix: tuple[float, ...] = (0.25,) * 4) -> list:
    """What a monitor run tests: the class mix and eight continuous statistics (reference 150, served 300)."""
    reference = {label: 150 // 4 for label in LABELS}
    predicted = list(rng.choice(LABELS, size=300, p=mix))
    tests = [class_mix_test(reference, predicted, LABELS)]
    for i in range(8):
        tests.append(
            ks_test("image", f"s{i}", rng.normal(0, 1, 150), rng.normal(shift if i == 0 else 0, 1, 300))
        )
    return tests


@pytest.mark.parametrize(("method", "seeds"), [("fdr_bh", SEEDS), ("bonferroni", SEEDS), ("holm", SEEDS)])
def test_without_drift_the_family_alarms_at_most_at_about_alpha(method: str, seeds: int) -> None:
    alpha = 0.05
    alarms = sum(
        any(t.rejected for t in correct(family(np.random.default_rng(seed), 0.0), alpha, method))  # type: ignore[arg-type]
        for seed in range(seeds)
    )
    error = 3 * math.sqrt(alpha * (1 - alpha) / seeds)  # three standard errors of the simulation
    assert alarms / seeds <= alpha + error, alarms


def test_holm_answers_as_statsmodels_does(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from statsmodels.stats.multitest import multipletests

    monkeypatch.setattr(gc, "collect", lambda generation=2: 0)  # its holm collects garbage every call

    rng = np.random.default_rng(0)
    for size in (1, 2, 9, 40):
        for _ in range(5):
            p = rng.uniform(0, 0.2, size) ** rng.uniform(0.5, 3)
            p[rng.integers(0, size)] = p[0]  # a tie
            rejected, adjusted = holm(p, 0.05)
            expected_rejected, expected, _, _ = multipletests(p, alpha=0.05, method="holm")
            assert (rejected == expected_rejected).all()
            np.testing.assert_allclose(adjusted, expected, rtol=1e-12)


def test_a_shifted_statistic_is_found_and_named() -> None:
    found = 0
    for seed in range(50):
        tests = correct(family(np.random.default_rng(seed), 0.6), 0.05, "fdr_bh")
        rejected = {t.name for t in tests if t.rejected}
        found += "s0" in rejected
        assert rejected <= {"s0", "class_mix"} | {f"s{i}" for i in range(8)}
    assert found >= 48  # a 0.6 standard deviation shift in 300 against 150: power about 1


def test_a_new_class_mix_is_found() -> None:
    tests = [
        correct(family(np.random.default_rng(s), 0.0, (0.55, 0.15, 0.15, 0.15)), 0.05, "fdr_bh")
        for s in range(20)
    ]
    assert sum(next(t for t in f if t.name == "class_mix").rejected for f in tests) >= 19


def test_predictions_outside_the_labels_count_against_the_mix() -> None:
    reference = {"a": 50, "b": 50}
    same = class_mix_test(reference, ["a", "b"] * 50, ("a", "b"))
    strange = class_mix_test(reference, ["a", "b"] * 40 + ["zebra"] * 20, ("a", "b"))
    assert same.p_value > 0.9 and strange.p_value < 1e-4


def test_bonferroni_multiplies_by_the_family_size() -> None:
    a = ks_test("image", "a", np.arange(50.0), np.arange(50.0) + 20)
    b = ks_test("image", "b", np.arange(50.0), np.arange(50.0))
    adjusted = correct([a, b], 0.05, "bonferroni")
    assert adjusted[0].adjusted_p == pytest.approx(min(1.0, 2 * a.p_value))
    assert adjusted[0].rejected and not adjusted[1].rejected


def test_empty_samples_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="image:brightness"):
        ks_test("image", "brightness", [], [1.0])
