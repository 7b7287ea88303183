import json
from pathlib import Path

import pytest

from loopline.data.demo_boxes import DemoScene
from loopline.data.labeled import PixelBox
from loopline.labeling.configs import parse_label_config, render_label_config
from loopline.labeling.demo_annotator import (
    BoxErrors,
    PreannotationEdit,
    annotate_tasks,
    answer_boxes,
    load_ground_truth,
    preannotation_savings,
    rectangle_results,
)
from loopline.labeling.detection import parse_detection_export

pytestmark = pytest.mark.unit

LABELS = tuple(str(d) for d in range(10))
CONFIG = parse_label_config(render_label_config("detection", list(LABELS)), "detection")
SCENE = DemoScene(
    120,
    100,
    (
        PixelBox("3", 10, 10, 20, 30),
        PixelBox("7", 60, 10, 25, 30),
        PixelBox("1", 10, 60, 15, 30),
        PixelBox("8", 60, 60, 30, 30),
    ),
)
EXACT = BoxErrors(error_rate=0.0, jitter=0.0, miss_rate=0.0)


def test_jitter_miss_and_labels_are_deterministic_per_image_annotator_and_box() -> None:
    errors = BoxErrors(error_rate=0.1, jitter=0.05, miss_rate=0.1)
    first = [answer_boxes(SCENE, LABELS, errors, 0, f"h{i}", who) for i in range(50) for who in range(3)]
    again = [answer_boxes(SCENE, LABELS, errors, 0, f"h{i}", who) for i in range(50) for who in range(3)]
    assert first == again
    assert first[0] != first[1]  # another annotator draws differently
    assert answer_boxes(SCENE, LABELS, EXACT, 0, "h", 0).boxes == SCENE.boxes


def test_jitter_is_bounded_by_the_box_size_and_stays_in_the_image() -> None:
    errors = BoxErrors(error_rate=0.0, jitter=0.05, miss_rate=0.0)
    moved = 0
    for i in range(200):
        answer = answer_boxes(SCENE, LABELS, errors, 0, f"h{i}", 1)
        for drawn, true in zip(answer.boxes, SCENE.boxes, strict=True):
            assert drawn.label == true.label
            assert abs(drawn.x - true.x) <= 0.05 * true.width + 1e-9
            assert abs(drawn.x + drawn.width - true.x - true.width) <= 0.05 * true.width + 1e-9
            assert abs(drawn.y + drawn.height - true.y - true.height) <= 0.05 * true.height + 1e-9
            assert 0 <= drawn.x and drawn.x + drawn.width <= SCENE.width
            moved += drawn != true
    assert moved > 700


def test_misses_and_wrong_labels_come_at_their_rates() -> None:
    errors = BoxErrors(error_rate=0.05, jitter=0.0, miss_rate=0.1)
    answers = [answer_boxes(SCENE, LABELS, errors, 0, f"h{i}", 0) for i in range(1000)]
    drawn = sum(len(a.boxes) for a in answers)
    assert 0.08 < 1 - drawn / 4000 < 0.12
    wrong = sum(box.label not in {t.label for t in SCENE.boxes} for a in answers for box in a.boxes)
    assert 0.03 < wrong / drawn < 0.07


def test_a_pre_annotation_is_edited_like_a_person_would() -> None:
    predicted = [
        PixelBox("3", 10, 10, 20, 30),  # right: kept
        PixelBox("9", 60, 11, 25, 30),  # right place, wrong label: relabeled
        PixelBox("1", 14, 66, 15, 30),  # the "1", poorly placed (IoU ~0.5): redrawn
        PixelBox("5", 100, 0, 15, 15),  # nothing there: deleted
    ]  # and the "8" is missing: drawn
    answer = answer_boxes(SCENE, LABELS, EXACT, 0, "h", 0, predicted)
    assert answer.edit == PreannotationEdit(
        predicted=4, kept=1, relabeled=1, redrawn=1, deleted=1, drawn=1, scratch=4
    )
    assert answer.edit.actions == 4
    assert answer.boxes == (SCENE.boxes[0], PixelBox("7", 60, 11, 25, 30), SCENE.boxes[2], SCENE.boxes[3])
    perfect = answer_boxes(SCENE, LABELS, EXACT, 0, "h", 0, list(SCENE.boxes))
    assert perfect.edit is not None and perfect.edit.kept == 4 and perfect.edit.actions == 0
    empty = answer_boxes(SCENE, LABELS, EXACT, 0, "h", 0, [])
    assert empty.edit is not None and empty.edit.drawn == empty.edit.actions == 4
    savings = preannotation_savings([answer.edit, perfect.edit, empty.edit])
    assert savings.predicted == 8 and savings.kept == 5 and savings.share_kept == pytest.approx(5 / 8)
    assert savings.actions_per_image == pytest.approx(8 / 3) and savings.saved_per_image == pytest.approx(
        4 / 3
    )
    assert preannotation_savings([]).share_kept is None


