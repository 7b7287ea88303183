"""Training throughput: loopline's training core against a minimal hand-written torch loop.

Same model (small_cnn), same data (the digits rendered at 32x32, already decoded, no augmentation on
either side), same batch size and optimizer, same device; the order of the two sides alternates and each
side's best of ``--repeats`` is taken. Prints images/s for both and the ratio (target >= 0.95).
Run: .venv/bin/python benchmarks/train_throughput.py [--epochs 3] [--batch-size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from loopline.training.engine import (
    TrainConfig,
    fit,
    make_optimizer,
    make_scheduler,
    seed_everything,
    train_one_epoch,
)
from loopline.training.models import build_model


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from torch.nn import functional

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = functional.interpolate(images, size=(32, 32), mode="bilinear").repeat(1, 3, 1, 1)
    return images, torch.tensor(digits.target)


def minimal_loop(model: torch.nn.Module, loader: torch.utils.data.DataLoader, epochs: int, lr: float) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for images, targets in loader:
            optimizer.zero_grad()
            criterion(model(images), targets).backward()
            optimizer.step()


def core_epochs(model: torch.nn.Module, loader: torch.utils.data.DataLoader, config: TrainConfig) -> None:
    """The core's training step loop alone (label smoothing, warm-up + cosine schedule, AdamW)."""
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(loader))
    for _ in range(config.epochs):
        train_one_epoch(model, criterion, optimizer, scheduler, loader, config, scaler=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images, targets = digits_tensors()
    train = torch.utils.data.TensorDataset(images, targets)
    val = torch.utils.data.TensorDataset(images[:64], targets[:64])
    n = len(train) * args.epochs
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, deterministic=False, patience=99)
    times: dict[str, list[float]] = {"plain": [], "step": [], "fit": []}
    sides = list(times)
    for repeat in range(args.repeats):
        for side in sides[repeat % 3 :] + sides[: repeat % 3]:  # rotate the order between repeats
            seed_everything(0, deterministic=False)
            model = build_model("small_cnn", 10)
            loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True)
            start = time.perf_counter()
            if side == "plain":
                minimal_loop(model, loader, args.epochs, 3e-3)
            elif side == "step":
                core_epochs(model, loader, config)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    fit(model, loader, torch.utils.data.DataLoader(val, batch_size=64), config, Path(tmp))
            times[side].append(time.perf_counter() - start)
    plain, core, full = (n / min(times[k]) for k in ("plain", "step", "fit"))
    threads = torch.get_num_threads()
    print(f"{len(train)} images x {args.epochs} epochs, batch {args.batch_size}, {threads} threads")
    print(
        f"best of {args.repeats} runs per side, order rotated (wall time on a shared VM: expect +-10% noise)"
    )
    print(f"minimal torch loop:    {plain:8.0f} images/s")
    print(f"core train_one_epoch:  {core:8.0f} images/s  ratio {core / plain:.3f} (target >= 0.95)")
    print(
        f"core fit:              {full:8.0f} images/s  ratio {full / plain:.3f} (+ validation, checkpoints)"
    )


if __name__ == "__main__":
    main()
