"""Checkpoints in torchvision's reference layout: ``{model, optimizer, lr_scheduler, epoch, args, …}``.

Written atomically (temporary file + rename) so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loopline.errors import CheckpointError

LAST = "last.pt"


def save_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / LAST
    tmp = folder / f".{LAST}.{os.getpid()}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, target)
    return target


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The last checkpoint in ``folder``, or None when there is none.

    Loaded with ``weights_only=True``: tensors, containers and numbers, plus only the training loop's
    own result dataclasses (``CHECKPOINT_CLASSES``). A file that holds anything else is refused instead
    of running its code.
    """
    import torch

    from loopline.training.engine import CHECKPOINT_CLASSES  # engine imports this module

    path = folder / LAST
    if not path.exists():
        return None
    try:
        with torch.serialization.safe_globals(list(CHECKPOINT_CLASSES)):
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or unsafe files
        raise CheckpointError(
            f"The checkpoint {path} is damaged or unsafe ({type(exc).__name__}: {exc}). To fix this, delete "
            "it to start training over, or restore it from the MLflow run's artifacts."
        ) from exc
    missing = {"model", "optimizer", "lr_scheduler", "epoch"} - set(state)
    if missing:
        raise CheckpointError(f"The checkpoint {path} lacks {sorted(missing)}. To fix this, delete it.")
    return state
