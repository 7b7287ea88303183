"""Distributed training entry point, for ``torchrun --nproc-per-node N -m loopline.training.ddp_main``.

Each process trains on its shard (DistributedSampler) with gradients averaged by DDP (gloo on CPU, NCCL
on CUDA); losses and accuracies are all-reduced; only rank 0 writes checkpoints and the result file.
A labeled version whose rows carry boxes trains a detector (``--model`` a detector name); every rank
scores the whole validation split, so their mAPs agree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from loopline.data.labeled import LabeledRow, read_labeled_manifest
from loopline.data.store import LocalStore
from loopline.training.data import LabeledImages, build_transform, check_labeled_rows
from loopline.training.engine import (
    Task,
    TrainConfig,
    fit,
    is_main_process,
    seed_everything,
)
from loopline.training.models import INPUT_SIZES, build_model


@dataclass(frozen=True)
class RankData:
    """What every rank trains for the rows' task type: datasets, batching, the engine task, the model."""

    task_type: str
    train: Any
    val: Any
    collate: Callable[[list[Any]], Any] | None
    task: Task | None  # None: fit's classification task
    build: Callable[[], Any]  # the model, built after seeding
    labels: tuple[str, ...]
    val_batch_size: int


def rank_data(rows: list[LabeledRow], model: str | None) -> RankData:
    train_rows = [r for r in rows if r.split == "train"]
    val_rows = [r for r in rows if r.split == "val"]
    if rows and rows[0].boxes is not None:
        from loopline.training.detection.data import (
            DetectionImages,
            build_detection_transform,
            check_detection_rows,
            collate_detections,
        )
        from loopline.training.detection.models import build_detector
        from loopline.training.detection.task import DetectionTask

        mapping = check_detection_rows(rows)
        detector = model or "ssdlite320_mobilenet_v3_large"
        return RankData(
            "detection",
            DetectionImages(train_rows, mapping, build_detection_transform(True)),
            DetectionImages(val_rows, mapping, build_detection_transform(False)),
            collate_detections,
            DetectionTask(mapping.labels),
            lambda: build_detector(detector, len(mapping.labels) + 1),
            mapping.labels,
            16,
        )
    mapping = check_labeled_rows(rows)
    classifier = model or "small_cnn"
    size = INPUT_SIZES[classifier]
    return RankData(
        "classification",
        LabeledImages(train_rows, mapping, build_transform(size, train=True)),
        LabeledImages(val_rows, mapping, build_transform(size, train=False)),
        None,
        None,
        lambda: build_model(classifier, len(mapping.labels)),
        mapping.labels,
        256,
    )


def main() -> None:
    import torch
    import torch.distributed as dist

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--labeled-version", required=True)
    parser.add_argument(
        "--model",
        default=None,
        help="Default: small_cnn, or ssdlite320_mobilenet_v3_large for boxes.",
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="Per process.")
    parser.add_argument("--out", required=True, help="Checkpoints and result.json go here.")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        rows = read_labeled_manifest(LocalStore(args.data_root), args.labeled_version)
        data = rank_data(rows, args.model)
        sampler: Any = torch.utils.data.DistributedSampler(cast(Any, data.train), shuffle=True, seed=0)
        # a detector's BatchNorm on 1x1 maps cannot train on a last batch of one image: it is left out
        single = data.task_type == "detection" and len(sampler) % args.batch_size == 1 < len(sampler)
        train_loader: Any = torch.utils.data.DataLoader(
            cast(Any, data.train),
            batch_size=args.batch_size,
            sampler=sampler,
            collate_fn=data.collate,
            drop_last=single,
        )
        val_loader: Any = torch.utils.data.DataLoader(
            cast(Any, data.val), batch_size=data.val_batch_size, collate_fn=data.collate
        )
        device = f"cuda:{local_rank}" if cuda else "cpu"
        config = TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, device=device, amp=cuda, channels_last=cuda
        )
        seed_everything(config.seed, config.deterministic)
        model = data.build()
        result = fit(model, train_loader, val_loader, config, Path(args.out) / "checkpoints", task=data.task)
        # Parameters are identical on every rank (DDP averages gradients); BatchNorm buffers are per rank
        # after the last step, and rank 0's model is the one kept.
        params = b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())
        Path(args.out, f"weights-rank{dist.get_rank()}.sha256").write_text(hashlib.sha256(params).hexdigest())
        if is_main_process():
            report = {
                "world_size": dist.get_world_size(),
                "task_type": data.task_type,
                "best_val_accuracy" if data.task is None else f"best_val_{data.task.score_name}": (
                    result.best_val_score
                ),
                "history": [asdict(m) for m in result.history],
                "labels": list(data.labels),
            }
            Path(args.out, "result.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
