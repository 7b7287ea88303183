import pytest

from loopline.labeling.configs import parse_label_config, render_label_config
from loopline.labeling.detection import detection_agreement, parse_detection_export, to_coco

pytestmark = pytest.mark.unit

CONFIG = parse_label_config(render_label_config("detection", ["cat", "dog"]), "detection")


def rect(label: str, x: float, y: float, w: float, h: float) -> dict:  # type: ignore[type-arg]
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 200,
        "original_height": 100,
        "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label]},
    }


EXPORT = [
    {
        "id": 11,
        "data": {"image": "/d/a.png", "content_hash": "a"},
        "annotations": [
            {
                "id": 1,
                "created_at": "1",
                "result": [rect("cat", 10, 10, 20, 20), rect("dog", 50, 50, 10, 10)],
            },
            {"id": 2, "created_at": "2", "result": [rect("cat", 11, 11, 20, 20), rect("wolf", 0, 0, 5, 5)]},
        ],
    },
    {
        "id": 12,
        "data": {"image": "/d/b.png", "content_hash": "b"},
        "annotations": [
            {"id": 3, "created_at": "1", "result": [], "was_cancelled": True},
        ],
    },
]


def test_boxes_counts_and_unknown_labels() -> None:
    summary = parse_detection_export(EXPORT, CONFIG)
    assert summary.counts["boxes"] == 3 and summary.counts["skipped or cancelled"] == 1
    assert summary.unknown_labels == {"wolf": 1}


def test_agreement_matches_boxes_by_iou() -> None:
    scores = detection_agreement(parse_detection_export(EXPORT, CONFIG))
    # annotation 1 has cat+dog, annotation 2 only the cat (its wolf is unknown): P=1, R=0.5
    assert scores["pairs"] == 1 and scores["f1"] == pytest.approx(2 / 3)
    assert scores["f1[cat]"] == 1.0 and scores["f1[dog]"] == 0.0


def test_coco_maps_images_by_task_id_in_pixels() -> None:
    coco = to_coco(parse_detection_export(EXPORT, CONFIG), CONFIG.labels)
    assert coco["images"] == [
        {"id": 11, "file_name": "/d/a.png", "width": 200, "height": 100, "content_hash": "a"}
    ]
    assert [a["bbox"] for a in coco["annotations"]] == [[20.0, 10.0, 40.0, 20.0], [100.0, 50.0, 20.0, 10.0]]
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]
    assert {a["image_id"] for a in coco["annotations"]} == {11}
