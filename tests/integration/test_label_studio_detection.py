"""Detection labeling against a real Label Studio: a RectangleLabels project, demo box tasks (one with a
pre-annotation), three demo annotators, export, consensus and labeled rows back in pixels."""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopline.data.demo_boxes import DemoScene, write_demo_boxes
from loopline.data.manifest import ManifestRow
from loopline.data.splits import SplitFractions
from loopline.labeling.box_consensus import box_agreement_gate, box_consensus
from loopline.labeling.configs import parse_label_config, render_label_config
from loopline.labeling.demo_annotator import (
    BoxErrors,
    annotate_tasks,
    load_ground_truth,
    rectangle_results,
)
from loopline.labeling.detection import detection_agreement_report, parse_detection_export
from loopline.labeling.labeled import build_detection_rows
from loopline.labeling.studio import LabelStudio
from loopline.services.credentials import label_studio_credentials
from loopline.services.standalone import running_service
from tests.platform import ROOT

pytestmark = pytest.mark.integration

LABELS = [str(d) for d in range(10)]
CONFIG_XML = render_label_config("detection", LABELS)
CONFIG = parse_label_config(CONFIG_XML, "detection")
JITTER = 0.04


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    home = tmp_path_factory.mktemp("ls-detection")
    with running_service("label-studio", home, ROOT) as (spec, settings):
        token = label_studio_credentials(settings).token.get_secret_value()
        with LabelStudio(spec.url, token) as client:
            yield client


def test_demo_boxes_round_trip_through_label_studio(studio: LabelStudio, tmp_path: Path) -> None:
    demo = write_demo_boxes(tmp_path / "demo", images=40, rounds=1)
    truth = load_ground_truth(demo.ground_truth)
    written: dict[str, DemoScene] = {}
    for path in sorted(demo.rounds[0].glob("img-*.png")):
        scene = truth[hashlib.sha256(path.read_bytes()).hexdigest()]
        assert isinstance(scene, DemoScene)
        written[hashlib.sha256(path.read_bytes()).hexdigest()] = scene
    negatives = [h for h, s in written.items() if not s.boxes][:2]
    scenes = {h: written[h] for h in [*negatives, *(h for h in written if h not in negatives)][:8]}
    assert len(negatives) == 2 and any(len(s.boxes) > 1 for s in scenes.values())
    crowded = next(h for h, s in scenes.items() if len(s.boxes) > 1)
    prediction = {"model_version": "champion", "score": 0.9}
    prediction["result"] = rectangle_results(scenes[crowded].boxes[1:], scenes[crowded], CONFIG)
    tasks = [
        {
            "data": {"image": f"/data/local-files/?d=images/{h}.png", "content_hash": h},
            **({"predictions": [prediction]} if h == crowded else {}),
        }
        for h in scenes
    ]
    project = studio.get_or_create_project("key-boxes", "detection project", CONFIG_XML, 3)
    studio.import_tasks(project.id, tasks)

    errors = BoxErrors(error_rate=0.0, jitter=JITTER, miss_rate=0.0)
    run = annotate_tasks(studio, project.id, CONFIG, scenes, annotators=3, errors=errors)
    assert run.created == 3 * len(scenes)
    # the pre-annotation lacks one box: every annotator keeps the rest and draws that one
    assert [(e.predicted, e.kept, e.drawn, e.actions) for e in run.edits] == [
        (len(scenes[crowded].boxes) - 1, len(scenes[crowded].boxes) - 1, 1, 1)
    ] * 3
    assert annotate_tasks(studio, project.id, CONFIG, scenes, annotators=3, errors=errors).created == 0

    _, exported = studio.snapshot_export(project.id, "loopline detection export")
    summary = parse_detection_export(exported, CONFIG)
    assert summary.counts["boxes"] == 3 * sum(len(s.boxes) for s in scenes.values())
    report = detection_agreement_report(summary)
    assert report.pairs == 3 * len(scenes) and report.f1 == 1.0
    assert box_agreement_gate(report, 0.9, 0.9).passed

    consensus = box_consensus(summary)
    assert not consensus.ties and len(consensus.images) == len(scenes)
    manifest = [
        ManifestRow(h, f"demo/{h}", f"/data/images/{h}.png", s.width, s.height, "PNG", None, None)
        for h, s in scenes.items()
    ]
    rows = build_detection_rows(manifest, consensus, "demo", project.id, 1, SplitFractions(0.2, 0.2))
    assert len(rows) == len(scenes) and {r.split for r in rows} >= {"train"}
    for row in rows:
        scene = scenes[row.content_hash]
        assert row.image_size == (scene.width, scene.height) and len(row.annotations) == 3
        assert row.boxes is not None and len(row.boxes) == len(scene.boxes)
        expected = sorted(scene.boxes, key=lambda b: (b.label, b.x, b.y))
        for got, true in zip(sorted(row.boxes, key=lambda b: (b.label, b.x, b.y)), expected, strict=True):
            assert got.label == true.label
            assert abs(got.x - true.x) <= JITTER * true.width + 1e-6
            assert abs(got.y - true.y) <= JITTER * true.height + 1e-6
            assert abs(got.x + got.width - true.x - true.width) <= JITTER * true.width + 1e-6
            assert abs(got.y + got.height - true.y - true.height) <= JITTER * true.height + 1e-6
