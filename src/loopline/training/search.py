"""The hyper-parameter search space (a flow parameter with good defaults) and how a trial samples it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator


class FloatRange(BaseModel):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _non_empty(self) -> FloatRange:
        if not self.low < self.high or (self.log and self.low <= 0):
            note = " (log scale needs low > 0)" if self.log else ""
            raise ValueError(
                f"empty or invalid range [{self.low}, {self.high}]{note}; "
                "give low < high, e.g. {'low': 1e-4, 'high': 1e-2, 'log': true}"
            )
        return self


class SearchSpace(BaseModel):
    """What Optuna may vary. Every choice list must be non-empty and every range non-empty."""

    models: list[str] = Field(default_factory=lambda: ["small_cnn"], min_length=1)
    lr: FloatRange = Field(default_factory=lambda: FloatRange(low=3e-4, high=1e-2, log=True))
    weight_decay: FloatRange = Field(default_factory=lambda: FloatRange(low=1e-6, high=1e-3, log=True))
    batch_sizes: list[int] | None = Field(
        default=None, min_length=1, description="None: from the device (larger on GPUs with more memory)."
    )
    optimizers: list[str] = Field(default_factory=lambda: ["adamw", "sgd"], min_length=1)
    label_smoothing: FloatRange = Field(default_factory=lambda: FloatRange(low=0.0, high=0.15))

    @model_validator(mode="after")
    def _known_choices(self) -> SearchSpace:
        from loopline.training.models import MODEL_NAMES

        unknown = sorted(set(self.models) - set(MODEL_NAMES))
        if unknown:
            raise ValueError(f"unknown models {unknown}; valid: {', '.join(MODEL_NAMES)}")
        bad = sorted(set(self.optimizers) - {"adamw", "sgd"})
        if bad:
            raise ValueError(f"unknown optimizers {bad}; valid: adamw, sgd")
        return self

    def for_batch_sizes(self, defaults: tuple[int, ...]) -> SearchSpace:
        """This space with the device's batch sizes where none were chosen."""
        return self if self.batch_sizes else self.model_copy(update={"batch_sizes": list(defaults)})

    def sample(self, trial: Any) -> dict[str, Any]:
        """The trial's hyper-parameters (Optuna ``Trial``)."""
        return {
            "model": trial.suggest_categorical("model", self.models),
            "lr": trial.suggest_float("lr", self.lr.low, self.lr.high, log=self.lr.log),
            "weight_decay": trial.suggest_float(
                "weight_decay", self.weight_decay.low, self.weight_decay.high, log=self.weight_decay.log
            ),
            "batch_size": trial.suggest_categorical("batch_size", self.batch_sizes or [32, 64]),
            "optimizer": trial.suggest_categorical("optimizer", self.optimizers),
            "label_smoothing": trial.suggest_float(
                "label_smoothing", self.label_smoothing.low, self.label_smoothing.high
            ),
        }
