"""Two rounds of the detection loop on the demo scenes, measured offline with loopline's own parts: the mAP
after each round, and what the round-1 detector's pre-annotations save the DEMO ANNOTATOR in round 2.

Round 1 trains a detector (the training core: ``fit`` with the detection task, box-aware augmentation off)
on ``--round-1`` scenes; its boxes on round 2's ``--round-2`` new scenes (scored at least a threshold) go to
the demo annotator as pre-annotations (``answer_boxes``: a box on a true box with the right label is kept
unchanged, others are relabeled, redrawn or deleted, missed ones drawn); round 2 trains on both rounds'
scenes. Both detectors are scored by COCO mAP (pycocotools) on the same ``--test`` held-out scenes.
The baseline of the savings is labeling from scratch: one action per box the annotator draws.

Run: .venv/bin/python benchmarks/detection_rounds.py [--epochs 30] [--image-size 160]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loopline.data.demo_boxes import CANVAS, DIGIT, DemoScene, render_scene
from loopline.data.labeled import LabeledRow
from loopline.labeling.demo_annotator import BoxErrors, answer_boxes, preannotation_savings
from loopline.training.data import ClassMapping
from loopline.training.detection.data import collate_detections, target_for
from loopline.training.detection.models import build_detector
from loopline.training.detection.task import DetectionTask, detect
from loopline.training.engine import TrainConfig, fit

LABELS = tuple(str(d) for d in range(10))


def make_scenes(count: int, seed: int) -> list[tuple[torch.Tensor, dict[str, Any], DemoScene]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    mapping = ClassMapping(LABELS)
    out = []
    for _ in range(count):
        image, scene = render_scene(rng, digits.images, digits.target, CANVAS, DIGIT)
        tensor = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255.0
        row = LabeledRow("", "", "", "train", "", 0, 0, 0, (), scene.boxes, (scene.width, scene.height))
        out.append((tensor, target_for(row, mapping, (scene.width, scene.height)), scene))
    return out


def train(scenes: list[Any], val: list[Any], args: argparse.Namespace) -> Any:
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(
        [(t, g) for t, g, _ in scenes],
        batch_size=4,
        shuffle=True,
        drop_last=True,
        collate_fn=collate_detections,
    )
    val_loader = torch.utils.data.DataLoader(
        [(t, g) for t, g, _ in val], batch_size=8, collate_fn=collate_detections
    )
    model = build_detector(args.model, len(LABELS) + 1, args.image_size)
    config = TrainConfig(epochs=args.epochs, batch_size=4, lr=args.lr, deterministic=False)
    with tempfile.TemporaryDirectory() as tmp:
        fit(model, loader, val_loader, config, Path(tmp), task=DetectionTask(LABELS))
    return model


def scored(model: Any, scenes: list[Any]) -> Any:
    loader = torch.utils.data.DataLoader(
        [(t, g) for t, g, _ in scenes], batch_size=8, collate_fn=collate_detections
    )
    return detect(model, loader, "cpu", LABELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="ssdlite320_mobilenet_v3_large")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--round-1", type=int, default=80)
    parser.add_argument("--round-2", type=int, default=80)
    parser.add_argument("--test", type=int, default=60)
    args = parser.parse_args()
    first, second = make_scenes(args.round_1, seed=11), make_scenes(args.round_2, seed=12)
    val, test = make_scenes(20, seed=13), make_scenes(args.test, seed=14)
    started = time.perf_counter()
    champion = train(first, val, args)
    round_1 = scored(champion, test).scores
    print(f"round 1: {len(first)} scenes, test mAP@[.5:.95] {round_1.map:.3f}, mAP@.5 {round_1.map50:.3f}")
    found = scored(champion, second).predicted
    errors = BoxErrors()  # the demo annotator's defaults: 5 % wrong labels, 4 % jitter, 5 % misses
    print("pre-annotating round 2 with the round-1 detector (demo annotator, annotator 0):")
    print("| min score | boxes sent | kept unchanged | actions/image | from scratch | saved/image |")
    print("|---|---|---|---|---|---|")
    for threshold in (0.3, 0.5, 0.7):
        edits = []
        for i, ((_, _, scene), detections) in enumerate(zip(second, found, strict=True)):
            predicted = [d.box() for d in detections if d.score >= threshold]
            edit = answer_boxes(scene, LABELS, errors, 0, f"scene-{i}", 0, predicted).edit
            assert edit is not None
            edits.append(edit)
        saved = preannotation_savings(edits)
        kept = "-" if saved.share_kept is None else f"{saved.share_kept:.0%}"
        print(
            f"| {threshold} | {saved.predicted} | {saved.kept} ({kept}) | {saved.actions_per_image:.2f} | "
            f"{saved.scratch_per_image:.2f} | {saved.saved_per_image:+.2f} |"
        )
    challenger = train(first + second, val, args)
    round_2 = scored(challenger, test).scores
    print(
        f"round 2: {len(first) + len(second)} scenes, test mAP@[.5:.95] {round_2.map:.3f}, "
        f"mAP@.5 {round_2.map50:.3f}"
    )
    print(
        f"{args.model} at {args.image_size} px, {args.epochs} epochs, lr {args.lr}; "
        f"{args.test} test scenes; {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
