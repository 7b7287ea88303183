"""The training core, in the style of torchvision's classification and detection references.

``train_one_epoch`` and ``evaluate`` (under ``torch.inference_mode()``), AdamW or SGD, a cosine schedule
after a linear warm-up, early stopping on the validation score, AMP and channels-last on CUDA, a
deterministic mode, and a checkpoint every epoch that ``fit`` resumes from.

What is trained is a ``Task``: how a batch becomes a loss and how a model is scored on a loader. The
classification task (cross-entropy with label smoothing, scored by accuracy) is the default;
``loopline.training.detection.task`` has the detection one (the models' own losses, scored by COCO mAP).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from loopline.training.checkpoint import load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    label_smoothing: float = 0.05
    warmup_epochs: int = 1
    # epochs without a better validation score before stopping (small val sets are noisy), counted once the
    # score is above zero
    patience: int = 10
    seed: int = 0
    deterministic: bool = True
    device: str = "cpu"
    amp: bool = False  # only used on CUDA
    channels_last: bool = False  # only used on CUDA


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_loss: float  # NaN where the task has no validation loss (detectors return losses only in training)
    val_score: float  # the task's validation score: accuracy for classification, mAP@[.5:.95] for detection
    lr: float
    seconds: float
    data_wait_share: float  # share of the step time spent waiting for the loader

    @property
    def val_accuracy(self) -> float:
        """The classification name of ``val_score``."""
        return self.val_score

    def __setstate__(self, state: dict[str, Any]) -> None:  # checkpoints written before the rename
        if "val_accuracy" in state:
            state = {**state, "val_score": state["val_accuracy"]}
            del state["val_accuracy"]
        self.__dict__.update(state)


@dataclass
class FitResult:
    history: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int = -1
    best_val_score: float = 0.0
    stopped_early: bool = False
    resumed_from: int | None = None

    @property
    def best_val_accuracy(self) -> float:
        """The classification name of ``best_val_score``."""
        return self.best_val_score

    def __setstate__(self, state: dict[str, Any]) -> None:  # checkpoints written before the rename
        if "best_val_accuracy" in state:
            state = {**state, "best_val_score": state["best_val_accuracy"]}
            del state["best_val_accuracy"]
        self.__dict__.update(state)


@dataclass(frozen=True)
class Evaluation:
    """A model scored on a loader: mean loss (NaN where the task has none), score, and the raw outputs
    (logits for classification, ``Detection`` lists for detection)."""

    loss: float
    score: float
    outputs: Any


class Task(Protocol):
    """What ``fit`` trains: ``loss`` of one batch (with the number of examples in it) and ``evaluate``."""

    score_name: str  # how the score is called in metrics: "accuracy", "map"

    def loss(self, net: Any, batch: Any, config: TrainConfig) -> tuple[Any, int]: ...

    def evaluate(self, model: Any, loader: Any, device: str) -> Evaluation: ...


class ClassificationTask:
    """Cross-entropy (``criterion``, else with ``label_smoothing``) on ``(images, class indices)`` batches;
    scored by accuracy."""

    score_name = "accuracy"

    def __init__(self, label_smoothing: float = 0.0, criterion: Any = None) -> None:
        import torch

        self.criterion = criterion or torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def loss(self, net: Any, batch: Any, config: TrainConfig) -> tuple[Any, int]:
        return _classification_loss(net, self.criterion, batch, config)

    def evaluate(self, model: Any, loader: Any, device: str) -> Evaluation:
        loss, accuracy, logits = evaluate(model, self.criterion, loader, device)
        return Evaluation(loss, accuracy, logits)


def _classification_loss(net: Any, criterion: Any, batch: Any, config: TrainConfig) -> tuple[Any, int]:
    import torch

    images, targets = batch
    images = images.to(config.device, non_blocking=True)
    targets = targets.to(config.device, non_blocking=True)
    if config.channels_last and config.device.startswith("cuda"):
        images = images.contiguous(memory_format=torch.channels_last)
    return criterion(net(images), targets), len(targets)


# The only classes a checkpoint may hold besides tensors and plain data (loaded with weights_only=True).
CHECKPOINT_CLASSES: tuple[type, ...] = (FitResult, EpochMetrics)


def distributed() -> bool:
    """True inside an initialised torch.distributed process group (torchrun)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    import torch.distributed as dist

    return not distributed() or dist.get_rank() == 0


def all_reduce_sums(values: list[float], device: str) -> list[float]:
    """Sum ``values`` over every rank (identity outside DDP)."""
    if not distributed():
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def seed_everything(seed: int, deterministic: bool) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def make_optimizer(model: Any, config: TrainConfig) -> Any:
    import torch

    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer: Any, config: TrainConfig, steps_per_epoch: int) -> Any:
    """Per-step schedule: linear warm-up, then cosine decay to zero."""
    import torch

    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total - 1, config.warmup_epochs * steps_per_epoch)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    if warmup <= 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


