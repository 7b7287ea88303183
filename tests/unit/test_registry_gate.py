"""The register stage's pure parts: calibration error, ONNX evaluation, the paired statistics and the model
gate (a drop counts only when significant and beyond its tolerance; the verdict says when the test set is
too small to tell)."""

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from loopline.errors import QualityGateFailed, RegistryError
from loopline.registry.evaluation import Evaluation, Prediction, evaluate_onnx, expected_calibration_error
from loopline.registry.gate import GateRules, IncomparableModels, check_no_leak, compare, model_gate
from loopline.registry.registry import check_model_name
from loopline.registry.stats import discordant_needed, holm, paired_test, smallest_p, wilson
from loopline.verdict import GateVerdict

pytestmark = pytest.mark.unit


def outcomes(counts: dict[str, int], wrong: Iterable[str] = ()) -> dict[str, Prediction]:
    """``counts[label]`` images per class, hashed ``<label>-<i>``; those in ``wrong`` answered wrong."""
    labels, wrong = list(counts), set(wrong)
    predictions = {}
    for position, (label, count) in enumerate(counts.items()):
        other = labels[(position + 1) % len(labels)]
        for i in range(count):
            key = f"{label}-{i:03d}"
            predictions[key] = Prediction(label, other if key in wrong else label, 0.9)
    return predictions


def evaluation(counts: dict[str, int], wrong: Iterable[str] = (), test_set: str = "t1") -> Evaluation:
    return Evaluation.from_predictions(tuple(counts), outcomes(counts, wrong), test_set)


def judge(
    counts: dict[str, int], champion_wrong: Iterable[str], challenger_wrong: Iterable[str], **rules: float
) -> GateVerdict:
    champion, challenger = evaluation(counts, champion_wrong), evaluation(counts, challenger_wrong)
    return model_gate(challenger, compare(challenger, champion), GateRules(**rules))


def test_calibration_error_of_known_cases() -> None:
    truth = np.array([0, 0, 1, 1])
    perfect = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, truth) == pytest.approx(0.0)
    overconfident = np.array([[0.9, 0.1]] * 4)  # says 90%, right half the time
    assert expected_calibration_error(overconfident, truth) == pytest.approx(0.4)


def test_one_image_of_twenty_is_not_a_regression_and_the_verdict_says_the_set_is_too_small() -> None:
    counts = {"cat": 10, "dog": 10}
    champion, challenger = evaluation(counts), evaluation(counts, {"cat-003"})
    comparison = compare(challenger, champion)
    assert comparison.accuracy_delta == -0.05 and comparison.recall_deltas == {"cat": -0.1, "dog": 0.0}
    verdict = model_gate(challenger, comparison, GateRules())
    assert verdict.passed and verdict.gate == "model"
    assert len(verdict.notes) == 2 and all("too small to tell" in n for n in verdict.notes)
    assert "accuracy -0.050" in verdict.notes[0] and "needs at least 6" in verdict.notes[0]
    assert "in class 'cat' -0.100 (loses 1 image the champion gets right, gains 0, of 10" in verdict.notes[1]
    # A drop of exactly the tolerance is within it (0.95 - 1.0 is -0.050000000000000044 in floats).
    assert not any(
        "accuracy" in n for n in model_gate(challenger, comparison, GateRules(min_gain=-0.05)).notes
    )


def test_a_clear_regression_on_a_large_test_set_fails_every_rule_it_breaks() -> None:
    counts = {"a": 100, "b": 100}
    champion_wrong = [f"{c}-{i:03d}" for c in "ab" for i in range(90, 95)]
    challenger_wrong = champion_wrong + [f"{c}-{i:03d}" for c in "ab" for i in range(10)]
    verdict = judge(counts, champion_wrong, challenger_wrong)
    assert not verdict.passed and not verdict.notes
    assert len(verdict.violations) == 3
    assert verdict.violations[0].startswith("accuracy -0.100 vs the champion (loses 20 images")
    assert "below min_gain +0.000" in verdict.violations[0]
    assert "class 'a': recall -0.100" in verdict.violations[1] and "class 'b'" in verdict.violations[2]
    with pytest.raises(
        QualityGateFailed, match=r"(?s)The model gate failed:\n- accuracy.*class 'b'.*retrain"
    ):
        verdict.raise_if_failed("retrain")


