"""The hyper-parameter search space (a flow parameter with good defaults) and how a trial samples it.

One space serves both task types: ``models`` and ``batch_sizes`` are tried on classification data,
``detectors`` and ``detector_batch_sizes`` on box data; label smoothing applies to classification only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

TaskType = Literal["classification", "detection"]
DETECTION_ONLY = ("detectors", "detector_batch_sizes", "detector_image_sizes")
CLASSIFICATION_ONLY = ("models", "label_smoothing", "batch_sizes")


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
    detectors: list[str] = Field(
        default_factory=lambda: ["ssdlite320_mobilenet_v3_large"],
        min_length=1,
        description="Detectors tried when the labeled data has boxes (task_type detection). Default: "
        "SSDlite, about ten times faster a training image on a CPU than Faster R-CNN and learning the demo "
        "from scratch.",
    )
    detector_image_sizes: list[int] | None = Field(
        default=None,
        min_length=1,
        description="Detection: the square side (px) a detector resizes every image to inside the model; "
        "None: each detector's own (loopline.training.detection.models.DETECTOR_SIZES). Smaller trains "
        "faster on a CPU; objects should stay at least about 24 px.",
    )
    detector_batch_sizes: list[int] = Field(
        default_factory=lambda: [4, 8],
        min_length=1,
        description="Detector batch sizes: a few hundred-pixel images with their boxes a step (the device's "
        "classification sizes would leave a small labeled set one step an epoch).",
    )
    lr: FloatRange = Field(default_factory=lambda: FloatRange(low=3e-4, high=1e-2, log=True))
    weight_decay: FloatRange = Field(default_factory=lambda: FloatRange(low=1e-6, high=1e-3, log=True))
    batch_sizes: list[int] | None = Field(
        default=None, min_length=1, description="None: from the device (larger on GPUs with more memory)."
    )
    optimizers: list[str] = Field(default_factory=lambda: ["adamw", "sgd"], min_length=1)
    label_smoothing: FloatRange = Field(default_factory=lambda: FloatRange(low=0.0, high=0.15))

    @model_validator(mode="after")
    def _known_choices(self) -> SearchSpace:
        from loopline.training.detection.models import DETECTOR_NAMES
        from loopline.training.models import MODEL_NAMES

        unknown = sorted(set(self.models) - set(MODEL_NAMES))
        if unknown:
            raise ValueError(f"unknown models {unknown}; valid: {', '.join(MODEL_NAMES)}")
        unknown = sorted(set(self.detectors) - set(DETECTOR_NAMES))
        if unknown:
            raise ValueError(f"unknown detectors {unknown}; valid: {', '.join(DETECTOR_NAMES)}")
        bad = sorted(set(self.optimizers) - {"adamw", "sgd"})
        if bad:
            raise ValueError(f"unknown optimizers {bad}; valid: adamw, sgd")
        return self

    def for_batch_sizes(self, defaults: tuple[int, ...]) -> SearchSpace:
        """This space with the device's batch sizes where none were chosen."""
        return self if self.batch_sizes else self.model_copy(update={"batch_sizes": list(defaults)})

    @staticmethod
    def unused_by(task_type: TaskType) -> set[str]:
        """The fields a study of ``task_type`` does not ask about."""
        return set(DETECTION_ONLY if task_type == "classification" else CLASSIFICATION_ONLY)

    def for_task(self, task_type: TaskType) -> dict[str, Any]:
        """The part of the space a study of ``task_type`` asks about (JSON-ready): it names the study. For
        classification it is the space as it was before detectors existed (study names are unchanged)."""
        return self.model_dump(mode="json", exclude=self.unused_by(task_type))

    def sample(self, trial: Any, task_type: TaskType = "classification") -> dict[str, Any]:
        """The trial's hyper-parameters (Optuna ``Trial``); ``model`` is a detector for detection."""
        detection = task_type == "detection"
        params = {
            "model": trial.suggest_categorical("model", self.detectors if detection else self.models),
            "lr": trial.suggest_float("lr", self.lr.low, self.lr.high, log=self.lr.log),
            "weight_decay": trial.suggest_float(
                "weight_decay", self.weight_decay.low, self.weight_decay.high, log=self.weight_decay.log
            ),
            "batch_size": trial.suggest_categorical(
                "batch_size", self.detector_batch_sizes if detection else self.batch_sizes or [32, 64]
            ),
            "optimizer": trial.suggest_categorical("optimizer", self.optimizers),
        }
        if detection and self.detector_image_sizes:
            params["image_size"] = trial.suggest_categorical("image_size", self.detector_image_sizes)
        if not detection:
            params["label_smoothing"] = trial.suggest_float(
                "label_smoothing", self.label_smoothing.low, self.label_smoothing.high
            )
        return params
