import pytest

from loopline.errors import LabelConfigMismatch
from loopline.labeling.configs import parse_label_config, render_label_config
from loopline.labeling.predictions import classification_prediction, prediction_problems, validate_predictions

pytestmark = pytest.mark.unit

CONFIG = parse_label_config(render_label_config("classification", ["0", "1", "2"]), "classification")


def test_built_predictions_fit() -> None:
    p = classification_prediction(CONFIG, "2", 0.93, "champion-v3").as_dict()
    assert prediction_problems(CONFIG, p) == []
    validate_predictions(CONFIG, [("task-a", p)])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"from_name": "choice"}, "from_name is 'choice', expected 'label'"),
        ({"to_name": "img"}, "to_name is 'img', expected 'image'"),
        ({"type": "labels"}, "type is 'labels', expected 'choices'"),
        ({"value": {"choices": ["7"]}}, "labels ['7'] that are not in the label set"),
        ({"value": {}}, "has no 'choices' list"),
    ],
)
def test_each_mismatch_is_named(change: dict, problem: str) -> None:  # type: ignore[type-arg]
    p = classification_prediction(CONFIG, "1", 0.5, "m").as_dict()
    p["result"][0].update(change)
    assert any(problem in text for text in prediction_problems(CONFIG, p))


def test_validation_lists_all_bad_predictions() -> None:
    good = classification_prediction(CONFIG, "1", 0.5, "m").as_dict()
    bad = classification_prediction(CONFIG, "9", 0.5, "m").as_dict()
    worse = {"model_version": "m", "score": 3.0, "result": []}
    with pytest.raises(LabelConfigMismatch, match=r"(?s)2 of 3 predictions.*task-b.*task-c.*class mapping"):
        validate_predictions(CONFIG, [("task-a", good), ("task-b", bad), ("task-c", worse)])
