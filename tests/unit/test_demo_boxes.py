import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loopline.data.demo_boxes import DemoScene, write_demo_boxes
from loopline.labeling.demo_annotator import load_ground_truth

pytestmark = pytest.mark.unit


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_demo_is_deterministic(tmp_path: Path) -> None:
    first = write_demo_boxes(tmp_path / "a", images=30)
    second = write_demo_boxes(tmp_path / "b", images=30)
    assert files(first.root) == files(second.root)
    third = write_demo_boxes(tmp_path / "c", images=30, seed=1)
    assert files(third.root) != files(first.root)


def test_boxes_lie_inside_their_canvas_and_hold_the_ink(tmp_path: Path) -> None:
    demo = write_demo_boxes(tmp_path, images=60, canvas=(96, 128), digit=(20, 36))
    truth = load_ground_truth(demo.ground_truth)
    scenes = {h: s for h, s in truth.items() if isinstance(s, DemoScene)}
    assert len(scenes) == len(truth) == 60 + demo.planted["near duplicates"]
    counts = {len(s.boxes) for s in scenes.values()}
    assert 0 in counts and max(counts) >= 3  # negatives and crowded scenes
    for path in sorted(tmp_path.glob("round-*/img-*.png")):
        content = path.read_bytes()
        scene = scenes[hashlib.sha256(content).hexdigest()]
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == (scene.height, scene.width)
        assert 96 <= scene.width <= 128 and 96 <= scene.height <= 128
        inside = np.zeros(pixels.shape, dtype=bool)
        for box in scene.boxes:
            assert 0 <= box.x and box.x + box.width <= scene.width
            assert 0 <= box.y and box.y + box.height <= scene.height
            assert 2 <= box.width <= 36 and 2 <= box.height <= 36
            x0, y0 = int(box.x) - 2, int(box.y) - 2
            inside[max(0, y0) : int(box.y + box.height) + 3, max(0, x0) : int(box.x + box.width) + 3] = True
        assert (pixels[~inside] > 160).all()  # no ink outside the boxes (2 px of resampling allowed)
        for box in scene.boxes:  # every box holds ink
            window = pixels[int(box.y) : int(box.y + box.height), int(box.x) : int(box.x + box.width)]
            assert window.min() < 100
        for a, b in ((a, b) for i, a in enumerate(scene.boxes) for b in scene.boxes[i + 1 :]):
            assert (
                a.x + a.width <= b.x or b.x + b.width <= a.x or a.y + a.height <= b.y or b.y + b.height <= a.y
            )


def test_names_say_nothing_and_problems_are_planted(tmp_path: Path) -> None:
    demo = write_demo_boxes(tmp_path, images=20, rounds=2)
    names = [p.name for r in demo.rounds for p in r.iterdir()]
    assert all(
        re.fullmatch(
            r"img-\d{5}\.png|empty\.png|truncated\.png|notes\.png|tiny\.png|banner\.png|"
            r"scan-copy-\d\.png|scan-retake-\d\.jpg",
            n,
        )
        for n in names
    )
    assert len(list(demo.rounds[1].iterdir())) == 10
    assert demo.planted == {"corrupt or unusable": 5, "exact duplicates": 2, "near duplicates": 3}
    raw = json.loads(demo.ground_truth.read_text())
    copy = hashlib.sha256((demo.rounds[0] / "scan-copy-0.png").read_bytes()).hexdigest()
    retake = hashlib.sha256((demo.rounds[0] / "scan-retake-2.jpg").read_bytes()).hexdigest()
    assert raw[copy]["boxes"] and raw[retake]["boxes"]  # copies are of scenes with digits


def test_digits_that_cannot_fit_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must fit the canvas"):
        write_demo_boxes(tmp_path, images=2, canvas=(40, 64), digit=(20, 48))
