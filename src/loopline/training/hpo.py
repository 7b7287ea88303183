"""Train with Optuna: TPE sampling, median or Hyperband pruning on the per-epoch validation score
(accuracy for classifiers, COCO mAP for detectors), an RDB study that several workers can share and a
rerun resumes, and every trial a nested MLflow run.

Crash safety: trials send heartbeats; a trial whose process died (no heartbeat for ``grace`` seconds) is
failed and retried with the same parameters, and the retry resumes from the dead trial's last checkpoint.
Reproducibility: the *i*-th freshly sampled trial samples with seed ``seed + i`` (retries reuse their
parameters), so a rerun after a crash asks the same questions an uninterrupted run would have, and two
workers never ask the same one.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from loopline.training.checkpoint import load_checkpoint
from loopline.training.checkpoint_mirror import CheckpointMirror
from loopline.training.data import ClassMapping
from loopline.training.engine import (
    ClassificationTask,
    EpochMetrics,
    FitResult,
    Task,
    TrainConfig,
    fit,
    seed_everything,
)
from loopline.training.models import INPUT_SIZES, build_model
from loopline.training.search import SearchSpace, TaskType

logger = logging.getLogger(__name__)

Pruner = Literal["median", "hyperband", "none"]
LoaderFactory = Callable[[int, int, str], Any]  # (input size, batch size, split) → DataLoader
BEST_WEIGHTS = "best.pt"
DETECTION_EVAL_BATCH = 16  # detector validation batches: images of a few hundred pixels, many boxes each


@dataclass(frozen=True)
class TrialSetup:
    """What a trial of one task type trains: the model (built after seeding), its input size (0 for
    detectors, which resize inside), the engine task and the validation batch size."""

    model_name: str
    input_size: int
    task: Task
    eval_batch_size: int
    task_type: TaskType
    image_size: int | None = None  # a detector's internal square (None: its default)

    def build(self, num_labels: int) -> Any:
        if self.task_type == "detection":
            from loopline.training.detection.models import build_detector

            return build_detector(self.model_name, num_labels + 1, self.image_size)  # + the background
        return build_model(self.model_name, num_labels)


def trial_setup(task_type: TaskType, params: dict[str, Any], mapping: ClassMapping) -> TrialSetup:
    if task_type == "detection":
        from loopline.training.detection.task import DetectionTask

        return TrialSetup(
            params["model"],
            0,
            DetectionTask(mapping.labels),
            DETECTION_EVAL_BATCH,
            task_type,
            params.get("image_size"),
        )
    task = ClassificationTask(params["label_smoothing"])
    return TrialSetup(params["model"], INPUT_SIZES[params["model"]], task, 256, task_type)


@dataclass(frozen=True)
class TrialResult:
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    epochs: int
    run_id: str | None
    worker: str | None = None
    retry_of: int | None = None


@dataclass
class StudyResult:
    study_name: str
    best_number: int
    best_value: float
    best_params: dict[str, Any]
    best_history: list[EpochMetrics]
    best_dir: Path
    trials: list[TrialResult] = field(default_factory=list)


@dataclass(frozen=True)
class Heartbeat:
    """Trial liveness: a trial silent for ``grace`` seconds is failed and retried (resuming)."""

    interval: int = 10
    grace: int = 60


def make_pruner(kind: Pruner, max_epochs: int) -> Any:
    import optuna

    if kind == "median":
        # Judge a trial only after the learning-rate warm-up and a third of its epochs, against at least
        # three finished trials: earlier, good trials often look bad and would be stopped.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, max_epochs // 3))
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


@contextmanager
def heartbeat_apis() -> Iterator[None]:
    """Optuna marks its trial heartbeats (which make crashed trials retryable) experimental; loopline
    relies on them deliberately and tests them (SIGKILL test), so their warning is not shown each run."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def open_storage(url: str, heartbeat: Heartbeat, attempts: int = 5) -> Any:
    """The study's RDB storage. Workers starting together on a fresh database race to create the
    schema; the loser retries (the schema is then there)."""
    import optuna
    import sqlalchemy.exc
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(attempts):
        try:
            with heartbeat_apis():
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat.interval,
                    grace_period=heartbeat.grace,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                        max_retry=2, inherit_intermediate_values=True
                    ),
                )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def trial_dir_name(frozen: Any) -> str:
    """A retry works in (and resumes from) the folder of the trial it replaces."""
    return f"trial-{frozen.system_attrs.get('failed_trial', frozen.number)}"


