"""Drift sensitivity on the demo's digits: how small a shift of the served images the monitor detects, and
how often it alarms on unshifted traffic.

The demo's images (scikit-learn's digits rendered at 32x32, dark ink on white, as ``loopline demo`` makes
them) are split into a training pool (a small linear model over the serving preprocessing at 16x16 is
trained on it in about a second and exported to ONNX as the train stage exports), the champion's test
split (300 images: the reference, built by ``build_reference``) and a pool of served images. Each window
draws 150 served images (the champion's answers and the router's samples of them), applies a shift, runs
the model on them for the predicted class and confidence, and is judged by ``assess`` with the default
thresholds (alpha 0.01, Benjamini-Hochberg over the class mix, confidence, 6 image statistics and 10
logits). Shifts: brightness (added to every pixel), Gaussian blur (radius), rotation (degrees, white fill)
and class mix (the share of the window drawn from digits 0 and 1 only).

Run: .venv/bin/python benchmarks/drift_sensitivity.py [--windows 20] [--null-windows 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from loopline.data.demo import render_digit
from loopline.data.labeled import LabeledRow
from loopline.monitoring.features import model_logits, statistics_of
from loopline.monitoring.monitor import ServedInputs, assess
from loopline.monitoring.reference import Champion, Reference, build_reference
from loopline.monitoring.verdict import DriftThresholds
from loopline.monitoring.window import TrafficWindow
from loopline.registry.artifacts import ModelFiles
from loopline.registry.evaluation import softmax

LABELS = tuple(str(d) for d in range(10))
SIZE = 16
WINDOW = 150
NOW = datetime(2026, 11, 28, tzinfo=UTC)
Shift = Callable[[Image.Image, float], Image.Image]
SHIFTS: dict[str, tuple[Shift | None, tuple[float, ...]]] = {
    "brightness": (lambda p, a: Image.eval(p, lambda v: max(0, min(255, int(v + a)))), (-1, -2, -5, -10)),
    "blur radius": (lambda p, a: p.filter(ImageFilter.GaussianBlur(a)), (0.1, 0.25, 0.35, 0.5)),
    "rotation deg": (lambda p, a: p.rotate(a, fillcolor=(255, 255, 255)), (0.5, 1, 2, 5)),
    "class mix 0/1 share": (None, (0.1, 0.2, 0.3, 0.4)),
}


def train_model(pictures: list[Image.Image], labels: np.ndarray, path: Path) -> Path:
    import torch

    from loopline.serving.preprocess import preprocess_batch
    from loopline.training.onnx_export import export_onnx

    torch.manual_seed(0)
    x = torch.from_numpy(preprocess_batch(pictures, SIZE))
    y = torch.from_numpy(labels)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, len(LABELS)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return export_onnx(model, SIZE, path)


def window_of(predicted: list[str], confidence: np.ndarray) -> TrafficWindow:
    n = len(predicted)
    return TrafficWindow(
        "demo", NOW - timedelta(hours=1), NOW, np.array([f"r{i}" for i in range(n)], dtype=object),
        np.array(["champion"] * n, dtype=object), np.array(["1"] * n, dtype=object), np.full(n, 5.0),
        np.full(n, 200), np.zeros(n, bool), np.array(predicted, dtype=object), confidence,
        np.linspace(0, 3500, n), np.zeros(n, bool), np.zeros(n, bool),
    )  # fmt: skip


def judge(pictures: list[Image.Image], reference: Reference) -> list[str]:
    logits = model_logits(reference.onnx, pictures, SIZE)
    probabilities = softmax(logits)
    predicted = [LABELS[i] for i in probabilities.argmax(axis=1)]
    served = ServedInputs(statistics_of(pictures), logits)
    window = window_of(predicted, probabilities.max(axis=1))
    report = assess(window, "1", reference, served, DriftThresholds(), timedelta(minutes=10), NOW)
    return report.verdict.drifted


def main() -> None:
    from sklearn.datasets import load_digits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=20, help="windows per shift level")
    parser.add_argument("--null-windows", type=int, default=100, help="unshifted windows")
    args = parser.parse_args()
    started = time.perf_counter()
    digits = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.target))
    pictures = [render_digit(digits.data[i], 32).convert("RGB") for i in order]
    targets = digits.target[order]
    train, _test, pool = slice(0, 600), slice(600, 900), slice(900, None)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = train_model(pictures[train], targets[train], Path(tmp) / "model.onnx")
        rows = [LabeledRow(f"h{i}", f"img{i}", LABELS[targets[i]], "test" if 600 <= i < 900 else "train",
                           "d", 1, 1, i, ()) for i in range(900)]  # fmt: skip
        by_uri = {f"img{i}": pictures[i] for i in range(900)}
        reference = build_reference(
            Champion("demo", "1", "run", {}),
            rows,
            ModelFiles(onnx, LABELS, SIZE, {}),
            by_uri.__getitem__,
            "demo",
        )
        served, served_targets = pictures[pool], targets[pool]
        zero_one = [i for i, t in enumerate(served_targets) if t in (0, 1)]
        print(f"champion test accuracy {reference.accuracy:.3f} on {len(reference.confidences)} images; "
              f"{WINDOW} served images per window")  # fmt: skip
        alarms = 0
        for _ in range(args.null_windows):
            alarms += bool(
                judge([served[i] for i in rng.choice(len(served), WINDOW, replace=False)], reference)
            )
        rate, error = alarms / args.null_windows, np.sqrt(0.01 * 0.99 / args.null_windows)
        print(
            f"\nfalse alarm rate, unshifted: {alarms}/{args.null_windows} = {rate:.3f} "
            f"(alpha 0.01, simulation error ±{error:.3f})"
        )
        print(f"\n{'shift':<20} {'amount':>7} {'detected':>9}  most often drifted")
        for name, (shift, amounts) in SHIFTS.items():
            for amount in amounts:
                found, what = 0, {}  # type: ignore[var-annotated]
                for _ in range(args.windows):
                    if shift is None:
                        mixed = round(amount * WINDOW)
                        chosen = list(rng.choice(len(served), WINDOW - mixed, replace=False))
                        chosen += list(rng.choice(zero_one, mixed, replace=True))
                        window = [served[i] for i in chosen]
                    else:
                        window = [
                            shift(served[i], amount) for i in rng.choice(len(served), WINDOW, replace=False)
                        ]
                    drifted = judge(window, reference)
                    found += bool(drifted)
                    for d in drifted:
                        what[d] = what.get(d, 0) + 1
                top = ", ".join(k for k, _ in sorted(what.items(), key=lambda kv: -kv[1])[:3])
                print(f"{name:<20} {amount:>7g} {found:>4}/{args.windows:<4}  {top}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
