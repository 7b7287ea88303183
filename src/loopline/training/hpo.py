"""Train with Optuna: TPE sampling, median or Hyperband pruning on per-epoch validation accuracy, an RDB
study that several workers can share and a rerun resumes, and every trial a nested MLflow run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from loopline.training.data import ClassMapping
from loopline.training.engine import EpochMetrics, FitResult, TrainConfig, fit, seed_everything
from loopline.training.models import INPUT_SIZES, build_model
from loopline.training.search import SearchSpace

logger = logging.getLogger(__name__)

Pruner = Literal["median", "hyperband", "none"]
LoaderFactory = Callable[[int, int, str], Any]  # (input size, batch size, split) → DataLoader


@dataclass(frozen=True)
class TrialResult:
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    epochs: int
    run_id: str | None


@dataclass
class StudyResult:
    study_name: str
    best_number: int
    best_value: float
    best_params: dict[str, Any]
    best_history: list[EpochMetrics]
    trials: list[TrialResult] = field(default_factory=list)


def make_pruner(kind: Pruner, max_epochs: int) -> Any:
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


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
) -> StudyResult:
    """Run trials until the study holds ``n_trials`` finished ones (a rerun continues the same study)."""
    import optuna
    import torch

    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=make_pruner(pruner, epochs),
        load_if_exists=True,
    )
    finished = [t for t in study.trials if t.state.is_finished()]
    histories: dict[int, list[EpochMetrics]] = {}

    def objective(trial: optuna.Trial) -> float:
        params = space.sample(trial)
        size = INPUT_SIZES[params["model"]]
        config = TrainConfig(
            epochs=epochs,
            batch_size=params["batch_size"],
            optimizer=params["optimizer"],
            lr=params["lr"],
            weight_decay=params["weight_decay"],
            label_smoothing=params["label_smoothing"],
            seed=seed,
            device=device,
            amp=device.startswith("cuda"),
            channels_last=device.startswith("cuda"),
        )
        trial_dir = workdir / f"trial-{trial.number}"
        run = _start_trial_run(trial.number, params) if log_to_mlflow else None
        if run is not None:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
        history: list[EpochMetrics] = []

        def report(metrics: EpochMetrics) -> None:
            history.append(metrics)
            if run is not None:
                import mlflow

                mlflow.log_metrics(
                    {
                        "train_loss": metrics.train_loss,
                        "val_loss": metrics.val_loss,
                        "val_accuracy": metrics.val_accuracy,
                        "lr": metrics.lr,
                        "data_wait_share": metrics.data_wait_share,
                    },
                    step=metrics.epoch,
                )
            trial.report(metrics.val_accuracy, metrics.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {metrics.epoch}")

        state = "failed"
        try:
            seed_everything(seed, deterministic=True)
            model = build_model(params["model"], len(mapping.labels))
            result: FitResult = fit(
                model,
                loaders(size, params["batch_size"], "train"),
                loaders(size, 256, "val"),
                config,
                trial_dir,
                on_epoch=report,
            )
            torch.save(model.state_dict(), trial_dir / "best.pt")
            histories[trial.number] = result.history
            state = "complete"
            return result.best_val_accuracy
        except optuna.TrialPruned:
            state = "pruned"
            raise
        finally:
            if run is not None:
                _end_trial_run(state)

    remaining = max(0, n_trials - len(finished))
    if remaining:
        study.optimize(objective, n_trials=remaining, catch=(Exception,), gc_after_trial=True)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError(
            f"No trial of study {study_name!r} completed ({len(study.trials)} pruned or failed). To fix "
            "this, check the trial runs' errors in MLflow, widen the search space or run more trials."
        )
    best = study.best_trial
    return StudyResult(
        study_name=study_name,
        best_number=best.number,
        best_value=float(best.value or 0.0),
        best_params=dict(best.params),
        best_history=histories.get(best.number, []),
        trials=[
            TrialResult(
                t.number,
                t.state.name.lower(),
                t.value,
                dict(t.params),
                len(t.intermediate_values),
                t.user_attrs.get("mlflow_run_id"),
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


def _end_trial_run(state: str) -> None:
    import mlflow

    mlflow.set_tag("optuna.state", state)
    mlflow.end_run(status={"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}[state])