def train_one_epoch(
    model: Any,
    task: Task | Any,
    optimizer: Any,
    scheduler: Any,
    loader: Any,
    config: TrainConfig,
    scaler: Any,
) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, share of time spent waiting for data).

    ``task`` is a ``Task``; a bare criterion (a loss module) means classification with it.
    """
    import torch

    if not hasattr(task, "evaluate"):
        task = ClassificationTask(criterion=task)
    model.train()
    use_amp = config.amp and config.device.startswith("cuda")
    total_loss, count, waiting = 0.0, 0, 0.0
    start = time.perf_counter()
    fetched = start
    for batch in loader:
        waiting += time.perf_counter() - fetched
        with torch.autocast(device_type="cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext():
            loss, examples = task.loss(model, batch, config)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        total_loss += float(loss.detach()) * examples
        count += examples
        fetched = time.perf_counter()
    elapsed = max(1e-9, time.perf_counter() - start)
    loss_sum, seen = all_reduce_sums([total_loss, float(count)], config.device)
    return loss_sum / max(1.0, seen), waiting / elapsed


def evaluate(model: Any, criterion: Any, loader: Any, device: str) -> tuple[float, float, Any]:
    """(mean loss, accuracy, logits) over ``loader`` with no gradients."""
    import torch

    model.eval()
    total_loss, correct, count, outputs = 0.0, 0, 0, []
    with torch.inference_mode():
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            logits = model(images)
            total_loss += float(criterion(logits, targets)) * len(targets)
            correct += int((logits.argmax(dim=1) == targets).sum())
            count += len(targets)
            outputs.append(logits.float().cpu())
    loss_sum, right, seen = all_reduce_sums([total_loss, float(correct), float(count)], device)
    return loss_sum / max(1.0, seen), right / max(1.0, seen), torch.cat(outputs) if outputs else None


def fit(
    model: Any,
    train_loader: Any,
    val_loader: Any,
    config: TrainConfig,
    checkpoint_dir: Path,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    stop_after: int | None = None,
    on_checkpoint: Callable[[Path], object] | None = None,
    task: Task | None = None,
) -> FitResult:
    """Train for ``config.epochs`` with a checkpoint per epoch, resuming from the last checkpoint.

    ``stop_after`` ends the call after that many epochs in total (tests use it to simulate a crash);
    ``on_checkpoint(path)`` runs after each checkpoint is written (to copy it to shared storage);
    ``task`` defaults to classification with ``config.label_smoothing``.
    The best model (by the task's validation score) is restored before returning.
    """
    import torch

    seed_everything(config.seed, config.deterministic)
    model.to(config.device)
    net = model  # what trains: the model itself, or its DistributedDataParallel wrapper under torchrun
    if distributed():
        devices = [torch.device(config.device).index] if config.device.startswith("cuda") else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=devices)
    task = task or ClassificationTask(config.label_smoothing)
    optimizer = make_optimizer(net, config)
    scheduler = make_scheduler(optimizer, config, len(train_loader))
    scaler = torch.amp.GradScaler("cuda") if config.amp and config.device.startswith("cuda") else None
    result = FitResult()
    best_state: dict[str, Any] | None = None
    start_epoch = 0
    state = load_checkpoint(checkpoint_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["lr_scheduler"])
        torch.set_rng_state(state["rng"])
        random.setstate(state["py_rng"])
        result = state["result"]
        best_state = state["best_model"]
        start_epoch = state["epoch"] + 1
        result.resumed_from = state["epoch"]
        logger.info("resuming after epoch %d from %s", state["epoch"], checkpoint_dir)
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        if hasattr(train_loader.sampler, "set_epoch"):  # DistributedSampler: a new shuffle each epoch
            train_loader.sampler.set_epoch(epoch)
        train_loss, wait_share = train_one_epoch(
            net, task, optimizer, scheduler, train_loader, config, scaler
        )
        scored = task.evaluate(model, val_loader, config.device)
        metrics = EpochMetrics(
            epoch,
            train_loss,
            scored.loss,
            scored.score,
            optimizer.param_groups[0]["lr"],
            time.perf_counter() - started,
            wait_share,
        )
        result.history.append(metrics)
        if scored.score > result.best_val_score or result.best_epoch < 0:
            result.best_epoch, result.best_val_score = epoch, scored.score
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if on_epoch and is_main_process():
            on_epoch(metrics)
        # patience counts from the first epoch that scores above zero: a detector trained from scratch
        # scores mAP 0 for its first dozen or so epochs, and would otherwise stop before it learns
        result.stopped_early = result.best_val_score > 0 and epoch - result.best_epoch >= config.patience
        if is_main_process():
            save_checkpoint(
                checkpoint_dir,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "lr_scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "args": asdict(config),
                    "rng": torch.get_rng_state(),
                    "py_rng": random.getstate(),
                    "result": result,
                    "best_model": best_state,
                },
            )
            if on_checkpoint is not None:
                on_checkpoint(checkpoint_dir)
        if result.stopped_early or (stop_after is not None and epoch + 1 >= stop_after):
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result