def study_progress(trials: Sequence[Any]) -> tuple[int, int]:
    """(finished trials that count, trials running now).

    A trial failed for lack of heartbeat and retried does not count: its retry does.
    """
    import optuna

    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    done = sum(t.state.is_finished() and t.number not in replaced for t in trials)
    running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    return done, running


def run_study(
    *,
    loaders: LoaderFactory,
    mapping: ClassMapping,
    space: SearchSpace,
    epochs: int,
    n_trials: int,
    storage: str,
    study_name: str,
    workdir: Path,
    pruner: Pruner = "median",
    seed: int = 0,
    device: str = "cpu",
    log_to_mlflow: bool = True,
    heartbeat: Heartbeat | None = None,
    mirror: CheckpointMirror | None = None,
    task_type: TaskType = "classification",
) -> StudyResult:
    """Run trials until the study holds ``n_trials`` finished ones, with any other workers on the same
    study; then wait for the others' running trials so every worker reports the same best trial.
    ``task_type`` "detection" trains detectors (``space.detectors``) on a detection ``loaders``."""
    import optuna

    heartbeat = heartbeat or Heartbeat()
    rdb = open_storage(storage, heartbeat)
    worker = f"{socket.gethostname()}:{os.getpid()}"

    objective = _objective(
        loaders, mapping, space, epochs, workdir, seed, device, log_to_mlflow, worker, mirror, task_type
    )
    study = optuna.create_study(
        storage=rdb,
        study_name=study_name,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),  # reseeded per trial by the objective
        pruner=make_pruner(pruner, epochs),
        load_if_exists=True,
    )
    while True:
        with heartbeat_apis():
            optuna.storages.fail_stale_trials(study)
        done, running = study_progress(study.get_trials(deepcopy=False))
        if done + running < n_trials:
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        elif running:
            time.sleep(min(5, heartbeat.interval))  # another worker's trial: wait for its result
        else:
            break
    return _summarise(study, workdir, mirror)


