"""The register stage's pure parts: calibration error, ONNX evaluation, comparison and gate rules."""

from pathlib import Path

import numpy as np
import pytest

from loopline.errors import RegistryError
from loopline.registry.evaluation import Evaluation, evaluate_onnx, expected_calibration_error
from loopline.registry.gate import GateRules, IncomparableModels, check_no_leak, compare, gate_violations
from loopline.registry.registry import check_model_name

pytestmark = pytest.mark.unit


def evaluation(accuracy: float, recalls: dict[str, float], test_set: str = "t1") -> Evaluation:
    per_class = [
        {"label": k, "precision": v, "recall": v, "f1": v, "support": 10} for k, v in recalls.items()
    ]
    return Evaluation(tuple(recalls), 20, accuracy, per_class, 0.05, 1.0, test_set)


def test_calibration_error_of_known_cases() -> None:
    truth = np.array([0, 0, 1, 1])
    perfect = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, truth) == pytest.approx(0.0)
    overconfident = np.array([[0.9, 0.1]] * 4)  # says 90%, right half the time
    assert expected_calibration_error(overconfident, truth) == pytest.approx(0.4)


def test_gate_lists_every_violated_rule() -> None:
    champion = evaluation(0.90, {"cat": 0.9, "dog": 0.9})
    challenger = evaluation(0.88, {"cat": 0.99, "dog": 0.77})
    comparison = compare(challenger, champion)
    assert comparison.accuracy_delta == pytest.approx(-0.02)
    rules = GateRules(min_accuracy=0.9, min_gain=0.0, min_class_support=10)
    violations = gate_violations(challenger, comparison, rules)
    assert len(violations) == 3
    assert "min_accuracy" in violations[0] and "min_gain" in violations[1] and "'dog'" in violations[2]
    assert gate_violations(champion, compare(champion, None), GateRules(min_accuracy=0.5)) == []
    few = GateRules(min_accuracy=0.9, min_gain=0.0, min_class_support=11)  # 10 images a class: not judged
    assert len(gate_violations(challenger, comparison, few)) == 2


def test_models_on_different_test_sets_are_not_compared() -> None:
    with pytest.raises(IncomparableModels, match="cannot be compared"):
        compare(evaluation(0.9, {"a": 0.9}, "t2"), evaluation(0.9, {"a": 0.9}, "t1"))
    with pytest.raises(RegistryError, match="trained or validated on 1 of the 2 test images"):
        check_no_leak({"h1", "h9"}, {"h1", "h2"}, "version 3")
    check_no_leak({"h9"}, {"h1", "h2"}, "version 3")


@pytest.mark.parametrize("name", ["", "-x", "a b", "x/y", "a" * 129])
def test_invalid_registry_names_are_refused(name: str) -> None:
    with pytest.raises(RegistryError, match="Invalid registered model name"):
        check_model_name(name)


def test_onnx_evaluation_counts_mistakes_and_latency(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
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
    with pytest.raises(ValueError, match="2 outputs but the test set has 3"):
        evaluate_onnx(path, images, truth, ("a", "b", "c"), ["a", "b", "c", "d"], "t")


def test_the_evaluation_report_shows_deltas_gate_and_mistakes() -> None:
    from loopline.registry.evaluation import Mistake
    from loopline.registry.report import render_evaluation, render_model_card

    champion = evaluation(0.90, {"cat": 0.9, "dog": 0.9})
    challenger = Evaluation(
        ("cat", "dog"),
        20,
        0.95,
        champion.per_class,
        0.03,
        0.8,
        "t1",
        [Mistake("abcdef123456789", "cat", "dog", 0.97)],
    )
    comparison = compare(challenger, champion)
    report = render_evaluation("m", "2", challenger, champion, "1", comparison, ["rule x"], lambda h: b"png")
    assert "against champion v1" in report and "| accuracy | 0.950 | 0.900 | +0.050 |" in report
    assert "- FAILED: rule x" in report and "data:image/png;base64,cG5n" in report
    assert "| cat | dog | 0.97 |" in report
    card = render_model_card("m", "2", {"dataset_version": "abc"}, ("cat", "dog"))
    assert card.startswith("# m v2") and "| dataset_version | `abc` |" in card


def test_an_unreachable_mlflow_is_named_with_the_fix() -> None:
    from loopline.registry.registry import check_mlflow
    from loopline.services.process import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError, match=rf"MLflow server at {uri} does not answer .* after 2 tries"):
        check_mlflow(uri, attempts=2, delay=0.01)
