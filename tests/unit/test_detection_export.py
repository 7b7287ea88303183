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


def only(result: list, task_id: int = 1) -> list:  # type: ignore[type-arg]
    return [{"id": task_id, "data": {"content_hash": "x"}, "annotations": [{"id": 1, "result": result}]}]


def test_bad_boxes_are_clipped_or_dropped_and_named() -> None:
    broken = rect("cat", 10, 10, 10, 10)
    del broken["value"]["y"]
    rotated = rect("dog", 10, 10, 20, 20)
    rotated["value"]["rotation"] = 90  # about its top-left corner: 20% of 200 px wide = 40 px down
    summary = parse_detection_export(
        only(
            [
                rect("cat", 90, 90, 20, 20),  # partly outside: clipped
                rect("cat", -10, 20, 15, 10),  # partly outside: clipped
                rect("cat", 120, 10, 5, 5),  # entirely outside: dropped
                rect("dog", 10, 10, 0, 10),  # zero area: dropped
                rect("dog", 10, 10, 5, -2),  # negative size: zero area, dropped
                broken,  # no y: dropped
                rotated,  # axis-aligned bounds
                rect("wolf", 1, 1, 5, 5),  # not in the label set
            ]
        ),
        CONFIG,
    )
    counts = summary.counts
    assert counts["boxes clipped to the image"] == 2
    assert counts["boxes dropped: outside the image"] == 1
    assert counts["boxes dropped: zero area"] == 2
    assert counts["boxes dropped: malformed"] == 1
    assert counts["rotated boxes: axis-aligned bounds used"] == 1
    assert counts["unknown labels"] == 1 and counts["boxes"] == 3
    clipped, left, turned = summary.tasks[0].annotations[1]
    assert (clipped.x, clipped.y, clipped.width, clipped.height) == (90, 90, 10, 10)
    assert (left.x, left.y, left.width, left.height) == (0, 20, 5, 10)
    # 40x20 px at (20, 10) px turned 90 degrees clockwise: 20 px wide to the left, 40 px down
    assert (turned.x, turned.y, turned.width, turned.height) == pytest.approx((0, 10, 10, 40))


def test_an_image_without_boxes_is_a_valid_negative() -> None:
    summary = parse_detection_export(only([]), CONFIG)
    assert summary.tasks[0].annotations == {1: []}
    assert summary.counts["annotations with no boxes (negatives)"] == 1 and summary.counts["boxes"] == 0
    assert to_coco(summary, CONFIG.labels)["images"] == []  # the export gives no size for it
    coco = to_coco(summary, CONFIG.labels, sizes={"x": (64, 48)})
    assert coco["images"] == [{"id": 1, "file_name": "", "width": 64, "height": 48, "content_hash": "x"}]
    assert coco["annotations"] == []


def test_rotated_boxes_without_an_image_size_are_dropped_and_named() -> None:
    region = rect("cat", 10, 10, 20, 20)
    region["value"]["rotation"] = 30
    del region["original_width"], region["original_height"]
    summary = parse_detection_export(only([region]), CONFIG)
    assert summary.counts["boxes dropped: rotated, no image size"] == 1 and summary.counts["boxes"] == 0


def test_labeled_coco_holds_the_consensus_boxes_by_task_id() -> None:
    from pycocotools.coco import COCO

    from loopline.data.labeled import LabeledRow, PixelBox
    from loopline.labeling.detection import labeled_coco

    rows = [
        LabeledRow("h2", "s3://b/2.png", "", "test", "d", 1, 1, 12, (), (), (40, 30)),  # a negative
        LabeledRow(
            "h1", "s3://b/1.png", "dog", "train", "d", 1, 1, 11, (), (PixelBox("dog", 1, 2, 10, 5),), (50, 40)
        ),
        LabeledRow("h3", "s3://b/3.png", "cat", "train", "d", 1, 1, 13, ()),  # classification: left out
    ]
    coco = labeled_coco(rows, ("cat", "dog"))
    assert [i["id"] for i in coco["images"]] == [11, 12]
    first = coco["images"][0]
    assert (first["file_name"], first["width"], first["height"]) == ("s3://b/1.png", 50, 40)
    assert (first["content_hash"], first["split"]) == ("h1", "train")
    loaded = COCO()
    loaded.dataset = coco
    loaded.createIndex()
    [box] = loaded.loadAnns(loaded.getAnnIds(imgIds=[11]))
    assert box["bbox"] == [1, 2, 10, 5] and loaded.loadCats(box["category_id"])[0]["name"] == "dog"
    assert loaded.getAnnIds(imgIds=[12]) == []
