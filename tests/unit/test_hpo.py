"""Optuna studies on the real digits: a failing trial never stops the study; crash retries are counted
once; every trial records the worker that ran it."""

from pathlib import Path
from typing import Any

import optuna
import pytest

from loopline.data.demo import labeled_digit_rows
from loopline.data.store import LocalStore
from loopline.training.data import check_labeled_rows, loader_factory
from loopline.training.hpo import run_study, study_progress
from loopline.training.search import FloatRange, SearchSpace

pytestmark = pytest.mark.unit

SPACE = SearchSpace(lr=FloatRange(low=1e-3, high=1e-2, log=True), batch_sizes=[32], optimizers=["adamw"])


def test_a_failing_trial_does_not_stop_the_study(tmp_path: Path) -> None:
    rows = labeled_digit_rows(LocalStore(tmp_path / "data"), 200)
    mapping = check_labeled_rows(rows)
    train_loaders = 0
    real = loader_factory(rows, mapping)

    def loaders(size: int, batch_size: int, split: str) -> Any:
        nonlocal train_loaders
        if split == "train":
            train_loaders += 1
            if train_loaders == 2:  # the second trial loses its data mid-study
                raise OSError("the data volume went away")
        return real(size, batch_size, split)

    result = run_study(
        loaders=loaders,
        mapping=mapping,
        space=SPACE,
        epochs=1,
        n_trials=3,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        study_name="fails-once",
        workdir=tmp_path / "work",
        pruner="none",
        log_to_mlflow=False,
    )
    assert [t.state for t in result.trials] == ["complete", "fail", "complete"]
    assert (
        result.best_number in {0, 2} and result.best_dir == tmp_path / "work" / f"trial-{result.best_number}"
    )
    assert all(t.worker and t.worker.endswith(f":{__import__('os').getpid()}") for t in result.trials)


def test_a_crashed_trial_counts_once_through_its_retry() -> None:
    states = optuna.trial.TrialState
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def trial(state: Any, number: int, **system: Any) -> Any:
        made = optuna.trial.create_trial(
            state=state,
            params={"x": 0.5},
            distributions=distributions,
            value=0.5 if state == states.COMPLETE else None,
            system_attrs=system,
        )
        made.number = number
        return made

    crashed = [trial(states.COMPLETE, 0), trial(states.FAIL, 1)]
    retried = [*crashed, trial(states.COMPLETE, 2, failed_trial=1, retry_history=[1])]
    twice = [*crashed, trial(states.FAIL, 2, failed_trial=1, retry_history=[1])]
    twice.append(trial(states.RUNNING, 3, failed_trial=1, retry_history=[1, 2]))
    assert study_progress(crashed) == (2, 0)  # a plain failure counts as a finished trial
    assert study_progress(retried) == (2, 0)  # the crash is replaced by its retry
    assert study_progress(twice) == (1, 1)  # neither the crash nor the failed retry counts