def test_a_significant_drop_within_the_tolerance_passes() -> None:
    counts = {"a": 100, "b": 100}
    challenger_wrong = [f"{c}-{i:03d}" for c in "ab" for i in range(5)]  # -0.05, p = 0.002
    assert not judge(counts, [], challenger_wrong).passed
    relaxed = judge(counts, [], challenger_wrong, min_gain=-0.06, max_class_regression=0.06)
    assert relaxed.passed and not relaxed.notes


def test_a_significant_regression_of_one_class_fails_even_when_accuracy_holds() -> None:
    counts = {str(d): 30 for d in range(10)}
    gains = [f"{d}-{i:03d}" for d in (0, 1, 2, 4, 5, 6) for i in range(2)]  # champion wrong, challenger right
    losses = [f"3-{i:03d}" for i in range(12)]  # champion right, challenger wrong: recall of 3 drops 0.4
    verdict = judge(counts, gains, losses)
    assert len(verdict.violations) == 1, verdict.violations
    assert verdict.violations[0].startswith("class '3': recall -0.400 vs the champion on its 30 images")
    assert "Holm-adjusted over 10 classes 0.00488" in verdict.violations[0]
    small = judge({"a": 15, "b": 300}, [], [f"a-{i:03d}" for i in range(10)], min_gain=-0.05)
    assert [v[:30] for v in small.violations] == ["class 'a': recall -0.667 vs th"]  # 15 images are enough
    few = judge(counts, gains[:4], losses[:4])  # -0.133 on class 3, but only 4 images disagree
    assert few.passed and any("class '3' -0.133" in n and "too small to tell" in n for n in few.notes)


def test_a_required_gain_must_be_reached_and_significant() -> None:
    counts = {"a": 50, "b": 50}
    champion_wrong = [f"a-{i:03d}" for i in range(20)]
    assert not judge(counts, champion_wrong, champion_wrong[3:], min_gain=0.05).passed  # +0.03 < +0.05
    unproven = judge(counts, champion_wrong, champion_wrong[5:], min_gain=0.05)  # +0.05 on 5 images
    assert "is not significant" in unproven.violations[0] and "too small to tell" in unproven.notes[0]
    assert judge(counts, champion_wrong, champion_wrong[10:], min_gain=0.05).passed  # +0.10, p = 0.002


def test_min_accuracy_is_judged_on_the_estimate_and_the_interval_is_noted() -> None:
    alone = evaluation({"a": 10, "b": 10}, {"a-000"})
    verdict = model_gate(alone, compare(alone, None), GateRules(min_accuracy=0.95))
    assert verdict.passed  # 19/20 is 0.95: no float noise
    assert (
        "95% Wilson interval [0.764, 0.991]" in verdict.notes[0] and "too small to tell" in verdict.notes[0]
    )
    worse = evaluation({"a": 10, "b": 10}, {"a-000", "a-001", "a-002"})
    failed = model_gate(worse, compare(worse, None), GateRules(min_accuracy=0.9))
    assert failed.violations == (
        "test accuracy 0.850 (17/20, 95% Wilson interval [0.640, 0.948]) < min_accuracy 0.900",
    )
    assert model_gate(worse, compare(worse, None), GateRules()).passed


def test_the_verdict_does_not_depend_on_image_order() -> None:
    counts = {str(d): 30 for d in range(10)}
    champion_wrong = [f"{d}-{i:03d}" for d in range(10) for i in range(d % 3)]
    challenger_wrong = [f"3-{i:03d}" for i in range(12)] + [f"7-{i:03d}" for i in range(5, 9)]
    champion, challenger = outcomes(counts, champion_wrong), outcomes(counts, challenger_wrong)
    reference = judge(counts, champion_wrong, challenger_wrong)
    rng = np.random.default_rng(0)
    for _ in range(5):
        shuffled = {k: challenger[k] for k in rng.permutation(list(challenger))}
        comparison = compare(
            Evaluation.from_predictions(tuple(counts), shuffled, "t1"),
            Evaluation.from_predictions(tuple(counts), champion, "t1"),
        )
        assert model_gate(
            Evaluation.from_predictions(tuple(counts), shuffled, "t1"), comparison, GateRules()
        ) == (reference)
    assert not reference.passed


