"""Distributed training entry point, for ``torchrun --nproc-per-node N -m loopline.training.ddp_main``.

Each process trains on its shard (DistributedSampler) with gradients averaged by DDP (gloo on CPU, NCCL
on CUDA); losses and accuracies are all-reduced; only rank 0 writes checkpoints and the result file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from loopline.data.labeled import read_labeled_manifest
from loopline.data.store import LocalStore
from loopline.training.data import LabeledImages, build_transform, check_labeled_rows
from loopline.training.engine import TrainConfig, fit, is_main_process, seed_everything
from loopline.training.models import INPUT_SIZES, build_model


def main() -> None:
    import torch
    import torch.distributed as dist

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--labeled-version", required=True)
    parser.add_argument("--model", default="small_cnn")
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
        mapping = check_labeled_rows(rows)
        size = INPUT_SIZES[args.model]
        train = LabeledImages(
            [r for r in rows if r.split == "train"], mapping, build_transform(size, train=True)
        )
        val = LabeledImages(
            [r for r in rows if r.split == "val"], mapping, build_transform(size, train=False)
        )
        sampler: Any = torch.utils.data.DistributedSampler(cast(Any, train), shuffle=True, seed=0)
        train_loader: Any = torch.utils.data.DataLoader(
            cast(Any, train), batch_size=args.batch_size, sampler=sampler
        )
        val_loader: Any = torch.utils.data.DataLoader(cast(Any, val), batch_size=256)
        device = f"cuda:{local_rank}" if cuda else "cpu"
        config = TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, device=device, amp=cuda, channels_last=cuda
        )
        seed_everything(config.seed, config.deterministic)
        model = build_model(args.model, len(mapping.labels))
        result = fit(model, train_loader, val_loader, config, Path(args.out) / "checkpoints")
        # Parameters are identical on every rank (DDP averages gradients); BatchNorm buffers are per rank
        # after the last step, and rank 0's model is the one kept.
        params = b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())
        Path(args.out, f"weights-rank{dist.get_rank()}.sha256").write_text(hashlib.sha256(params).hexdigest())
        if is_main_process():
            report = {
                "world_size": dist.get_world_size(),
                "best_val_accuracy": result.best_val_accuracy,
                "history": [asdict(m) for m in result.history],
                "labels": list(mapping.labels),
            }
            Path(args.out, "result.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
