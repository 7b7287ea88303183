import random

import pytest

from loopline.data.manifest import ManifestRow
from loopline.data.splits import SplitFractions
from loopline.labeling.agreement import Box
from loopline.labeling.box_consensus import box_agreement_gate, box_consensus, image_consensus
from loopline.labeling.configs import parse_label_config, render_label_config
from loopline.labeling.detection import detection_agreement_report, parse_detection_export
from loopline.labeling.labeled import build_detection_rows, stratification_label
from loopline.labeling.ties import more_annotators

pytestmark = pytest.mark.unit

CONFIG = parse_label_config(render_label_config("detection", ["2", "3", "8", "10"]), "detection")


def b(label: str, x: float, y: float, w: float = 20, h: float = 20) -> Box:
    return Box(label, x, y, w, h)


def test_agreeing_annotators_give_one_median_box() -> None:
    image = image_consensus({1: [b("3", 10, 10)], 2: [b("3", 12, 10)], 3: [b("3", 11, 14, 20, 22)]})
    assert image.settled and not image.minority and not image.tied
    assert image.boxes == (Box("3", 11, 10, 20, 20),)  # median of each corner: the outlier ignored
    assert image.kept[0].annotations == (1, 2, 3)


def test_permuting_annotators_and_boxes_gives_the_same_consensus() -> None:
    rng = random.Random(0)
    for _ in range(40):
        objects = [(rng.choice("238"), rng.uniform(0, 80), rng.uniform(0, 80)) for _ in range(4)]
        annotations = {
            a: [
                b(label if rng.random() > 0.15 else "8", x + rng.uniform(-4, 4), y + rng.uniform(-4, 4))
                for label, x, y in objects
                if rng.random() > 0.2
            ]
            for a in range(10, 14)
        }
        expected = image_consensus(annotations)
        for _ in range(5):
            order = list(annotations)
            rng.shuffle(order)
            shuffled = {a: rng.sample(annotations[a], len(annotations[a])) for a in order}
            assert image_consensus(shuffled) == expected


def test_a_minority_box_is_dropped_and_reported() -> None:
    image = image_consensus({1: [b("3", 10, 10)], 2: [b("3", 11, 10)], 3: [b("3", 10, 11), b("2", 60, 60)]})
    assert image.settled  # outvoted 2 to 1, like a 2:1 classification vote
    assert [c.label for c in image.kept] == ["3"]
    assert [(c.label, c.annotations) for c in image.minority] == [("2", (3,))]


def test_a_box_only_one_of_two_annotators_drew_is_sent_back() -> None:
    image = image_consensus({1: [b("3", 10, 10), b("2", 60, 60)], 2: [b("3", 11, 10)]})
    assert not image.settled and [(c.label, c.votes) for c in image.tied] == [("2", 1)]


def test_label_conflicts_are_sent_back_unless_a_majority_decides() -> None:
    split = image_consensus({1: [b("3", 10, 10)], 2: [b("8", 11, 10)]})
    assert not split.settled and len(split.conflicts) == 1 and not split.conflicts[0].resolved
    three_ways = image_consensus({1: [b("3", 10, 10)], 2: [b("8", 11, 10)], 3: [b("2", 10, 11)]})
    assert not three_ways.settled and not three_ways.kept  # no label has a majority
    decided = image_consensus({1: [b("3", 10, 10)], 2: [b("3", 11, 10)], 3: [b("8", 10, 11)]})
    assert decided.settled and decided.conflicts[0].resolved
    assert [c.label for c in decided.kept] == ["3"] and [c.label for c in decided.minority] == ["8"]


def test_clusters_do_not_chain() -> None:
    # 1 overlaps 2 and 2 overlaps 3 (IoU ~0.54), but 1 and 3 do not: complete linkage keeps them apart
    image = image_consensus({1: [b("3", 0, 0)], 2: [b("3", 6, 0)], 3: [b("3", 12, 0)]})
    assert sorted(c.votes for c in image.kept + image.minority) == [1, 2]


def rect(label: str, x: float, y: float, w: float = 20, h: float = 20) -> dict:  # type: ignore[type-arg]
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 200,
        "original_height": 100,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]},
    }