def test_paired_statistics_of_known_cases() -> None:
    assert discordant_needed(0.05) == 6 and discordant_needed(0.01) == 8 and smallest_p(6) == 0.03125
    right = {f"h{i}": True for i in range(10)}
    six_lost = {**right, **{f"h{i}": False for i in range(6)}}
    test = paired_test(right, six_lost)
    assert (test.champion_only, test.challenger_only, test.exact) == (6, 0, True)
    assert test.p_value == pytest.approx(0.03125) and test.delta == -0.6
    champion = {f"h{i}": i < 30 for i in range(100)}  # the challenger loses 30 and gains 10
    large = paired_test(champion, {f"h{i}": 30 <= i < 40 for i in range(100)})
    assert not large.exact and large.p_value == pytest.approx(0.0026631, rel=1e-4)  # (|30-10|-1)²/40
    with pytest.raises(ValueError, match="different images"):
        paired_test(right, {"other": True})
    adjusted = holm(
        {
            k: paired_test(right, {**right, **dict.fromkeys(lost, False)})
            for k, lost in {"x": ["h0", "h1", "h2", "h3", "h4", "h5", "h6"], "y": ["h0"]}.items()
        }
    )
    assert adjusted["x"].judged_p == pytest.approx(2 * 2 * 0.5**7) and adjusted["y"].judged_p == 1.0
    low, high = wilson(19, 20).low, wilson(19, 20).high
    assert (round(low, 3), round(high, 3)) == (0.764, 0.991)
    assert (wilson(0, 0).low, wilson(0, 0).high) == (0.0, 1.0)


def test_rules_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="min_class_support"):
        GateRules(min_class_support=20)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="alpha"):
        GateRules(alpha=0)


def test_models_on_different_test_sets_are_not_compared() -> None:
    with pytest.raises(IncomparableModels, match="cannot be compared"):
        compare(evaluation({"a": 2}, test_set="t2"), evaluation({"a": 2}, test_set="t1"))
    with pytest.raises(IncomparableModels, match=r"\(3 images\)"):
        compare(evaluation({"a": 3}), evaluation({"a": 2}))
    with pytest.raises(RegistryError, match="trained or validated on 1 of the 2 test images"):
        check_no_leak({"h1", "h9"}, {"h1", "h2"}, "version 3")
    check_no_leak({"h9"}, {"h1", "h2"}, "version 3")


@pytest.mark.parametrize("name", ["", "-x", "a b", "x/y", "a" * 129])
def test_invalid_registry_names_are_refused(name: str) -> None:
    with pytest.raises(RegistryError, match="Invalid registered model name"):
        check_model_name(name)


def test_onnx_evaluation_keeps_each_images_outcome_by_content_hash(tmp_path: Path) -> None:
    import torch

    from loopline.training.onnx_export import export_onnx

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1, 0] = 10.0  # class 1 when the first pixel is bright
        model[1].bias.zero_()
    path = export_onnx(model, 4, tmp_path / "m.onnx")
    images = np.zeros((4, 3, 4, 4), dtype=np.float32)
    images[[1, 3], 0, 0, 0] = 1.0
    truth = np.array([0, 1, 1, 0])  # the last two are mistakes
    result = evaluate_onnx(path, images, truth, ("off", "on"), ["a", "b", "c", "d"], "t")
    assert result.accuracy == 0.5 and {m.content_hash for m in result.mistakes} == {"c", "d"}
    assert result.recall_of("on") == 0.5 and result.latency_ms > 0
    assert result.correct() == {"a": True, "b": True, "c": False, "d": False}
    order = [3, 1, 0, 2]  # the same images in another order: the same outcome per image
    again = evaluate_onnx(path, images[order], truth[order], ("off", "on"), ["d", "b", "a", "c"], "t")
    assert again.predictions == result.predictions and again.per_class == result.per_class
    with pytest.raises(ValueError, match="2 outputs but the test set has 3"):
        evaluate_onnx(path, images, truth, ("a", "b", "c"), ["a", "b", "c", "d"], "t")
    with pytest.raises(ValueError, match="one content hash per image"):
        evaluate_onnx(path, images, truth, ("off", "on"), ["a", "a", "c", "d"], "t")


def test_an_unreachable_mlflow_is_named_with_the_fix() -> None:
    from loopline.registry.registry import check_mlflow
    from loopline.services.process import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError, match=rf"MLflow server at {uri} does not answer .* after 2 tries"):
        check_mlflow(uri, attempts=2, delay=0.01)
