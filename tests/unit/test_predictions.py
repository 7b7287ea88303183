import pytest

from loopline.detections import Detection
from loopline.errors import LabelConfigMismatch
from loopline.labeling.configs import parse_label_config, render_label_config
from loopline.labeling.predictions import (
    classification_prediction,
    detection_prediction,
    prediction_problems,
    validate_predictions,
)

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


BOXES = parse_label_config(render_label_config("detection", ["cat", "dog"]), "detection")
SIZE = (640, 480)


def box_prediction(*detections: Detection, min_score: float = 0.0) -> dict:  # type: ignore[type-arg]
    prediction = detection_prediction(BOXES, detections, SIZE, "detector v2", min_score)
    assert prediction is not None
    return prediction.as_dict()


def test_pixel_boxes_go_to_percent_and_back() -> None:
    found = [Detection("dog", 0.9, 64.0, 48.0, 320.0, 96.0), Detection("cat", 0.5, 0.0, 0.0, 640.0, 480.0)]
    p = box_prediction(*found)
    assert prediction_problems(BOXES, p, SIZE) == []
    first = p["result"][0]
    assert first["value"] == {
        "x": 10.0,
        "y": 10.0,
        "width": 50.0,
        "height": 20.0,
        "rotation": 0,
        "rectanglelabels": ["dog"],
    }
    assert (first["original_width"], first["original_height"], first["image_rotation"]) == (640, 480, 0)
    assert [r["score"] for r in p["result"]] == [0.9, 0.5] and p["score"] == pytest.approx(0.7)
    # back to pixels the way the export does it (loopline.labeling.detection.to_coco)
    for result, d in zip(p["result"], found, strict=True):
        v = result["value"]
        back = (v["x"] * 640 / 100, v["y"] * 480 / 100, v["width"] * 640 / 100, v["height"] * 480 / 100)
        assert back == pytest.approx((d.x, d.y, d.width, d.height), abs=1e-9)


def test_only_boxes_at_or_above_the_threshold_and_none_for_an_empty_image() -> None:
    found = [Detection("cat", 0.8, 1, 1, 10, 10), Detection("dog", 0.3, 5, 5, 10, 10)]
    p = box_prediction(*found, min_score=0.3)
    assert [r["value"]["rectanglelabels"] for r in p["result"]] == [["cat"], ["dog"]]
    p = box_prediction(*found, min_score=0.31)
    assert [r["value"]["rectanglelabels"] for r in p["result"]] == [["cat"]] and p["score"] == 0.8
    assert detection_prediction(BOXES, found, SIZE, "m", min_score=0.9) is None
    assert detection_prediction(BOXES, [], SIZE, "m") is None
    empty = {"model_version": "m", "score": 0.0, "result": []}
    assert prediction_problems(BOXES, empty) == [
        "it has no result list (send no prediction for an image with no boxes)"
    ]


def test_boxes_overshooting_the_edge_are_clipped_and_empty_ones_dropped() -> None:
    found = [
        Detection("cat", 0.9, 600.0, 400.0, 50.0, 100.0),  # past the right and bottom edges
        Detection("dog", 0.8, 700.0, 10.0, 20.0, 20.0),  # wholly right of the image: nothing left
    ]
    p = box_prediction(*found)
    assert len(p["result"]) == 1 and prediction_problems(BOXES, p, SIZE) == []
    v = p["result"][0]["value"]
    assert v["x"] + v["width"] == pytest.approx(100.0) and v["y"] + v["height"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            {"x": 64, "y": 48, "width": 320, "height": 96},
            "coordinates look like pixels; Label Studio wants percent of the image (0-100) "
            "(as percent of 640x480: x=10 y=10 width=50 height=20)",
        ),
        ({"x": 90, "y": 10, "width": 20, "height": 10}, "reaches outside the image"),
        ({"x": -5, "y": 10, "width": 20, "height": 10}, "reaches outside the image"),
        ({"x": 10, "y": 10, "width": 0, "height": 10}, "has zero or negative area"),
        ({"x": 10, "y": 10, "width": 5, "height": -1}, "has zero or negative area"),
        ({"x": 10, "y": "ten", "width": 5, "height": 5}, "value.y missing or not a number"),
        ({"x": 10, "y": 10, "height": 5}, "value.width missing or not a number"),
        ({"x": 10, "y": 10, "width": 5, "height": 5, "rotation": 30}, "value.rotation is 30"),
        (
            {"x": 10, "y": 10, "width": 5, "height": 5, "rectanglelabels": ["bird"]},
            "labels ['bird'] that are not in the label set ['cat', 'dog']",
        ),
    ],
)
def test_each_bad_box_is_refused_with_its_reason(value: dict, problem: str) -> None:  # type: ignore[type-arg]
    p = box_prediction(Detection("cat", 0.9, 64.0, 48.0, 320.0, 96.0))
    p["result"][0]["value"] = {"rotation": 0, "rectanglelabels": ["cat"], **value}
    problems = prediction_problems(BOXES, p, SIZE)
    assert len(problems) == 1 and problem in problems[0], problems


def test_fractions_of_one_are_named_as_the_wrong_scale() -> None:
    p = box_prediction(Detection("cat", 0.9, 64.0, 48.0, 320.0, 96.0), Detection("dog", 0.7, 0, 0, 64, 48))
    for result in p["result"]:  # what a model normalising to [0, 1] would send
        result["value"].update({k: result["value"][k] / 100 for k in ("x", "y", "width", "height")})
    assert any("look like fractions of 1" in text for text in prediction_problems(BOXES, p, SIZE))
    # one real box well inside the image is enough to tell percent from fractions
    p["result"][1]["value"].update({"x": 50.0, "y": 50.0, "width": 10.0, "height": 10.0})
    assert prediction_problems(BOXES, p, SIZE) == []


def test_boxes_computed_for_another_image_size_are_refused() -> None:
    p = box_prediction(Detection("cat", 0.9, 64.0, 48.0, 320.0, 96.0))
    assert prediction_problems(BOXES, p, SIZE) == []
    assert prediction_problems(BOXES, p, (320, 240)) == [
        "result[0]: original_width/original_height are 640x480 but the image is 320x240; the boxes were "
        "computed for another size of the image"
    ]
    with pytest.raises(LabelConfigMismatch, match=r"(?s)1 of 2 predictions.*task-b.*640x480.*percent"):
        validate_predictions(BOXES, [("task-a", p), ("task-b", p)], {"task-a": SIZE, "task-b": (320, 240)})


def test_a_choices_prediction_in_a_box_project_is_named() -> None:
    p = classification_prediction(CONFIG, "1", 0.5, "m").as_dict()
    problems = prediction_problems(BOXES, p)
    assert "result[0].type is 'choices', expected 'rectanglelabels'" in problems
    assert "result[0].value has no 'rectanglelabels' list" in problems