def _objective(
    loaders: LoaderFactory,
    mapping: ClassMapping,
    space: SearchSpace,
    epochs: int,
    workdir: Path,
    seed: int,
    device: str,
    log_to_mlflow: bool,
    worker: str,
    mirror: CheckpointMirror | None = None,
    task_type: TaskType = "classification",
) -> Callable[[Any], float]:
    import optuna
    import torch

    def objective(trial: optuna.Trial) -> float:
        trials = trial.study.get_trials(deepcopy=False)
        frozen = next(t for t in trials if t.number == trial.number)
        fresh_before = sum("failed_trial" not in t.system_attrs for t in trials if t.number < trial.number)
        trial.study.sampler = optuna.samplers.TPESampler(seed=seed + fresh_before)
        params = space.sample(trial, task_type)  # a retry's parameters are fixed: the sampler is not asked
        setup = trial_setup(task_type, params, mapping)
        config = TrainConfig(
            epochs=epochs,
            batch_size=params["batch_size"],
            optimizer=params["optimizer"],
            lr=params["lr"],
            weight_decay=params["weight_decay"],
            label_smoothing=params.get("label_smoothing", 0.0),
            seed=seed,
            device=device,
            amp=device.startswith("cuda"),
            channels_last=device.startswith("cuda"),
        )
        reported = set(frozen.intermediate_values)  # a retry inherits the dead trial's reports
        folder = workdir / trial_dir_name(frozen)
        if "failed_trial" in frozen.system_attrs:
            logger.info(
                "trial %d retries trial %s in %s", trial.number, frozen.system_attrs["failed_trial"], folder
            )
            if log_to_mlflow and frozen.user_attrs.get("mlflow_run_id"):
                _mark_crashed(frozen.user_attrs["mlflow_run_id"], trial.number)
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("folder", folder.name)
        run = _start_trial_run(trial.number, params) if log_to_mlflow else None
        if run is not None:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)

        def report(metrics: EpochMetrics) -> None:
            if run is not None:
                import mlflow

                values = {
                    "train_loss": metrics.train_loss,
                    "val_loss": metrics.val_loss,  # NaN for detectors: left out
                    f"val_{setup.task.score_name}": metrics.val_score,
                    "lr": metrics.lr,
                    "data_wait_share": metrics.data_wait_share,
                }
                mlflow.log_metrics({k: v for k, v in values.items() if math.isfinite(v)}, step=metrics.epoch)
            if metrics.epoch not in reported:
                trial.report(metrics.val_score, metrics.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {metrics.epoch}")

        if mirror is not None:
            mirror.pull(folder)  # the dead trial may have run on another machine
        state = "failed"
        try:
            seed_everything(seed, deterministic=True)
            model = setup.build(len(mapping.labels))
            size = setup.input_size
            result: FitResult = fit(
                model,
                loaders(size, params["batch_size"], "train"),
                loaders(size, setup.eval_batch_size, "val"),
                config,
                folder,
                on_epoch=report,
                on_checkpoint=mirror.push if mirror is not None else None,
                task=setup.task,
            )
            torch.save(model.state_dict(), folder / BEST_WEIGHTS)
            if mirror is not None:
                mirror.push(folder)
            state = "complete"
            return result.best_val_score
        except optuna.TrialPruned:
            state = "pruned"
            raise
        finally:
            if run is not None:
                _end_trial_run(state)

    return objective


def _summarise(study: Any, workdir: Path, mirror: CheckpointMirror | None = None) -> StudyResult:
    import optuna

    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(
            f"No trial of study {study.study_name!r} completed ({len(study.trials)} pruned or failed). To "
            "fix this, check the trial runs' errors in MLflow, widen the search space or run more trials."
        )
    best = study.best_trial
    folder = workdir / best.user_attrs.get("folder", f"trial-{best.number}")
    if mirror is not None:
        mirror.pull(folder)  # the best trial may have run on another machine
    checkpoint = load_checkpoint(folder)
    return StudyResult(
        study_name=study.study_name,
        best_number=best.number,
        best_value=float(best.value or 0.0),
        best_params=dict(best.params),
        best_history=list(checkpoint["result"].history) if checkpoint else [],
        best_dir=folder,
        trials=[
            TrialResult(
                t.number,
                t.state.name.lower(),
                t.value,
                dict(t.params),
                len(t.intermediate_values),
                t.user_attrs.get("mlflow_run_id"),
                t.user_attrs.get("worker"),
                t.system_attrs.get("failed_trial"),
            )
            for t in study.trials
        ],
    )


def _start_trial_run(number: int, params: dict[str, Any]) -> Any:
    import mlflow

    run = mlflow.start_run(run_name=f"trial-{number}", nested=True)
    mlflow.log_params(params)
    mlflow.set_tag("optuna.trial", number)
    return run


def _mark_crashed(run_id: str, retried_by: int) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    client.set_tag(run_id, "optuna.state", f"crashed (retried as trial {retried_by})")
    client.set_terminated(run_id, "FAILED")


def _end_trial_run(state: str) -> None:
    import mlflow

    mlflow.set_tag("optuna.state", state)
    mlflow.end_run(status={"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}[state])