def task(task_id: int, h: str, *results: list) -> dict:  # type: ignore[type-arg]
    annotations = [
        {"id": task_id * 10 + k, "completed_by": 100 + k, "created_at": str(k), "result": r}
        for k, r in enumerate(results)
    ]
    return {"id": task_id, "data": {"content_hash": h, "image": f"/d/{h}.png"}, "annotations": annotations}


EXPORT = [
    task(1, "a", [rect("3", 10, 10), rect("10", 50, 50)], [rect("3", 11, 10), rect("10", 50, 51)]),
    task(2, "b", [], []),  # a negative: nobody drew a box
    task(3, "c", [rect("3", 10, 10)], [rect("3", 10, 10), rect("8", 60, 10)]),  # a lone box: tied
    task(4, "d", [rect("2", 10, 10), rect("10", 50, 50)], [rect("2", 10, 10), rect("10", 50, 50)]),
    {"id": 5, "data": {"content_hash": "e"}, "annotations": [{"id": 50, "was_cancelled": True}]},
]


def test_export_consensus_ties_and_labeled_rows() -> None:
    summary = parse_detection_export(EXPORT, CONFIG)
    consensus = box_consensus(summary)
    assert [i.content_hash for i in consensus.images] == ["a", "b", "d"]
    assert [(t.content_hash, t.task_id, t.annotations, t.votes) for t in consensus.ties] == [
        ("c", 3, 2, {"8": 1})
    ]
    assert more_annotators(consensus.ties, cap=3, asked={}) == {3: 3}  # the classification API, as is
    assert consensus.counts["without a valid annotation"] == 1
    assert consensus.counts["negatives (no box kept)"] == 1 and consensus.counts["labeled"] == 3
    manifest = [ManifestRow(h, f"src/{h}", f"/data/{h}.png", 200, 100, "PNG", None, None) for h in "abcd"]
    rows = build_detection_rows(manifest, consensus, "dv", 7, 8, SplitFractions(0.0, 0.0))
    assert [r.content_hash for r in rows] == ["a", "b", "d"]
    a, negative, d = rows
    assert a.image_size == (200, 100) and negative.boxes == () and negative.label == ""
    assert a.boxes is not None and [box.label for box in a.boxes] == ["10", "3"]
    three = a.boxes[1]  # 10-11 % of 200 px across, 10 % of 100 px down, 20 % a side
    assert (three.x, three.y, three.width, three.height) == pytest.approx((21.0, 10.0, 40.0, 20.0))
    assert a.label == "3" and d.label == "2"  # one box each: natural order, "2" before "10"
    assert [x.annotator for x in a.annotations] == [100, 101] and a.annotations[0].label == "10,3"
    assert {r.split for r in rows} == {"train"} and (a.project_id, a.export_id, a.task_id) == (7, 8, 1)
    again = build_detection_rows(manifest, consensus, "dv", 7, 8, SplitFractions(0.3, 0.3), seed=4)
    assert again == build_detection_rows(
        list(reversed(manifest)), consensus, "dv", 7, 8, SplitFractions(0.3, 0.3), 4
    )


def test_stratification_label() -> None:
    from loopline.data.labeled import PixelBox

    boxes = [PixelBox(label, 0, 0, 1, 1) for label in ["10", "8", "10", "8", "3"]]
    assert stratification_label(boxes) == "8" and stratification_label([]) == ""


def test_box_gate_lists_every_violation() -> None:
    summary = parse_detection_export(EXPORT, CONFIG)
    report = detection_agreement_report(summary)
    assert report.pairs == 4 and report.images == 4 and report.single == 0
    assert report.f1 == pytest.approx((1 + 1 + 2 / 3 + 1) / 4)
    assert report.per_label["8"] == 0.0
    verdict = box_agreement_gate(report, min_f1=0.95, min_label_f1=0.5)
    assert not verdict.passed and len(verdict.violations) == 2
    assert "box F1 0.917 < minimum 0.95" in verdict.violations[0] and "'8'" in verdict.violations[1]
    assert box_agreement_gate(report, min_f1=0.9).passed
    assert box_agreement_gate(report, None, None).passed
    lonely = parse_detection_export([task(1, "a", [rect("3", 1, 1)])], CONFIG)
    verdict = box_agreement_gate(detection_agreement_report(lonely), 0.5)
    assert "cannot be measured" in verdict.violations[0] and "single valid annotation" in verdict.notes[0]
