"""Detector training throughput: loopline's training core against a minimal hand-written torchvision
detection loop (the detection reference's style: ``loss = sum(model(images, targets).values())``,
backward, step).

Same detector, same data (demo-like scenes from ``loopline.data.demo_boxes.render_scene``: digits on
96-128 px canvases, decoded once, no augmentation on either side), same batches, the same number of
steps, same optimizer, same device. Three sides: ``plain`` (the minimal loop), ``step`` (the core's
``train_one_epoch`` with the detection task: warm-up + cosine schedule, loss bookkeeping) and ``fit``
(``fit`` with the detection task: plus a COCO mAP evaluation on a small validation set and a checkpoint
each epoch). One untimed step comes first (allocator and kernel warm-up); the order of the sides
rotates between repeats and each side's best run is kept. Prints
images/s for each and the ratios (target >= 0.95).
Run: .venv/bin/python benchmarks/detector_throughput.py [--model ssdlite320_mobilenet_v3_large]
     [--images 32] [--batch-size 8] [--epochs 1] [--repeats 2] [--image-size N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loopline.data.demo_boxes import render_scene
from loopline.training.data import ClassMapping
from loopline.training.detection.data import collate_detections, target_for
from loopline.training.detection.models import build_detector
from loopline.training.detection.task import DetectionTask
from loopline.training.engine import (
    TrainConfig,
    fit,
    make_optimizer,
    make_scheduler,
    seed_everything,
    train_one_epoch,
)

LABELS = tuple(str(d) for d in range(10))


def scenes(count: int, seed: int) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """``count`` demo scenes as (RGB float image in [0, 1], target)."""
    from sklearn.datasets import load_digits

    from loopline.data.labeled import LabeledRow

    digits = load_digits()
    rng = np.random.default_rng(seed)
    mapping = ClassMapping(LABELS)
    out = []
    for _ in range(count):
        image, scene = render_scene(rng, digits.images, digits.target, (96, 128), (20, 36))
        tensor = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255.0
        row = LabeledRow("", "", "", "train", "", 0, 0, 0, (), scene.boxes, (scene.width, scene.height))
        out.append((tensor, target_for(row, mapping, (scene.width, scene.height))))
    return out


def minimal_loop(model: Any, loader: Any, epochs: int, lr: float) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for images, targets in loader:
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def core_epochs(model: Any, loader: Any, config: TrainConfig) -> None:
    """The core's training step loop alone, with the detection task."""
    task = DetectionTask(LABELS)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(loader))
    for _ in range(config.epochs):
        train_one_epoch(model, task, optimizer, scheduler, loader, config, scaler=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="ssdlite320_mobilenet_v3_large")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=None, help="The detector's input side.")
    parser.add_argument("--sides", default="plain,step,fit")
    args = parser.parse_args()
    train = scenes(args.images, seed=0)
    val = scenes(4, seed=1)
    n = (len(train) // args.batch_size) * args.batch_size * args.epochs
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, deterministic=False, patience=99, lr=1e-3
    )
    sides = args.sides.split(",")
    warm = build_detector(args.model, len(LABELS) + 1, args.image_size)  # first-step costs: not timed
    minimal_loop(warm, [collate_detections(train[: args.batch_size])], 1, config.lr)
    times: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    for repeat in range(args.repeats):
        for side in sides[repeat % len(sides) :] + sides[: repeat % len(sides)]:  # rotate the order
            seed_everything(0, deterministic=False)
            model = build_detector(args.model, len(LABELS) + 1, args.image_size)
            loader = torch.utils.data.DataLoader(
                train, batch_size=args.batch_size, shuffle=True, drop_last=True, collate_fn=collate_detections
            )
            start, start_cpu = time.perf_counter(), time.process_time()
            if side == "plain":
                minimal_loop(model, loader, args.epochs, config.lr)
            elif side == "step":
                core_epochs(model, loader, config)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    val_loader = torch.utils.data.DataLoader(val, batch_size=4, collate_fn=collate_detections)
                    fit(model, loader, val_loader, config, Path(tmp), task=DetectionTask(LABELS))
            times[side].append(time.perf_counter() - start)
            cpu[side].append(time.process_time() - start_cpu)
            print(
                f"  repeat {repeat} {side:5s} {n / times[side][-1]:7.2f} images/s, "
                f"{n / cpu[side][-1]:7.2f} images per CPU-second",
                flush=True,
            )
    rate = {side: n / min(t) for side, t in times.items()}
    cpu_rate = {side: n / min(t) for side, t in cpu.items()}
    size = args.image_size or "default"
    print(
        f"{args.model} (input side {size}), {len(train)} scenes of 96-128 px x {args.epochs} epochs, "
        f"batch {args.batch_size}, {n // args.batch_size} steps a run, {torch.get_num_threads()} threads"
    )
    print(
        f"best of {args.repeats} runs per side, order rotated; wall time (noisy on a shared VM) and this "
        "process's CPU time (what other processes' load disturbs least)"
    )
    plain = rate.get("plain")
    for side, label in (
        ("plain", "minimal torchvision loop"),
        ("step", "core train_one_epoch"),
        ("fit", "core fit"),
    ):
        if side in rate:
            ratio = f" ratio {rate[side] / plain:.3f}" if plain and side != "plain" else ""
            cpu_ratio = (
                f" ratio {cpu_rate[side] / cpu_rate['plain']:.3f}" if plain and side != "plain" else ""
            )
            note = " (+ mAP validation on 4 images, checkpoint)" if side == "fit" else ""
            print(
                f"{label:26s} {rate[side]:8.2f} images/s{ratio:13s} "
                f"{cpu_rate[side]:8.2f} images/CPU-s{cpu_ratio}{note}"
            )


if __name__ == "__main__":
    main()
