"""Pre-annotations: build Label Studio prediction results and check them against the label config.

A prediction whose ``from_name``, ``to_name``, ``type`` or label values do not match the project's config
is silently invisible in Label Studio; loopline refuses it instead, naming what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loopline.errors import LabelConfigMismatch
from loopline.labeling.configs import LabelConfig


@dataclass(frozen=True)
class Prediction:
    """A model's pre-annotation of one task."""

    model_version: str
    score: float
    result: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "score": self.score, "result": self.result}


def classification_prediction(
    config: LabelConfig, label: str, score: float, model_version: str
) -> Prediction:
    """A single-choice prediction (the top class and its probability)."""
    result = {
        "from_name": config.control_name,
        "to_name": config.object_name,
        "type": config.result_type,
        "value": {"choices": [label]},
        "score": score,
    }
    return Prediction(model_version, score, [result])


def _labels_of(value: dict[str, Any], result_type: str) -> list[str]:
    key = "choices" if result_type == "choices" else result_type
    labels = value.get(key)
    return list(labels) if isinstance(labels, list) else []


def prediction_problems(config: LabelConfig, prediction: dict[str, Any]) -> list[str]:
    """Everything about one prediction that does not fit the config (empty when it fits)."""
    problems = []
    results = prediction.get("result")
    if not isinstance(results, list) or not results:
        return ["it has no result list"]
    for i, result in enumerate(results):
        where = f"result[{i}]"
        if result.get("from_name") != config.control_name:
            problems.append(
                f"{where}.from_name is {result.get('from_name')!r}, expected {config.control_name!r}"
            )
        if result.get("to_name") != config.object_name:
            problems.append(f"{where}.to_name is {result.get('to_name')!r}, expected {config.object_name!r}")
        if result.get("type") != config.result_type:
            problems.append(f"{where}.type is {result.get('type')!r}, expected {config.result_type!r}")
        value = result.get("value")
        if not isinstance(value, dict):
            problems.append(f"{where}.value is missing")
            continue
        labels = _labels_of(value, config.result_type)
        if not labels:
            problems.append(f"{where}.value has no {config.result_type!r} list")
        unknown = sorted(set(labels) - set(config.labels))
        if unknown:
            problems.append(
                f"{where} uses labels {unknown} that are not in the label set {list(config.labels)}"
            )
    score = prediction.get("score")
    if score is not None and not (isinstance(score, int | float) and 0.0 <= score <= 1.0):
        problems.append(f"score {score!r} is not a number in [0, 1]")
    return problems


def validate_predictions(config: LabelConfig, predictions: list[tuple[str, dict[str, Any]]]) -> None:
    """Raise one error listing every ``(task key, prediction)`` that does not fit the config."""
    bad = [(key, problems) for key, p in predictions if (problems := prediction_problems(config, p))]
    if bad:
        listed = "\n".join(f"- {key}: {'; '.join(problems)}" for key, problems in bad[:20])
        more = f"\n… and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise LabelConfigMismatch(
            f"{len(bad)} of {len(predictions)} predictions do not fit the label config "
            f"(control {config.control_name!r} → {config.object_name!r}, labels {list(config.labels)}):\n"
            f"{listed}{more}\nTo fix this, map the model's classes onto the project's labels "
            "(the class mapping stored with the model) and use the config's control and object names."
        )