def test_a_box_it_would_miss_from_scratch_is_not_drawn_nor_counted() -> None:
    errors = BoxErrors(error_rate=0.0, jitter=0.0, miss_rate=0.5)
    for i in range(20):
        scratch = answer_boxes(SCENE, LABELS, errors, 0, f"h{i}", 0)
        edited = answer_boxes(SCENE, LABELS, errors, 0, f"h{i}", 0, [])
        assert edited.boxes == scratch.boxes and edited.edit is not None
        assert edited.edit.scratch == edited.edit.drawn == len(scratch.boxes)


def test_boxes_go_to_label_studio_in_percent_and_come_back(tmp_path: Path) -> None:
    results = rectangle_results(SCENE.boxes, SCENE, CONFIG)
    assert results[0]["value"] == {
        "x": pytest.approx(100 * 10 / 120),
        "y": 10.0,
        "width": pytest.approx(100 * 20 / 120),
        "height": 30.0,
        "rotation": 0,
        "rectanglelabels": ["3"],
    }
    assert results[0]["original_width"] == 120 and results[0]["original_height"] == 100
    export = [{"id": 1, "data": {"content_hash": "h"}, "annotations": [{"id": 1, "result": results}]}]
    parsed = parse_detection_export(export, CONFIG).tasks[0]
    assert (parsed.width, parsed.height) == (120, 100)
    back = [v for box in parsed.annotations[1] for v in (box.x * 1.2, box.y, box.width * 1.2, box.height)]
    assert back == pytest.approx([v for b in SCENE.boxes for v in (b.x, b.y, b.width, b.height)])


def test_ground_truth_of_both_demos_loads(tmp_path: Path) -> None:
    path = tmp_path / "truth.json"
    path.write_text(json.dumps({"a": 3, "b": SCENE.as_dict(), "c": {"width": 9, "height": 9, "boxes": []}}))
    assert load_ground_truth(path) == {"a": "3", "b": SCENE, "c": DemoScene(9, 9, ())}
    path.write_text(json.dumps({"a": [{"label": "3", "x": 1, "y": 1, "width": 2, "height": 2}]}))
    with pytest.raises(ValueError, match="image size"):
        load_ground_truth(path)


class FakeStudio:
    def __init__(self, tasks: list[dict]) -> None:  # type: ignore[type-arg]
        self.tasks, self.answers = tasks, []  # type: ignore[var-annotated]

    def tasks_with_annotations(self, project_id: int) -> list[dict]:  # type: ignore[type-arg]
        return self.tasks

    def ensure_user(self, email: str, first_name: str, last_name: str = "") -> int:
        return 100 + int(last_name)

    def annotate(self, task_id: int, result: list, completed_by: int) -> int:  # type: ignore[type-arg]
        self.answers.append((task_id, completed_by, result))
        return len(self.answers)


def test_annotating_a_project_counts_the_edits_of_pre_annotated_tasks() -> None:
    prediction = {"model_version": "m", "result": rectangle_results(SCENE.boxes[:3], SCENE, CONFIG)}
    studio = FakeStudio(
        [
            {"id": 1, "data": {"content_hash": "a"}, "annotations": []},
            {"id": 2, "data": {"content_hash": "b"}, "annotations": [], "predictions": [prediction]},
        ]
    )
    truth = {"a": SCENE, "b": SCENE}
    run = annotate_tasks(studio, 1, CONFIG, truth, annotators=2, errors=EXACT)  # type: ignore[arg-type]
    assert run.created == 4 and [a[:2] for a in studio.answers] == [(1, 101), (1, 102), (2, 101), (2, 102)]
    assert [(e.kept, e.drawn, e.actions, e.scratch) for e in run.edits] == [(3, 1, 1, 4)] * 2
    assert all(len(a[2]) == 4 for a in studio.answers)
    with pytest.raises(ValueError, match="holds a label, but project tasks are detection"):
        annotate_tasks(FakeStudio([studio.tasks[0]]), 1, CONFIG, {"a": "3"})  # type: ignore[arg-type]
